"""Receptive-field-cropped single-activation projections against the full-size projection (issue 10).

Reference: autodiff over the whole image with every ReLU's gradient overridden
(tests/deconv_reference.py: Keras runs the model's own layers, GradientTape goes down). The
windowed path shares only the layers' weights with it: it crops the image to the unit's field,
fills padding per layer, pools without switches and unpools by the pooling gradient. Every (image, map, position) triple goes in one batch; positions cover the four
corners, the middle of each border and the centre of the layer's maps.
"""

import keras
import numpy as np
import pytest
from deconv_reference import assert_close as assert_same
from deconv_reference import reference_projection

from zfkeras import Deconvnet
from zfkeras.nn.models import build_model, zfnet_small_spec, zfnet_spec


def randomize_biases(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.bias.assign(rng.normal(0.05, 0.05, size=layer.bias.shape))


def small_zfnet(input_shape=(28, 28, 1)):
    spec = zfnet_small_spec(input_shape=input_shape).with_units(conv1=8, conv2=12, conv3=12, conv4=12, conv5=10)
    model = build_model(spec.replace(kernel_init="he_normal"), seed=0)
    randomize_biases(model, 0)
    model.get_layer("subtract_mean").set_mean(np.full(input_shape, 100.0, "float32"))
    return model


def user_convnet():
    """SAME and VALID convs and pools, a strided conv, explicit zero padding, linear conv + ReLU
    layer, a linear conv straight into a pool."""
    bias = keras.initializers.Constant(0.05)
    return keras.Sequential(
        [
            keras.Input((30, 30, 3)),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu", bias_initializer=bias, name="c1"),
            keras.layers.MaxPooling2D(2, padding="same", name="p1"),
            keras.layers.ZeroPadding2D(1, name="z2"),
            keras.layers.Conv2D(8, 3, strides=2, padding="valid", bias_initializer=bias, name="c2"),
            keras.layers.ReLU(name="r2"),
            keras.layers.MaxPooling2D(3, 2, padding="valid", name="p2"),
            keras.layers.Conv2D(10, 3, padding="same", bias_initializer=bias, name="c3"),
            # A SAME pool over a linear conv's (partly negative) maps: its padding must never win.
            keras.layers.MaxPooling2D(3, strides=1, padding="same", name="p3"),
            keras.layers.Conv2D(7, 2, padding="valid", activation="relu", bias_initializer=bias, name="c4"),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )


def border_positions(height, width):
    """The four corners, the middle of each border, the centre: (y, x) ``[9, 2]``."""
    ys, xs = (0, height // 2, height - 1), (0, width // 2, width - 1)
    return np.array([(y, x) for y in ys for x in xs], "int32")


def full_projection(deconv, images, layer, channels, positions):
    """The whole-image reference from one activation per image."""
    return reference_projection(deconv.model, images, deconv.selection_layer(layer).name, channels, [tuple(p) for p in positions])


def check_layer(deconv, images, layer, rng):
    """Project border, corner and centre units of ``layer``, each from its map with the strongest
    activation there, for images picked at random; compare with the full projection."""
    assert deconv.windowed(layer), f"{layer} does not run on windows"
    acts = deconv.activations(images, [layer])[layer]
    positions = border_positions(*acts.shape[1:3])
    image_index = rng.integers(0, len(images), len(positions))
    batch = images[image_index]
    channels = np.array([int(np.argmax(acts[i, y, x])) for i, (y, x) in zip(image_index, positions)], "int32")
    got = deconv.project(batch, layer, channels, positions)
    assert got.shape == batch.shape
    assert_same(got, full_projection(deconv, batch, layer, channels, positions))
    # position="max" (strongest unit of the map), and a mix of given and strongest in one batch.
    strongest = np.stack([np.unravel_index(np.argmax(acts[i, :, :, c]), acts.shape[1:3]) for i, c in zip(image_index, channels)])
    assert_same(deconv.project(batch, layer, channels, "max"), full_projection(deconv, batch, layer, channels, strongest))
    mixed = positions.copy()
    mixed[::2] = -1
    want = np.where(mixed < 0, strongest, positions)
    assert_same(deconv.project(batch, layer, channels, mixed), full_projection(deconv, batch, layer, channels, want))


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (40, 56, 1)], ids=["28x28", "40x56"])
def test_small_zfnet_every_layer(input_shape, rng):
    deconv = Deconvnet(small_zfnet(input_shape))
    images = rng.uniform(0, 255, (3, *input_shape)).astype("float32")
    # deep layers of small images see more than the image: whole maps are cheaper than their windows
    windowed = [layer for layer in deconv.layer_names if deconv.windowed(layer)]
    assert windowed[:3] == ["conv1", "conv2", "conv3"]
    for layer in windowed:
        check_layer(deconv, images, layer, rng)


def test_user_convnet_with_same_and_valid_padding(rng):
    keras.utils.set_random_seed(3)
    model = user_convnet()
    deconv = Deconvnet(model)
    assert deconv.layer_names == ["c1", "c2", "c3", "c4"]
    images = rng.uniform(0, 255, (3, 30, 30, 3)).astype("float32")
    for layer in ("c1", "c2", "c3"):  # c4's windows would hold more than the whole maps: not windowed
        check_layer(deconv, images, layer, rng)
    assert not deconv.windowed("c4")


@pytest.mark.parametrize("layer", ["conv1", "conv3", "conv5"])
def test_full_zfnet_224(layer, rng):
    model = build_model(zfnet_spec(num_classes=10).replace(kernel_init="he_normal"), seed=0)
    randomize_biases(model, 1)
    deconv = Deconvnet(model)
    images = rng.uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    check_layer(deconv, images, layer, rng)


def test_fields_of_the_windows_are_the_receptive_fields():
    """The image-level window of a unit is its receptive field (receptive_field.receptive_fields)."""
    from zfkeras.nn.fields import receptive_fields, unit_windows
    from zfkeras.nn.graph import Graph

    model = build_model(zfnet_spec(num_classes=10), seed=0)
    fields, graph = receptive_fields(model), Graph(model)
    for name in ("conv1", "conv2", "pool2", "conv5"):
        size, jump, offset = unit_windows(graph, graph.key(model.get_layer(name))).tensors[graph.input]
        assert (size, jump, offset) == (fields[name].size, fields[name].jump, fields[name].offset)
