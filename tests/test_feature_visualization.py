"""Feature visualization by optimization (zfkeras.analysis.feature_visualization.maximize_units).

The references are independent of the module: the unit's activations come from a plain Keras
sub-model of the layer (not the deconvnet walk the module uses), the centre region is sliced by
hand, and the data images' top-9 are found by brute force over 2,000 Fashion-MNIST test images.
"""

import os

import keras
import numpy as np
import pytest

from zfkeras import data
from zfkeras.analysis.feature_visualization import maximize_units
from zfkeras.export import open_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "saved_models", "zfnet-fashion-mnist", "model.keras")


@pytest.fixture(scope="module")
def shipped():
    return open_model(SHIPPED).keras_model


def conv5_centre_means(model, images):
    """``[N, 64]``: each conv5 unit's mean over the centre 5x5 of its 7x7 map (rows, cols 1..5)."""
    layer = keras.Model(model.inputs, model.get_layer("conv5").output)  # conv5's output is rectified (built-in ReLU)
    maps = layer.predict(images, batch_size=500, verbose=0)
    assert maps.shape[1:] == (7, 7, 64)
    return maps[:, 1:6, 1:6, :].mean(axis=(1, 2))


def test_optimised_images_beat_each_units_top9_data_images_and_the_other_units(shipped):
    source = data.load_source("fashion_mnist", "test")
    images = np.concatenate([x for x, _ in data.eval_dataset(source, 28, 1, 500).take(4).as_numpy_iterator()])
    assert images.shape == (2000, 28, 28, 1)
    on_data = conv5_centre_means(shipped, images)
    units = list(range(0, 64, 4))  # 16 units across the layer, several silent on the grey start

    optimised = maximize_units(shipped, "conv5", units, seed=0)

    assert optimised.shape == (16, 28, 28, 1) and optimised.dtype == np.float32
    assert optimised.min() >= 0 and optimised.max() <= 255 and optimised.std() > 20  # raw pixels, not a flat grey
    on_optimised = conv5_centre_means(shipped, optimised)
    for row, unit in enumerate(units):
        top9 = np.sort(on_data[:, unit])[-9:]
        assert on_optimised[row, unit] > top9.max(), (unit, on_optimised[row, unit], top9)
        rank = int((on_optimised[row] > on_optimised[row, unit]).sum())  # units of conv5 this image drives harder
        assert rank < 0.1 * 64, (unit, rank)


def test_same_seed_same_images_another_seed_others_and_batching_changes_nothing(shipped):
    first = maximize_units(shipped, "conv5", [3, 5, 7], steps=16, seed=0)
    again = maximize_units(shipped, "conv5", [3, 5, 7], steps=16, seed=0)
    other = maximize_units(shipped, "conv5", [3, 5, 7], steps=16, seed=1)
    one_by_one = maximize_units(shipped, "conv5", [3, 5, 7], steps=16, seed=0, batch_size=1)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 10
    # Each unit's start and transformations come from (seed, unit), not from its batch neighbours;
    # only the convolutions' float rounding differs between batch sizes.
    np.testing.assert_allclose(first, one_by_one, atol=1e-2)
    assert not np.allclose(first[0], first[1], atol=10)


def test_bad_layer_unit_and_settings_are_named(shipped):
    cases = [
        (dict(layer="conv9"), r"^unknown layer 'conv9'; projectable layers: conv1, conv2, conv3, conv4, conv5$"),
        (dict(layer="predictions"), r"^unknown layer 'predictions'; projectable layers: conv1, conv2, conv3, conv4, conv5$"),  # scores: no map
        (dict(units=[3, 64]), r"^unit 64 out of range: layer 'conv5' has 64 units \(0\.\.63\)$"),
        (dict(units=[-1]), r"^unit -1 out of range: layer 'conv5' has 64 units \(0\.\.63\)$"),
        (dict(units=[]), r"^units must be a non-empty list of channel indices of layer 'conv5' \(0\.\.63\), got \[\]$"),
        (dict(units=[1.5]), r"^units must be a non-empty list"),
        (dict(size=32), r"^size 32x32 is not accepted: the model takes 28x28 images$"),
        (dict(steps=0), r"^steps must be a positive int, got 0$"),
        (dict(batch_size=2.0), r"^batch_size must be a positive int, got 2\.0$"),
        (dict(learning_rate=-1), r"^learning_rate must be a positive number, got -1$"),
        (dict(jitter=-1), r"^jitter must be a non-negative int \(pixels\), got -1$"),
        (dict(scales=[]), r"^scales must be a non-empty list of positive factors, got \[\]$"),
        (dict(scales=[1.0, 0]), r"^scales must be a non-empty list of positive factors"),
        (dict(angles="ten"), r"^angles must be a non-empty list of angles in degrees, got 'ten'$"),
        (dict(seed=-1), r"^seed must be a non-negative int, got -1$"),
    ]
    for change, message in cases:
        arguments = {**dict(model=shipped, layer="conv5", units=[0], steps=1), **change}
        with pytest.raises(ValueError, match=message):
            maximize_units(**arguments)
    assert maximize_units(shipped, "conv5", 7, size=(28, 28), steps=1).shape == (1, 28, 28, 1)  # one int unit, the model's own size


def small_dag():
    """A non-square DAG (24x20x3) with the three kinds of map: a ReLU layer after BatchNormalization
    ("c1"), a DepthwiseConv2D with its own ReLU ("dw"), a linear conv ("c3"); random weights."""
    keras.utils.set_random_seed(0)
    x = keras.Input((24, 20, 3))
    a = keras.layers.ReLU(name="r1")(keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)))
    b = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(a)
    c = keras.layers.MaxPooling2D(2, name="pool")(keras.layers.Add(name="add")([a, b]))
    return keras.Model(x, keras.layers.Conv2D(4, 3, padding="same", name="c3")(c))


def test_silent_units_start_and_every_kind_of_map_is_climbed():
    model = small_dag()
    grey = np.full((1, 24, 20, 3), 127.5, "float32")

    def output(name, images):
        return keras.Model(model.inputs, model.get_layer(name).output).predict(images, verbose=0)

    def centre(maps):  # rows 6..17, cols 5..14 of 24x20; rows 3..8, cols 2..7 of 12x10
        h, w = maps.shape[1:3]
        return maps[:, h // 4 : h - h // 4, w // 4 : w - w // 4]

    # Make r1's unit 0 silent by 30 over the centre of a grey image (BatchNormalization's offset) and dw's unit on
    # r1's liveliest channel likewise (its bias): their objectives' gradients are zero at the start.
    beta = model.get_layer("bn").beta
    beta.assign(beta.numpy() - np.eye(8)[0] * (centre(output("bn", grey))[..., 0].max() + 30))
    live = int(centre(output("r1", grey)).max(axis=(0, 1, 2)).argmax())
    dw = model.get_layer("dw")
    pre = keras.ops.depthwise_conv(output("r1", grey), dw.kernel, 1, "same").numpy() + dw.bias.numpy()
    dw.bias.assign(dw.bias.numpy() - np.eye(8)[live] * (centre(pre)[..., live].max() + 30))

    for layer, unit, name in (("c1", 0, "r1"), ("dw", live, "dw"), ("c3", 2, "c3")):
        start = maximize_units(model, layer, [unit], steps=1)
        optimised = maximize_units(model, layer, [unit], steps=60)
        assert optimised.shape == (1, 24, 20, 3)
        before, after = (float(centre(output(name, images))[..., unit].mean()) for images in (start, optimised))
        if name != "c3":
            assert before == 0, (layer, before)
        assert after > before + 1, (layer, before, after)


def test_zfnet_224_batched_raises_each_units_objective():
    from zfkeras.nn.models import build_model, zfnet_spec

    # Random he_normal weights keep ZFNet's conv5 alive (the default init leaves it near zero).
    model = build_model(zfnet_spec(10).replace(kernel_init="he_normal"), seed=0)
    layer = keras.Model(model.inputs, model.get_layer("conv5").output)
    units, calls = [0, 2, 3], []

    def centre_means(images):
        maps = layer.predict(images, verbose=0)
        assert maps.shape[1:] == (13, 13, 256)
        return maps[:, 3:10, 3:10, :].mean(axis=(1, 2))[np.arange(len(units)), units]

    start = maximize_units(model, "conv5", units, steps=1, batch_size=2)
    optimised = maximize_units(model, "conv5", units, steps=10, batch_size=2, progress=lambda done, total: calls.append((done, total)))

    assert optimised.shape == (3, 224, 224, 3) and optimised.min() >= 0 and optimised.max() <= 255
    assert calls == [(i, 20) for i in range(1, 21)]  # two batches of 10 steps
    before, after = centre_means(start), centre_means(optimised)
    assert np.all(after > before + 0.5), (before, after)
    colour = optimised - optimised.mean(axis=3, keepdims=True)
    assert np.abs(colour).mean() > 1  # the decorrelated colours give colour images, not grey ones


def test_benchmark_smoke_mode_reports_seconds_per_unit_and_ratio():
    from benchmarks import feature_visualization

    report = feature_visualization.main(["--smoke=1"])
    for row in report.values():
        assert row["units"] == 2 and row["steps"] == 2
        assert row["seconds_per_unit_cpu"] > 0 and row["pass_seconds_per_image_cpu"] > 0
        assert row["ratio_cpu"] == pytest.approx(row["seconds_per_unit_cpu"] / row["pass_seconds_per_image_cpu"])
