"""The training set's per-pixel mean image (the model's ``SubtractMean`` layer subtracts it)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zfkeras.data.batches import resized_dataset
from zfkeras.data.transforms import center_crop

_AUTOTUNE = tf.data.AUTOTUNE


def compute_mean_image(source_dataset, input_size: int, channels: int, limit: int | None = None, batch_size: int = 256) -> np.ndarray:
    """Per-pixel mean of the training set: float32 numpy ``[S, S, channels]``, raw pixel units.

    The mean is over the centre ``S x S`` crop of each ``L x L`` image of :func:`resized_dataset`
    (the first ``limit`` examples if given). The model's ``SubtractMean`` layer subtracts it; data
    pipelines never do, so the mean is subtracted once. ``source_dataset`` is a :class:`Source`
    or a dataset of ``(image, label)``.
    """
    dataset = resized_dataset(source_dataset, input_size, channels, cache=False)
    if limit is not None:
        dataset = dataset.take(limit)
    dataset = dataset.map(lambda x, y: center_crop(x, input_size), num_parallel_calls=_AUTOTUNE).batch(batch_size).prefetch(_AUTOTUNE)
    total = np.zeros((input_size, input_size, channels), np.float64)
    count = 0
    for batch in dataset.as_numpy_iterator():
        total += batch.sum(axis=0, dtype=np.float64)
        count += len(batch)
    if count == 0:
        raise ValueError("cannot compute a mean image of an empty data set")
    return (total / count).astype(np.float32)
