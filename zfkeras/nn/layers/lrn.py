"""Local response normalization across feature maps (Krizhevsky et al. 2012, Sec. 3.3)."""

import keras
import tensorflow as tf

from zfkeras.io.validation import check_positive


@keras.saving.register_keras_serializable(package="zfkeras")
class LocalResponseNormalization(keras.layers.Layer):
    """Contrast normalization across ``size`` adjacent channels.

    ``b[c] = a[c] / (k + alpha * sum_{c' = c - size//2}^{c + size//2} a[c']**2) ** beta``
    (the sum is not divided by ``size``, as in AlexNet's paper). Defaults are AlexNet's constants.
    Shape-preserving: ``[N, H, W, C] -> [N, H, W, C]``.

    Args:
        size: odd number of channels in the window (n = 5).
        k: additive constant (2.0). alpha: scale of the squared sum (1e-4). beta: exponent (0.75).
    """

    def __init__(self, size=5, k=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.size = check_positive(size, "size", integer=True)
        if self.size % 2 != 1:
            raise ValueError(f"size must be odd (a window centred on each channel), got {size!r}")
        self.k = check_positive(k, "k")
        self.alpha = check_positive(alpha, "alpha")
        self.beta = check_positive(beta, "beta")

    def call(self, inputs):
        return tf.nn.local_response_normalization(inputs, depth_radius=self.size // 2, bias=self.k, alpha=self.alpha, beta=self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, k=self.k, alpha=self.alpha, beta=self.beta)
        return config
