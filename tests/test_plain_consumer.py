"""docs/examples/plain_tf_accuracy.py, the consumer's view of an export (TensorFlow and numpy only),
gives the errors zf evaluate gives, single view and 10 crops, native and other-sized images."""

import json
import os
import subprocess
import sys

import pytest
import skimage.data
import tensorflow as tf
from click.testing import CliRunner

from pipelines.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "docs", "examples", "plain_tf_accuracy.py")
CLASSES = ["astronaut", "cat", "chelsea", "coffee", "hubble", "rocket"]  # sorted: a folder source labels its classes in this order


@pytest.fixture(scope="module")
def export_and_folder(tmp_path_factory):
    from zfkeras.export.savedmodel import export_model
    from zfkeras.nn.models import zfnet64

    root = tmp_path_factory.mktemp("consumer")
    photos = [
        skimage.data.astronaut(),
        skimage.data.cat(),
        skimage.data.chelsea(),
        skimage.data.coffee(),
        skimage.data.hubble_deep_field(),
        skimage.data.rocket(),
    ]
    for name, photo in zip(CLASSES, photos):
        for split in ("train", "test"):  # a folder: source with a test split needs a train/ beside it
            os.makedirs(root / "data" / split / name)
        for i, (y, x, side) in enumerate([(10, 20, 64), (60, 30, 64), (40, 40, 90)]):  # two native, one 90x90 (resized)
            crop = photo[y : y + side, x : x + side + (6 if side != 64 else 0)]
            for split in ("train", "test"):
                tf.io.write_file(str(root / "data" / split / name / f"{i}.png"), tf.io.encode_png(crop))
    model = zfnet64(num_classes=len(CLASSES), seed=1)
    # Random weights give near-uniform probabilities whose argmax float noise could flip; larger
    # class weights make every decision clear, so both readers must agree exactly.
    layer = model.get_layer("predictions")
    layer.set_weights([w * 1e4 for w in layer.get_weights()])
    export_model(model, str(root / "export"), class_names=CLASSES, rules=("deconvnet",))
    return root / "export", root / "data"


def test_the_consumer_script_agrees_with_zf_evaluate(export_and_folder, tmp_path):
    export, data = export_and_folder
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, SCRIPT, str(export), str(data / "test"), "--out", str(tmp_path / "plain.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert plain["images"] == 18 and plain["zfkeras_imported"] is False
    result = CliRunner().invoke(main, ["evaluate", str(export), "--data", f"folder:{data}", "--out", str(tmp_path / "zf")])
    assert result.exit_code == 0, result.output
    ours = json.loads((tmp_path / "zf" / "results.json").read_text())["models"]["export"]
    for key in ("top1_error", "top5_error", "ten_crop_top1_error", "ten_crop_top5_error"):
        assert plain[key] == pytest.approx(ours[key], abs=1e-9), key
    meta = json.loads((export / "zfkeras.json").read_text())
    assert meta["ten_crop"] == {"resize_to": 64, "pad": 5, "crop": 64}
