"""zf localization: occlusion over boxed images, summarised against the boxes (Fig. 7 as numbers)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_occlusion import tiny_model

from pipelines.cli import main
from zfkeras.analysis.occlusion import box_sensitivity, occlusion_map
from zfkeras.nn.probe import KerasProbe


@pytest.fixture(scope="module")
def boxed(tmp_path_factory):
    """A folder source of 20x20 grey images (train/ and test/, 3 classes) with a bright square
    object in each and its box in boxes.json, and a tiny model saved as .keras."""
    root = tmp_path_factory.mktemp("boxed")
    rng = np.random.default_rng(5)
    boxes = {}
    for split in ("train", "test"):
        for label in range(3):
            (root / split / f"c{label}").mkdir(parents=True)
            for index in range(4):
                image = rng.integers(0, 60, (20, 20), dtype=np.uint8)
                y, x = rng.integers(0, 12, 2)
                image[y : y + 7, x : x + 7] = 200 + 15 * label
                name = f"{split}/c{label}/{index}.png"
                Image.fromarray(image).save(root / name)
                boxes[name] = {"object": [int(x), int(y), int(x) + 7, int(y) + 7]}
    (root / "boxes.json").write_text(json.dumps(boxes))
    model = tiny_model(classes=3)
    model.save(root / "model.keras")
    return root, boxes, model


def run(root, out, *extra):
    args = ["localization", str(root / "model.keras"), "--data", f"folder:{root}", "--images", "6", "--stride", "2", "--out", str(out), *extra]
    return CliRunner().invoke(main, args)


def test_numbers_are_box_sensitivity_of_each_image_and_the_choice_spreads_over_classes(boxed, tmp_path):
    root, boxes, model = boxed
    result = run(root, tmp_path / "a")
    assert result.exit_code == 0, result.output
    found = json.load(open(tmp_path / "a" / "results.json"))
    assert found["images"] == 6 and sorted({row["label"] for row in found["per_image"]}) == [0, 1, 2]
    probe = KerasProbe(model)
    for row in found["per_image"]:
        image = np.asarray(Image.open(root / row["file"]), "float32")[..., None]
        expected = box_sensitivity(occlusion_map(probe, image, label=row["label"], stride=2), boxes[row["file"]]["object"]).to_dict()
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, abs=1e-6, nan_ok=True), (row["file"], key)
    for key in ("object_drop", "background_drop", "share_inside", "box_share"):
        values = [row[key] for row in found["per_image"] if row[key] is not None]
        assert found["summary"][key]["mean"] == pytest.approx(np.mean(values)) and found["summary"][key]["std"] == pytest.approx(np.std(values))
    assert (tmp_path / "a" / "figure.png").exists() and len(list((tmp_path / "a").glob("example-*.png"))) == 4
    again = run(root, tmp_path / "b")
    assert again.exit_code == 0 and json.load(open(tmp_path / "b" / "results.json"))["per_image"] == found["per_image"]
    other = run(root, tmp_path / "c", "--seed", "1")
    assert other.exit_code == 0 and [r["file"] for r in json.load(open(tmp_path / "c" / "results.json"))["per_image"]] != [
        r["file"] for r in found["per_image"]
    ]


def test_a_missing_box_and_a_non_folder_source_are_one_line(boxed, tmp_path):
    root, boxes, _ = boxed
    partial = {name: box for name, box in boxes.items() if not name.endswith("test/c1/2.png")}
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    result = run(root, tmp_path / "o", "--boxes", str(tmp_path / "partial.json"))
    assert result.exit_code == 2 and "no object box for test/c1/2.png" in result.output
    result = CliRunner().invoke(main, ["localization", str(root / "model.keras"), "--data", "fashion_mnist", "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "needs a folder: source" in result.output
