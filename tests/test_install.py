"""Installing zfkeras keeps the user's TensorFlow: in a fresh venv that already holds a distribution
named ``tensorflow`` (what ``pip install tensorflow[and-cuda]`` leaves, built here as a stand-in
wheel so the test needs no 600 MB download), ``pip install -e .`` would install no second
TensorFlow (pip's own resolver, ``--dry-run --report``); the ``cpu`` extra does bring the CPU wheel.
Needs the package index (skipped without it). The full install with the real GPU wheel is a
documented CI step (docs/testing.md)."""

import json
import os
import platform
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600  # seconds per pip call (metadata of ~60 packages from the index)
TENSORFLOWS = {"tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos", "tf-nightly", "tf-nightly-cpu"}


def stand_in_tensorflow(directory, version="2.21.0"):
    """A pure-Python wheel of a distribution named ``tensorflow`` (a package whose module says so)."""
    path = os.path.join(directory, f"tensorflow-{version}-py3-none-any.whl")
    info = f"tensorflow-{version}.dist-info"
    files = {
        "tensorflow/__init__.py": f'__version__ = "{version}"\nSTAND_IN = True\n',
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: tensorflow\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: zfkeras-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def would_install(python, requirement, report):
    """Names of the distributions ``pip install --dry-run`` of ``requirement`` would install."""
    done = subprocess.run(
        [python, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check", "--report", report, requirement],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if done.returncode != 0:
        if any(
            word in done.stderr
            for word in ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution", "No matching distribution")
        ):
            pytest.skip(f"the package index is not reachable: {done.stderr.strip().splitlines()[-1]}")
        raise AssertionError(done.stderr[-3000:])
    with open(report) as handle:
        return {item["metadata"]["name"].lower().replace("_", "-") for item in json.load(handle)["install"]}


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv holding only the stand-in ``tensorflow`` distribution."""
    root = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=TIMEOUT)
    python = str(root / "venv" / "bin" / "python")
    wheel = stand_in_tensorflow(str(root))
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-index", "--disable-pip-version-check", wheel], check=True, timeout=TIMEOUT)
    return python, root


def imported_tensorflow(python):
    done = subprocess.run(
        [python, "-c", "import tensorflow; print(tensorflow.__file__, tensorflow.STAND_IN)"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_installing_zfkeras_keeps_an_installed_tensorflow(venv):
    python, root = venv
    before = imported_tensorflow(python)
    planned = would_install(python, f"-e{ROOT}", str(root / "plain.json"))
    assert "zfkeras" in planned and "keras" in planned, sorted(planned)  # the resolver really ran
    assert not planned & TENSORFLOWS, sorted(planned & TENSORFLOWS)
    assert imported_tensorflow(python) == before


def test_the_cpu_extra_brings_the_cpu_wheel(venv):
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("here the cpu extra is the plain tensorflow wheel, which the stand-in already satisfies")
    python, root = venv
    planned = would_install(python, f"-e{ROOT}[cpu]", str(root / "cpu.json"))
    assert "tensorflow-cpu" in planned, sorted(planned)
