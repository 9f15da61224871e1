"""Per-pixel mean subtraction inside the model, so models take raw 0-255 pixels."""

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="zfkeras")
class SubtractMean(keras.layers.Layer):
    """Subtracts a stored mean image: ``[N, H, W, C] -> [N, H, W, C]``, ``x - mean``.

    The mean (paper Sec. 3: per-pixel mean over the training set) is a non-trainable weight of
    shape ``(H, W, C)``, zeros until :meth:`set_mean` is called, and is saved with the model.
    Keeping it here means data pipelines never subtract it and exports take raw pixels.
    """

    def build(self, input_shape):
        self.mean = self.add_weight(name="mean", shape=tuple(input_shape[1:]), initializer="zeros", trainable=False)

    def call(self, inputs):
        return inputs - self.mean

    def set_mean(self, mean):
        """Store ``mean`` (array of the input shape without batch, raw pixel units)."""
        mean = np.asarray(mean, dtype="float32")
        expected = tuple(self.mean.shape)
        if mean.shape != expected:
            raise ValueError(f"mean must have shape {expected} (the model input), got {mean.shape}")
        self.mean.assign(mean)

    def compute_output_shape(self, input_shape):
        return input_shape
