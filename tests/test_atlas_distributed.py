"""``zf atlas`` on large jobs: a killed run resumes from its last finished shard and gives the same
atlas as an uninterrupted one; two replicas (``--strategy cpu:2``, one process) and two worker
processes (``--strategy multiworker``, TF_CONFIG on 127.0.0.1) give the same atlas as one process.
"Same" is every number of ``atlas.json`` (bar the command line and the replica count) and every
PNG byte. Strategies with logical devices or TF_CONFIG need a fresh process: those runs are
subprocesses, bounded in time and always ended.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
from train_helpers import write_small_idx  # noqa: E402

from pipelines.cli import main  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "saved_models", "zfnet-fashion-mnist")
TIMEOUT = 300

# The same job every time: 150 images in 5 shards of 32 (the last one 22), two layers.
SETTINGS = ["--images", "150", "--layers", "conv2,conv5", "--maps", "random:6", "--batch-size", "16", "--shard-images", "32", "--no-evolution"]

# Runs `zf ARGS` and kills itself (SIGKILL, as a crash would) right after the Nth shard is saved.
KILLED_AFTER = """
import os, signal, sys
from zfkeras.io import shards

saved, count = shards.ShardStore.save, []

def save(self, index, arrays):
    saved(self, index, arrays)
    count.append(index)
    if len(count) == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)

shards.ShardStore.save = save
from pipelines.cli import main
main(sys.argv[2:])
"""


def zf(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def run(args, env=None, timeout=TIMEOUT):
    """A subprocess with this tree on the path; returns (returncode, output)."""
    environment = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    process = subprocess.Popen([sys.executable, *args], env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, output.decode()


def contents(directory):
    """``(atlas.json without the command line and replica count, {file: bytes} of everything else)``."""
    atlas = json.loads((directory / "atlas.json").read_text())
    for key in ("command", "replicas"):
        atlas.pop(key)
    files = {}
    for folder, _, names in os.walk(directory):
        for name in names:
            if name != "atlas.json":
                path = os.path.join(folder, name)
                with open(path, "rb") as handle:
                    text = handle.read()
                if name.endswith(".html"):  # pages print the command line in their header
                    text = text.split(b"<nav>", 1)[1]
                files[os.path.relpath(path, directory)] = text
    return atlas, files


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_idx(str(tmp_path_factory.mktemp("atlas-dist-data")), n_train=8, n_test=150)


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    """The reference: the same job, uninterrupted, in one process on one device."""
    out = tmp_path_factory.mktemp("one") / "atlas"
    result = zf("atlas", SHIPPED, "--data", f"idx:{data}", *SETTINGS, "--out", out)
    assert result.exit_code == 0, result.output
    return contents(out)


def test_killed_run_resumes_and_equals_an_uninterrupted_one(data, one_process, tmp_path):
    out = tmp_path / "atlas"
    state = tmp_path / ".atlas.atlas-state"
    code, output = run(["-c", KILLED_AFTER, "2", "atlas", SHIPPED, "--data", f"idx:{data}", *SETTINGS, "--out", str(out)])
    assert code == -signal.SIGKILL, output
    assert not out.exists()  # nothing half-written
    assert sorted(os.listdir(state)) == ["job.json", "shard-00000.npz", "shard-00001.npz"]
    result = zf("atlas", SHIPPED, "--data", f"idx:{data}", *SETTINGS, "--out", out)
    assert result.exit_code == 0, result.output
    assert "resumed: 2 of 5 shards were already scanned" in result.output
    assert contents(out) == one_process
    assert not state.exists()  # the finished atlas leaves no state behind
    # Another job (other units) does not reuse the shards of this one.
    code, _ = run(["-c", KILLED_AFTER, "1", "atlas", SHIPPED, "--data", f"idx:{data}", *SETTINGS, "--out", str(out)])
    assert code == -signal.SIGKILL
    result = zf("atlas", SHIPPED, "--data", f"idx:{data}", *SETTINGS[:-1], "--maps", "random:5", "--no-evolution", "--out", out)
    assert result.exit_code == 0 and "held shards of another atlas" in result.output and "resumed" not in result.output, result.output


def test_two_replicas_in_one_process_equal_one_process(data, one_process, tmp_path):
    out = tmp_path / "atlas"
    code, output = run(["-m", "pipelines.cli", "atlas", SHIPPED, "--data", f"idx:{data}", *SETTINGS, "--strategy", "cpu:2", "--out", str(out)])
    assert code == 0, output[-3000:]
    assert json.loads((out / "atlas.json").read_text())["replicas"] == 2
    assert contents(out) == one_process


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_worker_processes_equal_one_process(data, one_process, tmp_path):
    out = tmp_path / "atlas"
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    environment = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    args = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "atlas",
        SHIPPED,
        "--data",
        f"idx:{data}",
        *SETTINGS,
        "--strategy",
        "multiworker",
        "--out",
        str(out),
    ]
    processes = []
    try:
        for rank in range(2):
            config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}})
            processes.append(
                subprocess.Popen(args, env=dict(environment, TF_CONFIG=config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
            )
        outputs = [process.communicate(timeout=TIMEOUT)[0].decode() for process in processes]
    finally:
        for process in processes:  # never leave a worker waiting for its peer
            if process.poll() is None:
                process.kill()
                process.wait()
    assert [process.returncode for process in processes] == [0, 0], [o[-3000:] for o in outputs]
    assert "worker 1: scanned shards [1, 3] of 5; the chief writes" in outputs[1]
    assert json.loads((out / "atlas.json").read_text())["replicas"] == 2
    assert contents(out) == one_process
