"""Model builders: Fig. 3 shapes, the spec's variants and errors, init, .keras round trips."""

import keras
import numpy as np
import pytest

from zfkeras.nn.layers import FilterRMSNorm, LocalResponseNormalization, SwitchMaxPool
from zfkeras.nn.models import ZFNET, ConvSpec, PoolSpec, alexnet, build_model, zfnet, zfnet_small, zfnet_small_spec


def spatial(model, name):
    output = model.get_layer(name).output
    output = output[0] if isinstance(output, (list, tuple)) else output
    return tuple(output.shape[1:])


@pytest.fixture(scope="module")
def zf():
    return zfnet(seed=0)


def test_zfnet_feature_maps_match_fig3(zf):
    # Fig. 3: 110 -> 55 -> 26 -> 13 -> 13 -> 13 -> 6, with 96/256/384/384/256 maps.
    assert spatial(zf, "conv1") == (110, 110, 96)
    assert spatial(zf, "pool1") == (55, 55, 96)
    assert spatial(zf, "norm1") == (55, 55, 96)
    assert spatial(zf, "conv2") == (26, 26, 256)
    assert spatial(zf, "pool2") == (13, 13, 256)
    assert spatial(zf, "conv3") == (13, 13, 384)
    assert spatial(zf, "conv4") == (13, 13, 384)
    assert spatial(zf, "conv5") == (13, 13, 256)
    assert spatial(zf, "pool5") == (6, 6, 256)
    assert spatial(zf, "flatten") == (9216,)
    assert spatial(zf, "fc6") == (4096,) and spatial(zf, "fc7") == (4096,)
    assert spatial(zf, "predictions") == (1000,)
    conv1, conv2 = zf.get_layer("conv1"), zf.get_layer("conv2")
    assert conv1.kernel_size == (7, 7) and conv1.strides == (2, 2)
    assert conv2.kernel_size == (5, 5) and conv2.strides == (2, 2)
    assert zf.get_layer("drop6").rate == 0.5 and zf.get_layer("drop7").rate == 0.5
    for name in ("pool1", "pool2", "pool5"):
        layer = zf.get_layer(name)
        assert isinstance(layer, SwitchMaxPool) and layer.pool_size == (3, 3) and layer.strides == (2, 2)
    assert isinstance(zf.get_layer("norm2"), LocalResponseNormalization)


def test_zfnet_init_follows_the_paper(zf):
    # Weights N(0, 1e-2), biases 0, filter RMS capped at 0.1 on every conv layer.
    for name in ("conv1", "conv3", "fc6"):
        layer = zf.get_layer(name)
        kernel = layer.kernel.numpy()
        assert abs(kernel.std() - 0.01) < 0.001 and abs(kernel.mean()) < 0.001
        assert not np.any(layer.bias.numpy())
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        constraint = zf.get_layer(name).kernel_constraint
        assert isinstance(constraint, FilterRMSNorm) and constraint.radius == 0.1


def test_zfnet_parameters_by_hand_and_a_batch(zf):
    # weights + biases per layer, from Fig. 3's filter sizes and map counts
    expected = {
        "conv1": 7 * 7 * 3 * 96 + 96,
        "conv2": 5 * 5 * 96 * 256 + 256,
        "conv3": 3 * 3 * 256 * 384 + 384,
        "conv4": 3 * 3 * 384 * 384 + 384,
        "conv5": 3 * 3 * 384 * 256 + 256,
        "fc6": 6 * 6 * 256 * 4096 + 4096,
        "fc7": 4096 * 4096 + 4096,
        "predictions": 4096 * 1000 + 1000,
    }
    assert {name: zf.get_layer(name).count_params() for name in expected} == expected
    trainable = sum(int(np.prod(w.shape)) for w in zf.trainable_weights)
    assert trainable == sum(expected.values()) == 62_357_608
    assert zf.count_params() == trainable + 224 * 224 * 3  # + the non-trainable mean image
    # a batch: the output is the softmax of fc7's output through the last layer, worked out in numpy
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 224, 224, 3)).astype("float32")
    probs = zf(images).numpy()
    fc7 = keras.Model(zf.inputs[0], zf.get_layer("fc7").output)(images).numpy().astype("float64")
    kernel, bias = (w.numpy().astype("float64") for w in zf.get_layer("predictions").weights)
    logits = fc7 @ kernel + bias
    reference = np.exp(logits - logits.max(axis=1, keepdims=True))
    reference /= reference.sum(axis=1, keepdims=True)
    assert probs.shape == (2, 1000) and np.abs(fc7).max() > 0
    np.testing.assert_allclose(probs, reference, rtol=1e-4, atol=1e-9)


def test_alexnet_dense_layout():
    model = alexnet(num_classes=10)
    assert model.get_layer("conv1").kernel_size == (11, 11) and model.get_layer("conv1").strides == (4, 4)
    assert spatial(model, "conv1") == (55, 55, 96)
    assert spatial(model, "pool1") == (27, 27, 96)
    assert spatial(model, "conv2") == (27, 27, 256)
    assert spatial(model, "pool2") == (13, 13, 256)
    assert spatial(model, "pool5") == (6, 6, 256)
    assert model.get_layer("conv3").kernel.shape == (3, 3, 256, 384)  # dense: sees all 256 maps


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (64, 64, 3), (40, 56, 1)])
def test_zfnet_small_sizes_and_parameters_by_hand(shape):
    height, width, channels = shape
    model = zfnet_small(num_classes=7, input_shape=shape)
    # "same" convs keep the size, "same" 3x3/2 pools halve it rounding up, the "valid" pool5
    # gives (n - 3) // 2 + 1: 28 -> 14 -> 7 -> 3, 64 -> 32 -> 16 -> 7, 40x56 -> 20x28 -> 10x14 -> 4x6
    h1, w1 = -(-height // 2), -(-width // 2)
    h2, w2 = -(-h1 // 2), -(-w1 // 2)
    h5, w5 = (h2 - 3) // 2 + 1, (w2 - 3) // 2 + 1
    sizes = {
        "conv1": (height, width, 32),
        "pool1": (h1, w1, 32),
        "norm1": (h1, w1, 32),
        "conv2": (h1, w1, 64),
        "pool2": (h2, w2, 64),
        "conv3": (h2, w2, 96),
        "conv4": (h2, w2, 96),
        "conv5": (h2, w2, 64),
        "pool5": (h5, w5, 64),
        "flatten": (h5 * w5 * 64,),
        "fc6": (256,),
        "fc7": (256,),
        "predictions": (7,),
    }
    assert {name: spatial(model, name) for name in sizes} == sizes
    params = {
        "conv1": 3 * 3 * channels * 32 + 32,
        "conv2": 3 * 3 * 32 * 64 + 64,
        "conv3": 3 * 3 * 64 * 96 + 96,
        "conv4": 3 * 3 * 96 * 96 + 96,
        "conv5": 3 * 3 * 96 * 64 + 64,
        "fc6": h5 * w5 * 64 * 256 + 256,
        "fc7": 256 * 256 + 256,
        "predictions": 256 * 7 + 7,
    }
    assert {name: model.get_layer(name).count_params() for name in params} == params
    assert model.count_params() == sum(params.values()) + height * width * channels  # + the mean image


def test_table3_variants_are_one_line_changes():
    removed = build_model(ZFNET.without(3, 4).replace(num_classes=10, input_shape=(224, 224, 3)))
    names = {layer.name for layer in removed.layers}
    assert {"conv1", "conv2", "conv5"} <= names and not {"conv3", "conv4"} & names
    assert removed.get_layer("conv5").kernel.shape == (3, 3, 256, 256)
    no_fc = ZFNET.without(6, 7)
    assert no_fc.fc == (None, None)
    assert build_model(no_fc.replace(num_classes=10)).get_layer("predictions").kernel.shape == (9216, 10)
    wide = ZFNET.with_units(conv3=512, conv4=1024, conv5=512)
    assert [c.filters for c in wide.convs] == [96, 256, 512, 1024, 512]
    assert ZFNET.with_units(fc6=2048, fc7=2048).fc == (2048, 2048)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.replace(num_classes=1), "num_classes"),
        (lambda s: s.replace(input_shape=(28, 28)), "input_shape"),
        (lambda s: s.replace(fc=(4096, -1)), "fc7"),
        (lambda s: s.replace(dropout=1.5), "dropout"),
        (lambda s: s.replace(kernel_init="zeros"), "kernel_init"),
        (lambda s: s.replace(convs=(ConvSpec(0, 3),)), r"convs\[0\] \(conv1\)\.filters"),
        (lambda s: s.replace(convs=(ConvSpec(8, 3, padding="full"),)), r"conv1\)\.padding"),
        (lambda s: s.replace(convs=(ConvSpec(8, 3, pool=PoolSpec(3, 2, "wide")),)), r"conv1\)\.pool"),
        (lambda s: s.replace(input_shape=(8, 8, 3)), r"convs\[1\] \(conv2\): feature maps shrink"),
        (lambda s: s.without(9), "no layer 9"),
        (lambda s: s.with_units(conv9=3), "conv9: unknown layer"),
    ],
)
def test_invalid_specs_name_the_bad_field(change, message):
    with pytest.raises(ValueError, match=message):
        change(ZFNET)


def test_seeded_builds_are_identical():
    a, b = zfnet_small(seed=3), zfnet_small(seed=3)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_layer("conv2").kernel.numpy(), zfnet_small(seed=4).get_layer("conv2").kernel.numpy())


@pytest.mark.parametrize("which", ["zfnet_small", "zfnet"])
def test_keras_file_round_trip_gives_identical_outputs(tmp_path, which, zf):
    rng = np.random.default_rng(1)
    model = zf if which == "zfnet" else build_model(zfnet_small_spec(), seed=1)
    shape = model.inputs[0].shape[1:]
    model.get_layer("subtract_mean").set_mean(rng.uniform(0, 255, size=shape))
    x = rng.uniform(0, 255, size=(2, *shape)).astype("float32")
    path = tmp_path / f"{which}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
