"""``zf report``: the page is built for a small trained model and checked in a real browser
(Debian's headless Chromium, driven over the DevTools protocol on a pipe: no port, no network;
``tests/browser.py``).

Checks: every <img> loaded, no console errors, a screenshot that is not blank, and the page's
accuracy figures equal to ``zf evaluate``'s JSON for the same model and data. The browser check is
itself tested on a page with a broken image and a console error, so it can fail.
"""

import json
import os
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
from browser import needs_chromium, pixels  # noqa: E402
from train_helpers import TINY_UNITS, write_small_idx  # noqa: E402

from pipelines.cli import main  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "saved_models", "zfnet-fashion-mnist")


def zf(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A zfnet_small with 4-16 units per layer trained for 2 epochs on 300 Fashion-MNIST images:
    a run directory with config.json, history.json, checkpoints of epochs 1 and 2 and TensorBoard logs."""
    root = tmp_path_factory.mktemp("report")
    data = write_small_idx(str(root / "data"), n_train=300, n_test=120)
    units = ",".join(f"{k}={v}" for k, v in TINY_UNITS.items())
    result = zf(
        "train",
        "--arch",
        "zfnet_small",
        "--data",
        f"idx:{data}",
        "--units",
        units,
        "--epochs",
        2,
        "--batch-size",
        32,
        "--kernel-init",
        "he_normal",
        "--dropout",
        0,
        "--val-split",
        0.2,
        "--checkpoint-epochs",
        "1,2",
        "--log-projections",
        0,
        "--no-progress",
        "--seed",
        0,
        "--run-dir",
        root / "run",
    )
    assert result.exit_code == 0, result.output
    return root, data


def evaluate_json(model, data, images, tmp_path):
    """``zf evaluate``'s JSON for the first ``images`` images, whether --out is a file or a directory
    (holding results.json) and whether the limit is --limit or --images."""
    from pipelines.commands.evaluate import evaluate

    names = {param.name for param in evaluate.params}
    limit = "--images" if "images" in names else "--limit"
    out = tmp_path / "evaluate"
    result = zf("evaluate", model, "--data", f"idx:{data}", limit, images, "--out", out)
    if result.exit_code != 0 and "directory" in result.output:
        out = tmp_path / "evaluate.json"
        result = zf("evaluate", model, "--data", f"idx:{data}", limit, images, "--out", out)
    assert result.exit_code == 0, result.output
    path = out / "results.json" if out.is_dir() else out
    return json.loads(path.read_text())


@needs_chromium
def test_report_page_in_chromium(tiny_run, browser, tmp_path):
    root, data = tiny_run
    run = root / "run"
    out = tmp_path / "report"
    parts = os.path.join(ROOT, "docs", "examples", "shirt-parts.json")
    transfer = os.path.join(ROOT, "docs", "figures", "transfer")
    result = zf(
        "report",
        run,
        "--data",
        f"idx:{data}",
        "--images",
        100,
        "--maps",
        "random:3",
        "--examples",
        2,
        "--parts",
        parts,
        "--results",
        transfer,
        "--seed",
        1,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    numbers = json.loads((out / "results.json").read_text())
    sections = numbers["sections"]
    assert set(sections) == {
        "architecture",
        "training",
        "accuracy",
        "visualize",
        "evolution",
        "filters",
        "occlusion",
        "invariance",
        "correspondence",
        "sanity",
        "faithfulness",
        "transfer",
        "layers",
    }
    assert sections["training"]["history"] and sections["training"]["epochs"] == 2
    assert sections["training"]["tensorboard_logs"] == os.path.join(str(run), "logs")
    assert sections["evolution"]["checkpoints"] == [1, 2]

    browser.open(out / "index.html")
    images = browser.images()
    files = sorted(name for name in os.listdir(out) if name.endswith(".png"))
    assert sorted(image["src"] for image in images) == files  # every PNG written is shown, nothing else
    assert all(image["width"] > 0 for image in images), [image["src"] for image in images if not image["width"]]
    assert browser.errors() == []
    shot = pixels(browser.screenshot())
    assert shot.shape[:2] == (1000, 1400)
    assert shot[..., :3].std() > 0.05  # not a blank page: header, tables and figures
    captions = browser.evaluate("[...document.querySelectorAll('figure')].map(f => f.querySelector('figcaption').textContent)")
    assert len(captions) == len(images) and min(map(len, captions)) > 40, captions
    # what to look for: training curves, confusion matrix, 5 x Fig. 2, Fig. 4, Fig. 5 curves, Fig. 6, 2 x Fig. 7,
    # the sanity curves and the deletion / insertion curves
    assert sum("Look for" in caption for caption in captions) == 14, captions
    assert set(sections["sanity"]["rules"]) == {"deconvnet", "guided", "gradient"} and sections["sanity"]["images"] == 20
    assert set(sections["faithfulness"]["targets"]["class"]) == {"deconvnet", "guided", "gradient", "occlusion", "random"}

    # The accuracy on the page is zf evaluate's, digit for digit, for the same 100 images.
    shown = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('[data-metric]')].map(e => [e.dataset.metric, [Number(e.dataset.value), e.textContent]]))"
    )
    reference = evaluate_json(run / "model.keras", data, 100, tmp_path)
    assert reference["num_images"] == 100
    expected = next(iter(reference["models"].values()))
    assert set(shown) == set(expected)
    for key, value in expected.items():
        assert shown[key][0] == pytest.approx(value, abs=1e-12)
        assert shown[key][1] == f"{100 * value:.2f}%"
    confusion = np.asarray(sections["accuracy"]["confusion_ten_crop"])
    assert confusion.sum() == 100
    assert 1 - np.trace(confusion) / 100 == pytest.approx(expected["ten_crop_top1_error"], abs=1e-12)


@needs_chromium
def test_browser_check_catches_broken_pages(browser, tmp_path):
    """The checks above can fail: a missing image has naturalWidth 0 and is logged as a failed
    load, a console.error is reported, and an empty page's screenshot has no variance."""
    (tmp_path / "broken.html").write_text("<!DOCTYPE html><html><body><img src=\"missing.png\"><script>console.error('boom')</script></body></html>")
    browser.open(tmp_path / "broken.html")
    assert browser.images() == [{"src": "missing.png", "width": 0}]
    errors = browser.errors()
    assert any("boom" in e for e in errors) and any("missing.png" in e for e in errors), errors
    (tmp_path / "blank.html").write_text("<!DOCTYPE html><html><body></body></html>")
    browser.open(tmp_path / "blank.html")
    assert browser.errors() == []
    assert pixels(browser.screenshot())[..., :3].std() == 0


def test_shipped_export_accuracy_and_training_record(tiny_run, tmp_path):
    """The shipped SavedModel export (read through its serve endpoint, as zf evaluate reads it):
    the same errors as zf evaluate, its recorded command, and the training curves of the
    history.json the export carries."""
    _, data = tiny_run
    out = tmp_path / "report"
    skip = "visualize,evolution,filters,occlusion,invariance,correspondence,sanity,faithfulness,transfer,layers"
    result = zf("report", SHIPPED, "--data", f"idx:{data}", "--images", 50, "--skip", skip, "--out", out)
    assert result.exit_code == 0, result.output
    sections = json.loads((out / "results.json").read_text())["sections"]
    assert set(sections) == {"architecture", "training", "accuracy"}
    expected = next(iter(evaluate_json(SHIPPED, data, 50, tmp_path)["models"].values()))
    assert sections["accuracy"]["errors"] == pytest.approx(expected, abs=1e-12)
    assert sections["training"]["command"].startswith("zf train --arch zfnet_small")
    assert sections["training"]["history"] is True and sections["training"]["epochs"] == 30
    import keras

    import zfkeras  # noqa: F401  (registers the custom layers)

    model = keras.saving.load_model(os.path.join(SHIPPED, "model.keras"), compile=False)
    assert sections["architecture"]["params"] == model.count_params() == 776602
    page = (out / "index.html").read_text()
    assert "training-curves.png" in page and (out / "training-curves.png").stat().st_size > 0
    assert "runs/zfnet-fashion-mnist-native/logs" in page  # the logs the recorded run wrote (here or not)


def test_bad_skip_names_the_valid_sections(tmp_path):
    result = zf("report", SHIPPED, "--skip", "occlusion,figure2", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "'figure2'" in result.output and "architecture, training, accuracy" in result.output
    assert not (tmp_path / "r").exists()


def test_failure_mid_report_leaves_no_output(tiny_run, tmp_path):
    """An unreadable image in --parts fails at the correspondence step, after the other sections
    ran: no half-written output is left, and an earlier report at --out is kept whole."""
    root, data = tiny_run
    (tmp_path / "a.png").write_bytes(b"not a png")
    shutil.copy(os.path.join(ROOT, "docs", "examples", "shirt-4.png"), tmp_path / "b.png")
    box = {"collar": [0, 10, 5, 18]}
    (tmp_path / "parts.json").write_text(json.dumps({"images": [{"file": "a.png", "parts": box}, {"file": "b.png", "parts": box}]}))
    out = tmp_path / "report"
    skip = "visualize,evolution,filters,occlusion,invariance,sanity,faithfulness"
    args = ("report", root / "run", "--data", f"idx:{data}", "--images", 20, "--skip", skip)
    assert zf(*args, "--out", out).exit_code == 0
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    result = zf(*args, "--parts", tmp_path / "parts.json", "--out", out)
    assert result.exit_code == 2 and "a.png: not a readable image" in result.output, result.output
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    assert not [name for name in os.listdir(tmp_path) if ".partial" in name]


def test_data_of_other_classes_is_refused_before_any_work(tmp_path):
    """A folder whose sorted class names are not the model's classes in order: its labels would be
    read as the wrong classes, so the report names the first mismatch and writes nothing."""
    from PIL import Image

    for name in ["Bag", "Coat"] + [f"other{i}" for i in range(8)]:
        for split in ("train", "test"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "data" / split / name / "0.png")
    result = zf("report", SHIPPED, "--data", f"folder:{tmp_path / 'data'}", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "label 0 is 'Bag' but model zfnet-fashion-mnist's class 0 is 'T-shirt/top'" in result.output, result.output
    assert not (tmp_path / "r").exists()


def test_bad_results_directory_fails_before_any_work(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    result = zf("report", SHIPPED, "--results", bad, "--out", tmp_path / "r")
    assert result.exit_code == 2 and "not the results.json of zf transfer or zf layers" in result.output, result.output
    assert not (tmp_path / "r").exists()


def test_confusion_of_many_classes_stays_a_fixed_size_figure_and_a_sparse_record(rng):
    """1,000 classes: the labelled figure would be 421 inches wide; the record would hold 10**6 cells."""
    from pipelines.commands.report.model_sections import confusion_figure, confusion_record

    confusion = np.zeros((1000, 1000), np.int64)
    true, predicted = rng.integers(0, 1000, 3000), rng.integers(0, 1000, 3000)
    np.add.at(confusion, (true, predicted), 1)
    figure = confusion_figure(confusion, [f"class {i}" for i in range(1000)])
    assert tuple(figure.get_size_inches()) == (9, 8)
    record = confusion_record(confusion)
    rebuilt = np.zeros_like(confusion)
    for t, p, count in record["confusion_ten_crop_nonzero"]:
        rebuilt[t, p] = count
    np.testing.assert_array_equal(rebuilt, confusion)
    assert record["classes"] == 1000 and len(record["confusion_ten_crop_nonzero"]) <= 3000
    small = confusion[:10, :10]
    assert confusion_record(small) == {"confusion_ten_crop": small.tolist()}
    assert tuple(confusion_figure(small, list("abcdefghij")).get_size_inches()) == (6.7, 5.7)


# ---- zfkeras.summary: the report's own computations ------------------------------------------


def test_confusion_matrix_matches_scikit_learn(rng):
    from sklearn.metrics import confusion_matrix as reference

    from zfkeras.analysis.summary import confusion_matrix

    labels, predicted = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    np.testing.assert_array_equal(confusion_matrix(labels, predicted, 7), reference(labels, predicted, labels=range(7)))
    with pytest.raises(ValueError, match="class indices 0-6"):
        confusion_matrix(labels, np.full(500, 7), 7)


def test_predictions_single_and_ten_crop(rng):
    """Centre view 4 gives the single-crop prediction, the mean of the 10 views the 10-crop one;
    the confusion diagonals count the hits the error rates are made of."""
    from zfkeras.analysis.summary import Predictions

    probs = rng.dirichlet(np.ones(5), size=(60, 10)).astype("float32")
    labels = rng.integers(0, 5, 60)
    collected = Predictions(5)
    collected.add(probs[:25], labels[:25])
    collected.add(probs[25:], labels[25:])
    single = np.zeros((5, 5), int)
    ten = np.zeros((5, 5), int)
    for view, mean, label in zip(probs[:, 4], probs.mean(axis=1), labels):  # by hand, image by image
        single[label, int(np.argmax(view))] += 1
        ten[label, int(np.argmax(mean))] += 1
    np.testing.assert_array_equal(collected.confusion("single"), single)
    np.testing.assert_array_equal(collected.confusion("ten"), ten)
    errors = collected.errors()
    assert errors["top1_error"] == pytest.approx(1 - np.trace(single) / 60)
    assert errors["ten_crop_top1_error"] == pytest.approx(1 - np.trace(ten) / 60)


def test_architecture_rows_of_zfnet_small():
    from zfkeras.nn.models import zfnet_small
    from zfkeras.nn.table import architecture

    model = zfnet_small(num_classes=10, input_shape=(28, 28, 1))
    rows = {row.name: row for row in architecture(model)}
    assert sum(row.params for row in rows.values()) == model.count_params()
    assert rows["conv1"].params == 3 * 3 * 1 * 32 + 32 and rows["conv1"].output_shape == (28, 28, 32)
    assert rows["conv1"].settings == "3x3/1 same, 32 filters, relu"
    assert rows["pool1"].output_shape == (14, 14, 32) and rows["pool1"].settings == "3x3/2 same max"
    assert rows["subtract_mean"].params == 28 * 28 and rows["subtract_mean"].trainable_params == 0
    assert rows["predictions"].params == 256 * 10 + 10 and rows["predictions"].settings == "10 units, softmax"
    assert "images" not in rows
