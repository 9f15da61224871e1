"""The colour 224 path end to end on real files (the CI-sized version of README's Tux Paint run):
a folder of generated 300x250 JPEGs -> ``zf train --arch zfnet`` at 224x224x3 -> export ->
``zf visualize`` and ``zf occlusion`` on the export. Narrow layers keep it short; the layer
geometry (kernels, strides, pools), and so every receptive field, is ZFNet's."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

import zfkeras  # noqa: F401  (registers the custom layers)
from pipelines.cli import main
from pipelines.loading import read_photo
from zfkeras import data
from zfkeras.data.transforms import fit_image

NARROW = "conv1=16,conv2=32,conv3=32,conv4=32,conv5=32,fc6=64,fc7=64"
# ZFNet (paper Fig. 3): conv1 7x7/2, pool 3/2, conv2 5x5/2, pool 3/2, conv3-5 3x3/1. Receptive field
# size r and jump j by hand: r += (k - 1) * j, then j *= stride, layer by layer.
FIELDS = {"conv1": (7, 2), "conv2": (27, 8), "conv3": (75, 16), "conv4": (107, 16), "conv5": (139, 16)}


def zf(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """30 colour JPEGs (300x250, every third 250x300) in 3 class folders; a 1-epoch zfnet run at 224, exported."""
    root = tmp_path_factory.mktemp("real_size")
    photos = root / "photos"
    rng = np.random.default_rng(0)
    for i in range(30):
        label = i % 3
        shape = (250, 300) if i % 3 else (300, 250)
        image = rng.integers(0, 80, (*shape, 3)).astype(np.uint8)
        image[..., label] += 150  # the class is the dominant colour
        os.makedirs(photos / f"class{label}", exist_ok=True)
        Image.fromarray(image).save(photos / f"class{label}" / f"{i:02d}.jpg", quality=90)
    zf(
        "train",
        "--arch",
        "zfnet",
        "--units",
        NARROW,
        "--kernel-init",
        "he_normal",
        "--data",
        f"folder:{photos}",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--val-split",
        "0",
        "--log-projections",
        "0",
        "--no-progress",
        "--out",
        root / "run",
        "--export",
        root / "export",
    )
    return {"root": root, "photos": photos, "export": root / "export"}


def test_export_takes_224_colour_and_serve_equals_keras(run):
    meta = json.load(open(run["export"] / "zfkeras.json"))
    assert meta["class_names"] == ["class0", "class1", "class2"]
    test = data.load_source(f"folder:{run['photos']}", "test")
    images, _ = next(iter(data.eval_dataset(test, 224, 3, 6)))
    assert images.shape == (6, 224, 224, 3)
    exported = tf.saved_model.load(str(run["export"]))  # kept: serve needs its variables alive
    served = exported.serve(images).numpy()
    model = keras.saving.load_model(run["export"] / "model.keras", compile=False)
    np.testing.assert_allclose(served, model(images, training=False).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(served.sum(axis=1), 1, atol=1e-5)  # class probabilities


def test_visualize_fields_match_zfnet_geometry(run):
    out = run["root"] / "visualize"
    zf(
        "visualize",
        run["export"],
        "--data",
        f"folder:{run['photos']}",
        "--layers",
        "conv1,conv5",
        "--maps",
        "0,1",
        "--k",
        "2",
        "--images",
        "6",
        "--out",
        out,
    )
    summary = json.load(open(out / "summary.json"))
    assert summary["images"] == 6
    for layer in ("conv1", "conv5"):
        size, jump = FIELDS[layer]
        assert summary["fields"][layer]["size"] == [size, size] and summary["fields"][layer]["jump"] == [jump, jump]
        assert Image.open(out / f"{layer}.png").size[0] > 0
    top = json.load(open(out / "topk.json"))
    shapes = json.load(open(run["export"] / "zfkeras.json"))["feature_shapes"]
    assert shapes["conv1"][:2] == [110, 110] and shapes["conv5"][:2] == [13, 13]  # ZFNet's maps at 224
    for layer in ("conv1", "conv5"):
        for entries in (top[layer]["0"], top[layer]["1"]):
            assert len(entries) == 2 and len({e["image"] for e in entries}) == 2  # k distinct images
            assert all(0 <= e["image"] < 6 and 0 <= e["y"] < shapes[layer][0] and 0 <= e["x"] < shapes[layer][1] for e in entries)
            assert entries[0]["value"] >= entries[1]["value"]  # strongest first


def test_occlusion_grid_and_clean_probabilities(run):
    photo = str(run["photos"] / "class1" / "01.jpg")
    out = run["root"] / "occlusion"
    zf("occlusion", run["export"], photo, "--patch", "56", "--stride", "56", "--out", out)
    result = np.load(out / "01.npz")
    assert result["true_class_prob"].shape == result["feature_activity"].shape == (4, 4)  # centres 0, 56, 112, 168
    corners = [c - 28 for c in (0, 56, 112, 168)]  # top-left corners of 56 px squares centred there
    assert sorted(set(result["positions"][..., 0].ravel().tolist())) == corners
    assert sorted(set(result["positions"][..., 1].ravel().tolist())) == corners
    assert result["image"].shape == (224, 224, 3)
    assert ((0 <= result["true_class_prob"]) & (result["true_class_prob"] <= 1)).all()
    x = fit_image(read_photo(photo), (224, 224, 3)).pixels[None]
    exported = tf.saved_model.load(str(run["export"]))
    served = exported.serve(x).numpy()[0]
    np.testing.assert_allclose(result["clean_probs"], served, rtol=1e-4, atol=1e-6)
