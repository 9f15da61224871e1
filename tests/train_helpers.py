"""Small data and a training entry point for the training/export tests.

Run as a script it trains one tiny model in a fresh process (strategies with logical devices or
TF_CONFIG need one) and saves the final weights and the per-batch losses::

    python tests/train_helpers.py --data DIR --run-dir RUN --out result.npz [--strategy cpu:2]
        [--epochs 4] [--dropout 0] [--stall-epoch K --marker FILE]

``--stall-epoch K`` blocks after the second batch of epoch K (0-based), once FILE is written, so a
test can SIGKILL the run in the middle of an epoch.
"""

import argparse
import gzip
import os
import struct
import sys
import time

import numpy as np

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
TINY_UNITS = {"conv1": 4, "conv2": 6, "conv3": 6, "conv4": 6, "conv5": 4, "fc6": 16, "fc7": 16}


def write_idx(path, array):
    """Write a uint8 array as an MNIST-format IDX file (gzip)."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def fashion_subset(n_train, n_test):
    """The first images of Fashion-MNIST (Debian's files) or, without them, class-patterned noise."""
    from zfkeras.data.sources.idx import load_idx

    try:
        return (
            load_idx(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz"))[:n_train],
            load_idx(os.path.join(FASHION_DIR, "train-labels-idx1-ubyte.gz"))[:n_train],
            load_idx(os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz"))[:n_test],
            load_idx(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz"))[:n_test],
        )
    except FileNotFoundError:
        rng = np.random.default_rng(0)

        def make(n):
            labels = np.arange(n) % 10
            images = rng.uniform(0, 60, (n, 28, 28))
            for i, label in enumerate(labels):  # a bright bar whose row depends on the class
                images[i, 2 + 2 * label : 5 + 2 * label, 4:24] += 180
            return images.astype(np.uint8), labels.astype(np.uint8)

        return (*make(n_train), *make(n_test))


def write_small_idx(directory, n_train=256, n_test=64):
    """An ``idx:`` source directory with ``n_train`` training and ``n_test`` test images."""
    os.makedirs(directory, exist_ok=True)
    train_x, train_y, test_x, test_y = fashion_subset(n_train, n_test)
    write_idx(os.path.join(directory, "train-images-idx3-ubyte.gz"), train_x)
    write_idx(os.path.join(directory, "train-labels-idx1-ubyte.gz"), train_y)
    write_idx(os.path.join(directory, "t10k-images-idx3-ubyte.gz"), test_x)
    write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte.gz"), test_y)
    return directory


def tiny_config(**changes):
    """A TrainConfig for a 4-6 filter zfnet_small that trains in about a second per epoch."""
    from zfkeras.training import TrainConfig

    values = dict(units=TINY_UNITS, epochs=3, batch_size=32, kernel_init="he_normal", val_split=0.25, seed=3)
    values.update(changes)
    return TrainConfig(**values)


def batch_loss_recorder():
    """A Keras callback collecting the running mean loss after every batch: ``.losses[epoch]``."""
    import keras

    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.losses = []

        def on_epoch_begin(self, epoch, logs=None):
            self.losses.append([])

        def on_train_batch_end(self, batch, logs=None):
            self.losses[-1].append(float(logs["loss"]))

    return Recorder()


def _stall(epoch, marker):
    import keras

    class Stall(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self._epoch == epoch and batch == 1:
                with open(marker, "w") as handle:
                    handle.write("stalled\n")
                time.sleep(600)  # the test SIGKILLs us here

        def on_epoch_begin(self, index, logs=None):
            self._epoch = index

    return Stall()


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--min-delta", type=float, default=1e-4)
    parser.add_argument("--stall-epoch", type=int)
    parser.add_argument("--marker")
    args = parser.parse_args(argv)

    from zfkeras.training import make_strategy, train

    strategy = make_strategy(args.strategy)  # before TF runs anything
    from zfkeras import data

    config = tiny_config(epochs=args.epochs, dropout=args.dropout, patience=args.patience, min_delta=args.min_delta, strategy=args.strategy)
    recorder = batch_loss_recorder()
    callbacks = [recorder] + ([_stall(args.stall_epoch, args.marker)] if args.stall_epoch is not None else [])
    source = data.load_source(f"idx:{args.data}", "train")
    model, history = train(config, source, None, args.run_dir, callbacks=callbacks, strategy=strategy)
    np.savez(
        args.out,
        weights=np.concatenate([w.ravel() for w in model.get_weights()]),
        batch_losses=np.asarray([loss for epoch in recorder.losses for loss in epoch]),
        val_loss=np.asarray(history["val_loss"]),
        lr=np.asarray(history["lr"]),
        replicas=strategy.num_replicas_in_sync,
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(sys.argv[1:])
