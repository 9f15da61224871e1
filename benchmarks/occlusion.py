"""Occlusion positions per second on the full 224x224 ZFNet (random weights): batched vs naive.

    python -m benchmarks occlusion [--stride=28] [--batch-size=32] [--repeats=3]

Three ways to evaluate the same grid of occluder positions on the same image, interleaved in one
run (each repeat times all three back to back, so machine load hits them alike):
    naive    one occluded image at a time, ``probe.features`` then ``probe.predict`` (two passes)
    single   one at a time through the fused forward pass (maps + probabilities together)
    batched  :func:`zfkeras.occlusion.occlusion_map`: ``--batch-size`` copies per fused pass
Reports positions/s from wall time and from process CPU time (medians over repeats) and the
ratios to the naive loop; checks the three agree numerically.
"""

import os
import time

import numpy as np


def _options(argv):
    options = {"stride": 28, "batch-size": 32, "repeats": 3}
    for arg in argv:
        key, _, value = arg.lstrip("-").partition("=")
        if key not in options or not value.isdigit() or int(value) < 1:
            raise SystemExit(f"occlusion benchmark: bad option {arg!r}; use --stride=N --batch-size=N --repeats=N")
        options[key] = int(value)
    return options


def _timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=()):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from zfkeras.models import zfnet
    from zfkeras.occlusion import OcclusionEvaluator, default_patch, occlude, occluder_grid, occlusion_map
    from zfkeras.probe import KerasProbe

    options = _options(argv)
    keras.utils.set_random_seed(0)
    probe = KerasProbe(zfnet(num_classes=1000, seed=0))
    image = np.random.default_rng(0).uniform(0, 255, (224, 224, 3)).astype("float32")
    patch, stride, batch = default_patch(probe.input_shape), options["stride"], options["batch-size"]
    corners = occluder_grid(probe.input_shape, patch, stride).reshape(-1, 2)
    evaluator = OcclusionEvaluator(probe, image, patch=patch)
    layer, channel, fill = evaluator.layer, evaluator.feature_map, evaluator.fill

    def naive():
        activity, probs = [], []
        for corner in corners:
            one = occlude(image, fill, corner[None], patch)
            activity.append(probe.features(one, [layer])[layer][0, :, :, channel].sum())
            probs.append(probe.predict(one)[0])
        return np.array(activity), np.array(probs)

    def single():
        parts = [evaluator.evaluate(corner[None]) for corner in corners]
        return np.concatenate([a for a, _ in parts]), np.concatenate([p for _, p in parts])

    def batched():
        result = occlusion_map(probe, image, patch=patch, stride=stride, batch_size=batch, evaluator=evaluator)
        return result.feature_activity.ravel(), None

    methods = {"naive": naive, "single": single, "batched": batched}
    for function in methods.values():  # trace every tf.function (batch 1 and batch B) first
        function()
    times = {name: [] for name in methods}
    outputs = {}
    for _ in range(options["repeats"]):
        for name, function in methods.items():
            outputs[name], wall, cpu = _timed(function)
            times[name].append((wall, cpu))
    reference = outputs["naive"][0]
    for name in ("single", "batched"):
        np.testing.assert_allclose(outputs[name][0], reference, rtol=1e-4, atol=1e-3)
    count = len(corners)
    print(f"ZFNet 224x224x3, 1000 classes, random weights; {count} positions (square {patch}px, stride {stride}px), "
          f"map {channel} of {layer}; batch {batch}; median of {options['repeats']} interleaved repeats")
    print(f"{'method':<10}{'pos/s (wall)':>14}{'pos/s (CPU)':>14}{'x naive (wall)':>16}{'x naive (CPU)':>15}")
    report = {}
    base_wall, base_cpu = (np.median([t[i] for t in times["naive"]]) for i in (0, 1))
    for name in methods:
        wall, cpu = (np.median([t[i] for t in times[name]]) for i in (0, 1))
        report[name] = {"positions_per_s_wall": count / wall, "positions_per_s_cpu": count / cpu,
                        "speedup_wall": base_wall / wall, "speedup_cpu": base_cpu / cpu}
        print(f"{name:<10}{count / wall:>14.1f}{count / cpu:>14.1f}{base_wall / wall:>16.2f}{base_cpu / cpu:>15.2f}")
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
