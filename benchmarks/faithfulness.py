"""Deletion and insertion curves batched against one image per ``predict``: same curves, how much faster.

    python -m benchmarks faithfulness [--images=8] [--steps=28] [--repeats=3] [--smoke=1]

On the shipped Fashion-MNIST model (``saved_models/zfnet-fashion-mnist/model.keras``) and its
first test images, and on the full 224x224 ZFNet (random he_normal weights, one real photo):
the deletion and insertion curves of a random ranking scored by p(class), computed by
:func:`zfkeras.analysis.faithfulness.curves` with 256 changed images per forward pass (batched)
and with one image per ``Probe.predict`` call (the baseline), interleaved in one run (median of
repeats). Prints curve images per second, the speed-up (target: at least 3x) and the largest
difference between the two results. ``--smoke=1``: the shipped model, 2 images, 4 steps, one
repeat (seconds; for the test).
"""

import os

import numpy as np

from benchmarks.speed import interleaved, options, photo, zfnet_224

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "saved_models", "zfnet-fashion-mnist", "model.keras")


def shipped_case(count):
    """``(probe, images [count, 28, 28, 1])``: the shipped model and the first test images."""
    from zfkeras.data import load_source
    from zfkeras.export import open_model

    probe = open_model(SHIPPED)
    images, _ = next(load_source("fashion_mnist", "test").dataset.batch(count).as_numpy_iterator())
    return probe, images.astype("float32")


def zfnet_case(count):
    from zfkeras.nn.probe import KerasProbe

    return KerasProbe(zfnet_224()), np.repeat(photo()[None], count, axis=0)


def measure(name, probe, images, steps, repeats):
    """Time both ways on one model; returns the entry printed."""
    from zfkeras.analysis.faithfulness import class_score, curves, random_orders

    labels = np.argmax(probe.predict(images), axis=1)
    orders = random_orders(len(images), int(np.prod(images.shape[1:3])), 0)
    score = class_score(probe, labels)
    baseline = np.asarray(probe.mean_image, "float32")
    methods = {
        "one_per_predict": lambda: curves(score, images, orders, baseline, steps, batch_size=1),
        "batched": lambda: curves(score, images, orders, baseline, steps, batch_size=256),
    }
    for function in methods.values():  # trace first
        function()
    times, results = interleaved(methods, repeats)
    difference = max(float(np.abs(results["batched"][k] - results["one_per_predict"][k]).max()) for k in results["batched"])
    rows = 2 * len(images) * (steps + 1)
    (slow_wall, slow_cpu), (fast_wall, fast_cpu) = times["one_per_predict"], times["batched"]
    entry = {
        "curve_images": rows,
        "batched_per_s_cpu": rows / fast_cpu,
        "one_per_predict_per_s_cpu": rows / slow_cpu,
        "speedup_cpu": slow_cpu / fast_cpu,
        "speedup_wall": slow_wall / fast_wall,
        "max_abs_difference": difference,
    }
    print(
        f"{name:<26}{rows:>8}{rows / slow_cpu:>14.1f}{rows / fast_cpu:>12.1f}{entry['speedup_cpu']:>12.2f}"
        f"{entry['speedup_wall']:>12.2f}{difference:>12.1e}"
    )
    return entry


def main(argv=()):
    chosen = options(argv, {"images": 8, "steps": 28, "repeats": 3, "smoke": 0}, "faithfulness")
    smoke = bool(chosen["smoke"])
    count, steps, repeats = (2, 4, 1) if smoke else (chosen["images"], chosen["steps"], chosen["repeats"])
    print(f"deletion + insertion curves of a random ranking, p(class); {steps} steps; median of {repeats} interleaved repeats")
    print(f"{'model':<26}{'images':>8}{'1/predict /s':>14}{'batched /s':>12}{'x CPU':>12}{'x wall':>12}{'max diff':>12}")
    report = {"shipped": measure("shipped (28x28)", *shipped_case(count), steps, repeats)}
    if not smoke:
        report["zfnet224"] = measure("ZFNet 224x224, chelsea", *zfnet_case(max(1, count // 4)), steps, repeats)
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
