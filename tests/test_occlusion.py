"""Occlusion maps against a naive one-image-at-a-time reference; batching and memory bounds; CLI."""

import json
import os
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

from zfkeras.analysis.occlusion import OcclusionEvaluator, occlude, occluder_grid, occlusion_map
from zfkeras.nn.models import ConvSpec, ModelSpec, PoolSpec, build_model
from zfkeras.nn.probe import KerasProbe, Probe


def tiny_model(input_shape=(20, 20, 1), classes=4, seed=4):
    """A small ZF-shaped net with lively (he_normal) weights, a non-zero mean image, and a
    classifier scaled down so probabilities are not saturated (occlusion moves them)."""
    spec = ModelSpec(
        name="tiny",
        input_shape=input_shape,
        num_classes=classes,
        convs=(ConvSpec(8, 3, 1, "same", pool=PoolSpec(3, 2, "same"), lrn=True), ConvSpec(12, 3, 1, "same")),
        fc=(16, 16),
        kernel_init="he_normal",
        filter_radius=None,
    )
    model = build_model(spec, seed=seed)
    mean = np.random.default_rng(seed).uniform(40, 200, input_shape).astype("float32")
    model.get_layer("subtract_mean").set_mean(mean)
    kernel = model.get_layer("predictions").kernel
    kernel.assign(kernel.numpy() * 0.05)
    return model


@pytest.fixture(scope="module")
def probe():
    return KerasProbe(tiny_model(), class_names=["a", "b", "c", "d"])


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).uniform(0, 255, (20, 20, 1)).astype("float32")


class CountingProbe(Probe):
    """Delegates to a probe and records the largest batch it is asked to run (the generic path)."""

    def __init__(self, inner):
        self.inner = inner
        self.input_shape, self.layer_names = inner.input_shape, inner.layer_names
        self.feature_names, self.class_names, self.mean_image = inner.feature_names, inner.class_names, inner.mean_image
        self.largest = 0
        self.images_seen = 0

    def _count(self, images):
        self.largest = max(self.largest, len(images))
        self.images_seen += len(images)

    def predict(self, images, batch_size=256):
        self._count(images)
        return self.inner.predict(images, batch_size)

    def features(self, images, layers=None, batch_size=256):
        self._count(images)
        return self.inner.features(images, layers, batch_size)

    def project(self, images, layer, channel, position="max", batch_size=64, rule="deconvnet"):
        return self.inner.project(images, layer, channel, position, batch_size, rule)


def naive_occlusion(probe, image, patch, stride, fill, layer, feature_map, label):
    """Reference: centres every ``stride`` px, square painted with a mask, model run one image at a time."""
    height, width, _ = image.shape
    rows, cols = np.arange(height), np.arange(width)
    activity, prob, top, corners = [], [], [], []
    for cy in range(0, height, stride):
        for cx in range(0, width, stride):
            y0, x0 = cy - patch // 2, cx - patch // 2
            inside = ((rows >= y0) & (rows < y0 + patch))[:, None] & ((cols >= x0) & (cols < x0 + patch))[None, :]
            occluded = np.where(inside[:, :, None], fill, image)[None].astype("float32")
            maps = probe.features(occluded, [layer], batch_size=1)[layer]
            probs = probe.predict(occluded, batch_size=1)[0]
            activity.append(maps[0, :, :, feature_map].sum())
            prob.append(probs[label])
            top.append(np.argmax(probs))
            corners.append((y0, x0))
    shape = (len(range(0, height, stride)), len(range(0, width, stride)))
    return (np.array(corners).reshape(shape + (2,)), np.reshape(activity, shape), np.reshape(prob, shape), np.reshape(top, shape))


@pytest.mark.parametrize("fill", [None, 128.0])
def test_occlusion_equals_naive_reference(probe, image, fill):
    result = occlusion_map(probe, image, patch=5, stride=3, fill=fill, label=0, batch_size=16)
    fill_pixels = probe.mean_image if fill is None else np.full(image.shape, fill, "float32")
    corners, activity, prob, top = naive_occlusion(probe, image, 5, 3, fill_pixels, "conv2", result.feature_map, 0)
    np.testing.assert_array_equal(result.positions, corners)
    assert result.positions.shape == (7, 7, 2) and result.positions[0, 0].tolist() == [-2, -2]
    np.testing.assert_allclose(result.feature_activity, activity, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.true_class_prob, prob, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result.top_label, top)
    # the occluder changes something, so the check above is not vacuous
    assert np.ptp(result.feature_activity) > 1 and np.ptp(result.true_class_prob) > 0.05
    if fill is None:
        assert len(np.unique(result.top_label)) > 1


def test_defaults_pick_strongest_map_top_class_and_its_projection(probe, image):
    import keras
    from test_deconv import assert_close, reference_projection

    result = occlusion_map(probe, image, patch=4, stride=4)
    model = probe.model
    # references: a plain Keras sub-model and the model itself, a loop for the strongest map, and
    # the autodiff deconvnet of tests/test_deconv.py for the projection
    clean = keras.Model(model.inputs, model.get_layer("conv2").output)(image[None]).numpy()[0]
    probs = model(image[None]).numpy()[0]
    peaks = [float(clean[..., c].max()) for c in range(clean.shape[-1])]
    strongest = max(range(len(peaks)), key=lambda c: (peaks[c], -c))
    assert result.layer == "conv2"  # the top conv layer
    assert result.feature_map == strongest and peaks[strongest] > sorted(peaks)[-2]  # no tie to break
    assert result.label == max(range(len(probs)), key=lambda c: probs[c])
    np.testing.assert_allclose(result.clean_activity, clean[..., strongest].sum(), rtol=1e-5)
    np.testing.assert_allclose(result.clean_probs, probs, rtol=1e-5, atol=1e-7)
    assert_close(result.projection[None], reference_projection(model, image[None], "conv2", [strongest], ["max"]))
    np.testing.assert_array_equal(result.image, image)


def identity_pixel_model(input_shape, mean, classes=3, seed=0, gains=(1.0,)):
    """conv1 map k = ReLU(gains[k] * (image - mean)) exactly (1x1 filters, no bias), then a softmax
    over the flattened maps: every occlusion map of it can be written down by hand. -> (model, W, b)."""
    spec = ModelSpec(
        name="pixels", input_shape=input_shape, num_classes=classes, convs=(ConvSpec(len(gains), 1, 1, "valid"),), fc=(None, None), filter_radius=None
    )
    model = build_model(spec, seed=seed)
    model.get_layer("conv1").set_weights([np.asarray(gains, "float32").reshape(1, 1, 1, -1), np.zeros(len(gains), "float32")])
    model.get_layer("subtract_mean").set_mean(mean)
    rng = np.random.default_rng(seed)
    weights = rng.normal(scale=2e-3, size=(int(np.prod(input_shape[:2])) * len(gains), classes)).astype("float32")
    bias = rng.normal(scale=0.1, size=classes).astype("float32")
    model.get_layer("predictions").set_weights([weights, bias])
    return model, weights, bias


def test_default_feature_map_has_the_highest_peak_not_the_largest_sum():
    # map 0 = ReLU(image - mean): one pixel 100 above the mean -> peak 100, sum 100;
    # map 1 = ReLU(mean - image): every other pixel 2 below -> peak 2, sum 2 * 79 = 158
    mean = np.full((8, 10, 1), 100.0, "float32")
    model, _, _ = identity_pixel_model((8, 10, 1), mean, gains=(1.0, -1.0))
    image = np.full((8, 10, 1), 98.0, "float32")
    image[3, 7] = 200.0
    result = occlusion_map(KerasProbe(model), image, patch=3, stride=4)
    assert result.feature_map == 0 and result.clean_activity == 100.0


@pytest.mark.parametrize("fill", [None, 200.0])
def test_non_square_occlusion_maps_by_hand(fill):
    """A 40x56 input, a 10 px square every 8 px: corners, activity and probabilities by hand."""
    rng = np.random.default_rng(3)
    mean = rng.uniform(60, 120, (40, 56, 1)).astype("float32")
    model, weights, bias = identity_pixel_model((40, 56, 1), mean)
    image = rng.uniform(0, 255, (40, 56, 1)).astype("float32")
    result = occlusion_map(KerasProbe(model), image, patch=10, stride=8, fill=fill, label=2, batch_size=8)
    # centres at rows 0, 8, ..., 32 and columns 0, 8, ..., 48; the square starts 5 px before
    assert result.positions.shape == (5, 7, 2)
    for i in range(5):
        for j in range(7):
            assert result.positions[i, j].tolist() == [8 * i - 5, 8 * j - 5]
    painted = mean if fill is None else np.full_like(image, fill)
    activity, prob, top = np.zeros((5, 7)), np.zeros((5, 7)), np.zeros((5, 7), int)
    for i in range(5):
        for j in range(7):
            occluded = image.copy()
            rows = slice(max(8 * i - 5, 0), min(8 * i + 5, 40))
            cols = slice(max(8 * j - 5, 0), min(8 * j + 5, 56))
            occluded[rows, cols] = painted[rows, cols]
            units = np.maximum(occluded - mean, 0)[..., 0]  # conv1, the only (and top) conv layer
            activity[i, j] = units.sum()
            logits = units.reshape(-1).astype("float64") @ weights + bias
            p = np.exp(logits - logits.max())
            p /= p.sum()
            prob[i, j], top[i, j] = p[2], int(np.argmax(p))
    assert result.layer == "conv1" and result.feature_map == 0
    np.testing.assert_allclose(result.feature_activity, activity, rtol=1e-5)
    np.testing.assert_allclose(result.true_class_prob, prob, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(result.top_label, top)
    assert np.ptp(activity) > 1000 and np.ptp(prob) > 0.01  # the square matters: the check is not vacuous


def test_colour_image_with_per_channel_fill_matches_reference():
    model = tiny_model(input_shape=(12, 12, 3), classes=3)
    probe = KerasProbe(model)
    image = np.random.default_rng(5).uniform(0, 255, (12, 12, 3)).astype("float32")
    fill = np.array([10.0, 120.0, 250.0], "float32")
    result = occlusion_map(probe, image, patch=4, stride=5, fill=fill, layer="conv1", feature_map=3, label=1)
    corners, activity, prob, top = naive_occlusion(probe, image, 4, 5, np.broadcast_to(fill, image.shape), "conv1", 3, 1)
    np.testing.assert_array_equal(result.positions, corners)
    np.testing.assert_allclose(result.feature_activity, activity, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.true_class_prob, prob, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result.top_label, top)


def test_batch_size_does_not_change_the_result(probe, image):
    # equal up to float32 round-off (oneDNN may sum in another order for another batch shape)
    results = [occlusion_map(probe, image, patch=6, stride=2, batch_size=b) for b in (1, 7, 1000)]
    for other in results[1:]:
        np.testing.assert_allclose(other.feature_activity, results[0].feature_activity, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(other.true_class_prob, results[0].true_class_prob, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(other.top_label, results[0].top_label)


def test_generic_probe_path_equals_fused_keras_path(probe, image):
    fused = occlusion_map(probe, image, patch=5, stride=2, batch_size=32)
    generic = occlusion_map(CountingProbe(probe), image, patch=5, stride=2, batch_size=32)
    np.testing.assert_allclose(generic.feature_activity, fused.feature_activity, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(generic.true_class_prob, fused.true_class_prob, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(generic.top_label, fused.top_label)


def test_model_sees_at_most_batch_size_images_at_once(probe, image):
    counting = CountingProbe(probe)
    done = []
    result = occlusion_map(counting, image, patch=3, stride=1, batch_size=9, progress=done.append)
    positions = result.positions.shape[0] * result.positions.shape[1]
    assert positions == 400
    assert counting.largest == 9
    assert sum(done) == positions and max(done) == 9
    # each image is run once for features and once for probabilities; +1 clean pass
    assert counting.images_seen == 2 * (positions + 1)


def _peak_bytes(function):
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_batch_size_not_positions():
    probe = KerasProbe(tiny_model(input_shape=(48, 48, 1)))
    image = np.random.default_rng(2).uniform(0, 255, (48, 48, 1)).astype("float32")
    batch = 8
    run = lambda stride: occlusion_map(probe, image, patch=8, stride=stride, batch_size=batch)  # noqa: E731
    run(4)  # trace the tf.functions first, so only the steady state is measured
    few, many = _peak_bytes(lambda: run(4)), _peak_bytes(lambda: run(1))  # 144 vs 2304 positions
    image_bytes = image.nbytes
    all_copies = 2304 * image_bytes  # 21 MB: what holding every occluded copy would cost
    assert many < 0.1 * all_copies
    assert many < few + 16 * batch * image_bytes


def test_occlude_clips_the_square_at_the_border():
    image = np.zeros((6, 7, 1), "float32")
    fill = np.ones((6, 7, 1), "float32")
    copies = occlude(image, fill, np.array([[-2, -1], [4, 5], [2, 2]]), 4)
    expected = np.zeros((3, 6, 7), "float32")
    expected[0, 0:2, 0:3] = 1  # rows -2..1, cols -1..2 -> the part inside
    expected[1, 4:6, 5:7] = 1  # rows 4..7, cols 5..8 -> clipped at bottom/right
    expected[2, 2:6, 2:6] = 1
    np.testing.assert_array_equal(copies[..., 0], expected)
    assert occluder_grid((6, 7, 1), 4, 3).tolist() == [[[-2, -2], [-2, 1], [-2, 4]], [[1, -2], [1, 1], [1, 4]]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patch": 0}, "patch must be a positive int"),
        ({"stride": 1.5}, "stride must be a positive int"),
        ({"label": 4}, r"label must be a class index in \[0, 4\)"),
        ({"layer": "fc6"}, "unknown layer 'fc6'; valid layers: conv1, conv2"),
        ({"feature_map": 12}, r"feature_map must be an int in \[0, 12\)"),
        ({"feature_map": 1.5}, r"feature_map must be an int in \[0, 12\)"),
        ({"fill": [1.0, 2.0]}, "fill must be None"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
    ],
)
def test_bad_arguments_raise_clear_errors(probe, image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        occlusion_map(probe, image, **kwargs)


def test_wrong_image_shape_is_rejected(probe):
    with pytest.raises(ValueError, match=r"images must have shape \[N, 20, 20, 1\]"):
        OcclusionEvaluator(probe, np.zeros((28, 28, 1)))


# ---- the command ---------------------------------------------------------------------------


def _save_png(path, array):
    import tensorflow as tf

    tf.io.write_file(str(path), tf.io.encode_png(np.asarray(array, "uint8")))


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    model = tiny_model(input_shape=(28, 28, 1), classes=4)
    path = directory / "model.keras"
    model.save(path)
    (directory / "zfkeras.json").write_text(json.dumps({"class_names": ["top", "trouser", "bag", "boot"]}))
    return str(path)


def test_command_writes_npz_and_png_per_image(tmp_path, keras_file):
    from pipelines.cli import main
    from pipelines.loading import open_model as load_probe
    from pipelines.loading import read_photo
    from zfkeras.data.transforms import fit_image

    rng = np.random.default_rng(0)
    _save_png(tmp_path / "grey.png", rng.integers(0, 255, (40, 30, 1)))
    _save_png(tmp_path / "colour.png", rng.integers(0, 255, (28, 28, 3)))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "occlusion",
            keras_file,
            str(tmp_path / "grey.png"),
            str(tmp_path / "colour.png"),
            "--patch",
            "7",
            "--stride",
            "4",
            "--label",
            "bag",
            "--batch-size",
            "5",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ["colour.npz", "colour.png", "grey.npz", "grey.png", "occlusion.json"]
    arrays = np.load(out / "grey.npz")
    assert arrays["positions"].shape == (7, 7, 2)
    for key in ("feature_activity", "true_class_prob", "top_label"):
        assert arrays[key].shape == (7, 7)
    # the saved numbers are the library's numbers for the same fitted image
    probe = load_probe(keras_file)
    assert probe.class_names == ["top", "trouser", "bag", "boot"]
    image = fit_image(read_photo(str(tmp_path / "grey.png")), (28, 28, 1)).pixels
    np.testing.assert_array_equal(arrays["image"], image)
    expected = occlusion_map(probe, image, label=2, patch=7, stride=4)
    np.testing.assert_allclose(arrays["true_class_prob"], expected.true_class_prob, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["feature_activity"], expected.feature_activity, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(arrays["projection"], expected.projection, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [(["--label", "socks"], "socks"), (["--label", "9"], "9"), (["--fill", "300"], "300"), (["--layer", "conv9"], "conv9"), (["--stride", "0"], "0")],
)
def test_command_rejects_bad_options_in_one_line(tmp_path, keras_file, args, message):
    from pipelines.cli import main

    _save_png(tmp_path / "a.png", np.zeros((28, 28, 1)))
    result = CliRunner().invoke(main, ["occlusion", keras_file, str(tmp_path / "a.png"), "--out", str(tmp_path / "o")] + args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o" / "a.npz").exists()


def test_command_runs_on_full_224_zfnet(tmp_path):
    """The real ZFNet (random weights): 2x2 grid of 112-px squares, batch 2, a colour photo of any size."""
    import keras

    from pipelines.cli import main
    from zfkeras.nn.models import zfnet

    path = tmp_path / "zfnet.keras"
    keras.utils.set_random_seed(0)
    zfnet(num_classes=5).save(path)
    _save_png(tmp_path / "photo.png", np.random.default_rng(0).integers(0, 255, (150, 200, 3)))
    result = CliRunner().invoke(
        main,
        [
            "occlusion",
            str(path),
            str(tmp_path / "photo.png"),
            "--patch",
            "112",
            "--stride",
            "112",
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    arrays = np.load(tmp_path / "out" / "photo.npz")
    # centres 0 and 112 on each axis, the square starting 56 px before
    assert arrays["positions"].tolist() == [[[-56, -56], [-56, 56]], [[56, -56], [56, 56]]]
    # the 150x200 photo: smaller side to 256 (so 256x341), centre 256 from column 42, then centre 224
    import tensorflow as tf

    photo = tf.io.decode_png(tf.io.read_file(str(tmp_path / "photo.png"))).numpy()
    resized = tf.image.resize(photo, (256, 341), method="bilinear", antialias=True).numpy()
    np.testing.assert_allclose(arrays["image"], resized[16:240, 42 + 16 : 42 + 240], atol=1e-3)
    # each map value: the model run here on the photo with rows 0-55 or 56-167 (and columns alike)
    # painted with the mean image (zeros before training), conv5's map summed; the map is conv5's
    # with the highest peak
    model = keras.saving.load_model(path, compile=False)
    conv5 = keras.Model(model.inputs[0], [model.get_layer("conv5").output, model.output])
    copies = [arrays["image"]]
    for rows in (slice(0, 56), slice(56, 168)):
        for cols in (slice(0, 56), slice(56, 168)):
            copy = arrays["image"].copy()
            copy[rows, cols] = 0.0
            copies.append(copy)
    maps, probs = (v.numpy() for v in conv5(np.stack(copies)))
    strongest = int(np.argmax(maps[0].reshape(-1, maps.shape[-1]).max(axis=0)))
    assert int(arrays["feature_map"]) == strongest
    activity = maps[1:, :, :, strongest].sum(axis=(1, 2)).reshape(2, 2)
    np.testing.assert_allclose(arrays["feature_activity"], activity, rtol=1e-4)
    assert np.ptp(activity) > 1e-3 * np.abs(activity).max()  # the quarters differ: not a vacuous check
    label = int(arrays["label"])
    np.testing.assert_allclose(arrays["true_class_prob"], probs[1:, label].reshape(2, 2), rtol=1e-4, atol=1e-7)
    summary = json.load(open(tmp_path / "out" / "occlusion.json"))["images"]["photo"]
    np.testing.assert_allclose(summary["min_activity"], activity.min(), rtol=1e-4)
    np.testing.assert_allclose(summary["clean_activity"], maps[0, :, :, strongest].sum(), rtol=1e-4)


def test_command_on_an_export_directory_matches_the_keras_file(tmp_path, keras_file):
    """Same numbers through a SavedModel export (the generic two-call probe path)."""
    import keras

    from pipelines.cli import main
    from zfkeras.export import export_model

    export_model(keras.saving.load_model(keras_file, compile=False), tmp_path / "export", class_names=["top", "trouser", "bag", "boot"])
    _save_png(tmp_path / "a.png", np.random.default_rng(4).integers(0, 255, (28, 28, 1)))
    for model, out in ((keras_file, "from_keras"), (str(tmp_path / "export"), "from_export")):
        args = ["occlusion", model, str(tmp_path / "a.png"), "--patch", "9", "--stride", "5", "--out", str(tmp_path / out)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    a, b = np.load(tmp_path / "from_keras" / "a.npz"), np.load(tmp_path / "from_export" / "a.npz")
    assert int(a["label"]) == int(b["label"]) and int(a["feature_map"]) == int(b["feature_map"])
    for key in ("feature_activity", "true_class_prob", "projection"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(b["top_label"], a["top_label"])


def test_box_sensitivity_by_hand():
    from zfkeras.analysis.occlusion import OcclusionResult, box_sensitivity, occluder_grid

    positions = occluder_grid((8, 8, 1), 2, 2)  # centres on rows/cols 0, 2, 4, 6; corners at centre - 1
    probs = np.full((4, 4), 0.9, "float32")
    probs[1:3, 1:3] = [[0.1, 0.3], [0.5, 0.7]]  # the squares centred on (2..4, 2..4) hurt
    probs[0, 3] = 1.0  # a gain: not counted in the share
    result = OcclusionResult(
        image=np.zeros((8, 8, 1)),
        positions=positions,
        feature_activity=np.zeros((4, 4)),
        true_class_prob=probs,
        top_label=np.zeros((4, 4), int),
        projection=np.zeros((8, 8, 1)),
        layer="conv1",
        feature_map=0,
        label=0,
        patch=2,
        stride=2,
        clean_activity=0.0,
        clean_probs=np.array([0.9, 0.1]),
    )
    found = box_sensitivity(result, (2, 2, 5, 5))  # x0, y0, x1, y1: centres 2 and 4 on both axes are inside
    assert found.object_drop == pytest.approx(np.mean([0.8, 0.6, 0.4, 0.2]))
    # squares not touching the box (corner + 2 <= 2 or corner >= 5): the 12 cells whose row or column
    # centre is 0 or 6, all at 0.9 (no drop) but cell (0, 3) at 1.0 (a gain of 0.1)
    assert found.background_drop == pytest.approx(-0.1 / 12)
    assert found.share_inside == pytest.approx(1.0) and found.box_share == pytest.approx(4 / 16)
    with pytest.raises(ValueError, match="box must be"):
        box_sensitivity(result, (5, 2, 2, 5))
