"""The zfkeras version (setup.cfg reads it; exports and run directories record it), and the
TensorFlow it needs, which the user installs (setup.cfg's extras ``cpu`` and ``and-cuda``)."""

import importlib.metadata
import importlib.util

__version__ = "0.1.0"

TENSORFLOW_MINIMUM = (2, 21)
INSTALL_HINT = (
    "pip install 'zfkeras[cpu]' (CPU), pip install 'zfkeras[and-cuda]' (NVIDIA GPUs), or install the TensorFlow "
    "wheel of your choice first (tensorflow, tensorflow-cpu, tensorflow[and-cuda]) and then zfkeras"
)


TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos", "tf-nightly", "tf-nightly-cpu")


def tensorflow_version():
    """``(major, minor)`` of the installed TensorFlow, read from the package metadata of the first of
    :data:`TENSORFLOW_DISTRIBUTIONS` installed (TensorFlow is not imported), or None."""
    for name in TENSORFLOW_DISTRIBUTIONS:
        try:
            parts = importlib.metadata.version(name).split(".")
        except importlib.metadata.PackageNotFoundError:
            continue
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            return int(parts[0]), int(parts[1])
    return None


def check_tensorflow():
    """An ImportError saying how to install TensorFlow when it is missing or older than
    :data:`TENSORFLOW_MINIMUM` (a version it cannot read is let through)."""
    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError(f"zfkeras needs TensorFlow >= {'.'.join(map(str, TENSORFLOW_MINIMUM))}, which is not installed: {INSTALL_HINT}")
    found = tensorflow_version()
    if found is not None and found < TENSORFLOW_MINIMUM:
        raise ImportError(f"zfkeras needs TensorFlow >= {'.'.join(map(str, TENSORFLOW_MINIMUM))}, found {'.'.join(map(str, found))}: {INSTALL_HINT}")
