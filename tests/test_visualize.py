"""``zf visualize`` end to end (issue 4, must-show 1-2).

The data are IDX files written here with native 28x28 images (the centre of 32x32 blobby images),
so the evaluation view is the image itself: the reference below recomputes every activation from
the raw file bytes with a plain Keras sub-model of the saved model, sharing no code with the scan.
"""

import gzip
import json
import os
import struct

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import zfkeras  # noqa: F401
from pipelines.commands.visualize import visualize
from zfkeras.nn.models import build_model, zfnet, zfnet_small_spec


def write_idx(directory, images, labels, split="t10k"):
    """MNIST-format files ``<split>-images-idx3-ubyte.gz`` / ``<split>-labels-idx1-ubyte.gz``."""
    os.makedirs(directory, exist_ok=True)
    images = np.asarray(images, "uint8")
    with gzip.open(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">I", 0x803) + struct.pack(">3I", *images.shape) + images.tobytes())
    with gzip.open(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">I", 0x801) + struct.pack(">I", len(labels)) + np.asarray(labels, "uint8").tobytes())


def blobby_images(rng, n, size=32):
    """Smooth random grey images (blurred noise), like product photos more than white noise."""
    noise = rng.normal(size=(n, size + 4, size + 4))
    kernel = np.ones(5) / 5
    for axis in (1, 2):
        noise = np.apply_along_axis(lambda v: np.convolve(v, kernel, "valid"), axis, noise)
    return np.clip(128 + 180 * noise, 0, 255).astype("uint8")


def small_spec(filters=6):
    return zfnet_small_spec().with_units(conv1=filters, conv2=filters, conv3=filters, conv4=filters, conv5=filters, fc6=16, fc7=16)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("visualize")
    rng = np.random.default_rng(0)
    raw = blobby_images(rng, 30)[:, 2:30, 2:30]  # native 28x28
    write_idx(root / "data", raw, rng.integers(0, 10, 30))
    model = build_model(small_spec(), seed=2)
    model.save(root / "model.keras")
    return root, raw, model


def run(args):
    result = CliRunner().invoke(visualize, [str(a) for a in args], catch_exceptions=False)
    return result


def reference_maps(model, raw, layer):
    """Rectified ``layer`` maps of the raw (native 28x28) images, from a plain Keras sub-model."""
    images = raw[..., None].astype("float32")
    return keras.Model(model.inputs, model.get_layer(layer).output).predict(images, verbose=0)


def test_topk_json_is_true_activations_and_top(setup):
    root, raw, model = setup
    out = root / "out"
    result = run([root / "model.keras", "--data", f"idx:{root / 'data'}", "--maps", "0,2,5", "--k", "4", "--batch-size", "7", "--out", out])
    assert result.exit_code == 0, result.output
    topk = json.load(open(out / "topk.json"))
    assert list(topk) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    for layer, per_map in topk.items():
        maps = reference_maps(model, raw, layer)
        assert list(per_map) == ["0", "2", "5"]
        for channel, entries in per_map.items():
            c = int(channel)
            assert len(entries) == 4
            for entry in entries:
                # the recorded value is the activation at that image and position ...
                np.testing.assert_allclose(entry["value"], maps[entry["image"], entry["y"], entry["x"], c], rtol=1e-4, atol=1e-6)
                # ... and that position is the image's strongest in this map
                np.testing.assert_allclose(entry["value"], maps[entry["image"], :, :, c].max(), rtol=1e-4, atol=1e-6)
            # brute force: the 4 images with the strongest maxima, strongest first
            best = maps[..., c].reshape(len(raw), -1).max(axis=1)
            order = sorted(range(len(raw)), key=lambda i: (-best[i], i))[:4]
            assert [e["image"] for e in entries] == order, (layer, channel)
    summary = json.load(open(out / "summary.json"))
    assert summary["images"] == 30 and summary["fields"]["conv1"]["size"] == [3, 3]
    # the figures show the image patches of the kept units, cut here by hand from the raw bytes
    for layer in topk:
        check_png_patches(out / f"{layer}.png", summary["fields"][layer], topk[layer], raw, k=4)
    # the extent (pixels with 90% of a projection's energy) of the kept activations, by numpy
    from zfkeras.nn.deconv import Deconvnet

    deconvnet = Deconvnet(model)
    for layer in ("conv1", "conv5"):
        fired = [(e, int(c)) for c, entries in topk[layer].items() for e in entries if e["value"] > 0]
        images = raw[[e["image"] for e, _ in fired]][..., None].astype("float32")
        projections = deconvnet.project(images, layer, [c for _, c in fired], np.array([(e["y"], e["x"]) for e, _ in fired]))
        counts = []
        for projection in projections:
            energy = np.sort((projection.astype("float64") ** 2).sum(axis=-1).ravel())[::-1]
            counts.append(int(np.searchsorted(np.cumsum(energy) / energy.sum(), 0.9 - 1e-12) + 1))
        assert summary["extent"][layer]["median_pixels"] == pytest.approx(np.median(counts)), layer


def read_png(path):
    import tensorflow as tf

    return tf.io.decode_png(tf.io.read_file(str(path))).numpy()[..., :3].astype("float64") / 255


def check_png_patches(path, field, per_map, images, k):
    """The right-hand tiles of each map in a ``zf visualize`` figure equal ``images[image][box]``.

    Layout of the figure (pipelines.visualize.topk_figure, saved with matplotlib's 0.1 inch = 10
    px tight-bbox margin under the title): per map a pair of grids (projections | patches) with
    tiles upscaled to >= 64 px, 1 px between tiles, a gap of max(2, tile // 8) px between the two
    grids, 14 px between pairs, rows of pairs up to 1600 px wide. Outside the image: light blue.
    """
    png = read_png(path)
    size, jump, offset = field["size"][0], field["jump"][0], field["offset"][0]
    factor = -(-64 // size)
    tile = size * factor
    side = int(np.ceil(np.sqrt(k)))
    inner = side * (tile + 1) + 1
    gap = max(2, tile // 8)
    pair = 2 * inner + gap
    columns = max(1, min(len(per_map), 1600 // (pair + 14)))
    rows = -(-len(per_map) // columns)
    grid_top = png.shape[0] - 10 - (rows * (inner + 14) + 14)
    assert png.shape[1] == 20 + columns * (pair + 14) + 14, png.shape
    for m, entries in enumerate(per_map.values()):
        pair_row, pair_column = divmod(m, columns)
        for j, entry in enumerate(entries):
            top, left = offset + jump * entry["y"], offset + jump * entry["x"]
            patch = np.tile(np.array([0.85, 0.9, 1.0]), (size, size, 1))
            for r in range(size):
                for c in range(size):
                    if 0 <= top + r < images.shape[1] and 0 <= left + c < images.shape[2]:
                        patch[r, c] = images[entry["image"], top + r, left + c] / 255
            expected = np.repeat(np.repeat(patch, factor, 0), factor, 1)
            tile_row, tile_column = divmod(j, side)
            y0 = grid_top + 14 + pair_row * (inner + 14) + 1 + tile_row * (tile + 1)
            x0 = 10 + 14 + pair_column * (pair + 14) + inner + gap + 1 + tile_column * (tile + 1)
            np.testing.assert_allclose(png[y0 : y0 + tile, x0 : x0 + tile], expected, atol=1.5 / 255, err_msg=f"{path} map {m} tile {j}")


def test_shards_merge_to_single_scan(setup):
    root, _, _ = setup
    common = ["--data", f"idx:{root / 'data'}", "--layers", "conv2,conv4", "--maps", "random:3", "--k", "5", "--batch-size", "4", "--seed", "7"]
    assert run([root / "model.keras", *common, "--out", root / "single"]).exit_code == 0
    for i in (1, 2, 3):
        result = run([root / "model.keras", *common, "--shard", f"{i}/3", "--out", root / f"shard{i}"])
        assert result.exit_code == 0, result.output
        assert not (root / f"shard{i}" / "conv2.png").exists()
    merge = [arg for i in (3, 1, 2) for arg in ("--merge", root / f"shard{i}")]
    result = run([root / "model.keras", *common, *merge, "--out", root / "merged"])
    assert result.exit_code == 0, result.output
    single = json.load(open(root / "single" / "topk.json"))
    merged = json.load(open(root / "merged" / "topk.json"))
    assert single.keys() == merged.keys()
    for layer in single:
        assert single[layer].keys() == merged[layer].keys()
        for channel in single[layer]:
            a, b = single[layer][channel], merged[layer][channel]
            assert [(e["image"], e["y"], e["x"]) for e in a] == [(e["image"], e["y"], e["x"]) for e in b]
            np.testing.assert_allclose([e["value"] for e in a], [e["value"] for e in b], rtol=1e-5)
    assert (root / "merged" / "conv4.png").exists()
    # a missing shard is refused
    result = CliRunner().invoke(
        visualize, [str(a) for a in [root / "model.keras", *common, "--merge", root / "shard1", "--merge", root / "shard3", "--out", root / "bad"]]
    )
    assert result.exit_code == 2 and "contiguous" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--maps", "lots"], "--maps"),
        (["--maps", "0,99"], "map 99 does not exist in conv1"),
        (["--layers", "conv9"], "unknown layer 'conv9'"),
        (["--data", "idx:/no/such/dir"], "/no/such/dir"),
        (["--data", "ftp:x"], "unknown data source"),
        (["--shard", "4/3"], "--shard"),
    ],
)
def test_bad_input_one_line_error(setup, args, message):
    root, _, _ = setup
    result = CliRunner().invoke(visualize, [str(root / "model.keras"), "--data", f"idx:{root / 'data'}", "--out", str(root / "err"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_bad_model_path(tmp_path):
    result = CliRunner().invoke(visualize, [str(tmp_path / "nothing.h5"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "MODEL must be" in result.output


def test_full_zfnet_224(tmp_path):
    """The full 224x224 ZFNet (random weights), grey 32x32 data upscaled to RGB 224, 3 images."""
    rng = np.random.default_rng(1)
    write_idx(tmp_path / "data", blobby_images(rng, 3), [0, 1, 2])
    zfnet(num_classes=10, seed=0).save(tmp_path / "zfnet.keras")
    out = tmp_path / "out"
    result = run(
        [tmp_path / "zfnet.keras", "--data", f"idx:{tmp_path / 'data'}", "--maps", "random:2", "--k", "2", "--batch-size", "3", "--out", out]
    )
    assert result.exit_code == 0, result.output
    topk = json.load(open(out / "topk.json"))
    summary = json.load(open(out / "summary.json"))
    assert summary["fields"]["conv5"] == {"size": [139, 139], "jump": [16, 16], "offset": [-49, -49]}
    for layer, size in {"conv1": 110, "conv2": 26, "conv5": 13}.items():
        for entries in topk[layer].values():
            assert len(entries) == 2 and all(0 <= e["y"] < size and 0 <= e["x"] < size for e in entries)
    assert all((out / f"conv{i}.png").exists() for i in range(1, 6))
