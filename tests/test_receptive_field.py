"""Receptive fields against the support of an autodiff input gradient (issue 4, must-show 3).

Why a linear, all-positive copy of the network: in the real model a ReLU that is off, or a max
pool that picked another input, zeroes the gradient for part of the field, and positive and
negative weights can cancel; the gradient support is then only a subset of the field. In a copy
where every conv has an all-ones kernel and no activation, and every max pool is replaced by an
average pool of the same size, stride and padding, every path from an input pixel inside the field
to the chosen unit carries a positive weight, and there is no path from outside it: the gradient
is > 0 exactly on the field (clipped to the image). The copy is built here from raw TF ops with
the original layers' kernel sizes, strides and paddings, so it shares no code with
zfkeras.receptive_field; filter counts do not change geometry, so the copy uses 1 map per layer.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zfkeras.nn.fields import crop, receptive_fields
from zfkeras.nn.layers import LocalResponseNormalization, SubtractMean, SwitchMaxPool
from zfkeras.nn.models import alexnet_spec, build_model, zfnet_small_spec, zfnet_spec


def linear_positive_forward(model, images):
    """Outputs of every spatial layer of the all-ones, linear, average-pooled copy of ``model``."""
    outputs = {}
    x = images
    for layer in model.layers:
        if isinstance(layer, (keras.layers.InputLayer, SubtractMean, LocalResponseNormalization, keras.layers.Dropout)):
            pass
        elif isinstance(layer, keras.layers.ZeroPadding2D):
            x = tf.pad(x, [[0, 0], list(layer.padding[0]), list(layer.padding[1]), [0, 0]])
        elif isinstance(layer, keras.layers.Conv2D):
            kernel = tf.ones((*layer.kernel_size, x.shape[-1], 1))
            x = tf.nn.conv2d(x, kernel, layer.strides, layer.padding.upper(), dilations=layer.dilation_rate)
        elif isinstance(layer, SwitchMaxPool):
            x = tf.nn.avg_pool2d(x, layer.pool_size, layer.strides, layer.padding.upper())
        elif isinstance(layer, keras.layers.Flatten):
            break
        else:
            raise AssertionError(f"test copy does not model {layer.name}")
        outputs[layer.name] = x
    return outputs


def gradient_support(model, layer, y, x):
    """Boolean [H, W]: input pixels where d(unit (y, x) of ``layer``)/d(input) != 0."""
    images = tf.Variable(tf.ones((1, *model.inputs[0].shape[1:])))
    with tf.GradientTape() as tape:
        unit = linear_positive_forward(model, images)[layer][0, y, x, 0]
    gradient = tape.gradient(unit, images).numpy()[0]
    return np.abs(gradient).sum(axis=-1) > 0


def box_mask(field, y, x, shape):
    mask = np.zeros(shape[:2], bool)
    top, bottom, left, right = field.box(y, x, shape)
    mask[top:bottom, left:right] = True
    return mask


@pytest.mark.parametrize(
    "spec",
    [zfnet_spec(), alexnet_spec(), zfnet_small_spec(), zfnet_small_spec(input_shape=(40, 56, 1))],
    ids=["zfnet", "alexnet", "zfnet_small", "zfnet_small_40x56"],
)
def test_field_equals_gradient_support(spec):
    model = build_model(spec.with_units(conv1=2, conv2=2, conv3=2, conv4=2, conv5=2, fc6=2, fc7=2), seed=0)
    shape = model.inputs[0].shape[1:]
    fields = receptive_fields(model)
    checked = 0
    for name in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"):
        field = fields[name]
        height, width = field.output_size
        assert (height, width) == tuple(
            model.get_layer(name).output[0].shape[1:3] if name.startswith("pool") else model.get_layer(name).output.shape[1:3]
        )
        # corners (field clipped by the image border), the centre, and an off-centre unit
        for y, x in {(0, 0), (height - 1, width - 1), (height // 2, width // 2), (height // 3, width - 1)}:
            np.testing.assert_array_equal(gradient_support(model, name, y, x), box_mask(field, y, x, shape), err_msg=f"{spec.name} {name} ({y}, {x})")
            checked += 1
    assert checked >= 20


def test_zfnet_fields_by_hand():
    # Fig. 3 geometry worked out on paper: conv1 7x7/2 after a 1-pixel border, pool1 3x3/2 "same"
    # (no padding before, 110 -> 55), conv2 5x5/2 valid, pool2 3x3/2 "same" (26 -> 13, no padding
    # before), conv3-5 3x3/1 "same" (1 before), pool5 3x3/2 valid.
    fields = receptive_fields(build_model(zfnet_spec().with_units(conv1=2, conv2=2, conv3=2, conv4=2, conv5=2, fc6=2, fc7=2)))
    expected = {
        "conv1": (7, 2, -1),
        "pool1": (11, 4, -1),
        "conv2": (27, 8, -1),
        "pool2": (43, 16, -1),
        "conv3": (75, 16, -17),
        "conv4": (107, 16, -33),
        "conv5": (139, 16, -49),
        "pool5": (171, 32, -49),
    }
    for name, (size, jump, offset) in expected.items():
        assert (fields[name].size, fields[name].jump, fields[name].offset) == ((size,) * 2, (jump,) * 2, (offset,) * 2), name


def test_real_relu_model_gradient_inside_field(rng):
    # With ReLUs and max pools the gradient support can only shrink: it must stay inside the field.
    model = build_model(zfnet_small_spec(), seed=1)
    images = tf.Variable(rng.uniform(0, 255, (1, 28, 28, 1)).astype("float32"))
    fields = receptive_fields(model)
    for name in ("conv2", "conv4"):
        with tf.GradientTape() as tape:
            maps = keras.Model(model.inputs, model.get_layer(name).output)(images)
            y, x, c = np.unravel_index(int(np.argmax(maps[0].numpy())), maps.shape[1:])
            unit = maps[0, y, x, c]
        support = np.abs(tape.gradient(unit, images).numpy()[0]).sum(-1) > 0
        assert support.any()
        assert not (support & ~box_mask(fields[name], y, x, (28, 28))).any()


def test_crop_pads_outside_image():
    fields = receptive_fields(build_model(zfnet_small_spec(), seed=0))
    image = np.arange(28 * 28, dtype="float32").reshape(28, 28, 1)
    # conv2's field by hand: conv1 3x3 "same" (size 3, offset -1), pool1 3x3/2 "same" on 28 (no
    # padding before: size 5, jump 2), conv2 3x3 "same" (1 before: offset -1 - 2 = -3, size 9)
    patch = crop(image, fields["conv2"], 0, 0, fill=-1)
    assert fields["conv2"].size == (9, 9) and fields["conv2"].offset == (-3, -3)
    assert patch.shape == (9, 9, 1)
    np.testing.assert_array_equal(patch[:3], -1)
    np.testing.assert_array_equal(patch[:, :3], -1)
    np.testing.assert_array_equal(patch[3:, 3:, 0], image[:6, :6, 0])
    np.testing.assert_array_equal(crop(image, fields["conv2"], 5, 6)[..., 0], image[7:16, 9:18, 0])


def test_unsupported_layer_named():
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(2, 3, name="conv1")(inputs)
    x = keras.layers.UpSampling2D(name="odd")(x)
    model = keras.Model(inputs, keras.layers.Flatten()(x))
    with pytest.raises(ValueError, match="'odd'.*UpSampling2D.*; supported: Conv2D"):
        receptive_fields(model)


def positive_dag(input_shape=(40, 56, 2)):
    """A DAG of every geometry the fields cover, with weights that make every path count.

    Two branches of different kernels and paddings from one shared tensor meet in an Add, a
    strided conv and a "same" average pool meet in a Concatenate, a depthwise conv, explicit zero
    padding and BatchNormalization sit in between. All kernels are ones, biases zero and the
    batch norm the identity, so with an all-ones input every unit is positive, every ReLU passes
    the gradient and no weights cancel: the input gradient of one unit is > 0 exactly on the
    union of its paths' fields (clipped to the image). No max pool: it would route the gradient
    to one input of each window.
    """
    inputs = keras.Input(input_shape)
    shared = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="shared")(inputs)
    wide = keras.layers.Conv2D(2, 5, padding="same", name="wide")(shared)
    narrow = keras.layers.Conv2D(2, 3, padding="same", name="narrow")(keras.layers.ZeroPadding2D(0, name="nopad")(shared))
    merged = keras.layers.ReLU(name="merged")(keras.layers.Add(name="add")([wide, narrow, shared]))
    strided = keras.layers.Conv2D(2, 3, strides=2, padding="same", name="strided")(merged)
    pooled = keras.layers.AveragePooling2D(3, strides=2, padding="same", name="pooled")(merged)
    joined = keras.layers.Concatenate(name="joined")([strided, pooled])
    normed = keras.layers.BatchNormalization(epsilon=0.0, name="normed")(joined)
    padded = keras.layers.ZeroPadding2D(((2, 0), (1, 3)), name="padded")(normed)
    depthwise = keras.layers.DepthwiseConv2D(3, dilation_rate=2, name="depthwise", activation="relu")(padded)
    top = keras.layers.Conv2D(2, 3, strides=2, padding="valid", name="top")(depthwise)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(top))
    for layer in model.layers:
        for weight in layer.weights:
            weight.assign(
                np.zeros(weight.shape) if "bias" in weight.path or "beta" in weight.path or "moving_mean" in weight.path else np.ones(weight.shape)
            )
    return model


def test_dag_fields_are_the_union_over_paths():
    model = positive_dag()
    shape = model.inputs[0].shape[1:]
    fields = receptive_fields(model)
    assert set(fields) == {
        "shared",
        "wide",
        "nopad",
        "narrow",
        "add",
        "merged",
        "strided",
        "pooled",
        "joined",
        "normed",
        "padded",
        "depthwise",
        "top",
    }
    order = list(fields)
    assert order.index("shared") < order.index("add") < order.index("joined") < order.index("top")
    images = tf.Variable(tf.ones((1, *shape)))
    checked = 0
    for name in ("merged", "joined", "depthwise", "top"):
        field = fields[name]
        maps = keras.Model(model.inputs, model.get_layer(name).output)
        assert field.output_size == tuple(maps.output.shape[1:3])
        height, width = field.output_size
        for y, x in {(0, 0), (height - 1, width - 1), (height // 2, width // 2), (0, width - 1)}:
            with tf.GradientTape() as tape:
                unit = maps(images)[0, y, x, 0]
            support = np.abs(tape.gradient(unit, images).numpy()[0]).sum(axis=-1) > 0
            np.testing.assert_array_equal(support, box_mask(field, y, x, shape), err_msg=f"{name} ({y}, {x})")
            checked += 1
    assert checked >= 12
    # by hand: shared 3 (offset -1); the Add's widest path is wide's 5x5 over it: 7, offset -3
    assert (fields["add"].size, fields["add"].jump, fields["add"].offset) == ((7, 7), (1, 1), (-3, -3))


def test_paths_of_different_strides_have_no_window():
    # Both branches give 8x8 maps, one by a stride of 2 (jump 2), one by a 9x9 valid conv (jump 1):
    # a unit of their sum sees two boxes of different spacing, which no (size, jump, offset) holds.
    inputs = keras.Input((16, 16, 1))
    a = keras.layers.Conv2D(1, 3, strides=2, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(1, 9, padding="valid", name="b")(inputs)
    joined = keras.layers.Add(name="joined")([a, b])
    top = keras.layers.Conv2D(1, 3, name="top")(joined)
    fields = receptive_fields(keras.Model(inputs, top))
    assert list(fields) == ["a", "b"]
    assert fields["a"].jump == (2, 2) and fields["b"].jump == (1, 1)
