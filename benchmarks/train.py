"""Training speed by precision: the training step of the 224 ZFNet and of the 64-px model, the whole
``zf train`` loop at 64 px, and the tf.data input that feeds them, in images per second.

``python -m benchmarks train [--steps=N] [--rounds=R] [--images=N] [--smoke]``, and
``python -m benchmarks train --profile``: where zfnet64's step spends its time (TF profiler).

- **step**: :class:`zfkeras.training.steps.Stepper`, the step ``zf train`` runs (forward, loss,
  backward, SGD with momentum, filter-RMS cap), on one fixed batch: ZFNet (Fig. 3, 224x224x3, 1,000
  classes, batch 32) and zfnet64 (64x64x3, 1,564 classes as the Emoji-64 reproduction, batch 128),
  each in float32 (the baseline), mixed_bfloat16, and mixed_bfloat16 with the step XLA-compiled.
  Runs of ``--steps`` steps alternate between the paths for ``--rounds`` rounds (same load for all).
- **Keras model.fit**: the same zfnet64 compiled by Keras on in-memory arrays, float32: the rate
  the reproduction issue quoted (~380 img/s when measured on a quiet machine).
- **zf train**: :func:`zfkeras.training.train` end to end (input pipeline, step, validation-free
  epochs, TensorBoard, backups) on ``--images`` random 64x64 images, float32 and mixed_bfloat16,
  alternated; the first epoch of each run (tracing, cache filling) is not timed.
- **tf.data input**: :meth:`zfkeras.data.TrainingImages.epoch` alone (cached resized images,
  random crops and flips, batches), at 64 px and at 224 px (from 256x256 images): it must deliver
  images faster than the fastest step consumes them, per CPU second and per wall second. (JPEG
  decoding at 224 is ``python -m benchmarks data``.)

Rates are per wall second and per CPU second of this process (CPU time is steadier on a shared
machine). ``--smoke``: the same code on tiny widths, one round of one step (seconds; the test
suite runs it so the benchmark cannot rot), no timing meant.
"""

import os
import shutil
import tempfile
import time

import numpy as np

from benchmarks.speed import options, smoke_mode

DEFAULTS = {"steps": 3, "rounds": 3, "images": 1024}
SMOKE = {"steps": 1, "rounds": 1, "images": 64}
TINY = dict(conv1=4, conv2=4, conv3=4, conv4=4, conv5=4, fc6=8, fc7=8)
PATHS = (("float32", "off"), ("mixed_bfloat16", "off"), ("mixed_bfloat16", "on"))


def specs(smoke):
    """``{name: (ModelSpec, batch)}``: ZFNet-224 (1,000 classes) and zfnet64 (1,564 classes)."""
    from zfkeras.nn.models import zfnet64_spec, zfnet_spec

    chosen = {"ZFNet 224": (zfnet_spec(num_classes=1000), 32), "zfnet64": (zfnet64_spec(num_classes=1564), 128)}
    if smoke:
        chosen = {name: (spec.with_units(**TINY), 4) for name, (spec, _) in chosen.items()}
    return chosen


def compiled(spec, seed=0):
    """``build_model(spec)`` compiled as ``zf train`` compiles it (SGD 1e-2, momentum 0.9), mean 120,
    glorot_uniform weights and no dropout (the Emoji-64 reproduction's recipe)."""
    import keras

    from zfkeras.nn.models import build_model

    model = build_model(spec.replace(kernel_init="glorot_uniform", dropout=0.0), seed=seed)
    model.get_layer("subtract_mean").set_mean(np.full(spec.input_shape, 120.0, "float32"))
    model.compile(optimizer=keras.optimizers.SGD(1e-2, momentum=0.9), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    return model


def timed(function):
    """``(wall s, CPU s)`` of ``function()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def step_rates(spec, batch, steps, rounds):
    """``{(precision, xla): (images/s wall, images/s CPU)}`` of the training step, paths alternated."""
    import keras
    import tensorflow as tf

    from zfkeras.training.steps import Stepper

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, *spec.input_shape)).astype("float32")
    labels = rng.integers(0, spec.num_classes, batch)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat(steps)
    strategy = tf.distribute.get_strategy()
    steppers = {path: Stepper(compiled(spec), strategy, path[0], path[1] == "on") for path in PATHS}
    nothing = keras.callbacks.CallbackList([])
    for stepper in steppers.values():
        stepper.train_epoch(data.take(1), nothing)  # trace (and XLA-compile) first
    times = {path: [] for path in PATHS}
    for _ in range(rounds):
        for path, stepper in steppers.items():
            times[path].append(timed(lambda: stepper.train_epoch(data, nothing)))
    count = batch * steps * rounds
    return {path: (count / sum(t[0] for t in runs), count / sum(t[1] for t in runs)) for path, runs in times.items()}


def fit_rate(spec, batch, steps, rounds):
    """images/s (wall, CPU) of Keras ``model.fit`` of ``spec`` in float32 on in-memory arrays."""
    model = compiled(spec)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (batch * steps, *spec.input_shape)).astype("float32")
    y = rng.integers(0, spec.num_classes, batch * steps)
    model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)  # trace
    runs = [timed(lambda: model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)) for _ in range(rounds)]
    count = batch * steps * rounds
    return count / sum(t[0] for t in runs), count / sum(t[1] for t in runs)


def random_source(count, side, classes, seed=0):
    """A :func:`zfkeras.data.in_memory_source` of ``count`` random uint8 ``side x side x 3`` images."""
    from zfkeras.data import in_memory_source

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, side, side, 3), dtype=np.uint8)
    return in_memory_source(images, rng.integers(0, classes, count), [f"c{i}" for i in range(classes)], f"random {side}px", "train")


def input_rate(source, size, batch, rounds):
    """images/s (wall, CPU) of :meth:`TrainingImages.epoch` (memory cache) after a first, untimed epoch."""
    from zfkeras.data import TrainingImages

    images = TrainingImages(source, size, 3, cache="memory")

    def one_epoch(seed):
        return sum(len(labels) for _, labels in images.epoch(batch, seed, with_ids=False))

    one_epoch(0)  # fills the cache
    runs = [timed(lambda: one_epoch(seed)) for seed in range(1, rounds + 1)]
    count = source.num_examples * rounds
    return count / sum(t[0] for t in runs), count / sum(t[1] for t in runs)


def loop_rates(spec, source, rounds):
    """images/s (wall, CPU) of the whole ``zf train`` loop per precision, epochs after the first."""
    import keras

    from zfkeras.training import TrainConfig, train

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            self.times.append((time.perf_counter() - self.start[0], time.process_time() - self.start[1]))

    units = {f"conv{i + 1}": c.filters for i, c in enumerate(spec.convs)} | {"fc6": spec.fc[0], "fc7": spec.fc[1]}
    times = {precision: [] for precision in ("float32", "mixed_bfloat16")}
    for round_index in range(rounds):
        for precision in times:
            config = TrainConfig(
                arch="zfnet64", input_shape=spec.input_shape, num_classes=spec.num_classes, units=units, epochs=2, val_split=0.0,
                checkpoint_epochs=(), kernel_init="glorot_uniform", dropout=0.0, precision=precision, seed=round_index,
            )  # fmt: skip
            run_dir = tempfile.mkdtemp(prefix="zf-bench-train-")
            timer = EpochTimer()
            try:
                train(config, source, None, os.path.join(run_dir, "run"), callbacks=[timer], cache="memory")
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
            times[precision] += timer.times[1:]
    count = source.num_examples
    return {p: (count * len(runs) / sum(t[0] for t in runs), count * len(runs) / sum(t[1] for t in runs)) for p, runs in times.items()}


# Op types of a training step by what they do, for --profile (first match wins).
OP_GROUPS = (
    ("convolutions (forward and both backprops)", ("Conv2D",)),
    ("local response normalization", ("LRN",)),
    ("dense layers (fc6, fc7, the classifier)", ("MatMul",)),
    ("softmax and cross-entropy", ("Softmax", "SoftmaxCrossEntropy", "Log")),
    ("max pooling", ("MaxPool",)),
    ("casts (16-bit <-> float32)", ("Cast",)),
)


def op_seconds(logdir):
    """``{op type: seconds}`` summed over the host ops of the TF profiler trace in ``logdir``."""
    import glob

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as handle:
        space.ParseFromString(handle.read())
    totals = {}
    for plane in space.planes:
        names = {key: value.name for key, value in plane.event_metadata.items()}
        for line in plane.lines if "host" in plane.name.lower() else ():
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" in name and "/" in name.split(":")[0]:  # "scope/op:OpType": a kernel, not a wrapper
                    kind = name.rsplit(":", 1)[1]
                    totals[kind] = totals.get(kind, 0.0) + event.duration_ps / 1e12
    return totals


def profile(spec, batch, steps):
    """Where a training step's kernel time goes, per precision: ``{precision: {group: share}}``."""
    import keras
    import tensorflow as tf

    from zfkeras.training.steps import Stepper

    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensors((rng.uniform(0, 255, (batch, *spec.input_shape)).astype("float32"), rng.integers(0, spec.num_classes, batch)))
    shares = {}
    for precision in ("float32", "mixed_bfloat16"):
        stepper, nothing = Stepper(compiled(spec), tf.distribute.get_strategy(), precision), keras.callbacks.CallbackList([])
        stepper.train_epoch(data.repeat(2), nothing)  # trace and warm up
        logdir = tempfile.mkdtemp(prefix="zf-bench-profile-")
        try:
            tf.profiler.experimental.start(logdir)
            stepper.train_epoch(data.repeat(steps), nothing)
            tf.profiler.experimental.stop()
            totals = op_seconds(logdir)
        finally:
            shutil.rmtree(logdir, ignore_errors=True)
        grouped = {label: sum(v for k, v in totals.items() if any(p in k for p in parts)) for label, parts in OP_GROUPS}
        grouped["everything else"] = sum(totals.values()) - sum(grouped.values())
        shares[precision] = {label: seconds / sum(totals.values()) for label, seconds in grouped.items()}
    return shares


def main(argv):
    smoke, argv = smoke_mode(argv)
    if "--profile" in argv:  # where zfnet64's step spends its time, by op group (TF profiler)
        spec, batch = specs(smoke)["zfnet64"]
        shares = profile(spec, batch, 2 if smoke else 6)
        print(f"zfnet64 training step (batch {batch}, {spec.num_classes} classes): share of kernel time")
        print(f"{'':44}" + "".join(f"{p:>16}" for p in shares))
        for label in shares["float32"]:
            print(f"{label:44}" + "".join(f"{100 * shares[p][label]:15.1f}%" for p in shares))
        return shares
    args = options(argv, SMOKE if smoke else DEFAULTS, "train")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    chosen = specs(smoke)
    steps, rounds = args["steps"], args["rounds"]
    note = " (SMOKE: tiny widths, not a measurement)" if smoke else ""
    print(f"{rounds} alternating rounds of {steps} steps per path; ratios against float32 measured in this run{note}", flush=True)
    rows, result, float32 = [], {}, {}
    for name, (spec, batch) in chosen.items():
        rates = step_rates(spec, batch, steps, rounds)
        float32[name] = rates[PATHS[0]]
        for path, rate in rates.items():
            rows.append((f"{name} (batch {batch})", f"step, {path[0]}" + (" + XLA" if path[1] == "on" else ""), rate, rates[PATHS[0]]))
    spec64, batch64 = chosen["zfnet64"]
    rows.append((f"zfnet64 (batch {batch64})", "Keras model.fit, float32", fit_rate(spec64, batch64, steps, rounds), float32["zfnet64"]))
    source64 = random_source(args["images"], 64, spec64.num_classes)
    loop = loop_rates(spec64, source64, max(1, rounds // 2))
    rows += [(f"zfnet64 ({args['images']} images)", f"zf train loop, {p}", rate, loop["float32"]) for p, rate in loop.items()]
    print(f"{'model':28}{'path':34}{'img/s wall':>12}{'img/s CPU':>12}{'x f32 wall':>12}{'x f32 CPU':>12}")
    for model, label, (wall, cpu), base in rows:
        print(f"{model:28}{label:34}{wall:12.1f}{cpu:12.1f}{wall / base[0]:12.2f}{cpu / base[1]:12.2f}")
        result[f"{model.split(' (')[0]} {label}"] = {
            "images_per_s": wall,
            "images_per_cpu_s": cpu,
            "vs_float32_wall": wall / base[0],
            "vs_float32_cpu": cpu / base[1],
        }
    sources = {"zfnet64": (source64, 64, batch64), "ZFNet 224": (random_source(max(32, args["images"] // 8), 256, 10), 224, 32)}
    for name, (source, size, batch) in sources.items():
        wall, cpu = input_rate(source, size, batch, rounds)
        fastest = max((v for k, v in result.items() if k.startswith(f"{name} step")), key=lambda v: v["images_per_cpu_s"])
        ratio_wall, ratio_cpu = wall / fastest["images_per_s"], cpu / fastest["images_per_cpu_s"]
        print(
            f"{f'tf.data input at {size} px':62}{wall:12.1f}{cpu:12.1f}  = {ratio_cpu:.1f}x the fastest {name} step per CPU s, {ratio_wall:.1f}x per wall s"
        )
        result[f"input {size} px"] = {
            "images_per_s": wall,
            "images_per_cpu_s": cpu,
            "vs_fastest_step_wall": ratio_wall,
            "vs_fastest_step_cpu": ratio_cpu,
        }
    return result
