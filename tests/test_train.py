"""Training: config and strategy errors, the lr schedule, the run directory, distributed runs
(cpu:2 and two-process multi-worker) against one device, and resuming a SIGKILLed run."""

import json
import os
import signal
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from train_helpers import TINY_UNITS, batch_loss_recorder, tiny_config, write_small_idx

from zfkeras import data
from zfkeras.io.display import filter_grid
from zfkeras.training import TrainConfig, annealed_lr, make_strategy, split_source, train

HELPER = os.path.join(os.path.dirname(__file__), "train_helpers.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 240  # seconds any training subprocess may take before the test fails (and kills it)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_small_idx(str(tmp_path_factory.mktemp("idx")), n_train=192, n_test=40)


def helper(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    env.update(kwargs.pop("env", {}))
    return subprocess.Popen([sys.executable, HELPER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def finish(process):
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"training subprocess timed out:\n{output.decode()[-3000:]}")
    assert process.returncode == 0, output.decode()[-3000:]


def weights_of(model):
    return np.concatenate([w.ravel() for w in model.get_weights()])


def run_in_process(idx_dir, run_dir, **changes):
    recorder = batch_loss_recorder()
    model, history = train(tiny_config(**changes), data.load_source(f"idx:{idx_dir}", "train"), None, str(run_dir), callbacks=[recorder])
    return model, history, np.asarray([loss for epoch in recorder.losses for loss in epoch])


# ---- config, strategies, schedule -----------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(arch="vgg"), "arch must be one of"),
        (dict(input_shape=(28, 32, 1)), "input_shape"),
        (dict(epochs=0), "epochs must be a positive int"),
        (dict(momentum=1.0), "momentum"),
        (dict(kernel_init="zeros"), "kernel_init"),
        (dict(units={"conv9": 3}), "conv9"),
        (dict(checkpoint_epochs=(0, 5)), "checkpoint_epochs"),
        (dict(val_split=1.0), "val_split"),
    ],
)
def test_config_errors_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_config_round_trips_and_clips_checkpoints():
    config = TrainConfig(epochs=12, units={"fc6": 64}, kernel_init="he_normal")
    assert config.kept_epochs == (1, 2, 5, 10)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    spec = config.model_spec()
    assert spec.fc == (64, 256) and spec.kernel_init == "he_normal" and spec.filter_radius == 0.1 and spec.dropout == 0.5


@pytest.mark.parametrize("name, message", [("tpu", "unknown strategy 'tpu'"), ("cpu:0", "positive int"), ("cpu:two", "positive int")])
def test_strategy_name_errors(name, message):
    with pytest.raises(ValueError, match=message):
        make_strategy(name)


def test_multiworker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG must be JSON"):
        make_strategy("multiworker")


def test_logical_cpus_too_late_is_a_clear_error():
    tf.config.list_logical_devices()  # TF's devices are now set up in this process
    have = len(tf.config.list_logical_devices("CPU"))
    with pytest.raises(ValueError, match=f"already set up {have}"):
        make_strategy(f"cpu:{have + 2}")
    assert make_strategy("auto").num_replicas_in_sync == 1  # no GPU here: the default strategy


AUTO_ON_GPUS = """
import sys
from unittest import mock

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(3)])
stand_ins = tf.config.list_logical_devices("CPU")
listed = tf.config.list_logical_devices
with mock.patch.object(tf.config, "list_logical_devices", lambda kind=None: stand_ins if kind == "GPU" else listed(kind)):
    from pipelines.cli import main

    main(sys.argv[1:], standalone_mode=False)
"""


def test_strategy_auto_mirrors_over_every_gpu(idx_dir, tmp_path):
    """``zf train --strategy auto`` with GPUs: MirroredStrategy over all of them. This machine has none,
    so three logical CPU devices stand in for them (TensorFlow's GPU device list is patched to give
    them), and the command trains one epoch on the three replicas."""
    args = ["train", "--data", f"idx:{idx_dir}", "--units", ",".join(f"{k}={v}" for k, v in TINY_UNITS.items()), "--epochs", "1"]
    args += ["--batch-size", "48", "--kernel-init", "he_normal", "--strategy", "auto", "--out", str(tmp_path / "run"), "--no-progress"]
    process = subprocess.Popen(
        [sys.executable, "-c", AUTO_ON_GPUS, *args],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    text = output.decode()
    assert process.returncode == 0, text[-3000:]
    assert "3 replica(s)" in text and "epoch   1/1" in text, text[-3000:]


def test_annealed_lr_by_hand():
    config = TrainConfig(lr=1.0, patience=2, anneal_factor=0.1, min_delta=0.01, min_lr=1e-3)
    assert annealed_lr(config, []) == 1.0
    assert annealed_lr(config, [5, 4, 3]) == 1.0  # improving
    assert annealed_lr(config, [5, 4, 3.995]) == 1.0  # one flat epoch (< min_delta)
    assert annealed_lr(config, [5, 4, 3.995, 4.5]) == pytest.approx(0.1)  # two: anneal, wait resets
    assert annealed_lr(config, [5, 4, 4, 4, 4]) == pytest.approx(0.1)  # third flat epoch: wait 1 of 2
    assert annealed_lr(config, [5, 4, 4, 4, 4, 4]) == pytest.approx(0.01)
    assert annealed_lr(config, [5] * 20) == pytest.approx(1e-3)  # floor


def test_split_source_is_a_seeded_partition(idx_dir):
    source = data.load_source(f"idx:{idx_dir}", "train")
    labels = np.array([int(y) for _, y in source.dataset.as_numpy_iterator()])
    images = np.stack([x for x, _ in source.dataset.as_numpy_iterator()])

    def keys(part):
        return sorted(x.tobytes() for x, _ in part.dataset.as_numpy_iterator())

    train_part, val_part = split_source(source, 0.25, seed=1)
    assert (train_part.num_examples, val_part.num_examples) == (144, 48)
    assert len(keys(train_part)) == 144 and len(keys(val_part)) == 48
    assert sorted(keys(train_part) + keys(val_part)) == sorted(x.tobytes() for x in images)
    assert keys(split_source(source, 0.25, seed=1)[1]) == keys(val_part)
    assert keys(split_source(source, 0.25, seed=2)[1]) != keys(val_part)
    assert train_part.class_names == source.class_names
    with pytest.raises(ValueError, match="empty"):
        split_source(source, 0.001)
    assert len(labels) == 192


# ---- one run: the run directory -------------------------------------------------------------


@pytest.fixture(scope="module")
def single_run(idx_dir, tmp_path_factory):
    """The single-device reference: dropout off (so replicas can match it), forced annealing."""
    run_dir = tmp_path_factory.mktemp("runs") / "single"
    model, history, losses = run_in_process(idx_dir, run_dir, dropout=0.0, epochs=3, patience=1, min_delta=10.0, checkpoint_epochs=(1, 2, 5))
    return run_dir, model, history, losses


def test_run_directory_layout(single_run, idx_dir):
    run_dir, model, history, _ = single_run
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["epoch-001.keras", "epoch-002.keras"]  # 5 > 3 epochs
    assert not (run_dir / "backup").exists()  # removed when the run finished
    record = json.loads((run_dir / "config.json").read_text())
    assert record["config"]["units"] == TINY_UNITS and record["num_train"] == 144 and record["num_val"] == 48
    assert record["class_names"][0] == data.load_source(f"idx:{idx_dir}", "train").class_names[0]
    saved = json.loads((run_dir / "history.json").read_text())
    assert saved["epoch"] == [1, 2, 3] and saved == history
    assert history["lr"] == pytest.approx([1e-2, 1e-2, 1e-3])  # min_delta 10: every epoch after the first is flat
    # The final model round-trips and gives the returned model's outputs.
    images = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
    loaded = keras.saving.load_model(run_dir / "model.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    # The mean image is the training part's (144 images), not all 192.
    source = data.load_source(f"idx:{idx_dir}", "train")
    train_part, _ = split_source(source, 0.25, seed=3)
    mean = np.asarray(model.get_layer("subtract_mean").mean)
    np.testing.assert_allclose(mean, data.compute_mean_image(train_part, 28, 1), atol=1e-4)
    assert np.abs(mean - data.compute_mean_image(source, 28, 1)).max() > 0.1
    # Filter RMS cap holds on every conv layer.
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        kernel = model.get_layer(name).kernel.numpy()
        assert np.sqrt((kernel**2).mean(axis=(0, 1, 2))).max() <= 0.1 + 1e-6


def test_tensorboard_logs(single_run):
    run_dir, *_ = single_run
    checkpoint = keras.saving.load_model(run_dir / "checkpoints" / "epoch-001.keras")
    scalars, histograms, images = set(), set(), {}
    for root, _, files in os.walk(run_dir / "logs"):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                for value in event.summary.value:
                    plugin = value.metadata.plugin_data.plugin_name
                    if plugin == "scalars":
                        scalars.add(value.tag)
                    elif plugin == "histograms":
                        histograms.add(value.tag)
                    elif plugin == "images":
                        images[(value.tag, event.step)] = tf.make_ndarray(value.tensor)
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= scalars
    assert any("conv1" in tag and "kernel" in tag for tag in histograms)
    assert {step for _, step in images} == {0, 1, 2}
    png = images[("conv1_filters", 0)][2]  # [width, height, encoded PNG]
    logged = tf.io.decode_png(png).numpy().astype(np.float32) / 255.0
    expected = filter_grid(checkpoint.get_layer("conv1").kernel.numpy())
    assert logged.shape == expected.shape
    np.testing.assert_allclose(logged, expected, atol=1 / 255 + 1e-6)


def test_finished_or_different_runs_are_not_overwritten(single_run, idx_dir):
    run_dir, *_ = single_run
    source = data.load_source(f"idx:{idx_dir}", "train")
    with pytest.raises(ValueError, match="already holds a finished run"):
        train(tiny_config(), source, None, str(run_dir))
    with pytest.raises(ValueError, match="num_classes is 7"):
        train(tiny_config(num_classes=7), source, None, str(run_dir) + "-other")


# ---- distributed runs against one device ----------------------------------------------------


def test_cpu2_mirrored_matches_one_device(single_run, idx_dir, tmp_path):
    _, model, history, losses = single_run
    out = tmp_path / "mirrored.npz"
    process = helper(
        [
            "--data",
            idx_dir,
            "--run-dir",
            str(tmp_path / "run"),
            "--out",
            str(out),
            "--strategy",
            "cpu:2",
            "--dropout",
            "0",
            "--epochs",
            "3",
            "--patience",
            "1",
            "--min-delta",
            "10",
        ]
    )
    finish(process)
    result = np.load(out)
    assert int(result["replicas"]) == 2
    # Each global batch of 32 ran as two replicas of 16; losses and weights match one device.
    assert len(result["batch_losses"]) == len(losses) == 15  # 3 epochs x 5 batches (144 images / 32)
    np.testing.assert_allclose(result["batch_losses"], losses, rtol=1e-5)
    np.testing.assert_allclose(result["weights"], weights_of(model), atol=1e-5)
    np.testing.assert_allclose(result["lr"], history["lr"])


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_worker_multiworker_matches_one_device(single_run, idx_dir, tmp_path):
    _, model, _, losses = single_run
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    processes = []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
            processes.append(
                helper(
                    [
                        "--data",
                        idx_dir,
                        "--run-dir",
                        str(tmp_path / "run"),
                        "--out",
                        str(tmp_path / f"worker{index}.npz"),
                        "--strategy",
                        "multiworker",
                        "--dropout",
                        "0",
                        "--epochs",
                        "3",
                        "--patience",
                        "1",
                        "--min-delta",
                        "10",
                    ],
                    env={"TF_CONFIG": tf_config},
                )
            )
        for process in processes:
            finish(process)
    finally:
        for process in processes:  # never leave a worker waiting for its peer
            if process.poll() is None:
                process.kill()
                process.wait()
    chief, other = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    assert int(chief["replicas"]) == 2
    np.testing.assert_array_equal(chief["weights"], other["weights"])  # synchronous replicas agree
    np.testing.assert_allclose(chief["batch_losses"], losses, rtol=1e-5)
    np.testing.assert_allclose(chief["weights"], weights_of(model), atol=1e-5)
    # Only the chief writes the run; the other worker keeps its backup/history apart.
    assert (tmp_path / "run" / "model.keras").exists()
    assert not (tmp_path / "run" / "worker-1" / "model.keras").exists()
    assert (tmp_path / "run" / "worker-1" / "history.json").exists()


# ---- kill and resume ------------------------------------------------------------------------


def test_killed_run_resumes_to_the_same_weights(idx_dir, tmp_path):
    run_dir, marker = tmp_path / "killed", tmp_path / "stalled"
    args = ["--epochs", "3", "--patience", "1", "--min-delta", "10"]  # dropout 0.5 and annealing both in play
    process = helper(
        ["--data", idx_dir, "--run-dir", str(run_dir), "--out", str(tmp_path / "never.npz"), "--stall-epoch", "1", "--marker", str(marker), *args]
    )
    try:
        output = b""
        for _ in range(TIMEOUT * 10):
            if marker.exists() or process.poll() is not None:
                break
            try:
                process.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        assert marker.exists(), "the run never reached epoch 2"
        process.send_signal(signal.SIGKILL)  # in the middle of epoch 2 (0-based 1)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, output.decode()[-2000:]
    assert json.loads((run_dir / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    assert not (run_dir / "model.keras").exists()

    source = data.load_source(f"idx:{idx_dir}", "train")
    config = tiny_config(epochs=3, patience=1, min_delta=10.0)
    recorder = batch_loss_recorder()
    resumed, history = train(config, source, None, str(run_dir), callbacks=[recorder])
    assert len(recorder.losses) == 2  # only epochs 2 and 3 ran again
    assert history["epoch"] == [1, 2, 3]
    straight, straight_history = train(config, source, None, str(tmp_path / "straight"))
    # Equal up to float summation order: epoch 1 ran in another process, whose oneDNN/Eigen threads
    # may reduce in another order (~1e-8 seen under load). A resume that replays the wrong crops,
    # shuffle or dropout masks differs by ~1e-2, far outside this tolerance.
    np.testing.assert_allclose(weights_of(resumed), weights_of(straight), rtol=1e-5, atol=1e-7)
    assert history["lr"] == straight_history["lr"] == pytest.approx([1e-2, 1e-2, 1e-3])
    assert history["val_loss"] == pytest.approx(straight_history["val_loss"], rel=1e-6)


# ---- the command ----------------------------------------------------------------------------


def test_zf_train_command(idx_dir, tmp_path):
    from pipelines.commands.train import train as command

    run_dir, export_dir = tmp_path / "cli", tmp_path / "export"
    result = CliRunner().invoke(
        command,
        [
            "--data",
            f"idx:{idx_dir}",
            "--units",
            ",".join(f"{k}={v}" for k, v in TINY_UNITS.items()),
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--kernel-init",
            "he_normal",
            "--lr",
            "0.02",
            "--checkpoint-epochs",
            "2",
            "--val-split",
            "0.25",
            "--seed",
            "5",
            "--out",
            str(run_dir),
            "--export",
            str(export_dir),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and "val_acc" in lines[0] and "lr 2e-02" in lines[0]
    record = json.loads((run_dir / "config.json").read_text())
    assert record["config"]["lr"] == 0.02 and record["config"]["seed"] == 5 and record["command"].startswith("zf ")
    assert os.listdir(run_dir / "checkpoints") == ["epoch-002.keras"]
    meta = json.loads((export_dir / "zfkeras.json").read_text())
    assert meta["metrics"]["test_images"] == 40 and 0 <= meta["metrics"]["test_top1_error"] <= 1
    assert meta["training"]["config"]["config"]["units"] == TINY_UNITS
    assert meta["checkpoints"] == ["checkpoints/epoch-002.keras"] and (export_dir / "checkpoints" / "epoch-002.keras").exists()
    assert meta["training"]["command"] == record["command"]
    # Live feature evolution: one projection image per conv layer per epoch in TensorBoard.
    events = [os.path.join(d, f) for d, _, fs in os.walk(run_dir / "logs" / "projections") for f in fs]
    tags = {(v.tag, e.step) for path in events for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value}
    assert {("projections/conv1", 1), ("projections/conv5", 2)} <= tags

    bad = CliRunner().invoke(command, ["--data", f"idx:{idx_dir}", "--strategy", "gpu:9", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown strategy 'gpu:9'" in bad.output
