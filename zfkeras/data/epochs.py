"""Training epochs that scale: shuffle example ids, not decoded images; cache only by choice.

Each epoch draws a fresh seeded permutation of the whole source's example ids (file paths for
``folder:`` sources, row ids for IDX/CSV), then decodes, resizes (:func:`zfkeras.data.prepare_images`)
and crops (:func:`zfkeras.data.random_crop_flip`) in parallel. A class-sorted folder therefore gives
class-mixed batches from the first batch on, whatever the image size, and memory does not grow
with the number of images. Sources that can only be streamed (TFDS, ``tfrecord:``) are shuffled
with a buffer of at most :data:`STREAM_BUFFER_BYTES` of images.

Caching (``cache``) never changes the batches, only where the resized ``L x L`` images come from:

- ``"none"``: decode every epoch;
- ``"memory"``: keep them in RAM (filled in one pass over the source, in id order);
- a directory path: keep them in a memory-mapped file there, reused by later runs on the same data;
- ``"auto"`` (default): ``"memory"`` when they fit ``cache_budget`` bytes
  (:data:`DEFAULT_CACHE_BUDGET`), else ``"none"``; sources already held in memory are never copied.

Unreadable files: with ``Source.skip_corrupt`` they are skipped where they are read, and
:meth:`TrainingImages.skipped_files` names them; otherwise iterating the epoch fails with a TF
error that :meth:`TrainingImages.corrupt_error` turns into a :class:`zfkeras.data.CorruptImageError`
naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from zfkeras.data.batches import prepare_images
from zfkeras.data.decode import corrupt_file_error, corrupt_file_in, corrupt_reason_in, read_images, read_or_fail
from zfkeras.data.mean import compute_mean_image
from zfkeras.data.source import Source
from zfkeras.data.transforms import load_size, random_crop_flip, train_padding
from zfkeras.io.atomic import atomic_output

DEFAULT_CACHE_BUDGET = 2 * 1024**3  # bytes of resized uint8 images "auto" may keep in memory
STREAM_BUFFER_BYTES = 256 * 1024**2  # bytes of images a shuffle buffer of a streamed source holds
CACHE_FORMS = "'auto', 'memory', 'none' or a directory path"
# Errors a decode of a bad file raises while an epoch is iterated.
READ_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError, tf.errors.NotFoundError, tf.errors.UnknownError)
_AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class CachePlan:
    """Where resized training images come from: ``kind`` is ``"none"``, ``"memory"`` or ``"disk"``
    (then ``path`` is the cache file); ``bytes`` is their size; ``reason`` says why, for logs."""

    kind: str
    bytes: int
    reason: str
    path: str | None = None


def plan_cache(cache, num_examples, load_side, channels, budget=None, in_memory=False, key="") -> CachePlan:
    """Resolve a ``cache`` choice (see the module docstring) for ``num_examples`` images of
    ``load_side`` x ``load_side`` x ``channels`` bytes. ValueError names a bad choice."""
    budget = DEFAULT_CACHE_BUDGET if budget is None else int(budget)
    if budget < 0:
        raise ValueError(f"cache_budget must be >= 0 bytes, got {budget}")
    size = None if num_examples is None else int(num_examples) * load_side * load_side * channels
    if not isinstance(cache, str) or not cache.strip():
        raise ValueError(f"cache must be {CACHE_FORMS}, got {cache!r}")
    cache = cache.strip()
    if cache == "none":
        return CachePlan("none", 0, "no cache asked for: images are decoded every epoch")
    if size is None:
        if cache == "auto":
            return CachePlan("none", 0, "the number of images is unknown: images are decoded every epoch")
        raise ValueError(f"cache={cache!r} needs a source whose number of images is known")
    if cache == "auto":
        if in_memory:
            return CachePlan("none", 0, "the source is held in memory already")
        if size <= budget:
            return CachePlan("memory", size, f"{_gb(size)} of resized images fit the {_gb(budget)} budget")
        return CachePlan("none", 0, f"{_gb(size)} of resized images exceed the {_gb(budget)} budget: images are decoded every epoch")
    if cache == "memory":
        return CachePlan("memory", size, "asked for")
    if os.path.exists(cache) and not os.path.isdir(cache):
        raise ValueError(f"cache must be {CACHE_FORMS}; {cache} is a file, not a directory")
    if not os.path.isdir(cache) and os.sep not in cache:
        # A typo ("ram") must not silently become a new folder: new directories are written as paths.
        raise ValueError(f"cache must be {CACHE_FORMS} (an existing directory, or a path with '{os.sep}' such as ./{cache}), got {cache!r}")
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = os.path.join(cache, f"zfkeras-images-{load_side}x{load_side}x{channels}-{digest}.npy")
    return CachePlan("disk", size, f"memory-mapped file {path}", path)


def _gb(size):
    return f"{size / 1024**3:.2f} GB"


class TrainingImages:
    """The training images of one source, resized to ``L x L`` and read by example id.

    Args:
        source: a :class:`zfkeras.data.Source` (or a dataset of ``(image, label)``, streamed).
        input_size: the model's input side ``S``; ``L = load_size(S)``.
        channels: 1 or 3 (images are converted).
        cache: see the module docstring. cache_budget: bytes for ``"auto"``.
        shuffle_buffer: elements of the shuffle buffer for streamed sources (default: as many as
            :data:`STREAM_BUFFER_BYTES` of images hold, at least 1000).
    """

    def __init__(self, source, input_size, channels, *, cache="auto", cache_budget=None, shuffle_buffer=None):
        self.source = source if isinstance(source, Source) else None
        self._stream = source if self.source is None else source.dataset
        self.input_size, self.channels = int(input_size), int(channels)
        self.load_side = load_size(self.input_size)
        self.pad = train_padding(self.input_size)
        src = self.source
        self.num_examples = src.num_examples if src is not None else None
        self.files = src.files if src is not None else None
        self.indexable = src is not None and bool(self.num_examples) and (self.files is not None or src.select is not None)
        self.skip_corrupt = bool(src is not None and src.skip_corrupt)
        in_memory = src is not None and src.files is None and src.select is not None
        key = json.dumps(
            [
                getattr(src, "name", "stream"),
                getattr(src, "split", ""),
                self.num_examples,
                list(self.files[:3] + self.files[-3:]) if self.files else None,
            ]
        )
        self.plan = plan_cache(cache, self.num_examples, self.load_side, self.channels, cache_budget, in_memory=in_memory, key=key)
        if self.plan.kind != "none" and not self.indexable:
            raise ValueError(f"cache={cache!r} needs a source that can be read by example id (folder, IDX, CSV)")
        per_image = self.load_side**2 * self.channels
        self.shuffle_buffer = shuffle_buffer or max(1000, STREAM_BUFFER_BYTES // per_image)
        self._cached = None  # (images uint8 [N, L, L, C], labels int64 [N], valid bool [N]) once filled
        self._bad = set()  # ids found unreadable and skipped (cache fill, or an epoch)

    # ---- reading by id -------------------------------------------------------------------

    def _read(self, ids: np.ndarray) -> tf.data.Dataset:
        """``(image uint8 [H, W, C], label int64, id int64)`` of ``ids`` in that order (raw images)."""
        ids = np.asarray(ids, np.int64)
        if self.files is None:
            # In-memory sources cannot fail to read, so zipping ids alongside stays aligned.
            examples = self.source.select(ids)
            return tf.data.Dataset.zip((examples, tf.data.Dataset.from_tensor_slices(ids))).map(lambda example, i: (example[0], example[1], i))
        paths = tf.data.Dataset.from_tensor_slices(tf.constant([self.files[i] for i in ids.tolist()], tf.string))
        labels = np.asarray(self.source.labels, np.int64)[ids]
        known = tf.data.Dataset.from_tensor_slices((labels, ids))
        # read_images never fails: a bad file gives ok=False, so the three streams stay aligned.
        examples = tf.data.Dataset.zip((paths, known, read_images(paths, self.channels, self.source.max_pixels)))
        if self.skip_corrupt:

            def note(i):
                self._bad.add(int(i))
                return False

            examples = examples.filter(
                lambda path, known, decoded: tf.cond(decoded[1], lambda: tf.constant(True), lambda: tf.py_function(note, [known[1]], tf.bool))
            )
            return examples.map(lambda path, known, decoded: (decoded[0], known[0], known[1]))

        def named(path, known, decoded):
            return read_or_fail(path, decoded), known[0], known[1]

        return examples.map(named, num_parallel_calls=_AUTOTUNE, deterministic=True)

    def _fill(self):
        """Resize every image once, in id order, into memory or the disk cache file."""
        n, side, c = self.num_examples, self.load_side, self.channels
        stem = self.plan.path[:-4] if self.plan.kind == "disk" else None
        # The images are written first, then the valid flags and labels: only all three make a cache.
        if stem and all(os.path.exists(stem + suffix) for suffix in (".npy", ".valid.npy", ".labels.npy")):
            images = np.load(self.plan.path, mmap_mode="r")
            valid = np.load(self.plan.path[:-4] + ".valid.npy")
            if images.shape == (n, side, side, c) and valid.shape == (n,):
                self._cached = (
                    images,
                    np.asarray(self.source.labels, np.int64) if self.source.labels is not None else np.load(self.plan.path[:-4] + ".labels.npy"),
                    valid,
                )
                self._bad = set(np.flatnonzero(~valid).tolist())
                return
        labels = np.zeros(n, np.int64)
        valid = np.zeros(n, bool)
        if self.plan.kind == "disk":
            os.makedirs(os.path.dirname(self.plan.path), exist_ok=True)
            with atomic_output(self.plan.path) as partial:
                images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(n, side, side, c))
                self._fill_into(images, labels, valid)
                images.flush()
                del images
            for suffix, array in ((".valid.npy", valid), (".labels.npy", labels)):
                with atomic_output(self.plan.path[:-4] + suffix) as partial:
                    with open(partial, "wb") as handle:
                        np.save(handle, array)
            images = np.load(self.plan.path, mmap_mode="r")
        else:
            images = np.zeros((n, side, side, c), np.uint8)
            self._fill_into(images, labels, valid)
        self._cached = (images, labels, valid)
        self._bad = set(np.flatnonzero(~valid).tolist())

    def _fill_into(self, images, labels, valid):
        stream = prepare_images(self._read(np.arange(self.num_examples)), self.input_size, self.channels)
        try:
            for batch, batch_labels, ids in stream.batch(256).prefetch(2).as_numpy_iterator():
                images[ids], labels[ids], valid[ids] = batch, batch_labels, True
        except READ_ERRORS as error:
            raise self.corrupt_error(error) from None

    def _cached_examples(self, ids):
        images, labels, _ = self._cached
        side, c = self.load_side, self.channels

        def gather(chosen):
            return images[chosen], labels[chosen]

        def fetch(chosen):
            x, y = tf.numpy_function(gather, [chosen], (tf.uint8, tf.int64), stateful=False)
            x.set_shape([None, side, side, c])
            y.set_shape([None])
            return x, y, chosen

        return tf.data.Dataset.from_tensor_slices(np.asarray(ids, np.int64)).batch(256).map(fetch).unbatch()

    def mean_image(self, limit=None, seed=0) -> np.ndarray:
        """Per-pixel mean of the centre ``S x S`` crops of the ``L x L`` training images (float32
        ``[S, S, C]``, raw pixel units; :func:`zfkeras.data.compute_mean_image`), over every image,
        or over ``limit`` of them drawn with ``seed`` when there are more. Unreadable files are
        skipped or named as in an epoch."""
        if not self.indexable:
            stream = self._stream if limit is None else self._stream.take(limit)
            return compute_mean_image(stream, self.input_size, self.channels)
        n = self.num_examples
        ids = np.arange(n) if limit is None or n <= limit else np.sort(np.random.default_rng([seed, n]).choice(n, limit, replace=False))
        examples = self._read(ids).map(lambda image, label, i: (image, label))
        try:
            return compute_mean_image(examples, self.input_size, self.channels)
        except READ_ERRORS as error:
            raise self.corrupt_error(error) from None

    # ---- epochs --------------------------------------------------------------------------

    def epoch(self, batch_size, seed, *, drop_remainder=False, with_ids=True, flip=True) -> tf.data.Dataset:
        """One epoch's batches ``(float32 [B, S, S, C] raw 0-255, int64 labels [B][, int64 ids [B]])``.
        ``flip=False``: random crops without random horizontal flips.

        The order is ``np.random.default_rng(seed).permutation`` of the ids (streamed sources: a
        seeded shuffle buffer over stream positions); each image's crop and flip come from the
        stateless seed ``[seed, id]``. Same seed, same batches, whatever the cache choice.
        """
        seed = int(seed)
        if self.indexable:
            order = np.random.default_rng(seed).permutation(self.num_examples)
            if self.plan.kind != "none":
                if self._cached is None:
                    self._fill()
                order = order[self._cached[2][order]]  # unreadable ids were found by the fill
                examples = self._cached_examples(order)
            else:
                examples = prepare_images(self._read(order), self.input_size, self.channels)
        else:
            # tfrecord: sources reshuffle their shard order each epoch; others stream in order.
            src = self.source
            base = src.stream(seed) if src is not None and src.stream is not None else self._stream
            stream = base.enumerate().map(lambda i, example: (example[0], example[1], i))
            stream = stream.shuffle(self.shuffle_buffer, seed=seed) if self.shuffle_buffer > 1 else stream
            examples = prepare_images(stream, self.input_size, self.channels)
        seed64 = tf.constant(seed, tf.int64)
        size, pad = self.input_size, self.pad

        def augment(image, label, i):
            crop = random_crop_flip(image, size, tf.stack([seed64, i]), pad=pad, flip=flip)
            return (tf.cast(crop, tf.float32), label, i) if with_ids else (tf.cast(crop, tf.float32), label)

        batches = examples.map(augment, num_parallel_calls=_AUTOTUNE, deterministic=True)
        batches = batches.batch(batch_size, drop_remainder=drop_remainder).prefetch(_AUTOTUNE)
        options = tf.data.Options()
        options.deterministic = True
        if self.source is not None and self.source.stream is not None:
            # whole shard files per worker under MultiWorkerMirroredStrategy (zfkeras.training keeps it)
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
        return batches.with_options(options)

    # ---- unreadable files ----------------------------------------------------------------

    def skipped_files(self) -> list:
        """Files (ids, for sources without files) found unreadable and skipped so far, sorted."""
        return [self.files[i] if self.files is not None else int(i) for i in sorted(self._bad)]

    def corrupt_error(self, error):
        """A :class:`zfkeras.data.CorruptImageError` naming the file whose read raised ``error``,
        or ``error`` itself when it came from elsewhere."""
        path = corrupt_file_in(error)
        return error if path is None else corrupt_file_error(path, corrupt_reason_in(error))


def train_dataset(
    source,
    input_size: int,
    channels: int,
    batch_size: int,
    seed: int,
    *,
    cache="none",
    cache_budget=None,
    shuffle_buffer: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """One epoch of training batches ``(float32 [B, S, S, channels] raw 0-255, int64 [B])``.

    A convenience over :class:`TrainingImages` (see there): a fresh seeded
    permutation of the example ids (when the source can be read by id), decode, resize and crop in
    parallel, :func:`random_crop_flip` with a per-example stateless seed, batch. The same seed gives
    the same batches. ``shuffle_buffer`` applies to sources that can only be streamed.
    """
    images = TrainingImages(source, input_size, channels, cache=cache, cache_budget=cache_budget, shuffle_buffer=shuffle_buffer)
    return images.epoch(batch_size, seed, drop_remainder=drop_remainder, with_ids=False)
