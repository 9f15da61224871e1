"""An opened data source (:class:`Source`), in-memory sources, and subsets of a source."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

_AUTOTUNE = tf.data.AUTOTUNE


class CorruptImageError(ValueError):
    """A folder source holds an unreadable image file, or one above its pixel limit, or a
    tfrecord source a bad record or truncated shard (``skip_corrupt=True`` skips them); ``path``
    names the file, ``reason`` says what is wrong (``""``: it does not decode)."""

    def __init__(self, message, path=None, reason=""):
        super().__init__(message)
        self.path, self.reason = path, reason


@dataclasses.dataclass
class Source:
    """An opened data source.

    Attributes:
        dataset: ``tf.data.Dataset`` of ``(image uint8 [H, W, channels], label int64 scalar)``;
            images of a folder source may differ in size.
        class_names: label ``i`` is ``class_names[i]``.
        num_examples: number of examples in this split, or None if unknown (folders: the files
            listed, corrupt ones included, since they are found only when read).
        channels: 1 (grey) or 3 (RGB); every image of ``dataset`` has this many channels.
        name: the concrete spec the source was opened from (after :func:`resolve_source`).
        split: the split asked for (``"train"`` or ``"test"``).
        skipped: number of corrupt/unreadable files skipped so far (folder sources opened with
            ``skip_corrupt=True``). A folder is not decoded when opened, so its corrupt files are
            found when first read: these two fields of the Source :func:`load_source` returned are
            filled as its datasets (``dataset`` or ``select``'s) are read; copies made with
            ``dataclasses.replace`` (e.g. :func:`subset`) keep the values of the moment.
        skipped_files: their paths, in the order found (each once).
        labels: int64 ``[num_examples]`` labels in file/dataset order when known without decoding
            images (IDX, CSV, folders), else None (see :func:`source_labels`).
        select: ``select(indices) -> Dataset`` of just those examples (int indices into the split),
            **in the given order** (not sorted; repeats allowed), reading only them; None when the
            source can only be streamed whole. For a folder, a corrupt file among them raises an
            error naming it when read (:func:`naming_corrupt_files`, :func:`corrupt_file_in`), or
            with ``skip_corrupt=True`` is left out and recorded in ``skipped``/``skipped_files``.
        files: file paths, index-aligned with ``labels`` (folder sources; None for others), so a
            reader can name the file behind an index.
        stream: ``stream(seed) -> Dataset`` of the whole split whose shard order is reshuffled each
            iteration (epoch) from ``seed`` (tfrecord sources; None for others). ``dataset`` reads
            the shards in a fixed order. Both read whole files, so MultiWorkerMirroredStrategy's
            ``AutoShardPolicy.FILE`` gives each worker distinct shards.
        holdout: for a folder without ``train/`` + ``test/``, how its test split was held out
            (``{"fraction", "seed", "train_images", "test_images"}``, counts before skipping
            corrupt files); None when the source has a real test split.
        files: image file paths, index-aligned with ``labels`` (folder sources), else None: a
            training epoch reads these by id, and names the file when one is corrupt.
        skip_corrupt: skip unreadable files where they are read (counted and named) instead of
            stopping with an error naming the file.
        max_pixels: files (folder sources) larger than this many pixels are not decoded: refused
            like corrupt files (skipped with ``skip_corrupt``), the error naming the limit; None:
            :data:`zfkeras.data.decode.MAX_PIXELS`.
    """

    dataset: tf.data.Dataset
    class_names: list
    num_examples: int | None
    channels: int
    name: str
    split: str = "train"
    skipped: int = 0
    skipped_files: tuple = ()
    labels: np.ndarray | None = None
    select: object = None
    holdout: dict | None = None
    files: tuple | None = None
    skip_corrupt: bool = False
    stream: object = None
    max_pixels: int | None = None


def in_memory_source(images, labels, class_names, name, split):
    """A Source over numpy ``images [N, H, W, C]`` uint8 and ``labels [N]``."""
    labels = np.asarray(labels, np.int64)

    def select(indices):
        indices = np.asarray(indices, np.int64)
        return tf.data.Dataset.from_tensor_slices((images[indices], labels[indices]))

    return Source(
        dataset=tf.data.Dataset.from_tensor_slices((images, labels)),
        class_names=class_names,
        num_examples=len(images),
        channels=int(images.shape[-1]),
        name=name,
        split=split,
        labels=labels,
        select=select,
    )


def source_labels(source: Source) -> np.ndarray:
    """int64 ``[num_examples]`` labels of ``source`` in dataset order (streams the source when
    it does not know them up front)."""
    if source.labels is not None:
        return np.asarray(source.labels, np.int64)
    labels = source.dataset.map(lambda image, label: label, num_parallel_calls=_AUTOTUNE, deterministic=True)
    return np.fromiter(labels.as_numpy_iterator(), dtype=np.int64)


def subset(source: Source, indices) -> Source:
    """The examples ``indices`` (ints into ``source``'s split) of ``source``, in ascending index order.

    Reads only those examples where the source can (``Source.select``), otherwise streams the
    source once and keeps them. Labels are carried over.
    """
    indices = np.unique(np.asarray(indices, np.int64))
    total = source.num_examples
    if len(indices) and (indices[0] < 0 or (total is not None and indices[-1] >= total)):
        raise ValueError(f"indices must lie in 0..{(total or 0) - 1} for {source.name}, got {indices[0]}..{indices[-1]}")
    if source.select is not None:
        dataset = source.select(indices)
    else:
        keep = tf.constant(indices)
        dataset = source.dataset.enumerate().filter(lambda i, example: tf.reduce_any(tf.equal(keep, i))).map(lambda i, example: example)
    labels = None if source.labels is None else np.asarray(source.labels)[indices]
    files = None if source.files is None else tuple(source.files[i] for i in indices)
    select = None
    if source.select is not None:

        def select(chosen):  # ids into the subset -> ids into the source, order kept
            return source.select(indices[np.asarray(chosen, np.int64)])

    return dataclasses.replace(
        source, dataset=dataset, num_examples=len(indices), labels=labels, select=select, files=files, name=f"{source.name} ({len(indices)} selected)"
    )
