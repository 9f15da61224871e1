"""Feature visualization by optimization: seconds per unit, against one forward+backward pass.

    python -m benchmarks feature_visualization [--units=32] [--steps=256] [--batch=32] [--smoke=1]

For conv5 of the shipped Fashion-MNIST model (28x28x1) and of the full ZFNet at 224x224x3 (random
he_normal weights, mean 120, as the other 224 benchmarks), times
``maximize_units(model, "conv5", range(units), steps=steps, batch_size=batch)`` (one call, its
tracing included, as a user meets it) and, as the baseline in the same run, one forward+backward
pass: the input gradient of conv5's centre means through a plain forward pass (max pools without
switches) on ``batch`` images, median of 5 after a warm-up. Prints seconds per unit (wall and CPU),
the forward+backward seconds per image, and their ratio: a unit costs ``steps`` passes of its image
at least, so ``ratio / steps`` is the price of the parameterisation, transformations and Adam per
step (1.0 would be none). ``--smoke=1`` runs 2 units for 2 steps in batches of 2 (a test runs it).
"""

import os
import time

import numpy as np

from benchmarks.speed import options, zfnet_224

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "saved_models", "zfnet-fashion-mnist", "model.keras")


def forward_backward(model, layer, batch):
    """``f() -> gradient``: one plain forward+backward pass of ``batch`` random images to ``layer``."""
    import keras
    import tensorflow as tf

    from zfkeras.nn.layers import SwitchMaxPool

    layers = []
    for item in model.layers:
        if not isinstance(item, keras.layers.InputLayer):
            layers.append(item)
        if item.name == layer:
            break
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, *model.inputs[0].shape[1:])).astype("float32"))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = x
            for item in layers:
                y = tf.nn.max_pool2d(y, item.pool_size, item.strides, item.padding.upper()) if isinstance(item, SwitchMaxPool) else item(y)
            h, w = y.shape[1], y.shape[2]
            total = tf.reduce_sum(tf.reduce_mean(y[:, h // 4 : h - h // 4, w // 4 : w - w // 4, :], axis=(1, 2)))
        return tape.gradient(total, x)

    return lambda: step(images).numpy()


def timed(function, repeats=1):
    """Median (wall s, CPU s) of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return tuple(float(np.median([t[i] for t in times])) for i in (0, 1))


def measure(name, model, chosen):
    """Seconds per unit and per forward+backward image of one model's conv5; prints its row."""
    from zfkeras.analysis.feature_visualization import maximize_units

    units, steps, batch = chosen["units"], chosen["steps"], chosen["batch"]
    baseline = forward_backward(model, "conv5", batch)
    baseline()  # trace
    pass_wall, pass_cpu = (t / batch for t in timed(baseline, 5))
    wall, cpu = (t / units for t in timed(lambda: maximize_units(model, "conv5", list(range(units)), steps=steps, batch_size=batch)))
    row = {
        "units": units,
        "steps": steps,
        "batch_size": batch,
        "seconds_per_unit_wall": wall,
        "seconds_per_unit_cpu": cpu,
        "pass_seconds_per_image_wall": pass_wall,
        "pass_seconds_per_image_cpu": pass_cpu,
        "ratio_wall": wall / pass_wall,
        "ratio_cpu": cpu / pass_cpu,
    }
    print(
        f"{name:<18}{wall:>9.3f}{cpu:>13.3f}{pass_wall * 1e3:>14.2f}{pass_cpu * 1e3:>13.2f}{wall / pass_wall:>10.0f}{cpu / pass_cpu:>10.0f}{cpu / pass_cpu / steps:>14.2f}",
        flush=True,
    )
    return row


def main(argv=()):
    chosen = options(argv, {"units": 32, "steps": 256, "batch": 32, "smoke": 0}, "feature_visualization")
    if chosen["smoke"]:
        chosen.update(units=2, steps=2, batch=2)
    from zfkeras.export import open_model

    print(
        f"maximize_units on conv5 (x pass: seconds per unit over one image's forward+backward pass, wall and CPU): {chosen['units']} units, {chosen['steps']} steps, batch {chosen['batch']}; one call each, tracing included"
    )
    print(f"{'model':<18}{'s/unit':>9}{'CPU s/unit':>13}{'pass ms/img':>14}{'CPU ms/img':>13}{'x pass':>10}{'x CPU':>10}{'x CPU/step':>14}")
    report = {"shipped_28": measure("shipped 28x28x1", open_model(SHIPPED).keras_model, chosen)}
    report["zfnet_224"] = measure("ZFNet 224x224x3", zfnet_224(), chosen)
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
