"""Every benchmark runs: ``python -m benchmarks --smoke`` runs each registered one
(:func:`benchmarks.registered`, what ``python -m benchmarks`` runs) on tiny sizes, so a benchmark
that no longer matches the code fails here rather than when someone next measures. No timing is
asserted."""

import os
import subprocess
import sys

from benchmarks import registered

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 1200  # seconds for all of them (minutes on a busy 2-core machine)


def test_every_benchmark_runs_in_smoke_mode():
    names = registered()
    assert {"data", "occlusion", "project", "topk", "train"} <= set(names) and "speed" not in names
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    for name in names:
        assert f"== benchmark: {name}" in done.stdout, name
