"""``idx:PATH``: MNIST-format IDX files (``train-*``/``t10k-*``, plain or ``.gz``), held in memory.

An optional ``classes.txt`` beside them names the classes, one per line, in label order (and so
says how many there are; without it a directory has at least the 10 classes of MNIST).
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from zfkeras.data.source import Source, in_memory_source

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


FASHION_MNIST_CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


_IDX_PREFIX = {"train": "train", "test": "t10k", "t10k": "t10k"}


def load_idx(path) -> np.ndarray:
    """Read one IDX file (plain or gzip, detected from its content) into a numpy array.

    Header: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32. Raises ValueError naming the file for a bad magic number or a size that does not match.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"corrupt gzip IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"not an IDX file (bad magic number {raw[:4].hex() or 'empty'}): {path}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"IDX file too short for its {ndim}-dimension header: {path}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"IDX file {path} holds {len(raw) - header} data bytes, its header {tuple(dims)} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path, array) -> None:
    """Write a uint8 array as one gzip-compressed IDX file (the format :func:`load_idx` reads)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx writes uint8 arrays, got {array.dtype}")
    with gzip.open(os.fspath(path), "wb") as handle:
        handle.write(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def _class_names(directory: str, labels: np.ndarray) -> list[str]:
    """The names in ``classes.txt`` (checked against the labels), else Fashion-MNIST's or "0", "1", ..."""
    path = os.path.join(directory, "classes.txt")
    if os.path.isfile(path):
        with open(path) as handle:
            names = [line.strip() for line in handle if line.strip()]
        if len(labels) and int(labels.max()) >= len(names):
            raise ValueError(f"{path} names {len(names)} classes, the labels go up to {int(labels.max())}")
        return names
    num_classes = max(10, int(labels.max()) + 1 if len(labels) else 0)
    if "fashion" in os.path.abspath(directory).lower() and num_classes == 10:
        return list(FASHION_MNIST_CLASS_NAMES)
    return [str(i) for i in range(num_classes)]


def _idx_file(directory: str, prefix: str, kind: str) -> str | None:
    """Path of ``{prefix}-{kind}`` IDX file (kind 'images'/'labels'), plain or .gz, or None."""
    idx = "idx3" if kind == "images" else "idx1"
    for stem in (f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"):
        for name in (stem, stem + ".gz"):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
    return None


def idx_dir_complete(directory: str) -> bool:
    return all(_idx_file(directory, p, k) for p in ("train", "t10k") for k in ("images", "labels"))


def load(directory: str, split: str, name: str) -> Source:
    """Source from MNIST-format IDX files in ``directory`` (see :func:`load_source`)."""
    if split not in _IDX_PREFIX:
        raise ValueError(f"IDX sources have splits 'train' and 'test', got {split!r}")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"IDX directory not found: {directory}")
    prefix = _IDX_PREFIX[split]
    paths = {}
    for kind in ("images", "labels"):
        paths[kind] = _idx_file(directory, prefix, kind)
        if paths[kind] is None:
            idx = "idx3" if kind == "images" else "idx1"
            raise FileNotFoundError(f"missing {os.path.join(directory, f'{prefix}-{kind}-{idx}-ubyte')}[.gz]")
    images, labels = load_idx(paths["images"]), load_idx(paths["labels"])
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"IDX images must be uint8 [N, H, W] or [N, H, W, C], got {images.dtype} {images.shape}: {paths['images']}")
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"IDX images must have 1 or 3 channels, got {images.shape}: {paths['images']}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{paths['labels']} has labels of shape {labels.shape}, {paths['images']} has {len(images)} images")
    labels = labels.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise ValueError(f"negative label in {paths['labels']}")
    return in_memory_source(images, labels, _class_names(directory, labels), name, split)
