"""Keras applications by name (issue 12): preprocessing inside, weights files, class names, and
`zf project`, `zf visualize`, `zf occlusion`, `zf export` on ``keras:NAME`` models.

Offline there are no ImageNet weights: the CLI tests use a ResNet50 built at 64x64 with random
weights (and random batch-norm statistics), saved to a weights file and given with ``--weights``.
Each command's numbers are checked against the same weights used directly through
zfkeras.probe.KerasProbe and hand-made references (brute-force occlusion, maxima over images).
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.loading import read_photo
from zfkeras.data.transforms import fit_image
from zfkeras.nn.applications import ImageNetPreprocessing, build, imagenet_class_names, parse_name
from zfkeras.nn.probe import KerasProbe

SIZE = 64
MODEL = f"keras:resnet50@{SIZE}x{SIZE}"


def zf(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A ResNet50 at 64x64 with random weights and batch-norm statistics, saved as a weights file."""
    keras.utils.set_random_seed(0)
    model = build("resnet50", weights=None, input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.3, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    path = tmp_path_factory.mktemp("weights") / "resnet50-64.weights.h5"
    model.save_weights(str(path))
    return path


@pytest.fixture(scope="module")
def probe(weights):
    return KerasProbe(build("resnet50", weights=str(weights), input_shape=(SIZE, SIZE, 3)), class_names=imagenet_class_names())


def test_names_and_errors():
    assert parse_name("keras:resnet50") == ("resnet50", None)
    assert parse_name("keras:VGG16@40x56") == ("vgg16", (40, 56, 3))
    with pytest.raises(ValueError, match="unknown Keras application 'resnet9'; known: vgg16, vgg19, resnet50"):
        parse_name("keras:resnet9")
    with pytest.raises(ValueError, match="must be HxW"):
        parse_name("keras:vgg16@big")
    with pytest.raises(ValueError, match="nope.h5: no such weights file"):
        build("vgg16", weights="nope.h5")


def test_missing_imagenet_weights_name_the_option(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty cache: Keras must download, which fails offline
    result = zf("project", "keras:vgg16", "chelsea", "--out", tmp_path / "p")
    if result.exit_code == 0:
        pytest.skip("this machine could download the ImageNet weights")
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert "no ImageNet weights for vgg16" in last and "--weights FILE" in last and "Traceback" not in result.output
    assert result.stdout == ""  # Keras' "Downloading data from ..." is progress: on stderr
    assert not (tmp_path / "p").exists()
    result = zf("project", "keras:vgg16", "chelsea", "--weights", tmp_path / "missing.h5", "--out", tmp_path / "p")
    assert result.exit_code == 2 and "missing.h5: no such weights file (--weights takes" in result.output


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_preprocessing_layer_is_keras_preprocess_input_and_its_adjoint(mode):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (2, 5, 7, 3)).astype("float32")
    layer = ImageNetPreprocessing(mode)
    expected = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode=mode)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-4)
    # adjoint of the linear part: <L x, y> == <x, L^T y> with L x = layer(x) - layer(0)
    y = rng.normal(size=x.shape).astype("float32")
    linear = np.asarray(layer(x)) - np.asarray(layer(np.zeros_like(x)))
    np.testing.assert_allclose(np.sum(linear * y), np.sum(x * np.asarray(layer.pixelwise_adjoint(y))), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(layer(np.broadcast_to(layer.mean_pixel, (1, 1, 1, 3)))), 0, atol=1e-4)
    assert ImageNetPreprocessing.from_config(layer.get_config()).mode == mode


def test_class_names_offline():
    names = imagenet_class_names()
    if names is None:
        pytest.skip("neither Keras' cached class index nor Debian's opencv-doc list is on this machine")
    assert len(names) == 1000 and names[0] == "tench" and names[207] == "golden retriever" and names[999] == "toilet tissue"


def test_probe_of_an_application(probe, weights):
    model = probe.model
    assert probe.input_shape == (SIZE, SIZE, 3)
    assert probe.layer_names == probe.deconvnet.layer_names and probe.layer_names[-1] == "conv5_block3_out"
    assert "conv2_block1_3_conv" not in probe.layer_names  # rectified only after the Add: conv2_block1_out
    assert probe.feature_names == probe.layer_names  # no hidden ReLU Dense layer in ResNet50
    np.testing.assert_allclose(probe.mean_image[0, 0], [123.68, 116.779, 103.939], rtol=1e-6)
    x = np.random.default_rng(2).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    features = probe.features(x, ["conv2_block1_2_conv", "conv4_block1_out"])
    reference = keras.Model(model.inputs[0], [model.get_layer("conv2_block1_2_relu").output, model.get_layer("conv4_block1_out").output])(x)
    for got, want in zip((features["conv2_block1_2_conv"], features["conv4_block1_out"]), reference):
        want = want.numpy()  # another batch size sums in another order: float rounding of deep maps
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(probe.predict(x), model(x).numpy(), rtol=1e-5, atol=1e-7)
    again = build("resnet50", weights=str(weights), input_shape=(SIZE, SIZE, 3))  # the file holds the weights
    np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-7)


def test_zf_project_on_resnet50(probe, weights, tmp_path):
    out = tmp_path / "p"
    layers = ["conv2_block1_2_conv", "conv4_block1_out"]
    ok(zf("project", MODEL, "chelsea", "coffee", "--weights", weights, "--layers", ",".join(layers), "--top", "2", "--out", out))
    arrays = np.load(out / "projection.npz")
    images = np.stack([fit_image(read_photo(name), probe.input_shape).pixels for name in ("chelsea", "coffee")])
    np.testing.assert_array_equal(arrays["images"], images)
    features = probe.features(images, layers)
    for layer in layers:
        strongest = np.argsort(-features[layer].max(axis=(1, 2)), axis=1, kind="stable")[:, :2]
        np.testing.assert_array_equal(arrays[f"{layer}_maps"], strongest)
        expected = probe.project(np.repeat(images, 2, 0), layer, strongest.reshape(-1)).reshape(2, 2, *images.shape[1:])
        got = arrays[f"{layer}_projections"]
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max() and np.abs(expected).max() > 0
    assert (out / "projection.png").exists()


def photo_folder(root):
    """folder:ROOT with the scikit-image photos, two classes."""
    from skimage import io

    for name, label in (("chelsea", "cat"), ("coffee", "cup"), ("astronaut", "person"), ("rocket", "cup")):
        os.makedirs(root / label, exist_ok=True)
        io.imsave(str(root / label / f"{name}.png"), read_photo(name), check_contrast=False)
    return f"folder:{root}"


def test_zf_visualize_on_resnet50(probe, weights, tmp_path):
    from pipelines.loading import image_batches

    data = photo_folder(tmp_path / "photos")
    layers = ["conv2_block1_2_conv", "conv3_block1_out"]
    out = tmp_path / "vis"
    ok(
        zf(
            "visualize",
            MODEL,
            "--weights",
            weights,
            "--data",
            data,
            "--split",
            "train",
            "--layers",
            ",".join(layers),
            "--maps",
            "0,5",
            "--k",
            "2",
            "--batch-size",
            "4",
            "--out",
            out,
        )
    )
    summary = json.load(open(out / "summary.json"))
    # conv1 7x7/2 after 3 padded pixels (size 7, jump 2, offset -3), pool 3x3/2 after 1 (11, 4, -5),
    # conv2_block1_1 1x1, conv2_block1_2 3x3 "same" (19, 4, -9)
    assert summary["fields"]["conv2_block1_2_conv"] == {"size": [19, 19], "jump": [4, 4], "offset": [-9, -9]}
    images = np.concatenate(list(image_batches(data, "train", probe.input_shape, 4)))  # a folder holds out test images
    assert summary["images"] == len(images) >= 2
    features = probe.features(images, layers)
    top = json.load(open(out / "topk.json"))
    for layer in layers:
        assert (out / f"{layer}.png").exists()
        for channel in (0, 5):
            peaks = features[layer][..., channel].max(axis=(1, 2))  # strongest unit per image
            entries = top[layer][str(channel)]
            values = [entry["value"] for entry in entries]
            np.testing.assert_allclose(values, np.sort(peaks)[::-1][:2], rtol=1e-5)
            assert [entry["image"] for entry in entries] == list(np.argsort(-peaks, kind="stable")[:2])


def test_zf_occlusion_on_resnet50(probe, weights, tmp_path):
    out = tmp_path / "occ"
    ok(zf("occlusion", MODEL, "--weights", weights, "chelsea", "--patch", "24", "--stride", "16", "--layer", "conv4_block1_out", "--out", out))
    result = np.load(out / "chelsea.npz")
    image = fit_image(read_photo("chelsea"), probe.input_shape).pixels
    np.testing.assert_array_equal(result["image"], image)
    assert result["feature_activity"].shape == (4, 4)
    # brute force: paint the ImageNet mean pixel (0 after preprocessing) on each square, run the model
    copies = []
    for y0, x0 in result["positions"].reshape(-1, 2):
        copy = image.copy()
        copy[max(y0, 0) : y0 + 24, max(x0, 0) : x0 + 24] = probe.mean_image[0, 0]
        copies.append(copy)
    copies = np.stack(copies)
    maps = probe.features(copies, ["conv4_block1_out"])["conv4_block1_out"][..., int(result["feature_map"])]
    np.testing.assert_allclose(result["feature_activity"].ravel(), maps.sum(axis=(1, 2)), rtol=1e-4)
    probs = probe.predict(copies)[:, int(result["label"])]
    np.testing.assert_allclose(result["true_class_prob"].ravel(), probs, rtol=1e-4, atol=1e-7)
    assert str(result["class_names"][0]) == probe.class_names[0]
    expected = probe.project(image[None], "conv4_block1_out", int(result["feature_map"]))[0]
    np.testing.assert_allclose(result["projection"], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_zf_export_of_an_application(tmp_path):
    out = tmp_path / "vgg16"
    ok(zf("export", "keras:vgg16@32x32", "--weights", "none", "--out", out))
    meta = json.load(open(out / "zfkeras.json"))
    assert meta["layer_names"][0] == "block1_conv1" and meta["layer_names"][-1] == "block5_conv3" and len(meta["layer_names"]) == 13
    assert meta["feature_names"][-2:] == ["fc1", "fc2"] and len(meta["class_names"]) == 1000
    import zfkeras  # noqa: F401  (registers ImageNetPreprocessing)
    from zfkeras import Deconvnet

    model = keras.saving.load_model(str(out / "model.keras"), compile=False)
    saved = tf.saved_model.load(str(out))
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(saved.serve(tf.constant(x)).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.load(out / "mean.npy")[0, 0], [123.68, 116.779, 103.939], rtol=1e-6)
    deconv = Deconvnet(model)
    for layer in ("block2_conv2", "block5_conv3"):
        channel = np.array([1, 7], "int32")
        position = np.array([[-1, -1], [1, 0]], "int32")
        got = getattr(saved, f"project_{layer}")(tf.constant(x), tf.constant(channel), tf.constant(position)).numpy()
        expected = deconv.project(x, layer, channel, position)
        assert np.abs(got - expected).max() <= 1e-5 * max(np.abs(expected).max(), 1e-30)
