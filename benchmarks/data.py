"""The input pipeline on ImageNet-shaped data: can it feed ZFNet-224, in flat memory, class-mixed?

``python -m benchmarks data [--images=N] [--big=N] [--batch=B] [--steps=S] [--classes=C] [--smoke]``

On a generated ``folder:`` of real JPEG files at ImageNet's typical size (500x375 and 375x500,
smooth random scenes, ~30 kB each; classes sorted on disk, ``class_00/`` first):

- **input rate**: images/s out of ``zfkeras.data.train_dataset(source, 224, 3, batch, seed)``
  (decode + resize to 256 + random 224 crop + flip, both cores) over whole first epochs of new
  pipelines (so each image is decoded once, whatever is cached), against the training step of the
  full ZFNet-224 (``zfkeras.zfnet()``, SGD) in images/s, both per CPU second of this process (tf.data
  threads included) and per wall second of runs alternated back to back. The ratio must exceed 1:
  feeding one image then costs less CPU than training on it.
- **memory**: peak RSS of one training epoch of ``--images`` and of ``--big`` images, each in a fresh
  subprocess (the ``--big`` folder repeats the ``--images`` files as hard links: other paths, same
  bytes, so only the number of images changes). Flat means at most 10% growth.
- **class mixing**: the largest share of any one class in each of the first 20 batches, against a
  uniformly random order of the same labels (numpy, same batch size) as the reference.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.speed import TINY_WIDTHS, options, smoke_mode

DEFAULTS = {"images": 2000, "big": 20000, "batch": 32, "steps": 4, "classes": 10}
SMOKE = {"images": 8, "big": 16, "batch": 4, "steps": 1, "classes": 2}  # --smoke: tiny ZFNet widths, one round
CHILD = "ZFKERAS_BENCHMARK_DATA_EPOCH"  # set in the memory-measuring subprocesses: "FOLDER:BATCH"
FIRST_BATCHES = 20


def make_folder(root, images, classes, seed=0):
    """``images`` JPEGs (quality 90) in ``classes`` sorted class folders under ``root``: smooth colour
    gradients with a few random discs, 500x375 (or 375x500 for every fourth). Returns ``root``."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:375, 0:500]
    ramps = np.stack([xx * 0.3, yy * 0.4, np.zeros_like(xx)], -1).astype(np.uint8)
    for i in range(images):
        label = i * classes // images
        folder = os.path.join(root, f"class_{label:02d}")
        os.makedirs(folder, exist_ok=True)
        image = Image.fromarray(ramps + rng.integers(0, 256, 3, dtype=np.uint8))  # uint8 wraps around: bands
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x, y, r = rng.integers(0, 500), rng.integers(0, 375), rng.integers(20, 90)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        if i % 4 == 3:
            image = image.transpose(Image.Transpose.ROTATE_90)
        image.save(os.path.join(folder, f"{i:06d}.jpg"), quality=90)
    return root


def link_folder(source_root, root, images):
    """A folder of ``images`` entries made of hard links to ``source_root``'s files (cycled), the
    same class layout: class ``k`` gets the links of the files of class ``k``."""
    classes = sorted(os.listdir(source_root))
    per_class = images // len(classes)
    for name in classes:
        files = sorted(os.listdir(os.path.join(source_root, name)))
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            os.link(os.path.join(source_root, name, files[i % len(files)]), os.path.join(root, name, f"{i:06d}.jpg"))
    return root


def open_folder(root):
    from zfkeras import data

    return data.load_source(f"folder:{root}", "all")


def epoch_peak_child():
    """In a subprocess: one training epoch of the folder named by :data:`CHILD`; prints ``PEAK bytes``
    (the process's peak RSS, VmHWM, after the epoch) and ``IMAGES n``."""
    from zfkeras import data

    root, batch = os.environ[CHILD].rsplit(":", 1)
    source = open_folder(root)
    seen = 0
    for images, _ in data.train_dataset(source, 224, 3, int(batch), 0):
        seen += len(images)
    with open("/proc/self/status") as handle:
        peak = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM:"))
    print(f"PEAK {peak}\nIMAGES {seen}", flush=True)


def epoch_peak(root, batch):
    """``(peak RSS bytes, images read)`` of one epoch over ``root`` in a fresh process."""
    env = dict(os.environ, **{CHILD: f"{root}:{batch}"}, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-m", "benchmarks", "data"], env=env, capture_output=True, text=True)
    found = dict(line.split() for line in done.stdout.splitlines() if line.startswith(("PEAK ", "IMAGES ")))
    if "PEAK" not in found:
        raise SystemExit(f"data benchmark: the epoch subprocess failed:\n{done.stderr[-2000:]}")
    return int(found["PEAK"]), int(found["IMAGES"])


def largest_shares(labels_per_batch, classes):
    """The largest share of one class in each batch (a list of int label arrays)."""
    return [float(np.bincount(labels, minlength=classes).max() / len(labels)) for labels in labels_per_batch]


def main(argv):
    if os.environ.get(CHILD):
        return epoch_peak_child()
    smoke, argv = smoke_mode(argv)
    args = dict(options(argv, SMOKE if smoke else DEFAULTS, "data"), smoke=smoke)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    workdir = tempfile.mkdtemp(prefix="zf-bench-data-")
    try:
        return _run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(args, workdir):
    started = time.monotonic()
    small = make_folder(os.path.join(workdir, "small"), args["images"], args["classes"])
    big = link_folder(small, os.path.join(workdir, "big"), args["big"])
    print(
        f"generated {args['images']} JPEGs (500x375 / 375x500) in {args['classes']} sorted classes in "
        f"{time.monotonic() - started:.0f} s; the {args['big']}-image folder repeats them as hard links",
        flush=True,
    )

    import keras
    import tensorflow as tf

    import zfkeras
    from zfkeras import data
    from zfkeras.nn.models import zfnet_spec

    batch = args["batch"]
    source = open_folder(small)

    # Class mixing: the first batches of an epoch, against a uniformly random order of the same labels.
    batches = data.train_dataset(source, 224, 3, batch, 0).take(FIRST_BATCHES)
    shares = largest_shares([labels for _, labels in batches.as_numpy_iterator()], args["classes"])
    order = np.random.default_rng(0).permutation(source.labels)
    reference = largest_shares([order[i : i + batch] for i in range(0, len(shares) * batch, batch)], args["classes"])

    # Input rate vs the ZFNet-224 training step, alternated so both see the same background load.
    spec = zfnet_spec(num_classes=args["classes"])
    model = zfkeras.build_model(spec.with_units(**TINY_WIDTHS) if args["smoke"] else spec, seed=0)
    model.get_layer("subtract_mean").set_mean(np.full((224, 224, 3), 120.0, "float32"))
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy")
    x = tf.random.uniform((batch, 224, 224, 3), 0, 255, seed=0)
    y = tf.constant(np.arange(batch) % args["classes"])
    model.train_on_batch(x, y)  # trace and warm up
    for _ in data.train_dataset(source, 224, 3, batch, 0).take(2):
        pass  # trace the pipeline's functions
    times = {"input": [], "train": []}
    for round_index in range(1 if args["smoke"] else 3):
        # input: one whole first epoch of a new pipeline, so every image is decoded exactly once
        # whatever the pipeline caches or buffers; train: --steps training steps.
        wall, cpu = time.perf_counter(), time.process_time()
        count = sum(len(labels) for _, labels in data.train_dataset(source, 224, 3, batch, round_index + 1))
        times["input"].append((count, time.perf_counter() - wall, time.process_time() - cpu))
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args["steps"]):
            model.train_on_batch(x, y)
        times["train"].append((args["steps"] * batch, time.perf_counter() - wall, time.process_time() - cpu))
    rate = {
        name: (sum(t[0] for t in runs) / sum(t[1] for t in runs), sum(t[0] for t in runs) / sum(t[2] for t in runs)) for name, runs in times.items()
    }

    # Peak memory of one epoch at two sizes, each in a fresh process.
    peaks = {n: epoch_peak(root, batch) for n, root in ((args["images"], small), (args["big"], big))}
    growth = peaks[args["big"]][0] / peaks[args["images"]][0] - 1

    print(f"{'':36}{'images/s (wall)':>18}{'images/s (CPU)':>18}")
    print(f"{'input: train_dataset at 224':36}{rate['input'][0]:18.1f}{rate['input'][1]:18.1f}")
    print(f"{'ZFNet-224 training step':36}{rate['train'][0]:18.1f}{rate['train'][1]:18.1f}")
    ratio_cpu, ratio_wall = rate["input"][1] / rate["train"][1], rate["input"][0] / rate["train"][0]
    print(f"input rate / model rate: {ratio_cpu:.1f}x per CPU second, {ratio_wall:.1f}x per wall second (must be > 1)")
    for n, (peak, seen) in peaks.items():
        print(f"peak RSS of one epoch of {n} images ({seen} read): {peak / 2**20:.0f} MiB")
    print(f"memory growth {args['images']} -> {args['big']} images: {100 * growth:+.1f}% (flat: <= 10%)")
    print(
        f"largest class share in each of the first {FIRST_BATCHES} batches of {batch} ({args['classes']} classes, uniform {1 / args['classes']:.2f}):"
    )
    print("  train_dataset: " + " ".join(f"{s:.2f}" for s in shares) + f"  (max {max(shares):.2f})")
    print("  random order:  " + " ".join(f"{s:.2f}" for s in reference) + f"  (max {max(reference):.2f})")
    return {
        "input_images_per_s": rate["input"][0],
        "input_images_per_cpu_s": rate["input"][1],
        "train_images_per_s": rate["train"][0],
        "train_images_per_cpu_s": rate["train"][1],
        "input_vs_train_cpu": ratio_cpu,
        "input_vs_train_wall": ratio_wall,
        "peak_rss_bytes": {n: p for n, (p, _) in peaks.items()},
        "memory_growth": growth,
        "largest_class_share": shares,
        "largest_class_share_random_order": reference,
    }
