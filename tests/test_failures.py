"""Failure behaviour through the ``zf`` command (issue 11): every bad input or fault ends with one
line naming the bad thing, no traceback, and nothing half-written in the output location.

Cases as numbered in the issue: 1 unwritable output, 2 test splits of sources without one,
3 atomic outputs (and a SIGKILLed ``zf visualize``), 4 corrupt images and --skip-corrupt,
5 TFDS offline, 6 option values the model cannot serve, 7 resumed training, 8 minor messages.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from cli_helpers import assert_fails, last_line, zf

import zfkeras  # noqa: F401
from zfkeras import data
from zfkeras.data.sources import tfds as tfds_source
from zfkeras.nn.models import build_model, zfnet_small_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 240  # seconds a subprocess may take before the test fails (and kills it)
TINY = [
    "--arch",
    "zfnet_small",
    "--units",
    "conv1=4,conv2=4,conv3=4,conv4=4,conv5=4,fc6=16,fc7=16",
    "--kernel-init",
    "he_normal",
    "--batch-size",
    "8",
    "--log-projections",
    "0",
    "--no-progress",
    "--val-split",
    "0",
]


# ---- helpers ---------------------------------------------------------------------------------


def leftovers(directory):
    """Temporary siblings (``.NAME.partial-*`` / ``.NAME.old-*``) in ``directory``."""
    return sorted(name for name in os.listdir(directory) if ".partial-" in name or ".old-" in name)


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(np.asarray(array, np.uint8)))


def image_folder(root, per_class, classes=("a", "b"), size=32, seed=0):
    """``root/<class>/<i>.png`` grey images, ``per_class`` per class."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        for i in range(per_class):
            image = rng.integers(0, 60, (size, size, 1)) + 150 * (np.arange(size)[:, None, None] // 8 == label)
            write_png(os.path.join(root, name, f"{i:02d}.png"), image)
    return str(root)


def tree(directory):
    """``{relative path: sha256}`` of every file under ``directory``."""
    found = {}
    for base, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(base, name)
            found[os.path.relpath(path, directory)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny untrained model (.keras), an IDX source and an image folder with train/ and test/
    whose test split holds one corrupt file."""
    root = tmp_path_factory.mktemp("failures")
    spec = zfnet_small_spec().with_units(conv1=6, conv2=6, conv3=6, conv4=6, conv5=6, fc6=16, fc7=16)
    model = build_model(spec, seed=1)
    model.save(root / "model.keras")
    os.makedirs(root / "run" / "checkpoints")
    shutil.copy(root / "model.keras", root / "run" / "checkpoints" / "epoch-001.keras")
    from train_helpers import write_small_idx

    write_small_idx(str(root / "idx"), n_train=16, n_test=12)
    image_folder(root / "split" / "train", 4)
    image_folder(root / "split" / "test", 2, seed=1)
    corrupt = root / "split" / "test" / "a" / "zz-broken.png"
    corrupt.write_bytes(b"not a png at all" * 4)
    return {
        "root": root,
        "model": str(root / "model.keras"),
        "idx": f"idx:{root / 'idx'}",
        "split": str(root / "split"),
        "corrupt": str(corrupt),
        "run": str(root / "run"),
    }


# ---- 1. output that cannot be written ----------------------------------------------------------


def blocked(tmp_path):
    """A regular file, so any path under it fails for every user, root included."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file\n")
    return blocker


@pytest.mark.parametrize("command", ["visualize", "filters", "evolution", "occlusion", "invariance", "project", "evaluate", "export"])
def test_output_under_a_file_fails_before_any_work(setup, tmp_path, command):
    blocker = blocked(tmp_path)
    out = blocker / "out"
    model, idx = setup["model"], setup["idx"]
    args = {
        "visualize": ["visualize", model, "--data", idx, "--out", out],
        "filters": ["filters", model, "--data", idx, "--out", out],
        "evolution": ["evolution", setup["run"], "--data", idx, "--out", out],
        "occlusion": ["occlusion", model, "chelsea", "--out", out],
        "invariance": ["invariance", model, "chelsea", "--out", out],
        "project": ["project", model, "chelsea", "--out", out],
        "evaluate": ["evaluate", model, "--data", idx, "--out", out],
        "export": ["export", model, "--out", out],
    }[command]
    result = zf(*args)
    assert_fails(result, 2, "--out", f"{blocker} is a file, not a directory")
    assert "scan" not in result.output and "occluding" not in result.output  # failed before the work
    assert blocker.read_text() == "a regular file\n"
    assert sorted(os.listdir(tmp_path)) == ["blocker"]


def test_train_out_and_export_under_a_file(setup, tmp_path):
    blocker = blocked(tmp_path)
    result = zf("train", *TINY, "--data", setup["idx"], "--epochs", "1", "--out", blocker / "run")
    assert_fails(result, 2, "--out", blocker)
    result = zf("train", *TINY, "--data", setup["idx"], "--epochs", "1", "--run-dir", blocker / "run")  # the old name
    assert_fails(result, 2, "--run-dir", blocker)
    result = zf("train", *TINY, "--data", setup["idx"], "--epochs", "1", "--out", tmp_path / "run", "--export", blocker / "e")
    assert_fails(result, 2, "--export", blocker)
    assert "training" not in result.output  # nothing trained
    assert sorted(os.listdir(tmp_path)) == ["blocker"]


def test_output_exists_as_a_file(setup, tmp_path):
    out = tmp_path / "out"
    out.write_text("keep me\n")
    result = zf("occlusion", setup["model"], "chelsea", "--out", out)
    assert_fails(result, 2, "--out", str(out), "is a file")  # Click checks this one itself
    assert out.read_text() == "keep me\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits (the PermissionError path is tested below)")
def test_read_only_folder(setup, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = zf("occlusion", setup["model"], "chelsea", "--out", locked / "out")
        assert_fails(result, 2, "--out", f"no permission to write in {locked}")
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)


def test_permission_error_at_the_end_is_one_line(setup, tmp_path, monkeypatch):
    # Permissions can change while a command runs (or a disk fills up): any OSError is one line
    # naming the path, and the temporary output is gone.
    import zfkeras.io.atomic

    def refuse(temp, path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(zfkeras.io.atomic, "swap_directory", refuse)
    out = tmp_path / "deep" / "out"
    result = zf("occlusion", setup["model"], "chelsea", "--stride", "7", "--out", out)
    assert_fails(result, 1, f"{out}: Permission denied")
    assert os.listdir(tmp_path) == []  # no partial output, and the parent it made is removed again


# ---- 2. test splits of sources without one ------------------------------------------------------


def test_holdout_is_seeded_stratified_and_disjoint(tmp_path):
    folder = image_folder(tmp_path / "f", 5, classes=("a", "b", "c"))
    write_png(os.path.join(folder, "c", "extra.png"), np.zeros((8, 8, 1)))
    write_png(os.path.join(tmp_path, "f", "single", "only.png"), np.zeros((8, 8, 1)))
    train, test, everything = (data.load_source(f"folder:{folder}", split) for split in ("train", "test", "all"))

    def labelled(source):
        return sorted((int(y), x.tobytes()) for x, y in source.dataset.as_numpy_iterator())

    assert labelled(everything) == sorted(labelled(train) + labelled(test))
    assert not set(labelled(train)) & set(labelled(test))
    counts = np.bincount([y for y, _ in labelled(test)], minlength=4)
    assert counts.tolist() == [1, 1, 1, 0]  # round(0.2 * 5 or 6) per class; a one-image class stays in train
    assert test.holdout == train.holdout == {"fraction": 0.2, "seed": 0, "train_images": 14, "test_images": 3}
    again = data.load_source(f"folder:{folder}", "test")
    assert labelled(again) == labelled(test)
    assert everything.holdout is None


def test_train_export_holds_out_the_test_split_and_resumes(tmp_path, monkeypatch):
    """Cases 2 and 7: a folder with no train/ and test/ is trained on 80% of each class and
    tested on the rest, which the run records; an interrupted run says it resumes."""
    folder = image_folder(tmp_path / "f", 5)
    run, export = tmp_path / "run", tmp_path / "export"
    args = ["train", *TINY, "--data", f"folder:{folder}", "--epochs", "2", "--checkpoint-epochs", "1", "--out", run, "--export", export]

    import pipelines.commands.train

    real = pipelines.commands.train.epoch_summary

    def interrupting(epochs, run_dir):
        class Interrupt(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                raise KeyboardInterrupt  # like Ctrl-C after epoch 1 was saved

        return Interrupt()

    monkeypatch.setattr(pipelines.commands.train, "epoch_summary", interrupting)
    first = zf(*args)
    assert first.exit_code != 0 and not export.exists()
    assert "resuming" not in first.output
    monkeypatch.setattr(pipelines.commands.train, "epoch_summary", real)
    result = zf(*args)
    assert result.exit_code == 0, result.output
    assert f"resuming from epoch 2 of {run} (1 of 2 epochs done)" in result.output
    assert result.stderr.count("class-stratified 20% of each class (2 images), left out of the train split (8 images)") == 1  # said once
    metrics = json.load(open(export / "zfkeras.json"))["metrics"]
    assert metrics["test_images"] == 2 and metrics["test_split"]["held_out"] is True
    assert json.load(open(run / "config.json"))["num_train"] == 8
    assert json.load(open(run / "config.json"))["test_split"]["test_images"] == 2
    # zf evaluate uses the same held-out images and says so
    result = zf("evaluate", export, "--data", f"folder:{folder}", "--crops", "single")
    assert result.exit_code == 0, result.output
    assert "2 images" in result.output and "class-stratified 20% of each class" in result.output


def test_no_test_split_is_said_plainly(setup, tmp_path):
    folder = image_folder(tmp_path / "f", 1)  # one image per class: nothing to hold out
    result = zf("evaluate", setup["model"], "--data", f"folder:{folder}")
    assert_fails(result, 2, "--data", "no held-out test split")


# ---- 3. atomic outputs ------------------------------------------------------------------------


def visualize_args(setup, out, seed, layers="conv1,conv2"):
    return [
        "visualize",
        setup["model"],
        "--data",
        setup["idx"],
        "--layers",
        layers,
        "--maps",
        "random:2",
        "--k",
        "2",
        "--images",
        "8",
        "--seed",
        seed,
        "--out",
        out,
    ]


def test_rerun_replaces_the_whole_folder_and_cleans_leftovers(setup, tmp_path):
    out = tmp_path / "vis"
    result = zf(*visualize_args(setup, out, 0))
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ["conv1.png", "conv2.png", "summary.json", "topk.json"]
    (tmp_path / ".vis.partial-999999999-abc").mkdir()  # left by a killed run (no such process)
    (tmp_path / ".vis.partial-oldstyle").mkdir()  # an older export's name, without a PID
    result = zf(*visualize_args(setup, out, 1, layers="conv1"))
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ["conv1.png", "summary.json", "topk.json"]  # no stale conv2.png
    assert json.load(open(out / "summary.json"))["seed"] == 1
    assert leftovers(tmp_path) == []


def test_a_foreign_folder_is_not_replaced(setup, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious\n")
    result = zf(*visualize_args(setup, out, 0))
    assert_fails(result, 2, "--out", "not an earlier output (no summary.json)")
    assert os.listdir(out) == ["notes.txt"] and leftovers(tmp_path) == []


def test_an_older_occlusion_folder_is_replaced(setup, tmp_path):
    out = tmp_path / "occ"
    out.mkdir()
    for name in ("old.npz", "old.png"):  # written before occlusion.json existed
        (out / name).write_bytes(b"old")
    result = zf("occlusion", setup["model"], "chelsea", "--stride", "7", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ["chelsea.npz", "chelsea.png", "occlusion.json"]
    assert json.load(open(out / "occlusion.json"))["images"]["chelsea"]["stride"] == 7


STALLED_VISUALIZE = """
import os, sys, time
import pipelines.output as common
real = common.save_figure
def stalled(figure, path, **kwargs):  # the first figure is written, then the run hangs until killed
    real(figure, path, **kwargs)
    open(sys.argv[1], "w").write("stalled")
    time.sleep(600)
common.save_figure = stalled
from pipelines.cli import main
main(args=sys.argv[2:], prog_name="zf")
"""


def kill_mid_run(setup, tmp_path, out, seed):
    """Run ``zf visualize`` in a subprocess, SIGKILL it once its first figure is written."""
    marker = tmp_path / f"stalled-{seed}"
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    args = [sys.executable, "-c", STALLED_VISUALIZE, str(marker)] + [str(a) for a in visualize_args(setup, out, seed)]
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(TIMEOUT * 10):
            if marker.exists() or process.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), process.communicate(timeout=5)[0].decode()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL


def test_sigkilled_visualize_leaves_nothing_or_the_previous_result(setup, tmp_path):
    out = tmp_path / "vis"
    kill_mid_run(setup, tmp_path, out, seed=0)
    assert not out.exists()  # killed during its first run: no output at all
    assert len(leftovers(tmp_path)) == 1  # the killed run's .vis.partial-PID-*, holding conv1.png
    result = zf(*visualize_args(setup, out, 0))
    assert result.exit_code == 0, result.output
    assert leftovers(tmp_path) == []  # cleaned by the next run
    before = tree(out)
    assert sorted(before) == ["conv1.png", "conv2.png", "summary.json", "topk.json"]
    kill_mid_run(setup, tmp_path, out, seed=1)
    assert tree(out) == before  # the previous complete result, untouched


# ---- 4. corrupt images ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["evaluate", "visualize", "filters", "evolution"])
def test_corrupt_image_is_named_and_skippable(setup, tmp_path, command):
    out = tmp_path / "out"
    spec = f"folder:{setup['split']}"
    args = {
        "evaluate": ["evaluate", setup["model"], "--data", spec, "--crops", "single", "--out", out],
        "visualize": ["visualize", setup["model"], "--data", spec, "--maps", "random:1", "--layers", "conv1", "--out", out],
        "filters": ["filters", setup["model"], "--data", spec, "--maps", "random:2", "--out", out],
        "evolution": ["evolution", setup["run"], "--data", spec, "--split", "test", "--maps", "random:1", "--layers", "conv1", "--out", out],
    }[command]
    result = zf(*args)
    assert_fails(result, 2, "--data", setup["corrupt"], "--skip-corrupt")
    assert os.listdir(tmp_path) == []
    result = zf(*args, "--skip-corrupt")
    assert result.exit_code == 0, result.output
    assert f"skipped 1 unreadable image(s) of the test split of {spec}:\n  {setup['corrupt']}\n" in result.output
    written = out / {"evaluate": "results.json", "visualize": "summary.json"}.get(command, f"{command}.json")
    record = json.load(open(written))
    found = record.get("skipped_files") or next(iter(record.get("models", {}).values()), {}).get("skipped_files")
    assert found == [setup["corrupt"]]


def test_train_export_keeps_test_metrics_with_skip_corrupt(setup, tmp_path):
    args = [
        "train",
        *TINY,
        "--data",
        f"folder:{setup['split']}",
        "--epochs",
        "1",
        "--checkpoint-epochs",
        "1",
        "--out",
        tmp_path / "run",
        "--export",
        tmp_path / "export",
    ]
    result = zf(*args)
    # The corrupt file is in the test split: found when the export's evaluation first reads it.
    assert_fails(result, 2, "--data", setup["corrupt"], "--skip-corrupt")
    assert not (tmp_path / "export").exists()
    args[args.index(tmp_path / "run")] = tmp_path / "run2"
    result = zf(*args, "--skip-corrupt")
    assert result.exit_code == 0, result.output
    metrics = json.load(open(tmp_path / "export" / "zfkeras.json"))["metrics"]
    assert metrics["test_images"] == 4 and metrics["test_skipped_files"] == [setup["corrupt"]]
    assert metrics["test_split"] == {"held_out": False}


# ---- 5. TFDS offline ----------------------------------------------------------------------------


OFFLINE = """
import socket, sys
def offline(*args, **kwargs):
    raise OSError(101, "Network is unreachable (simulated by the test)")
socket.create_connection = offline
socket.socket.connect = offline
from pipelines.cli import main
main(args=sys.argv[1:], prog_name="zf")
"""


def test_tfds_offline_fails_fast_and_leaves_nothing(setup, tmp_path):
    home, data_dir = tmp_path / "home", tmp_path / "tfds"
    home.mkdir()
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", HOME=str(home))
    for name in ("TFDS_DATA_DIR", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(name, None)
    args = [sys.executable, "-c", OFFLINE, "evaluate", setup["model"], "--data", "tfds:mnist", "--data-dir", str(data_dir)]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    line = output.strip().splitlines()[-1]
    assert "--data" in line and f"'mnist' is not prepared under {data_dir}" in line
    assert "cannot be downloaded" in line and "tfds build mnist --data_dir DIR" in line
    assert not data_dir.exists()
    left = [os.path.join(base, name) for base, dirs, files in os.walk(home) for name in dirs + files]
    assert not [path for path in left if "tensorflow_datasets" in path or ".tmp." in path], left


# ---- 6. option values the model cannot serve ----------------------------------------------------


def test_project_more_maps_than_the_layer_has(setup, tmp_path):
    result = zf("project", setup["model"], "chelsea", "--layers", "conv1", "--top", "40", "--out", tmp_path / "p")
    assert_fails(result, 2, "--top", "conv1 has only 6 maps; use 1-6")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--stride", "1000", "one square position on the model input 28x28; use 1-27"),
        ("--fill", "nan", "'nan' is not a pixel value"),
        ("--map", "99", "conv5 has maps 0-5"),
        ("--patch", "99", "larger than the model input 28x28; use 1-28"),
    ],
)
def test_occlusion_values_name_their_option(setup, tmp_path, option, value, message):
    result = zf("occlusion", setup["model"], "chelsea", option, value, "--out", tmp_path / "out")
    assert_fails(result, 2, option, message)
    assert os.listdir(tmp_path) == []


def test_correspondence_fill_nan(setup, tmp_path):
    result = zf("correspondence", setup["model"], "--parts", tmp_path / "parts.json", "--fill", "nan", "--out", tmp_path / "out")
    assert_fails(result, 2, "--fill", "'nan' is not a pixel value")


# ---- 8. minor messages --------------------------------------------------------------------------


def test_missing_image_is_no_such_file(tmp_path):
    result = zf("project", "random:zfnet_small", str(tmp_path / "missing.png"), "--out", tmp_path / "p")
    assert_fails(result, 2, f"{tmp_path / 'missing.png'}: no such file")


def test_random_bytes_keras_file(setup, tmp_path):
    bad = tmp_path / "random.keras"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    result = zf("occlusion", bad, "chelsea", "--out", tmp_path / "out")
    assert_fails(result, 2, f"{bad}: not a Keras model file")
    assert "not found" not in result.output.lower()


def test_plain_saved_model_names_the_path_once(setup, tmp_path):
    plain = tmp_path / "plain"
    setup_model = keras.saving.load_model(setup["model"], compile=False)
    setup_model.export(str(plain), format="tf_saved_model", verbose=False)
    result = zf("occlusion", plain, "chelsea", "--out", tmp_path / "out")
    assert_fails(result, 2, "not a zfkeras export")
    assert last_line(result).count(str(plain)) == 1


def test_one_class_names_data(tmp_path):
    folder = image_folder(tmp_path / "f", 3, classes=("only",))
    result = zf("train", *TINY, "--data", f"folder:{folder}", "--epochs", "1", "--out", tmp_path / "run")
    assert_fails(result, 2, "--data", "1 class (only); training needs at least 2")
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_corrupt_jpeg_prints_no_decoder_line(tmp_path, capfd):
    jpeg = tf.io.encode_jpeg(np.full((32, 32, 3), 90, np.uint8)).numpy()
    bad = tmp_path / "half.jpg"
    bad.write_bytes(jpeg[: len(jpeg) // 2])
    result = zf("project", "random:zfnet_small", bad, "--out", tmp_path / "p")
    assert_fails(result, 2, f"{bad}: not a readable image")
    captured = capfd.readouterr()
    assert "JPEG" not in captured.err + captured.out


def test_tfds_failed_download_removes_what_it_made(tmp_path, monkeypatch):
    # Online, but the download fails half-way: the attempt's *.tmp.* and incomplete folders go.
    import tensorflow_datasets as tfds

    def failing(builder, *args, **kwargs):
        os.makedirs(os.path.join(tmp_path, "tfds", "downloads", "x.tmp.123"))
        os.makedirs(os.path.join(builder.data_dir + ".incomplete"))
        raise ConnectionError("connection reset (simulated by the test)")

    monkeypatch.setattr(tfds_source, "online", lambda timeout=3.0: True)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", failing)
    with pytest.raises(RuntimeError, match="could not download/prepare 'mnist'.*connection reset"):
        data.load_source("tfds:mnist", "test", data_dir=tmp_path / "tfds")
    assert os.listdir(tmp_path) == []
    (tmp_path / "tfds").mkdir()
    (tmp_path / "tfds" / "keep").write_text("an earlier file\n")
    with pytest.raises(RuntimeError):
        data.load_source("tfds:mnist", "test", data_dir=tmp_path / "tfds")
    assert os.listdir(tmp_path / "tfds") == ["keep"]


def test_atomic_writer_cleans_only_dead_writers_and_restores_a_half_swapped_result(tmp_path):
    from zfkeras.io.atomic import atomic_output, clean_stale

    dead, oldstyle, live = (tmp_path / name for name in (".out.partial-999999999-a", ".out.partial-k2j4", f".out.partial-{os.getpid()}-b"))
    for directory in (dead, oldstyle, live):
        directory.mkdir()
    # killed between the two renames of a directory swap: the previous result waits in .old-
    previous = tmp_path / ".out.old-999999999-c" / "out"
    previous.mkdir(parents=True)
    (previous / "result.json").write_text("{}\n")
    clean_stale(tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == [live.name, "out"]  # a running writer's folder stays
    assert os.listdir(tmp_path / "out") == ["result.json"]
    live.rmdir()
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "new" / "deeper" / "out", directory=True) as temp:
            open(os.path.join(temp, "half.png"), "w").close()
            raise RuntimeError("killed")
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no partial, and the parents it made are gone
    with atomic_output(tmp_path / "out", directory=True) as temp:
        open(os.path.join(temp, "new.json"), "w").close()
    assert os.listdir(tmp_path / "out") == ["new.json"] and sorted(os.listdir(tmp_path)) == ["out"]
