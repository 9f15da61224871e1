"""KerasProbe: the analysis interface returns exactly the model's own numbers.

References: the model's own forward pass for predictions and features, and the autodiff deconvnet
of tests/test_deconv.py (raw TF ops, GradientTape) for projections.
"""

import keras
import numpy as np
import pytest
from test_deconv import assert_close, reference_projection

from zfkeras.nn.models import build_model, zfnet_small_spec
from zfkeras.nn.probe import KerasProbe


@pytest.fixture(scope="module")
def model():
    spec = zfnet_small_spec(num_classes=4).with_units(conv1=6, conv2=8, conv3=8, conv4=8, conv5=6, fc6=16, fc7=12)
    model = build_model(spec.replace(kernel_init="he_normal"), seed=2)
    model.get_layer("subtract_mean").set_mean(np.full((28, 28, 1), 90.0))
    return model


def test_probe_numbers_are_the_models(model):
    probe = KerasProbe(model, class_names=["a", "b", "c", "d"])
    x = np.random.default_rng(0).uniform(0, 255, size=(5, 28, 28, 1)).astype("float32")
    assert probe.layer_names == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert probe.feature_names == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    np.testing.assert_allclose(probe.predict(x, batch_size=2), model(x).numpy(), rtol=1e-5, atol=1e-7)
    features = probe.features(x, ["conv4", "fc7"], batch_size=3)
    reference = keras.Model(model.inputs[0], [model.get_layer("conv4").output, model.get_layer("fc7").output])(x)
    np.testing.assert_allclose(features["conv4"], reference[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features["fc7"], reference[1].numpy(), rtol=1e-5, atol=1e-6)
    assert_close(probe.project(x, "conv3", 1), reference_projection(model, x, "conv3", [1] * 5, ["max"] * 5))
    positions = np.array([[0, 0], [2, 3], [-1, -1], [6, 1], [4, 4]], "int32")  # (-1, -1): that image's max
    expected = reference_projection(model, x, "conv2", [0, 1, 2, 3, 4], [(0, 0), (2, 3), "max", (6, 1), (4, 4)])
    assert_close(probe.project(x, "conv2", np.arange(5), positions, batch_size=2), expected)
    np.testing.assert_array_equal(probe.mean_image, np.full((28, 28, 1), 90.0))
    # feature_tensors: the same maps as TF tensors, inside a tf.function too
    import tensorflow as tf

    traced = tf.function(lambda images: probe.feature_tensors(images, ["conv4", "fc7"]))(tf.constant(x))
    assert set(traced) == {"conv4", "fc7"}
    np.testing.assert_allclose(traced["conv4"].numpy(), reference[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(traced["fc7"].numpy(), reference[1].numpy(), rtol=1e-5, atol=1e-6)


def test_probe_errors_name_the_bad_thing(model):
    probe = KerasProbe(model)
    assert probe.class_names == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="unknown layer 'conv7'; valid layers: conv1, conv2, conv3, conv4, conv5, fc6, fc7"):
        probe.features(np.zeros((1, 28, 28, 1)), ["conv7"])
    with pytest.raises(ValueError, match=r"images must have shape \[N, 28, 28, 1\]"):
        probe.predict(np.zeros((1, 28, 28)))
    with pytest.raises(ValueError, match="class_names has 2 names but the model has 4 outputs"):
        KerasProbe(model, class_names=["x", "y"])
