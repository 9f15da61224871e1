"""Incremental occlusion against the full forward pass of every occluded copy (issue 10).

Reference: ``OcclusionEvaluator(..., incremental=False)``, which paints each square into a copy of
the image and runs the whole Keras model on it. The incremental evaluator must agree for every grid
position, including squares clipped at the borders and squares larger than the image: probabilities
to 1e-4 absolute, the feature map's total activity to 1e-4 relative.
"""

import keras
import numpy as np
import pytest

from zfkeras.analysis.occlusion import OcclusionEvaluator, occluder_grid, occlusion_map
from zfkeras.nn.models import build_model, zfnet_small_spec, zfnet_spec
from zfkeras.nn.probe import KerasProbe


def lively(model, seed, mean=100.0):
    """Random conv biases, a non-zero mean image and a damped classifier, so maps and probabilities move."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.bias.assign(rng.normal(0.05, 0.05, size=layer.bias.shape))
    means = [layer for layer in model.layers if layer.name == "subtract_mean"]
    if means:
        means[0].set_mean(rng.uniform(mean - 40, mean + 40, model.inputs[0].shape[1:]).astype("float32"))
    last = model.layers[-1]
    last.kernel.assign(last.kernel.numpy() * 0.05)
    return model


def small_zfnet(input_shape):
    spec = zfnet_small_spec(input_shape=input_shape).with_units(conv1=8, conv2=12, conv3=12, conv4=12, conv5=10, fc6=32, fc7=32)
    return lively(build_model(spec.replace(kernel_init="he_normal", filter_radius=None), seed=0), 0)


def user_convnet():
    """SAME and VALID convs and pools, a strided conv, explicit zero padding, a ReLU layer, LRN-free."""
    keras.utils.set_random_seed(3)
    return lively(
        keras.Sequential(
            [
                keras.Input((30, 30, 3)),
                keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1"),
                keras.layers.MaxPooling2D(2, padding="same", name="p1"),
                keras.layers.ZeroPadding2D(1, name="z2"),
                keras.layers.Conv2D(8, 3, strides=2, padding="valid", name="c2"),
                keras.layers.ReLU(name="r2"),
                keras.layers.MaxPooling2D(3, 2, padding="valid", name="p2"),
                keras.layers.Conv2D(10, 3, padding="same", name="c3"),
                keras.layers.MaxPooling2D(3, strides=1, padding="same", name="p3"),
                keras.layers.Conv2D(7, 2, padding="valid", activation="relu", name="c4"),
                keras.layers.Flatten(),
                keras.layers.Dropout(0.5),
                keras.layers.Dense(5, activation="softmax"),
            ]
        ),
        3,
    )


def assert_equal_to_full_forward(probe, image, patch, corners, layer=None, relative=1e-4):
    fast = OcclusionEvaluator(probe, image, layer=layer, patch=patch)
    assert fast.incremental is not None, "the incremental path must be the one under test"
    full = OcclusionEvaluator(probe, image, layer=layer, patch=patch, feature_map=fast.feature_map, incremental=False)
    activity, probs = fast.evaluate(corners)
    want_activity, want_probs = full.evaluate(corners)
    tolerance = relative * np.abs(want_activity).max()
    assert np.abs(probs - want_probs).max() <= 1e-4
    assert np.abs(activity - want_activity).max() <= tolerance
    # Not vacuous: ignoring the square (the clean values) would break the tolerances above.
    assert np.abs(want_activity - full.clean_activity).max() > 2 * tolerance
    assert np.abs(want_probs - full.clean_probs).max() > 2e-4


@pytest.fixture(scope="module")
def small_probes():
    return {shape: KerasProbe(small_zfnet(shape)) for shape in ((28, 28, 1), (40, 56, 1))}


@pytest.mark.parametrize("shape", [(28, 28, 1), (40, 56, 1)], ids=["28x28", "40x56"])
@pytest.mark.parametrize("patch, stride", [(1, 1), (7, 3), (32, 8)])
def test_small_zfnet_every_grid_position(small_probes, shape, patch, stride):
    probe = small_probes[shape]
    image = np.random.default_rng(patch).uniform(0, 255, shape).astype("float32")
    corners = occluder_grid(shape, patch, stride).reshape(-1, 2)
    assert_equal_to_full_forward(probe, image, patch, corners)


def test_small_zfnet_lower_layer_activity(small_probes):
    image = np.random.default_rng(5).uniform(0, 255, (28, 28, 1)).astype("float32")
    assert_equal_to_full_forward(small_probes[28, 28, 1], image, 7, occluder_grid((28, 28), 7, 3).reshape(-1, 2), layer="conv2")


@pytest.mark.parametrize("patch, stride", [(1, 3), (7, 1), (32, 8)])
def test_user_convnet_same_and_valid(patch, stride):
    probe = KerasProbe(user_convnet())
    image = np.random.default_rng(2).uniform(0, 255, (30, 30, 3)).astype("float32")
    assert_equal_to_full_forward(probe, image, patch, occluder_grid((30, 30), patch, stride).reshape(-1, 2))


def test_full_zfnet_224_borders_corners_and_centre():
    model = lively(build_model(zfnet_spec(num_classes=10).replace(kernel_init="he_normal"), seed=0), 1)
    probe = KerasProbe(model)
    image = np.random.default_rng(4).uniform(0, 255, (224, 224, 3)).astype("float32")
    # A 1-pixel square moves conv5's total activity by < 1e-4 relative: hold that case to 1e-5.
    for patch, stride, relative in ((32, 8, 1e-4), (7, 3, 1e-4), (1, 1, 1e-5)):
        grid = occluder_grid((224, 224), patch, stride)
        rows, cols = grid.shape[:2]
        # Every corner, a few positions along each border (clipped squares) and the centre.
        picks = [(i, j) for i in (0, 1, rows // 2, rows - 2, rows - 1) for j in (0, 1, cols // 2, cols - 2, cols - 1)]
        corners = np.array([grid[i, j] for i, j in picks])
        assert_equal_to_full_forward(probe, image, patch, corners, relative=relative)


def test_unhandled_model_falls_back_to_the_full_pass():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
            keras.layers.AveragePooling2D(2, name="avg"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    probe = KerasProbe(model)
    image = np.random.default_rng(0).uniform(0, 255, (12, 12, 1)).astype("float32")
    evaluator = OcclusionEvaluator(probe, image, patch=3)
    assert evaluator.incremental is None
    result = occlusion_map(probe, image, patch=3, stride=2)
    full = occlusion_map(probe, image, patch=3, stride=2, evaluator=OcclusionEvaluator(probe, image, patch=3, incremental=False))
    np.testing.assert_array_equal(result.feature_activity, full.feature_activity)
    np.testing.assert_array_equal(result.true_class_prob, full.true_class_prob)


def test_approximate_mode_is_opt_in_and_thresholds_the_windows(small_probes):
    """Krypton's projective-field threshold: smaller windows than exact (so results may differ),
    the square itself always whole, and only when asked for."""
    probe = small_probes[28, 28, 1]
    image = np.random.default_rng(6).uniform(0, 255, (28, 28, 1)).astype("float32")
    exact = OcclusionEvaluator(probe, image, patch=7)
    approx = OcclusionEvaluator(probe, image, patch=7, approximate=0.7, feature_map=exact.feature_map)
    assert exact.incremental.keep == 1.0 and approx.incremental.keep == 0.7
    exact_sizes, approx_sizes = (np.array(e.incremental.windows) for e in (exact, approx))
    assert (approx_sizes <= exact_sizes).all() and (approx_sizes < exact_sizes).any()
    assert approx_sizes[0].tolist() == [7, 7]  # subtract_mean: the whole square
    corners = occluder_grid((28, 28), 7, 3).reshape(-1, 2)
    activity, probs = approx.evaluate(corners)
    assert activity.shape == (len(corners),) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="approximate must be None or a fraction"):
        OcclusionEvaluator(probe, image, patch=7, approximate=1.5)
