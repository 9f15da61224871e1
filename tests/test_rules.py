"""The three backward rules (deconvnet, guided backprop, gradient) against their autodiff definitions.

Reference (tests/deconv_reference.py): Keras runs the model's own layers under GradientTape with
every ReLU's gradient overridden (deconvnet: ReLU of the signal, LRN passed; guided: ReLU of the
signal where the forward output was positive, LRN's true gradient) or left alone (gradient). It
shares nothing with zfkeras' graph walk. Max relative error per projection below 1e-5, on
receptive-field windows (given positions and the strongest unit) and on whole images (whole maps,
layers whose field is no window, the class scores), for ZFNet-224 with random weights (LRN
included), the shipped Fashion-MNIST model and keras:resnet50 with random weights.
"""

import os

import keras
import numpy as np
import pytest
from deconv_reference import assert_close, reference_class_projection, reference_projection

from zfkeras import Deconvnet
from zfkeras.nn.adjoint import RULES
from zfkeras.nn.applications import load
from zfkeras.nn.models import build_model, zfnet_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "saved_models", "zfnet-fashion-mnist", "model.keras")


def strongest_channels(deconv, images, layer):
    acts = deconv.activations(images, [layer])[layer]
    return np.array([int(np.argmax(a.max(axis=(0, 1)))) for a in acts], "int32"), acts.shape[1:3]


def check_rule(model, deconv, images, layer, rule, whole_map=True, strongest=True):
    """Given positions (corners and centre, mixed with strongest units), the strongest unit
    (``strongest``: every row) and (``whole_map``) the whole map, each against the reference under ``rule``."""
    channels, (height, width) = strongest_channels(deconv, images, layer)
    output_layer = deconv.selection_layer(layer).name
    n = len(images)
    spots = [(0, 0), (height - 1, width - 1), (height // 2, width // 2), (0, width - 1)]
    given = np.array([(-1, -1) if i % 2 else spots[i % 4] for i in range(n)], "int32")
    wanted = ["max" if i % 2 else spots[i % 4] for i in range(n)]
    assert_close(deconv.project(images, layer, channels, given, rule=rule), reference_projection(model, images, output_layer, channels, wanted, rule))
    if strongest:
        assert_close(
            deconv.project(images, layer, channels, "max", rule=rule), reference_projection(model, images, output_layer, channels, ["max"] * n, rule)
        )
    if whole_map:
        assert_close(
            deconv.project(images, layer, channels, "map", rule=rule), reference_projection(model, images, output_layer, channels, ["map"] * n, rule)
        )


def check_classes(model, deconv, images, rule):
    classes = np.arange(len(images), dtype="int32") % int(model.outputs[0].shape[-1])
    got = deconv.project(images, deconv.class_layer, classes, rule=rule)
    assert_close(got, reference_class_projection(model, images, deconv.class_layer, classes, rule))


@pytest.fixture(scope="module")
def zfnet224():
    model = build_model(zfnet_spec(num_classes=10).replace(kernel_init="he_normal"), seed=0)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.bias.assign(rng.normal(0.05, 0.05, size=layer.bias.shape))
    model.get_layer("subtract_mean").set_mean(np.full((224, 224, 3), 120.0, "float32"))
    images = np.random.default_rng(2).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    return model, Deconvnet(model), images


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("layer", ["conv1", "conv3", "conv5"])
def test_zfnet_224_random_weights(zfnet224, layer, rule):
    model, deconv, images = zfnet224
    assert deconv.windowed(layer)
    check_rule(model, deconv, images, layer, rule, whole_map=layer != "conv1")


@pytest.mark.parametrize("rule", RULES)
def test_zfnet_224_class_scores(zfnet224, rule):
    model, deconv, images = zfnet224
    assert deconv.class_layer == "predictions"
    check_classes(model, deconv, images, rule)


@pytest.fixture(scope="module")
def shipped():
    model = keras.saving.load_model(SHIPPED, compile=False)
    from zfkeras.data import load_source

    images, _ = next(load_source("fashion_mnist", "test").dataset.batch(4).as_numpy_iterator())
    images = images.astype("float32")
    return model, Deconvnet(model), images


@pytest.mark.parametrize("rule", RULES)
def test_shipped_model_every_layer(shipped, rule):
    model, deconv, images = shipped
    for layer in deconv.layer_names:
        check_rule(model, deconv, images, layer, rule)
    check_classes(model, deconv, images, rule)


@pytest.fixture(scope="module")
def resnet50():
    keras.utils.set_random_seed(0)
    model, _ = load("keras:resnet50", "none")
    images = np.random.default_rng(3).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    return model, Deconvnet(model), images


@pytest.mark.parametrize("rule", RULES)
def test_resnet50_random_weights(resnet50, rule):
    model, deconv, images = resnet50
    assert deconv.windowed("conv2_block1_2_conv") and not deconv.windowed("conv5_block3_out")
    # a window inside the first residual block, and the last block's output on whole images
    check_rule(model, deconv, images, "conv2_block1_2_conv", rule, whole_map=False, strongest=False)
    check_rule(model, deconv, images, "conv5_block3_out", rule, whole_map=True, strongest=False)
    check_classes(model, deconv, images, rule)


def test_the_rules_differ_where_they_should(shipped):
    """conv1's strongest unit: one ReLU, seeded positive, so all rules agree; deeper, guided
    backprop keeps only positive signal where the units fired, the gradient keeps both signs."""
    _, deconv, images = shipped
    channels, _ = strongest_channels(deconv, images, "conv1")
    first = {rule: deconv.project(images, "conv1", channels, rule=rule) for rule in RULES}
    np.testing.assert_array_equal(first["deconvnet"], first["gradient"])
    np.testing.assert_array_equal(first["deconvnet"], first["guided"])
    channels, _ = strongest_channels(deconv, images, "conv4")
    deep = {rule: deconv.project(images, "conv4", channels, rule=rule) for rule in RULES}
    for one, other in (("deconvnet", "guided"), ("guided", "gradient"), ("deconvnet", "gradient")):
        assert np.abs(deep[one] - deep[other]).max() > 1e-3 * np.abs(deep[one]).max(), (one, other)


def test_default_rule_and_bad_rules(shipped):
    model, deconv, images = shipped
    assert deconv.rule == "deconvnet"
    guided = Deconvnet(model, rule="guided")
    np.testing.assert_array_equal(guided.project(images, "conv3", 1), deconv.project(images, "conv3", 1, rule="guided"))
    with pytest.raises(ValueError, match="rule must be one of deconvnet, guided, gradient, got 'smooth'"):
        Deconvnet(model, rule="smooth")
    with pytest.raises(ValueError, match="rule must be one of"):
        deconv.project(images, "conv3", 1, rule="Guided")
    with pytest.raises(ValueError, match="position does not apply to the class scores of 'predictions'"):
        deconv.project(images, "predictions", 1, position=(0, 0))
    with pytest.raises(ValueError, match="projectable layers: conv1, conv2, conv3, conv4, conv5, predictions"):
        deconv.project(images, "fc6", 1)
