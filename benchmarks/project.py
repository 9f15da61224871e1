"""Single-activation deconvnet projections per second: zfkeras against a gradient-override deconvnet.

    python -m benchmarks project [--projections=64] [--repeats=3] [--smoke]

On the full 224x224 ZFNet (random weights) and one real photo (skimage's ``chelsea``), ``N``
projections, each of one activation: map ``m`` (0..N-1) at that map's strongest position in the
photo (the Fig. 2 job: positions come from a scan). Timed interleaved in one run, median of repeats:

    baseline     the peers' method (xplique, captum), built here: GradientTape over a raw-TF forward
                 pass whose ReLUs have a custom gradient (ReLU of the incoming signal), input gradient
                 of the chosen activations seeded with their values; LRN passed through going down
                 as in zfkeras (cheaper than differentiating it, so the ratio errs against zfkeras)
    given        ``Deconvnet.project(images, layer, maps, positions)``: receptive-field windows only
    max          ``Deconvnet.project(..., position="max")``: full forward finds the max, cropped way down

for conv5 and conv3. Prints projections/s (wall and CPU), the ratio to the baseline, the largest
relative difference from the baseline, and each path's peak resident memory.
"""

import numpy as np

from benchmarks.speed import interleaved, isolated_peaks, options, peak_target, photo, relative_error, report_peak, smoke_mode, zfnet_224


def gradient_override_deconvnet(model, layer):
    """``f(images, channel [N], position [N, 2]) -> input gradient``: the peers' deconvnet."""
    import keras
    import tensorflow as tf

    from zfkeras.nn.layers import LocalResponseNormalization, SubtractMean, SwitchMaxPool

    @tf.custom_gradient
    def deconv_relu(x):
        return tf.nn.relu(x), lambda dy: tf.nn.relu(dy)

    @tf.custom_gradient
    def lrn(x, layer_):
        def grad(dy, variables=None):
            return dy, None

        return layer_(x), grad

    layers = [item for item in model.layers if not isinstance(item, keras.layers.InputLayer)]

    def forward(x):
        for item in layers:
            if isinstance(item, SubtractMean):
                x = x - item.mean
            elif isinstance(item, keras.layers.ZeroPadding2D):
                x = tf.pad(x, [[0, 0], list(item.padding[0]), list(item.padding[1]), [0, 0]])
            elif isinstance(item, keras.layers.Conv2D):
                x = deconv_relu(tf.nn.conv2d(x, item.kernel, item.strides, item.padding.upper()) + item.bias)
            elif isinstance(item, SwitchMaxPool):
                x = tf.nn.max_pool2d(x, item.pool_size, item.strides, item.padding.upper())
            elif isinstance(item, LocalResponseNormalization):
                x = tf.stop_gradient(item(x) - x) + x  # LRN going up, passed through going down
            if item.name == layer:
                return x
        raise ValueError(f"no layer {layer!r}")

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None, 2), tf.int32),
        ]
    )
    def project(images, channel, position):
        with tf.GradientTape() as tape:
            tape.watch(images)
            acts = forward(images)
            chosen = tf.gather(acts, channel, axis=3, batch_dims=1)
            flat = tf.reshape(chosen, (tf.shape(acts)[0], -1))
            strongest = tf.argmax(flat, axis=1, output_type=tf.int32)
            index = tf.where(position[:, 0] < 0, strongest, position[:, 0] * tf.shape(acts)[2] + position[:, 1])
            picked = tf.gather(flat, index, axis=1, batch_dims=1)
            target = tf.reduce_sum(picked * tf.stop_gradient(picked))
        return tape.gradient(target, images)

    return project


def main(argv=()):
    smoke, argv = smoke_mode(argv)  # --smoke: tiny widths, 2 projections, no memory subprocesses
    chosen = options(argv, {"projections": 2, "repeats": 1} if smoke else {"projections": 64, "repeats": 3}, "project")
    from zfkeras.nn.deconv import Deconvnet

    model = zfnet_224(tiny=smoke)
    deconv = Deconvnet(model)
    count = chosen["projections"]
    images = np.repeat(photo()[None], count, axis=0)
    report = {}
    if not peak_target():
        print(
            f"ZFNet 224x224x3, random he_normal weights, skimage chelsea; {count} single-activation projections "
            f"per call (maps 0..{count - 1} at their strongest positions); median of {chosen['repeats']} interleaved repeats"
        )
        print(f"{'layer':<7}{'path':<10}{'proj/s wall':>12}{'proj/s CPU':>12}{'x base wall':>12}{'x base CPU':>12}{'rel. diff':>11}{'peak MB':>9}")
    for layer in ("conv5", "conv3"):
        if peak_target() and peak_target()[0] != layer:
            continue
        acts = deconv.activations(images[:1], [layer])[layer][0]
        channel = np.arange(count, dtype="int32") % acts.shape[-1]
        flat = acts.reshape(-1, acts.shape[-1])[:, channel].argmax(axis=0)
        position = np.stack(np.unravel_index(flat, acts.shape[:2]), axis=1).astype("int32")
        strongest = np.full_like(position, -1)
        baseline = gradient_override_deconvnet(model, layer)
        methods = {
            "baseline": lambda: baseline(images, channel, position).numpy(),
            "given": lambda: deconv.project(images, layer, channel, position),
            "max": lambda: deconv.project(images, layer, channel, "max"),
        }
        if peak_target():
            return report_peak(methods, layer)
        baseline(images, channel, strongest)  # trace both branches of every path first
        for function in methods.values():
            function()
        deconv.project(images, layer, channel, strongest)
        times, results = interleaved(methods, chosen["repeats"])
        memory = dict.fromkeys(methods) if smoke else isolated_peaks("project", argv, layer, methods)
        base_wall, base_cpu = times["baseline"]
        report[layer] = {}
        for name, (wall, cpu) in times.items():
            error = relative_error(results[name], results["baseline"])
            peak = memory[name]
            report[layer][name] = {
                "per_s_wall": count / wall,
                "per_s_cpu": count / cpu,
                "speedup_wall": base_wall / wall,
                "speedup_cpu": base_cpu / cpu,
                "relative_difference": error,
                "peak_bytes": peak,
            }
            print(
                f"{layer:<7}{name:<10}{count / wall:>12.1f}{count / cpu:>12.1f}{base_wall / wall:>12.2f}"
                f"{base_cpu / cpu:>12.2f}{error:>11.1e}{'' if peak is None else format(peak / 2**20, '.0f'):>9}"
            )
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
