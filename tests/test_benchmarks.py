"""Every benchmark runs: each registered one (:func:`benchmarks.registered`, what ``python -m
benchmarks`` runs) runs on tiny sizes (``--smoke``), so a benchmark that no longer matches the code
fails here rather than when someone next measures. No timing is asserted. The benchmarks whose
smoke mode a test of their own runs (and checks the report of) are not run twice."""

import os
import re
import subprocess
import sys

from benchmarks import registered

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 1200  # seconds for all of them (minutes on a busy 2-core machine)
SMOKED_BY = {
    "atlas": "test_atlas.py",
    "faithfulness": "test_benchmark_smoke.py",
    "feature_visualization": "test_feature_visualization.py",
    "rules": "test_benchmark_smoke.py",
    "toolbox": "test_toolbox.py",
}


def test_benchmarks_smoked_elsewhere_are_run_by_their_test():
    for name, test_file in SMOKED_BY.items():
        text = open(os.path.join(ROOT, "tests", test_file)).read()
        imported = re.search(rf"from benchmarks(\.{name} import main| import (\w+, )*{name}\b)", text)
        assert imported and "--smoke" in text, (name, test_file)


def test_every_other_benchmark_runs_in_smoke_mode():
    names = registered()
    assert {"data", "occlusion", "project", "topk", "train"} <= set(names) and "speed" not in names
    assert set(SMOKED_BY) <= set(names)
    others = [name for name in names if name not in SMOKED_BY]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *others, "--smoke"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    for name in others:
        assert f"== benchmark: {name}" in done.stdout, name
