"""Shared by the benchmarks: the smoke mode, options, the model, the photo, timing, memory."""

import os
import time

import numpy as np

SMOKE = "--smoke"


def smoke_mode(argv):
    """``(smoke?, argv without --smoke)``. Every benchmark takes ``--smoke``: its code on tiny sizes in
    seconds, no timing meant (the tests run them all, so none can rot: ``tests/test_benchmarks.py``)."""
    argv = list(argv)
    return SMOKE in argv, [arg for arg in argv if arg != SMOKE]


def options(argv, defaults, name):
    """``--key=N`` options (positive ints) over ``defaults``; one clear line on a bad one. Where
    ``defaults`` has a ``smoke`` key, a bare ``--smoke`` (what ``python -m benchmarks --smoke``
    passes every benchmark) means ``--smoke=1``."""
    chosen = dict(defaults)
    for arg in argv:
        if arg == SMOKE and "smoke" in chosen:
            chosen["smoke"] = 1
            continue
        key, _, value = arg.lstrip("-").partition("=")
        if key not in chosen or not value.isdigit() or int(value) < 1:
            accepted = " ".join(f"--{k}=N" for k in defaults)
            raise SystemExit(f"{name} benchmark: bad option {arg!r}; use {accepted}")
        chosen[key] = int(value)
    return chosen


TINY_WIDTHS = dict(conv1=4, conv2=4, conv3=4, conv4=4, conv5=4, fc6=8, fc7=8)  # --smoke: ZFNet's geometry, 4 maps a layer


def zfnet_224(tiny=False):
    """Full ZFNet (Fig. 3), 1000 classes, random he_normal weights (so deep maps stay alive), mean 120;
    ``tiny``: the same geometry with :data:`TINY_WIDTHS` (smoke runs)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from zfkeras.nn.models import build_model, zfnet_spec

    keras.utils.set_random_seed(0)
    spec = zfnet_spec().replace(kernel_init="he_normal")
    model = build_model(spec.with_units(**TINY_WIDTHS) if tiny else spec, seed=0)
    model.get_layer("subtract_mean").set_mean(np.full((224, 224, 3), 120.0, "float32"))
    return model


def photo(size=224):
    """skimage's ``chelsea`` (a real photo), centre-cropped square and resized: float32 ``[size, size, 3]``, 0-255."""
    import skimage.data
    import skimage.transform

    image = skimage.data.chelsea()
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    square = image[top : top + side, left : left + side]
    return (skimage.transform.resize(square, (size, size), anti_aliasing=True) * 255).astype("float32")


def _status_bytes(field):
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def peak_memory(function):
    """Peak resident memory (bytes) above the resident memory before, while ``function()`` runs.

    Resets the kernel's high-water mark first (``/proc/self/clear_refs``); None where that is refused.
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return None
    before = _status_bytes("VmRSS")
    function()
    return max(_status_bytes("VmHWM") - before, 0)


PEAK_VARIABLE = "ZFKERAS_BENCHMARK_PEAK"


def peak_target():
    """``(case, path)`` this process only measures the memory of (set by :func:`isolated_peaks`), or None."""
    value = os.environ.get(PEAK_VARIABLE)
    return tuple(value.split(":", 1)) if value else None


def report_peak(methods, case):
    """In a child of :func:`isolated_peaks`: print the peak of the chosen path's first two runs
    (tracing included) above the process's memory once the model is built."""
    function = methods[peak_target()[1]]
    print(f"PEAK {peak_memory(lambda: (function(), function()))}", flush=True)


def isolated_peaks(benchmark, argv, case, paths):
    """Peak memory of each path of ``case``, each measured in a fresh process (so one path's freed
    but still resident memory does not hide the next one's). ``{path: bytes or None}``."""
    import subprocess
    import sys

    peaks = {}
    for path in paths:
        env = dict(os.environ, **{PEAK_VARIABLE: f"{case}:{path}"})
        done = subprocess.run([sys.executable, "-m", "benchmarks", benchmark, *argv], env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("PEAK ")]
        peaks[path] = int(lines[-1].split()[1]) if lines and lines[-1].split()[1].isdigit() else None
    return peaks


def interleaved(methods, repeats):
    """Time every ``methods`` callable once per repeat, back to back, so load hits them alike.

    Returns ``{name: (median wall s, median CPU s)}`` and ``{name: last result}``.
    """
    times = {name: [] for name in methods}
    results = {}
    for _ in range(repeats):
        for name, function in methods.items():
            wall, cpu = time.perf_counter(), time.process_time()
            results[name] = function()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    medians = {name: tuple(float(np.median([t[i] for t in runs])) for i in (0, 1)) for name, runs in times.items()}
    return medians, results


def relative_error(got, want):
    """max |got - want| / max |want| (0 when both are all zero)."""
    scale = float(np.abs(want).max())
    return float(np.abs(got - want).max()) / scale if scale else float(np.abs(got).max())
