"""How well a model classifies, as plain numbers for a report (``zf report``).

:func:`architecture` lists a Keras model's layers with their settings, output shapes and parameter
counts; :func:`confusion_matrix` counts true against predicted classes; :class:`Predictions`
collects, over batches of 10-crop views, the single-crop and 10-crop predictions the error rates of
:mod:`zfkeras.analysis.evaluate` are computed from, so a report's confusion matrix and its error rates come
from the same forward passes.
"""

import numpy as np

from zfkeras.analysis.evaluate import CENTER_VIEW, ErrorCounter


def confusion_matrix(labels, predictions, classes):
    """Counts ``[classes, classes]`` int64: row = true class, column = predicted class.

    Args:
        labels, predictions: int ``[N]`` class indices in ``[0, classes)``.
    """
    labels, predictions = np.asarray(labels, "int64"), np.asarray(predictions, "int64")
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"labels and predictions must be two [N] arrays, got {labels.shape} and {predictions.shape}")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise ValueError(f"{name} must be class indices 0-{classes - 1}, got values {values.min()}-{values.max()}")
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(classes, classes)


class Predictions:
    """Single-crop and 10-crop predictions of one probe, batch after batch.

    :meth:`add` takes probabilities ``[B, 10, C]`` (views in :func:`zfkeras.data.ten_crop` order)
    or ``[B, C]`` (centre crops only) with labels ``[B]``; the error rates are those of
    :class:`zfkeras.analysis.evaluate.ErrorCounter` on the same probabilities.
    """

    def __init__(self, classes, k=5):
        self.classes = classes
        self.counter = ErrorCounter(k)
        self.labels, self.single, self.ten = [], [], []

    def add(self, probs, labels):
        probs = np.asarray(probs)
        self.counter.add(probs, labels)
        self.labels.append(np.asarray(labels, "int64"))
        if probs.ndim == 3:
            self.single.append(np.argmax(probs[:, CENTER_VIEW], axis=1))
            self.ten.append(np.argmax(probs.mean(axis=1), axis=1))
        else:
            self.single.append(np.argmax(probs, axis=1))

    def errors(self):
        """:meth:`zfkeras.analysis.evaluate.ErrorCounter.errors` (fractions)."""
        return self.counter.errors()

    def confusion(self, crops="ten"):
        """:func:`confusion_matrix` of the 10-crop (``"ten"``) or centre-crop (``"single"``) predictions."""
        if crops == "ten" and not self.ten:
            raise ValueError("no 10-crop predictions were added")
        predicted = self.ten if crops == "ten" else self.single
        return confusion_matrix(np.concatenate(self.labels), np.concatenate(predicted), self.classes)
