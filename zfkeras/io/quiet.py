"""TensorFlow's C++ log lines kept off the terminal: they are written straight to file descriptor 2,
below Python, so they are filtered there (:func:`quiet_stderr`). No TensorFlow is imported here
except by :func:`import_tensorflow_quietly`, which is what it is for."""

import contextlib
import os
import re
import sys
import tempfile


def tensorflow_noise(line):
    """TensorFlow's start-up lines that TF_CPP_MIN_LOG_LEVEL does not hide (measured, TF 2.21; the
    import prints them twice): absl's "All log messages before absl::InitializeLog() ..." and info or
    warning lines such as "I0000 ... port.cc:153] oneDNN custom operations are on ..." and
    "cpu_feature_guard.cc ... This TensorFlow binary is optimized ..." with its continuation line;
    errors (E...) pass."""
    return (
        "absl::InitializeLog()" in line
        or re.match(r"[IW]\d{4} [\d:. ]+\d+ \S+:\d+\] ", line) is not None
        or line.startswith("To enable the following instructions:")
    )


def jpeg_noise(line):
    """The JPEG decoder's own complaints ("Corrupt JPEG data: ...", "Improper call to JPEG library
    ...", TF's "E0000 ... jpeg_mem.cc:331] Premature end of JPEG data") and absl's one-off notice
    before its first log line."""
    return "JPEG" in line or "absl::InitializeLog()" in line


@contextlib.contextmanager
def quiet_stderr(noise):
    """Drop the lines ``noise(line)`` picks from what C++ libraries write straight to file
    descriptor 2 while the block runs; other stderr output passes through (at the end)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = [line for line in lines if not noise(line)]
            if kept:
                os.write(2, "".join(kept).encode())


def import_tensorflow_quietly():
    """``import tensorflow`` (and Keras) without their start-up chatter (:func:`tensorflow_noise`);
    nothing is done when TensorFlow is already imported or is not installed."""
    if "tensorflow" in sys.modules:
        return
    with quiet_stderr(tensorflow_noise), contextlib.suppress(ImportError):
        import tensorflow  # noqa: F401
