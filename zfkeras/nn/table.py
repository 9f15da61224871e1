"""A model's layer table: each layer's kind, settings, output shape and parameter count.

:func:`architecture` reads it from a Keras model; a :class:`zfkeras.nn.probe.Probe` carries it
(``Probe.layer_table()``), and an export records it, so a report draws it without the Keras model.
"""

import dataclasses

import keras
import numpy as np


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

    def to_dict(self):
        return {**dataclasses.asdict(self), "output_shape": list(self.output_shape)}

    @classmethod
    def from_dict(cls, values):
        return cls(**{**values, "output_shape": tuple(values["output_shape"])})


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
