"""Occlusion positions per second on the full 224x224 ZFNet: incremental against a batched full forward.

    python -m benchmarks occlusion [--positions=256] [--batch-size=32] [--repeats=3] [--keep=80] [--smoke]

On the full ZFNet (random weights) and one real photo (skimage's ``chelsea``), for a square of 32 px
on an 8 px grid and of 16 px on a 4 px grid, ``--positions`` grid positions spread evenly over the
image (borders included) are evaluated by, interleaved in one run (median of repeats):

    baseline     the plain way, built here: paint the square into ``--batch-size`` copies of the
                 image and run each batch through the model (conv5 maps and probabilities in one pass)
    exact        :class:`zfkeras.occlusion.OcclusionEvaluator`: incremental, exact
    full         the same evaluator with ``incremental=False`` (zfkeras before the incremental path)
    full bf16    APPROXIMATE: ``full`` computing in mixed_bfloat16 (``KerasProbe(precision=...)``): why
                 ``zf occlusion --precision`` keeps the exact incremental path where there is one
    approx       APPROXIMATE: ``approximate=--keep/100`` (Krypton's projective-field threshold)

Prints positions/s (wall and CPU), the ratio to the baseline, the largest differences from it
(probability, absolute; conv5 map activity, relative), the correlation of the activity and
probability maps with the baseline's, and each path's peak resident memory (first two runs,
tracing included, each path in a fresh process, above the memory of the built model).
"""

import numpy as np

from benchmarks.speed import interleaved, isolated_peaks, options, peak_target, photo, report_peak, smoke_mode, zfnet_224


def full_forward_baseline(model, selected, image, fill, corners, patch, channel, batch):
    """Activity of map ``channel`` of ``selected`` and probabilities, by full forward passes of painted copies."""
    import keras
    import tensorflow as tf

    fused = keras.Model(model.inputs, [selected.output, model.outputs[0]])
    run = tf.function(lambda x: fused(x, training=False), input_signature=[tf.TensorSpec((None, *image.shape), tf.float32)])

    def evaluate():
        activity, probs = [], []
        for start in range(0, len(corners), batch):
            copies = np.repeat(image[None], len(corners[start : start + batch]), axis=0)
            for copy, (y, x) in zip(copies, corners[start : start + batch]):
                top, left = max(y, 0), max(x, 0)
                copy[top : y + patch, left : x + patch] = fill[top : y + patch, left : x + patch]
            maps, p = run(copies)
            activity.append(maps.numpy()[..., channel].sum(axis=(1, 2), dtype="float64"))
            probs.append(p.numpy())
        return np.concatenate(activity), np.concatenate(probs)

    return evaluate


def main(argv=()):
    smoke, argv = smoke_mode(argv)  # --smoke: tiny widths, 4 positions, no memory subprocesses
    defaults = {"positions": 256, "batch-size": 32, "repeats": 3, "keep": 80}
    chosen = options(argv, {**defaults, "positions": 4, "batch-size": 2, "repeats": 1} if smoke else defaults, "occlusion")
    from zfkeras.analysis.occlusion import OcclusionEvaluator, occluder_grid
    from zfkeras.nn.probe import KerasProbe

    model = zfnet_224(tiny=smoke)
    probe = KerasProbe(model)
    image = photo()
    batch = chosen["batch-size"]
    report = {}
    if not peak_target():
        print(
            f"ZFNet 224x224x3, random he_normal weights, skimage chelsea, mean-image fill; batch {batch}; "
            f"median of {chosen['repeats']} interleaved repeats"
        )
        print(
            f"{'square':<12}{'path':<10}{'pos/s wall':>11}{'pos/s CPU':>11}{'x base wall':>12}{'x base CPU':>12}"
            f"{'prob diff':>11}{'act. diff':>11}{'corr act':>9}{'corr prob':>10}{'peak MB':>9}"
        )
    for patch, stride in ((32, 8), (16, 4)):
        label = f"{patch}px/{stride}px"
        if peak_target() and peak_target()[0] != label:
            continue
        grid = occluder_grid(probe.input_shape, patch, stride).reshape(-1, 2)
        corners = grid[np.linspace(0, len(grid) - 1, min(chosen["positions"], len(grid))).astype(int)]
        exact = OcclusionEvaluator(probe, image, patch=patch)
        full = OcclusionEvaluator(probe, image, patch=patch, incremental=False, feature_map=exact.feature_map)
        assert exact.incremental is not None
        baseline = full_forward_baseline(
            model, probe.deconvnet.selection_layer(exact.layer), image, exact.fill, corners, patch, exact.feature_map, batch
        )

        def by(evaluator):
            def evaluate():
                parts = [evaluator.evaluate(corners[i : i + batch]) for i in range(0, len(corners), batch)]
                return np.concatenate([a for a, _ in parts]), np.concatenate([p for _, p in parts])

            return evaluate

        approx = OcclusionEvaluator(probe, image, patch=patch, feature_map=exact.feature_map, approximate=min(chosen["keep"], 100) / 100)
        bf16 = OcclusionEvaluator(KerasProbe(model, precision="mixed_bfloat16"), image, patch=patch, incremental=False, feature_map=exact.feature_map)
        methods = {"baseline": baseline, "exact": by(exact), "full": by(full), "full bf16": by(bf16), "approx": by(approx)}
        if peak_target():
            return report_peak(methods, label)
        for function in methods.values():
            function()  # trace first
        times, results = interleaved(methods, chosen["repeats"])
        memory = dict.fromkeys(methods) if smoke else isolated_peaks("occlusion", argv, label, methods)
        base_wall, base_cpu = times["baseline"]
        want_activity, want_probs = results["baseline"]
        report[label] = {}
        for name, (wall, cpu) in times.items():
            activity, probs = results[name]
            prob_diff = float(np.abs(probs - want_probs).max())
            act_diff = float(np.abs(activity - want_activity).max() / max(np.abs(want_activity).max(), 1e-30))
            count, peak = len(corners), memory[name]
            label_ = int(np.argmax(want_probs.mean(axis=0)))  # the photo's top class, on average
            corr_act = float(np.corrcoef(activity, want_activity)[0, 1])
            corr_prob = float(np.corrcoef(probs[:, label_], want_probs[:, label_])[0, 1])
            report[label][name] = {
                "per_s_wall": count / wall,
                "per_s_cpu": count / cpu,
                "speedup_wall": base_wall / wall,
                "speedup_cpu": base_cpu / cpu,
                "probability_difference": prob_diff,
                "activity_difference": act_diff,
                "activity_correlation": corr_act,
                "probability_correlation": corr_prob,
                "peak_bytes": peak,
            }
            print(
                f"{label:<12}{name:<10}{count / wall:>11.1f}{count / cpu:>11.1f}{base_wall / wall:>12.2f}"
                f"{base_cpu / cpu:>12.2f}{prob_diff:>11.1e}{act_diff:>11.1e}{corr_act:>9.3f}{corr_prob:>10.3f}"
                f"{'' if peak is None else format(peak / 2**20, '.0f'):>9}"
            )
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
