"""``zf atlas``: every unit of every layer, checked against independent references.

- ``atlas.json``'s top-9, fire counts, histograms, means, class selectivity, class distributions and
  near-duplicate correlations of every unit of every layer of a small exported model equal brute
  force from the export's plain-TF ``features`` endpoint (all activations in memory, numpy);
- the scan's state merges exactly in any order and survives a save/load;
- the site opens in headless Chromium (``tests/browser.py``): every image loads, every link
  resolves inside the site, nothing is fetched from outside, the screenshot is not blank;
- the full 224x224 ZFNet (random weights) and a ResNet50 (a DAG) against their own features;
- ``zf report --atlas`` links its Fig. 2 maps to the units' pages; ``--optimize`` shows what the
  optimizer returns; bad input gives one line.

The resumable and distributed scans are tested in ``tests/test_atlas_distributed.py``.
"""

import json
import math
import os
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
from browser import needs_chromium, pixels  # noqa: E402
from train_helpers import TINY_UNITS, fashion_subset, write_idx, write_small_idx  # noqa: E402

from pipelines.cli import main  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "saved_models", "zfnet-fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def zf(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """An idx: source of 70 Fashion-MNIST test images, 6 of them replaced by bright 8-pixel-periodic
    patterns, where a map's maximum repeats at several positions (so the first-position rule
    matters); returns (directory, images, labels)."""
    root = tmp_path_factory.mktemp("atlas-data")
    write_small_idx(str(root), n_train=8, n_test=70)
    _, _, images, labels = fashion_subset(8, 70)
    rng = np.random.default_rng(1)
    for index in (3, 17, 30, 44, 51, 66):
        images[index] = np.tile(rng.integers(0, 256, (8, 8)), (4, 4))[:28, :28]
    write_idx(os.path.join(root, "t10k-images-idx3-ubyte.gz"), images)
    return root, images[..., None].astype("float32"), labels.astype(int)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A zfnet_small with 4-6 units per conv layer (he_normal init, untrained) exported as a SavedModel."""
    from zfkeras.export import export_model
    from zfkeras.nn.models import build_model, zfnet_small_spec

    spec = zfnet_small_spec().with_units(**TINY_UNITS).replace(kernel_init="he_normal")
    path = tmp_path_factory.mktemp("tiny") / "export"
    export_model(build_model(spec, seed=3), str(path), class_names=CLASSES)
    return path


def brute_force(peaks, k):
    """Image indices of the ``k`` largest per-image peaks, ties to the lower image index."""
    return sorted(range(len(peaks)), key=lambda i: (-peaks[i], i))[:k]


def histogram_bin(value):
    """The atlas's fixed bins, computed independently: 0 for <= 0, else floor(4 log2 v) + 42 clipped to 1..102."""
    return 0 if value <= 0 else min(max(math.floor(4 * math.log2(value)) + 42, 1), 102)


def test_atlas_json_equals_brute_force_from_the_features_endpoint(tiny_export, data, tmp_path):
    import tensorflow as tf

    directory, images, labels = data
    out = tmp_path / "atlas"
    ok(zf("atlas", tiny_export, "--data", f"idx:{directory}", "--batch-size", 16, "--shard-images", 32, "--no-evolution", "--out", out))
    atlas = json.loads((out / "atlas.json").read_text())
    exported = tf.saved_model.load(str(tiny_export))  # plain TF, no zfkeras
    features = exported.features(tf.constant(images))  # every image at once
    assert atlas["images"] == 70 and list(atlas["layers"]) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    for layer, record in atlas["layers"].items():
        maps = features[layer].numpy()
        assert len(record["units"]) == maps.shape[-1] == TINY_UNITS[layer]
        for unit, found in record["units"].items():
            plane = maps[..., int(unit)].reshape(len(images), -1)
            peaks = plane.max(axis=1)
            top = brute_force(peaks, 9)
            assert [e["image"] for e in found["top9"]] == top, (layer, unit)
            assert [divmod(int(plane[i].argmax()), maps.shape[2]) for i in top] == [(e["y"], e["x"]) for e in found["top9"]]
            np.testing.assert_allclose([e["value"] for e in found["top9"]], peaks[top], rtol=1e-5, atol=1e-6)
            assert [e["class"] for e in found["top9"]] == [CLASSES[labels[i]] for i in top]
            assert found["fires"] == int((peaks > 0).sum()) and found["dead"] == (found["fires"] == 0)
            counts = np.bincount([histogram_bin(v) for v in peaks], minlength=103)
            assert found["histogram"] == [[b, int(c)] for b, c in enumerate(counts) if c]
            np.testing.assert_allclose(found["mean"], maps[..., int(unit)].mean(dtype="float64"), rtol=1e-5, atol=1e-7)
            spatial = maps[..., int(unit)].reshape(len(images), -1).mean(axis=1, dtype="float64")
            means = np.array([spatial[labels == c].mean() for c in range(10)])
            np.testing.assert_allclose([found["class_means"][name] for name in CLASSES], means, rtol=1e-5, atol=1e-7)
            rest = (means.sum() - means.max()) / 9
            expected = 0.0 if found["dead"] else (means.max() - rest) / (means.max() + rest)
            assert found["selectivity"] == pytest.approx(expected, rel=1e-5, abs=1e-7)
            # 70 images: the top-100 holds every image where the unit fires
            fired = np.bincount(labels[peaks > 0], minlength=10)
            assert dict(found["top100_classes"]) == {CLASSES[c]: int(n) for c, n in enumerate(fired) if n}
        # near-duplicates: with fewer than 100 images, the Pearson correlation of the per-image peaks
        peaks = maps.reshape(len(images), -1, maps.shape[-1]).max(axis=1)
        live = [u for u in range(maps.shape[-1]) if peaks[:, u].max() > 0 and peaks[:, u].std() > 0]
        correlation = np.corrcoef(peaks[:, live].T)
        for i, a in enumerate(live):
            others = [(correlation[i, j], b) for j, b in enumerate(live) if b != a]
            nearest = record["units"][str(a)]["nearest"]
            if others:
                best = max(others)
                assert nearest["unit"] == best[1] and nearest["correlation"] == pytest.approx(best[0], abs=1e-6)
            expected = sorted(b for r, b in others if r >= 0.9)
            assert record["units"][str(a)]["near_duplicates"] == expected
        assert record["dead"] == [u for u in range(maps.shape[-1]) if peaks[:, u].max() <= 0]
        pages = {f"{u}.html" for u in record["units"]} | {"index.html", "by-unit.html"}
        assert pages <= set(os.listdir(out / layer))


def test_scan_merges_exactly_in_any_order_and_round_trips(data):
    """Shards merged in any order, or saved and read back, give the same arrays bit for bit; the
    top-9 of a top-100 is the top-9 of a scan kept at k=9."""
    from zfkeras.analysis.atlas import AtlasScan, scan_units, unit_reducer
    from zfkeras.analysis.top_activations import TopK
    from zfkeras.export import open_model

    _, images, labels = data
    probe = open_model(SHIPPED)
    maps = {"conv1": [0, 3, 31], "conv4": list(range(0, 96, 7))}
    reducer = unit_reducer(probe, maps)
    shard = [
        scan_units(probe, [(images[a : a + 10], labels[a : a + 10]) for a in range(s, s + 20, 10)], maps, 10, first_image=s, reducer=reducer)
        for s in range(0, 60, 20)
    ]
    one = shard[0].merge(shard[1]).merge(shard[2]).to_arrays()
    other = shard[2].merge(shard[0].merge(shard[1])).to_arrays()
    again = AtlasScan.from_arrays(shard[1].merge(shard[2]).merge(shard[0]).to_arrays()).to_arrays()
    for name in one:
        assert np.array_equal(one[name], other[name]) and np.array_equal(one[name], again[name]), name
    merged = AtlasScan.from_arrays(one)
    nine = TopK(maps, 9)
    features = probe.features(images[:60], layers=list(maps))
    nine.update(features, 0)
    first = merged.top.first(9)
    for layer in maps:
        assert all(np.array_equal(first.entries(layer)[f], nine.entries(layer)[f]) for f in ("image", "y", "x"))
    with pytest.raises(ValueError, match="disjoint"):
        shard[0].merge(shard[0])


def test_selectivity_and_correlation_by_hand():
    from zfkeras.analysis.atlas import selectivity_index, top_correlation

    means = np.array([[3.0, 1.0, 0.0], [1.0, 1.0, 0.0], [np.nan, np.nan, np.nan]])  # class 2 has no images
    index = selectivity_index(means, dead=np.array([False, False, True]))
    np.testing.assert_allclose(index, [(3 - 1) / (3 + 1), 0.0, 0.0])
    entries = {
        "image": np.array([[0, 2, -1], [2, 0, 1], [1, -1, -1]]),
        "value": np.array([[4.0, 2.0, -np.inf], [3.0, 1.0, 0.0], [5.0, -np.inf, -np.inf]], "float32"),
    }
    correlation = top_correlation(entries, images=4)  # vectors over 4 images: [4,0,2,0], [1,0,3,0], [0,5,0,0]
    dense = np.array([[4, 0, 2, 0], [1, 0, 3, 0], [0, 5, 0, 0]], "float64")
    expected = np.corrcoef(dense)
    np.fill_diagonal(expected, np.nan)
    np.testing.assert_allclose(correlation, expected, atol=1e-12)


@pytest.fixture(scope="module")
def shipped_atlas(data, tmp_path_factory):
    """The shipped model's atlas over 60 images, units 0-3 of every layer, with its 6 checkpoints."""
    directory, _, _ = data
    out = tmp_path_factory.mktemp("shipped") / "atlas"
    ok(zf("atlas", SHIPPED, "--data", f"idx:{directory}", "--images", 60, "--maps", "0,1,2,3", "--batch-size", 32, "--out", out))
    return out


def local_references(page, root):
    """Every href and src of an HTML file, resolved: ``[(written, path or None if it leaves the site)]``."""
    text = open(page).read()
    found = []
    for target in re.findall(r'(?:href|src)="([^"]*)"', text):
        if re.match(r"[a-z]+:", target):
            found.append((target, None))
            continue
        path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
        found.append((target, path if path.startswith(str(root) + os.sep) else None))
    return found


def test_every_page_links_inside_the_site(shipped_atlas):
    atlas = json.loads((shipped_atlas / "atlas.json").read_text())
    assert atlas["checkpoints"] == [1, 2, 5, 10, 20, 30]
    for record in atlas["layers"].values():
        assert list(record["units"]) == ["0", "1", "2", "3"] and record["units_total"] >= 32
        for unit in record["units"].values():
            assert [e["epoch"] for e in unit["evolution"]] == atlas["checkpoints"]
    pages = [os.path.join(folder, name) for folder, _, names in os.walk(shipped_atlas) for name in names if name.endswith(".html")]
    assert len(pages) == 1 + 5 * (2 + 4)
    for page in pages:
        for written, path in local_references(page, shipped_atlas):
            assert path is not None and os.path.isfile(path), (page, written)


@needs_chromium
def test_atlas_pages_in_chromium(shipped_atlas, browser):
    for page in ("index.html", "conv3/index.html", "conv3/by-unit.html", "conv3/2.html"):
        browser.open(shipped_atlas / page)
        assert browser.errors() == [], page
        images = browser.images()
        assert all(image["width"] > 0 for image in images), (page, images)
        for href in browser.links():
            target = os.path.normpath(os.path.join(os.path.dirname(shipped_atlas / page), href))
            assert target.startswith(str(shipped_atlas)) and os.path.isfile(target), (page, href)
        requests = browser.requests()
        assert requests and all(url.startswith(f"file://{shipped_atlas}/") for url in requests), requests
        shot = pixels(browser.screenshot())
        assert shot[..., :3].std() > 0.05, page
    assert len(images) == 3  # the unit page: projections, patches, the unit across epochs
    assert browser.evaluate("document.querySelectorAll('svg rect').length") > 0  # the histogram
    assert browser.evaluate("document.title") == "atlas: conv3 unit 2"


def test_report_links_fig2_maps_to_the_atlas(shipped_atlas, data, tmp_path):
    directory, _, _ = data
    out = tmp_path / "report"
    skip = "training,accuracy,evolution,filters,occlusion,invariance,correspondence,transfer,layers"
    args = ("report", SHIPPED, "--data", f"idx:{directory}", "--images", 60, "--maps", "1,3,7", "--skip", skip, "--atlas", shipped_atlas)
    ok(zf(*args, "--out", out))
    page = str(out / "index.html")
    numbers = json.loads((out / "results.json").read_text())["sections"]["visualize"]["layers"]
    for layer in ("conv1", "conv5"):
        assert set(numbers[layer]["atlas"]) == {"1", "3"}  # map 7 is not in the atlas: no link
    hrefs = re.findall(r'href="([^"]*)"', open(page).read())
    linked = [os.path.normpath(os.path.join(out, href)) for href in hrefs if href.endswith(".html")]
    assert len(linked) == 5 * 2  # maps 1 and 3 of each layer
    assert all(path.startswith(f"{shipped_atlas}{os.sep}") and os.path.isfile(path) for path in linked), linked
    assert zf(*args[:-1], tmp_path / "nowhere", "--out", tmp_path / "r2").exit_code == 2


def test_optimized_images_are_shown_with_their_activation(data, tmp_path, monkeypatch):
    """--optimize calls zfkeras.analysis.feature_visualization.maximize_units(model, layer, units, ...)
    and shows each image with the unit's activation on it (here a stand-in returning data images)."""
    import types

    directory, images, _ = data
    calls = []

    def maximize_units(model, layer, units, size=None, steps=None, seed=0, batch_size=None):
        calls.append((layer, list(units), seed))
        return images[: len(units)] * 0.5

    monkeypatch.setitem(sys.modules, "zfkeras.analysis.feature_visualization", types.SimpleNamespace(maximize_units=maximize_units))
    out = tmp_path / "atlas"
    ok(
        zf(
            "atlas",
            SHIPPED,
            "--data",
            f"idx:{directory}",
            "--images",
            30,
            "--layers",
            "conv2",
            "--maps",
            "5,9",
            "--no-evolution",
            "--optimize",
            "--seed",
            4,
            "--out",
            out,
        )
    )
    assert calls == [("conv2", [5, 9], 4)]
    from zfkeras.export import open_model

    features = open_model(SHIPPED).features(images[:2] * 0.5, layers=["conv2"])["conv2"]
    units = json.loads((out / "atlas.json").read_text())["layers"]["conv2"]["units"]
    for row, unit in enumerate((5, 9)):
        assert units[str(unit)]["optimized"]["activation"] == pytest.approx(float(features[row, ..., unit].max()), rel=1e-5)
        assert (out / "conv2" / f"{unit}-optimized.png").stat().st_size > 0
        assert f"{unit}-optimized.png" in (out / "conv2" / f"{unit}.html").read_text()


def test_optimize_with_the_real_optimizer(data, tmp_path):
    """``--optimize`` with zfkeras.analysis.feature_visualization: each unit's optimised image sits
    beside its top-9 and drives the unit harder than its best data image does."""
    directory, _, _ = data
    out = tmp_path / "atlas"
    ok(zf("atlas", SHIPPED, "--data", f"idx:{directory}", "--layers", "conv5", "--maps", "1,2", "--no-evolution", "--optimize", "--out", out))
    for unit, record in json.loads((out / "atlas.json").read_text())["layers"]["conv5"]["units"].items():
        assert record["optimized"]["activation"] > record["top9"][0]["value"] > 0, record["optimized"]
        page = (out / "conv5" / f"{unit}.html").read_text()
        pair = page.split('<div class="pair">', 1)[1].split("</div>", 1)[0]
        assert f"{unit}-projections.png" in pair and f"{unit}-optimized.png" in pair


def test_224_zfnet_and_a_resnet50_dag(tmp_path):
    """random:zfnet (224x224) and keras:resnet50 with random weights on a folder of colour images:
    the top-9 equal brute force from the model's own features."""
    from skimage import io

    from pipelines.loading import image_batches, open_model_or_random

    rng = np.random.default_rng(0)
    for number in range(8):
        folder = tmp_path / "photos" / ("a" if number % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        io.imsave(str(folder / f"{number}.png"), rng.integers(0, 255, (80, 96, 3), dtype=np.uint8), check_contrast=False)
    source = f"folder:{tmp_path / 'photos'}"
    cases = [("random:zfnet", [], "conv1,conv5"), ("keras:resnet50@64x64", ["--weights", "none"], "conv1_conv,conv2_block1_out,conv3_block1_2_conv")]
    for model, extra, layers in cases:
        out = tmp_path / model.split(":")[1].split("@")[0]
        ok(
            zf(
                "atlas",
                model,
                *extra,
                "--data",
                source,
                "--split",
                "train",
                "--layers",
                layers,
                "--maps",
                "random:3",
                "--batch-size",
                4,
                "--out",
                out,
            )
        )
        atlas = json.loads((out / "atlas.json").read_text())
        import keras

        keras.utils.set_random_seed(0)
        if model.startswith("random:"):
            probe, _ = open_model_or_random(model, 0)
        else:
            from zfkeras.export import open_model

            probe = open_model(model, "none")
        pictures = np.concatenate(list(image_batches(source, "train", probe.input_shape, 4)))
        features = probe.features(pictures, layers.split(","))
        for layer, record in atlas["layers"].items():
            assert len(record["units"]) == 3
            for unit, found in record["units"].items():
                peaks = features[layer][..., int(unit)].reshape(len(pictures), -1).max(axis=1)
                assert [e["image"] for e in found["top9"]] == brute_force(peaks, 9)  # the same weights (seeded)
                np.testing.assert_allclose([e["value"] for e in found["top9"]], np.sort(peaks)[::-1][:9], rtol=1e-5, atol=1e-6)
                assert (out / layer / f"{unit}-projections.png").exists()
        assert atlas["images"] == len(pictures)


def cut_field(picture, box):
    """``picture [H, W, C]`` cut to ``box`` (top, bottom, left, right; may run past the image), NaN outside."""
    top, bottom, left, right = box
    height, width, channels = picture.shape
    crop = np.full((bottom - top, right - left, channels), np.nan, "float32")
    rows, cols = slice(max(top, 0), min(bottom, height)), slice(max(left, 0), min(right, width))
    crop[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left] = picture[rows, cols]
    return crop


def test_rule_and_precision_reach_the_projections_and_the_scan(tiny_export, data, tmp_path):
    """--rule guided: each unit's top-9 mosaic is drawn from guided projections (whole-image
    Deconvnet.project under that rule at the recorded positions, cut to the unit's field by hand),
    not from the deconvnet's. --precision mixed_bfloat16: the scan computes in bfloat16 (top-9
    values within its tolerance of float32's, not equal to them); both recorded in atlas.json."""
    from PIL import Image

    from pipelines.commands.atlas.site import mosaics
    from zfkeras.export import open_model
    from zfkeras.nn.deconv import Deconvnet
    from zfkeras.nn.fields import receptive_fields

    directory, images, _ = data
    common = ["--data", f"idx:{directory}", "--layers", "conv2,conv3", "--maps", "0,1", "--no-evolution"]
    ok(zf("atlas", tiny_export, *common, "--rule", "guided", "--out", tmp_path / "guided"))
    ok(zf("atlas", tiny_export, *common, "--precision", "mixed_bfloat16", "--out", tmp_path / "bf16"))
    guided, fast = (json.loads((tmp_path / name / "atlas.json").read_text()) for name in ("guided", "bf16"))
    assert (guided["rule"], guided["precision"], fast["rule"], fast["precision"]) == ("guided", "float32", "deconvnet", "mixed_bfloat16")
    model = open_model(str(tiny_export)).keras_model
    deconv, fields = Deconvnet(model), receptive_fields(model)
    differs = []
    for layer, record in guided["layers"].items():
        for unit, found in record["units"].items():
            top = [e for e in found["top9"] if e["value"] > 0]
            picked, where = np.array([e["image"] for e in top]), np.array([[e["y"], e["x"]] for e in top], "int32")
            boxes = [fields[layer].box(y, x) for y, x in where]
            patches = np.stack([cut_field(images[i], box) for i, box in zip(picked, boxes)])
            drawn = np.asarray(Image.open(tmp_path / "guided" / layer / f"{unit}-projections.png"), "float64") / 255
            for rule in ("guided", "deconvnet"):
                whole = deconv.project(images[picked], layer, [int(unit)] * len(top), where, rule=rule)
                crops = np.stack([cut_field(p, box) for p, box in zip(whole, boxes)])
                wanted = np.clip(np.nan_to_num(mosaics(crops, patches)[0]), 0, 1)
                error = np.abs(drawn - wanted).max()
                if rule == "guided":
                    assert error <= 1.5 / 255, (layer, unit, error)
                else:
                    differs.append(error)
            units = fast["layers"][layer]["units"][unit]
            values, exact = np.array([e["value"] for e in units["top9"]]), np.array([e["value"] for e in found["top9"]])
            np.testing.assert_allclose(np.sort(values), np.sort(exact), atol=2e-2 * exact.max())
    assert max(differs) > 0.1  # the deconvnet's mosaics would not pass
    assert any(
        e["value"] != g["value"] for layer in fast["layers"] for unit in fast["layers"][layer]["units"]
        for e, g in zip(fast["layers"][layer]["units"][unit]["top9"], guided["layers"][layer]["units"][unit]["top9"])
    )  # fmt: skip
    assert "guided projections" in (tmp_path / "guided" / "conv3" / "0.html").read_text()


def test_bad_input_gives_one_line(data, tmp_path):
    directory, _, _ = data
    cases = [
        (("--strategy", "gpu:9"), "--strategy"),
        (("--layers", "conv9"), "conv9"),
        (("--maps", "random:0"), "--maps"),
        (("--state", ROOT), "--state"),  # a directory that is not one of shards: left alone
    ]
    for extra, named in cases:
        result = CliRunner().invoke(main, ["atlas", SHIPPED, "--data", f"idx:{directory}", *extra, "--out", str(tmp_path / "a")])
        assert result.exit_code == 2 and named in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / "a").exists()


def test_benchmark_smoke_mode_runs():
    """``python -m benchmarks atlas --smoke``: every measurement runs (tiny sizes; the numbers are not checked)."""
    from benchmarks.atlas import main as benchmark

    results = benchmark(["--smoke"])
    assert results["units"] == 352 and results["images"] == 128
    assert results["scan_cpu_s"] > 0 and results["forward_cpu_s"] > 0
    assert set(results["peak_heap_bytes"]) == {"64", "256"} and results["peak_heap_ratio"] > 0
    assert results["atlas_files"] > 10 and results["atlas_bytes"] > 0
