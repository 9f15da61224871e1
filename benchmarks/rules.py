"""The three backward rules on the windowed path: guided backprop and the gradient at the deconvnet's speed.

    python -m benchmarks rules [--projections=64] [--repeats=3] [--smoke=1]

On the full 224x224 ZFNet (random he_normal weights) and one real photo (skimage's ``chelsea``),
``N`` single-activation projections per call (map ``m`` at its strongest position, given: the
receptive-field windows only; and ``position="max"``: a whole-image forward pass finds the unit,
the way down runs on windows), from conv5 and conv3, under each rule, timed interleaved in one
run (median of repeats). Prints projections/s and each rule's time relative to the deconvnet's
(target: guided and gradient within 10%, i.e. a ratio of at least 0.91). ``--smoke=1``: a small
28x28 model, 4 projections, one repeat, conv3 only (seconds; for the test).
"""

import numpy as np

from benchmarks.speed import interleaved, options, photo, zfnet_224

RULES = ("deconvnet", "guided", "gradient")


def small_model():
    """A zfnet_small (28x28x1) with random he_normal weights: the smoke mode's model."""
    from zfkeras.nn.models import build_model, zfnet_small_spec

    return build_model(zfnet_small_spec().replace(kernel_init="he_normal"), seed=0)


def main(argv=()):
    chosen = options(argv, {"projections": 64, "repeats": 3, "smoke": 0}, "rules")
    from zfkeras.nn.deconv import Deconvnet

    smoke = bool(chosen["smoke"])
    model = small_model() if smoke else zfnet_224()
    count, repeats = (4, 1) if smoke else (chosen["projections"], chosen["repeats"])
    image = np.random.default_rng(0).uniform(0, 255, model.inputs[0].shape[1:]).astype("float32") if smoke else photo()
    images = np.repeat(image[None], count, axis=0)
    deconv = Deconvnet(model)
    layers = ("conv3",) if smoke else ("conv5", "conv3")
    print(f"{'28x28 zfnet_small' if smoke else 'ZFNet 224x224x3'}, random he_normal weights; {count} projections per call; median of {repeats}")
    print(f"{'layer':<7}{'path':<7}{'rule':<11}{'proj/s wall':>12}{'proj/s CPU':>12}{'x deconvnet CPU':>17}{'x deconvnet wall':>18}")
    report = {}
    for layer in layers:
        assert deconv.windowed(layer), f"{layer} is not projected on windows"
        acts = deconv.activations(images[:1], [layer])[layer][0]
        channel = np.arange(count, dtype="int32") % acts.shape[-1]
        flat = acts.reshape(-1, acts.shape[-1])[:, channel].argmax(axis=0)
        position = np.stack(np.unravel_index(flat, acts.shape[:2]), axis=1).astype("int32")
        for path, where in (("given", position), ("max", "max")):
            methods = {rule: (lambda rule=rule, where=where: deconv.project(images, layer, channel, where, rule=rule)) for rule in RULES}
            for function in methods.values():  # trace first
                function()
            times, _ = interleaved(methods, repeats)
            base_wall, base_cpu = times["deconvnet"]
            for rule, (wall, cpu) in times.items():
                entry = {"per_s_wall": count / wall, "per_s_cpu": count / cpu, "ratio_cpu": base_cpu / cpu, "ratio_wall": base_wall / wall}
                report.setdefault(layer, {}).setdefault(path, {})[rule] = entry
                print(f"{layer:<7}{path:<7}{rule:<11}{count / wall:>12.1f}{count / cpu:>12.1f}{base_cpu / cpu:>17.2f}{base_wall / wall:>18.2f}")
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
