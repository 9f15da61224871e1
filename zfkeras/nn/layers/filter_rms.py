"""Filter RMS renormalization (paper Sec. 3): cap each conv filter's RMS at a fixed radius."""

import keras
import tensorflow as tf

from zfkeras.io.validation import check_positive


@keras.saving.register_keras_serializable(package="zfkeras")
class FilterRMSNorm(keras.constraints.Constraint):
    """Kernel constraint: a filter whose RMS exceeds ``radius`` is rescaled to RMS ``radius``.

    For a Conv2D kernel ``[kh, kw, in, out]`` each output filter ``w[..., o]`` has
    ``rms = sqrt(mean(w[..., o] ** 2))``; filters with ``rms <= radius`` are left unchanged.
    The paper uses radius 1e-1 to stop a few first-layer filters from dominating (Fig. 6a).
    """

    def __init__(self, radius=0.1):
        self.radius = check_positive(radius, "radius")

    def __call__(self, w):
        axes = list(range(len(w.shape) - 1))
        rms = tf.sqrt(tf.reduce_mean(tf.square(w), axis=axes, keepdims=True))
        return w * tf.minimum(1.0, self.radius / tf.maximum(rms, 1e-12))

    def get_config(self):
        return {"radius": self.radius}
