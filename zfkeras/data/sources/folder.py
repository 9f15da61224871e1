"""``folder:PATH``: one sub-folder per class, opened by listing files (no image is decoded).

Optional ``train/`` + ``test/``; without them, a seeded class-stratified :data:`HOLDOUT_FRACTION`
of each class is held out as the ``test`` split and left out of ``train`` (split ``all`` gives every
image, see :func:`holdout_files`). Opening reads at most :data:`zfkeras.data.decode.HEADER_SAMPLE`
headers (grey or colour: colour if any sampled file is); images are decoded only when read, so
corrupt files are found then (an error naming the file, or skipped with ``skip_corrupt=True``).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from zfkeras.data.decode import HEADER_SAMPLE, IMAGE_EXTENSIONS, MAX_PIXELS, corrupt_file_error, probe_files, read_images, read_or_fail
from zfkeras.data.source import Source

_AUTOTUNE = tf.data.AUTOTUNE

# Folder sources without train/ and test/: this share of each class, chosen with this seed, is the test split.
HOLDOUT_FRACTION = 0.2


HOLDOUT_SEED = 0


def _class_dirs(directory: str) -> list:
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def _image_files(directory: str) -> list:
    """Image files under ``directory`` (recursively), sorted, hidden entries skipped; lists names only."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    return found


def _folder_select(files: list, labels: np.ndarray, channels: int, on_corrupt, max_pixels=MAX_PIXELS):
    """``select(indices)`` of a folder source: ``(uint8 [H, W, channels], int64)`` of the files
    ``indices`` in the given order, decoded on both cores (headers first: above ``max_pixels`` a
    file is refused undecoded). A corrupt or too large file raises an error naming it (``on_corrupt``
    None) or is left out after ``on_corrupt(path)`` is called (once per read)."""
    paths_by_index = np.empty(len(files), dtype=object)
    paths_by_index[:] = files

    def select(indices):
        indices = np.asarray(indices, np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(files)):
            raise ValueError(f"indices must lie in 0..{len(files) - 1}, got {indices.min()}..{indices.max()}")
        paths = tf.data.Dataset.from_tensor_slices(tf.constant(list(paths_by_index[indices]), tf.string))
        examples = tf.data.Dataset.zip((paths, tf.data.Dataset.from_tensor_slices(labels[indices]), read_images(paths, channels, max_pixels)))
        if on_corrupt is None:

            def named(path, label, decoded):
                return read_or_fail(path, decoded), label

            return examples.map(named, num_parallel_calls=_AUTOTUNE, deterministic=True)

        def record(path):
            on_corrupt(path.numpy().decode())
            return False

        readable = examples.filter(
            lambda path, label, decoded: tf.cond(decoded[1], lambda: tf.constant(True), lambda: tf.py_function(record, [path], tf.bool))
        )
        return readable.map(lambda path, label, decoded: (decoded[0], label))

    return select


def holdout_files(files, labels, fraction=HOLDOUT_FRACTION, seed=HOLDOUT_SEED):
    """Indices of the held-out test images of a folder without ``train/`` + ``test/``.

    Class-stratified and seeded: of the ``n`` files of each class (sorted paths), ``round(fraction * n)``
    but at least 1 when ``n >= 2`` (none when ``n == 1``) are drawn with a generator seeded by
    ``seed`` and the class label, so the split depends only on the file names and labels. Every other
    file is the training split.
    """
    labels = np.asarray(labels)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n = len(members)
        count = 0 if n < 2 else max(1, int(round(fraction * n)))
        rng = np.random.default_rng([seed, int(label)])
        chosen.extend(members[rng.choice(n, count, replace=False)].tolist())
    return sorted(chosen)


def describe_holdout(holdout) -> str:
    """One sentence on how a held-out test split was made (``Source.holdout``)."""
    return (
        f"no train/ and test/ sub-folders: the test split is a seeded (seed {holdout['seed']}) "
        f"class-stratified {holdout['fraction']:.0%} of each class ({holdout['test_images']} images), "
        f"left out of the train split ({holdout['train_images']} images)"
    )


def load(directory: str, split: str, name: str, *, skip_corrupt: bool, max_pixels: int = MAX_PIXELS) -> Source:
    """Source from an image folder with one sub-folder per class (see :func:`load_source`).

    Opening lists the files and reads at most :data:`HEADER_SAMPLE` headers (grey or colour); no
    image is decoded, so corrupt files are found when first read (see :class:`Source`), and so are
    files above ``max_pixels`` pixels (refused from their header, never decoded). Photos are turned
    as their EXIF orientation says (:func:`zfkeras.data.decode.orient`).
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"image folder not found: {directory}")
    held_out = not all(os.path.isdir(os.path.join(directory, s)) for s in ("train", "test"))
    if not held_out:
        splits = _class_dirs(directory)
        if split not in splits:
            raise ValueError(f"folder {directory} has no split {split!r} (found {splits})")
        class_names = sorted(set(_class_dirs(os.path.join(directory, "train"))) | set(_class_dirs(os.path.join(directory, "test"))))
        directory = os.path.join(directory, split)
    else:
        if split not in ("train", "test", "all"):
            raise ValueError(f"folder {directory} has splits 'train', 'test' (held out) and 'all', not {split!r}")
        class_names = _class_dirs(directory)
    if not class_names:
        raise ValueError(f"image folder {directory} has no class sub-folders")
    files, labels = [], []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(directory, class_name)
        found = _image_files(class_dir) if os.path.isdir(class_dir) else []
        files.extend(found)
        labels.extend([label] * len(found))
    if not files:
        raise ValueError(f"no {'/'.join(IMAGE_EXTENSIONS)} images under {directory}")
    holdout = None
    if held_out and split != "all":
        test = set(holdout_files(files, labels))
        holdout = {"fraction": HOLDOUT_FRACTION, "seed": HOLDOUT_SEED, "train_images": len(files) - len(test), "test_images": len(test)}
        keep = [i for i in range(len(files)) if (i in test) == (split == "test")]
        if not keep:
            raise ValueError(
                f"image folder {directory} has no class with 2 or more images, so no held-out test split; give it train/ and test/ sub-folders"
            )
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    labels = np.asarray(labels, dtype=np.int64)
    headers = probe_files(files)
    if not headers:
        sampled = min(len(files), HEADER_SAMPLE)
        if sampled == len(files) and not skip_corrupt:
            raise corrupt_file_error(files[0])
        raise ValueError(f"no readable image under {directory} (read the headers of {sampled} of its {len(files)} files)")
    channels = 3 if any(c == 3 for c in headers.values()) else 1
    holder = []  # the Source, once made: skipped files are recorded on it as they are read

    def skipped(path):
        source = holder[0]
        if path not in source.skipped_files:
            source.skipped_files = source.skipped_files + (path,)
            source.skipped = len(source.skipped_files)

    select = _folder_select(files, labels, channels, skipped if skip_corrupt else None, max_pixels)
    source = Source(
        dataset=select(np.arange(len(files))),
        class_names=class_names,
        num_examples=len(files),
        channels=channels,
        name=name,
        split=split,
        labels=labels,
        select=select,
        holdout=holdout,
        files=tuple(files),
        skip_corrupt=skip_corrupt,
        max_pixels=max_pixels,
    )
    holder.append(source)
    return source
