"""Evaluation batches of a source at a model's input size, in source order (centre crop or 10 crops).

:class:`ImageBatches` is the one re-iterable batch reader the analyses scan with; each pass
re-reads the source, so memory does not grow with the number of images. Batches are float32 raw
pixels 0-255, never mean-subtracted.
"""

from __future__ import annotations

import os

import tensorflow as tf

from zfkeras.data.source import Source
from zfkeras.data.transforms import center_crop, load_size, pad_image, resize_and_center_crop, ten_crop, to_channels, train_padding

_AUTOTUNE = tf.data.AUTOTUNE


def _dataset_of(source) -> tf.data.Dataset:
    return source.dataset if isinstance(source, Source) else source


def _deterministic(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)


def prepare_images(dataset: tf.data.Dataset, input_size: int, channels: int) -> tf.data.Dataset:
    """Map ``(image, label, ...)`` elements to ``(uint8 [L, L, channels], int64 label, ...)`` with
    ``L = load_size(input_size)``: :func:`to_channels`, then :func:`resize_and_center_crop`, then
    rounded to uint8 (so a cache holds one byte per value). Other components pass through."""
    size = load_size(input_size)

    def prepare(image, label, *rest):
        image = resize_and_center_crop(to_channels(image, channels), size)
        return (tf.saturate_cast(tf.round(image), tf.uint8), tf.cast(label, tf.int64), *rest)

    if dataset.element_spec[0].shape.is_fully_defined():
        # All images share one size (IDX, most TFDS sets): resize whole batches, ~10x faster.
        return dataset.batch(256).map(prepare, num_parallel_calls=_AUTOTUNE, deterministic=True).unbatch()
    return dataset.map(prepare, num_parallel_calls=_AUTOTUNE, deterministic=True)


def resized_dataset(source, input_size: int, channels: int, cache=False) -> tf.data.Dataset:
    """The deterministic step, in source order: ``(uint8 [L, L, channels], int64)`` (:func:`prepare_images`).

    ``source`` is a :class:`Source` or a dataset of ``(image, label)``. ``cache``: True caches in
    memory, a string caches to that file prefix, False (the default) does not cache.
    """
    dataset = prepare_images(_dataset_of(source), input_size, channels)
    if cache is True:
        dataset = dataset.cache()
    elif cache:
        dataset = dataset.cache(os.fspath(cache))
    return dataset


def eval_dataset(source, input_size: int, channels: int, batch_size: int, crops: str = "center", cache=False) -> tf.data.Dataset:
    """Evaluation batches in source order, raw 0-255 float32, not mean-subtracted.

    ``crops="center"``: ``(float32 [B, S, S, channels], int64 [B])`` (:func:`center_crop` of the
    ``L x L`` image; for small inputs the native image itself); ``crops="ten"``:
    ``(float32 [B, 10, S, S, channels], int64 [B])`` (:func:`ten_crop` order, taken from the
    ``L x L`` image padded by :func:`train_padding`, the views training saw).
    """
    if crops not in ("center", "ten"):
        raise ValueError(f"crops must be 'center' or 'ten', got {crops!r}")
    pad = train_padding(input_size)

    def crop(image, label):
        views = center_crop(image, input_size) if crops == "center" else ten_crop(pad_image(image, pad), input_size)
        return tf.cast(views, tf.float32), label

    dataset = resized_dataset(source, input_size, channels, cache=cache).map(crop, num_parallel_calls=_AUTOTUNE, deterministic=True)
    return _deterministic(dataset.batch(batch_size).prefetch(_AUTOTUNE))


class ImageBatches:
    """Re-iterable evaluation batches of images ``start`` .. ``start + count - 1`` of an opened source,
    at a model's input shape, in source order; each pass re-reads the source, so memory does not
    grow with the number of images (global image indices are ``start`` + position).

    Args:
        source: a :class:`Source` (or a dataset of ``(image, label)``).
        input_shape: ``(S, S, C)``; images are converted to ``C`` channels and cropped to ``S x S``.
        batch_size: images per batch.
        count: how many images (None: all from ``start`` on).
        start: index of the first image.

    Iterating gives float32 ``[B, S, S, C]`` raw pixels (centre crops); :meth:`dataset` gives
    ``(images, labels)`` batches, also as 10 crops.
    """

    def __init__(self, source, input_shape, batch_size, count=None, start=0):
        height, width, channels = input_shape
        if height != width:
            raise ValueError(f"the data pipeline makes square crops; the model's input is {height}x{width}")
        self.source = source
        total = source.num_examples if isinstance(source, Source) else None
        if total is not None and start >= total:
            raise ValueError(f"the {source.split} split of {source.name} has {total} images; nothing from image {start} on")
        available = None if total is None else total - start
        self.count = available if count is None else count if available is None else min(count, available)
        self.start, self.size, self.channels, self.batch_size = int(start), int(height), int(channels), int(batch_size)
        self.class_names = getattr(source, "class_names", None)

    def dataset(self, crops="center"):
        """``(float32 images, int64 labels)`` batches (:func:`eval_dataset`; ``crops`` "center" or "ten")."""
        dataset = _dataset_of(self.source).skip(self.start) if self.start else _dataset_of(self.source)
        if self.count is not None:
            dataset = dataset.take(self.count)
        return eval_dataset(dataset, self.size, self.channels, self.batch_size, crops=crops, cache=False)

    def __iter__(self):
        for images, _ in self.dataset().as_numpy_iterator():
            yield images

    @property
    def label(self):
        """ "N images" for progress labels."""
        return f"{self.count if self.count is not None else 'all'} images"

    @property
    def batches(self):
        """Number of batches, or None when the source does not know its size."""
        return -(-self.count // self.batch_size) if self.count is not None else None
