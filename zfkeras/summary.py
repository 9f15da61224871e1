"""What a model is and how well it classifies, as plain numbers for a report (``zf report``).

:func:`architecture` lists a Keras model's layers with their settings, output shapes and parameter
counts; :func:`confusion_matrix` counts true against predicted classes; :class:`Predictions`
collects, over batches of 10-crop views, the single-crop and 10-crop predictions the error rates of
:mod:`zfkeras.evaluate` are computed from, so a report's confusion matrix and its error rates come
from the same forward passes.
"""

import dataclasses

import keras
import numpy as np

from zfkeras.evaluate import CENTER_VIEW, ErrorCounter


@dataclasses.dataclass
class LayerRow:
    """One layer of :func:`architecture`.

    Attributes:
        name: the layer's name (``conv1``, ``pool1``, ...).
        kind: its class name (``Conv2D``, ``SwitchMaxPool``, ...).
        settings: its geometry in words, e.g. ``"3x3/1 same, 32 filters, relu"``; "" if none.
        output_shape: output shape without the batch axis (the first output of a multi-output layer).
        params: number of weights (trainable and not).
        trainable_params: number of trainable weights.
    """

    name: str
    kind: str
    settings: str
    output_shape: tuple
    params: int
    trainable_params: int


def _settings(layer):
    """The geometry of ``layer`` in words (kernel/stride, padding, units, rate...)."""
    config = layer.get_config()

    def pair(value):
        value = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
        return f"{value[0]}x{value[1]}"

    def step(value):
        value = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
        return str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}"

    activation = config.get("activation")
    activation = f", {activation}" if activation not in (None, "linear") else ""
    if isinstance(layer, keras.layers.Conv2D):
        return f"{pair(config['kernel_size'])}/{step(config['strides'])} {config['padding']}, {config['filters']} filters{activation}"
    if "pool_size" in config:
        return f"{pair(config['pool_size'])}/{step(config['strides'] or config['pool_size'])} {config.get('padding', 'valid')} max"
    if isinstance(layer, keras.layers.Dense):
        return f"{config['units']} units{activation}"
    if isinstance(layer, keras.layers.Dropout):
        return f"rate {config['rate']:g}"
    if isinstance(layer, keras.layers.ZeroPadding2D):
        return f"padding {config['padding']}"
    if "size" in config and "alpha" in config:  # local response normalisation
        return f"size {config['size']}, k {config['k']:g}, alpha {config['alpha']:g}, beta {config['beta']:g}"
    if type(layer).__name__ == "SubtractMean":
        return "minus the training mean image (non-trainable)"
    return ""


def architecture(model):
    """The layers of a Keras model, input to output, as :class:`LayerRow` s (input layers left out).

    The rows' ``params`` add up to ``model.count_params()``.
    """
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        output = layer.output[0] if isinstance(layer.output, (list, tuple)) else layer.output
        trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
        rows.append(
            LayerRow(
                name=layer.name,
                kind=type(layer).__name__,
                settings=_settings(layer),
                output_shape=tuple(int(d) for d in output.shape[1:]),
                params=int(layer.count_params()),
                trainable_params=trainable,
            )
        )
    return rows


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
    :class:`zfkeras.evaluate.ErrorCounter` on the same probabilities.
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
        """:meth:`zfkeras.evaluate.ErrorCounter.errors` (fractions)."""
        return self.counter.errors()

    def confusion(self, crops="ten"):
        """:func:`confusion_matrix` of the 10-crop (``"ten"``) or centre-crop (``"single"``) predictions."""
        if crops == "ten" and not self.ten:
            raise ValueError("no 10-crop predictions were added")
        predicted = self.ten if crops == "ten" else self.single
        return confusion_matrix(np.concatenate(self.labels), np.concatenate(predicted), self.classes)
