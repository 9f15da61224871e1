"""Failure behaviour, round two (issue 22), part 2: faults and the names and values users type.

Through the ``zf`` command: a resumed ``zf train`` whose backup a kill truncated, a full disk
under ``--out`` (a real one: a small tmpfs in a private mount namespace), ``zf report`` on a run
trained without validation images, option values checked where they are parsed, and Keras' own
layer names (ResNet50's ``conv3_block2_2_relu``) accepted wherever a layer is named.
"""

import json
import os
import shutil
import subprocess
import sys

import click
import keras
import numpy as np
import pytest
from cli_helpers import assert_fails, last_line, zf

import zfkeras  # noqa: F401  (registers the custom layers)
from pipelines import options
from pipelines.cli import main
from pipelines.registry import COMMANDS
from zfkeras.export import export_model, open_model
from zfkeras.nn.models import build_model, zfnet_small_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300
TINY = ["--units", "conv1=4,conv2=4,conv3=4,conv4=4,conv5=4,fc6=16,fc7=16", "--batch-size", "8", "--log-projections", "0", "--no-progress"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    from train_helpers import write_small_idx

    write_small_idx(str(root / "idx"), n_train=24, n_test=8)
    spec = zfnet_small_spec().with_units(conv1=4, conv2=4, conv3=4, conv4=4, conv5=4, fc6=16, fc7=16)
    build_model(spec, seed=1).save(root / "model.keras")
    return {"root": root, "idx": f"idx:{root / 'idx'}", "model": str(root / "model.keras")}


# ---- a resumed run whose backup a kill truncated -----------------------------------------------


def interrupted_after(monkeypatch, epochs):
    """Make ``zf train`` stop (as Ctrl-C would) once epoch ``epochs`` is done and backed up."""
    import pipelines.commands.train

    def interrupting(total, run_dir):
        class Interrupt(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 == epochs:
                    raise KeyboardInterrupt

        return Interrupt()

    monkeypatch.setattr(pipelines.commands.train, "epoch_summary", interrupting)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # what a kill while h5py writes leaves


def weights(run):
    return keras.saving.load_model(run / "model.keras", compile=False).get_weights()


def test_truncated_backup_falls_back_to_the_one_before_and_ends_the_same(setup, tmp_path, monkeypatch):
    args = ["train", *TINY, "--data", setup["idx"], "--epochs", "3", "--val-split", "0.25", "--seed", "5"]
    assert zf(*args, "--out", tmp_path / "whole").exit_code == 0
    run = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        interrupted_after(patch, 2)
        assert zf(*args, "--out", run).exit_code != 0
    backup = run / "backup" / "latest.weights.h5"
    assert json.load(open(run / "backup" / "training_metadata.json"))["epoch"] == 2
    truncate(backup)
    result = zf(*args, "--out", run)
    assert result.exit_code == 0, result.output
    assert f"{backup} is unreadable (" in result.stderr and "resuming from the backup of the epoch before (epoch 1 done)" in result.stderr
    assert "resuming from epoch 2" in result.stderr
    for resumed, whole in zip(weights(run), weights(tmp_path / "whole")):  # each epoch depends only on the seed and its number
        np.testing.assert_array_equal(resumed, whole)


def test_truncated_only_backup_names_the_file_and_what_to_do(setup, tmp_path, monkeypatch):
    args = ["train", *TINY, "--data", setup["idx"], "--epochs", "3", "--val-split", "0", "--out", tmp_path / "run"]
    with monkeypatch.context() as patch:
        interrupted_after(patch, 1)
        zf(*args)
    backup = tmp_path / "run" / "backup" / "latest.weights.h5"
    truncate(backup)
    result = zf(*args)
    assert_fails(result, 1, f"{backup}: the backup of this unfinished run is unreadable", f"delete {tmp_path / 'run' / 'backup'}")
    assert "Unable to synchronously open file" in last_line(result)  # h5py's reason, quoted inside the line
    shutil.rmtree(tmp_path / "run" / "backup")  # what the line says to do
    assert zf(*args).exit_code == 0


# ---- a full disk under --out -------------------------------------------------------------------


def on_full_disk(size, *args):
    """``zf ARGS`` with ``/full`` a ``size`` tmpfs (a private mount namespace: nothing outside sees
    it): ``(exit code, last stderr line, what is left on it)``."""
    script = f'mount -t tmpfs -o size={size} tmpfs "$0" && "$@"; code=$?; echo LEFT; ls -A "$0"; exit $code'
    where = "/tmp/zf-full-disk"
    os.makedirs(where, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    command = ["unshare", "-m", "sh", "-c", script, where, sys.executable, "-m", "pipelines.cli", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=ROOT)
    lines = done.stderr.strip().splitlines()
    return done.returncode, lines[-1] if lines else "", done.stdout.split("LEFT", 1)[1].split(), done.stderr


def can_mount():
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_mount = pytest.mark.skipif(not can_mount(), reason="needs unshare -m and mount (root or a user namespace) for a real full disk")


@needs_mount
@pytest.mark.parametrize(
    "size, args, named",
    [
        ("8k", ["occlusion", "{model}", "chelsea", "--stride", "7", "--out", "/tmp/zf-full-disk/out"], "/tmp/zf-full-disk/out"),
        ("64k", ["export", "{model}", "--out", "/tmp/zf-full-disk/out"], "/tmp/zf-full-disk/out"),
        ("400k", ["train", *TINY, "--data", "{idx}", "--epochs", "2", "--out", "/tmp/zf-full-disk/out"], "/tmp/zf-full-disk/out/"),
    ],
)
def test_a_full_disk_is_one_line_naming_the_path(setup, size, args, named):
    code, line, left, stderr = on_full_disk(size, *(a.format(**setup) for a in args))
    assert code == 1 and "Traceback" not in stderr and "Segmentation" not in stderr, stderr[-3000:]
    assert line.startswith(f"Error: {named}") and line.endswith(": No space left on device"), line
    if args[0] != "train":  # an atomic output leaves nothing; zf train keeps what it wrote, to resume
        assert left == [], left


# ---- zf report on a run trained without validation images ------------------------------------


def test_report_without_validation_draws_what_exists(setup, tmp_path):
    export = tmp_path / "export"
    result = zf("train", *TINY, "--data", setup["idx"], "--epochs", "2", "--val-split", "0", "--out", tmp_path / "run", "--export", export)
    assert result.exit_code == 0, result.output
    skip = "accuracy,visualize,evolution,filters,occlusion,invariance,correspondence,transfer,layers"
    result = zf("report", export, "--data", setup["idx"], "--images", "8", "--skip", skip, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    training = json.load(open(tmp_path / "report" / "results.json"))["sections"]["training"]
    assert training["epochs"] == 2 and training["validation"] is False
    page = (tmp_path / "report" / "index.html").read_text()
    assert "training-curves.png" in page and "no validation curve" in page and "Lowest validation loss" not in page


# ---- option values: checked where they are parsed, exit 2 naming the option -------------------


@pytest.mark.parametrize(
    "args, option",
    [
        (["train", "--seed", "-1"], "--seed"),
        (["train", "--seed", str(2**32)], "--seed"),
        (["visualize", "{model}", "--seed", "-1"], "--seed"),
        (["prepare", "--data", "{idx}", "--seed", "-5"], "--seed"),
        (["train", "--lr", "nan"], "--lr"),
        (["train", "--init-std", "inf"], "--init-std"),
        (["train", "--momentum", "nan"], "--momentum"),
        (["train", "--checkpoint-epochs", "1,0"], "--checkpoint-epochs"),
        (["train", "--without", "9"], "--without"),
        (["train", "--units", "conv9=3"], "--units"),
        (["invariance", "{model}", "chelsea", "--angles", "0,nan"], "--angles"),
        (["filters", "{model}", "--threshold", "inf"], "--threshold"),
        (["occlusion", "{model}", "chelsea", "--max-pixels", "0"], "--max-pixels"),
    ],
)
def test_out_of_range_values_name_their_option(setup, tmp_path, args, option):
    result = zf(*(a.format(**setup) for a in args), "--out", tmp_path / "out")
    assert_fails(result, 2, option)
    assert not (tmp_path / "out").exists()


def test_every_numeric_option_has_a_range():
    """The sweep: every int option of every command is an IntRange, every float one a finite
    Number range (click's FloatRange lets NaN and infinities through)."""
    for name in COMMANDS:
        for param in main.get_command(None, name).params:
            kind = param.type
            if isinstance(kind, click.types.FloatParamType):
                assert isinstance(kind, options.Number), (name, param.opts)
            elif isinstance(kind, click.types.IntParamType):
                assert isinstance(kind, click.IntRange), (name, param.opts)
    from zfkeras.data import MAX_PIXELS

    assert options.max_pixels() == options.MAX_PIXELS == MAX_PIXELS  # spelled in options for --help without TF


# ---- Keras' own layer names ------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet():
    return open_model("keras:resnet50@64x64", "none")


def test_resnet_maps_answer_to_their_relu_names(resnet):
    assert "conv3_block2_2_conv" in resnet.layer_names and "conv3_block2_2_relu" not in resnet.layer_names  # listed under the conv
    assert resnet.layer_aliases["conv3_block2_2_relu"] == "conv3_block2_2_conv"
    assert "conv3_block2_out" in resnet.layer_names and "conv3_block2_out" not in resnet.layer_aliases  # a block output is its own name
    for alias, name in resnet.layer_aliases.items():  # the alias is the layer whose output the map is
        assert resnet.deconvnet.selection_layer(name).name == alias
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    by_alias = resnet.features(images, ["conv3_block2_2_relu"])
    np.testing.assert_array_equal(by_alias["conv3_block2_2_conv"], resnet.features(images, ["conv3_block2_2_conv"])["conv3_block2_2_conv"])
    np.testing.assert_array_equal(resnet.project(images, "conv3_block2_2_relu", 3), resnet.project(images, "conv3_block2_2_conv", 3))
    with pytest.raises(ValueError, match="unknown layer 'conv3_block2_2_bn'"):
        resnet.check_layers("conv3_block2_2_bn", resnet.layer_names)  # before the ReLU: not the map


def test_zf_takes_keras_layer_names(tmp_path):
    args = ["project", "keras:resnet50@64x64", "chelsea", "--weights", "none", "--top", "2", "--out", tmp_path / "p"]
    result = zf(*args[:-2], "--layers", "conv3_block2_2_relu", *args[-2:])
    assert result.exit_code == 0, result.output
    assert sorted(np.load(tmp_path / "p" / "projection.npz")) == ["conv3_block2_2_conv_maps", "conv3_block2_2_conv_projections", "images", "rule"]
    assert_fails(zf(*args[:-2], "--layers", "conv3_block2_2_bn", *args[-2:]), 2, "--layers", "unknown layer 'conv3_block2_2_bn'")


def test_an_export_keeps_the_aliases(tmp_path):
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    export_model(model, tmp_path / "e", class_names=["a", "b"])
    exported = open_model(str(tmp_path / "e"))
    assert exported.layer_names == ["c1", "c2"] and exported.layer_aliases == {"r1": "c1"}
    images = np.random.default_rng(1).uniform(0, 255, (2, 12, 12, 3)).astype("float32")
    np.testing.assert_array_equal(exported.project(images, "r1", 1), exported.project(images, "c1", 1))
    assert list(exported.features(images, ["r1"])) == ["c1"]
