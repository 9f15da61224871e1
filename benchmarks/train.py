"""Training speed: the ``zf train`` loop vs a plain ``model.fit`` of the same Keras graph, and the
tf.data input pipeline alone, in images per second measured in this run.

``python -m benchmarks train [--images=N] [--epochs=E] [--rounds=R]`` (``=``: the runner passes on dashed words only)

- ``zf train``: :func:`zfkeras.train.train` as the command runs it (tf.data random crops + flips,
  distributed step, TensorBoard histograms, backups), no validation;
- ``model.fit``: the same model (same spec, SGD, batch 128) on in-memory float32 arrays of the
  centre crops, no augmentation, no callbacks: the baseline;
- ``tf.data``: iterating :func:`zfkeras.data.train_dataset` batches with no model.

Every rate leaves out the first epoch of each run (tracing, cache filling) and is reported per wall
second and per CPU second of this process (CPU time is steadier on a shared machine; wall time
varies 1.5-4x). ``model.fit`` and ``zf train`` runs alternate so both see the same background load.
"""

import argparse
import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np


def epoch_timer():
    """A Keras callback recording each epoch's (wall seconds, CPU seconds of this process)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = (time.monotonic(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            self.times.append((time.monotonic() - self._start[0], time.process_time() - self._start[1]))

    return EpochTimer()


def rates(times, images):
    """Images per wall second and per CPU second over epochs of ``images`` images, ``times`` (wall, CPU)."""
    wall = sum(t[0] for t in times)
    cpu = sum(t[1] for t in times)
    return images * len(times) / wall, images * len(times) / cpu


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks train")
    parser.add_argument("--images", type=int, default=12_800, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not timed)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating model.fit / zf train runs")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")

    import keras

    from zfkeras import data
    from zfkeras.nn.models import build_model
    from zfkeras.training import TrainConfig, train

    source = data.load_source(data.DEFAULT_SOURCE, "train")
    source = dataclasses.replace(source, dataset=source.dataset.take(args.images), num_examples=args.images)
    config = TrainConfig(epochs=args.epochs, val_split=0.0, checkpoint_epochs=(), kernel_init="glorot_uniform")
    size, channels = config.input_shape[0], config.input_shape[2]
    print(
        f"zfnet_small {config.input_shape}, batch {config.batch_size}, {args.images} Fashion-MNIST images, "
        f"{args.rounds} x (model.fit, zf train) runs of {args.epochs} epochs (first epoch of each not timed)",
        flush=True,
    )

    # tf.data alone: the cached, resized images -> shuffle -> random crop + flip -> batches.
    base = data.resized_dataset(source, size, channels, cache=True)
    pipeline_times = []
    for epoch in range(args.epochs):
        start = (time.monotonic(), time.process_time())
        for _ in data.train_dataset(base, size, channels, config.batch_size, seed=epoch, cache=False):
            pass
        pipeline_times.append((time.monotonic() - start[0], time.process_time() - start[1]))
    pipeline = rates(pipeline_times[1:], args.images)

    # Plain model.fit of the same graph on in-memory centre crops, and the zf train loop,
    # alternated for --rounds rounds so both see the same background load.
    arrays = data.eval_dataset(source, size, channels, 1024, crops="center")
    x = np.concatenate([batch for batch, _ in arrays.as_numpy_iterator()])
    y = np.concatenate([labels for _, labels in arrays.as_numpy_iterator()])
    fit_times, train_times = [], []
    for round_index in range(args.rounds):
        model = build_model(config.model_spec(), seed=round_index)
        model.get_layer("subtract_mean").set_mean(x.mean(axis=0))
        model.compile(keras.optimizers.SGD(config.lr, momentum=config.momentum), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        timer = epoch_timer()
        model.fit(x, y, batch_size=config.batch_size, epochs=args.epochs, verbose=0, callbacks=[timer])
        fit_times += timer.times[1:]

        run_dir = tempfile.mkdtemp(prefix="zf-bench-train-")
        try:
            timer = epoch_timer()
            train(config.replace(seed=round_index), source, None, os.path.join(run_dir, "run"), callbacks=[timer])
            train_times += timer.times[1:]
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    fit = rates(fit_times, args.images)
    ours = rates(train_times, args.images)

    rows = [("tf.data pipeline alone", pipeline), ("plain model.fit (baseline)", fit), ("zf train", ours)]
    print(f"{'':28}{'images/s (wall)':>18}{'images/s (CPU)':>18}")
    for name, (wall, cpu) in rows:
        print(f"{name:28}{wall:18.0f}{cpu:18.0f}")
    result = {
        "pipeline_images_per_s": pipeline[0],
        "fit_images_per_s": fit[0],
        "zf_train_images_per_s": ours[0],
        "pipeline_images_per_cpu_s": pipeline[1],
        "fit_images_per_cpu_s": fit[1],
        "zf_train_images_per_cpu_s": ours[1],
        "zf_train_vs_fit_wall": ours[0] / fit[0],
        "zf_train_vs_fit_cpu": ours[1] / fit[1],
        "pipeline_vs_zf_train_wall": pipeline[0] / ours[0],
    }
    print(
        f"zf train / model.fit: {result['zf_train_vs_fit_wall']:.2f}x (wall), {result['zf_train_vs_fit_cpu']:.2f}x (CPU time); "
        f"the input pipeline alone runs {result['pipeline_vs_zf_train_wall']:.1f}x faster than training consumes it"
    )
    return result
