"""Max pooling that also returns its switches (the argmax of every pooling region)."""

import keras
import tensorflow as tf

from zfkeras.io.validation import check_padding, check_pair


@keras.saving.register_keras_serializable(package="zfkeras")
class SwitchMaxPool(keras.layers.Layer):
    """2D max pooling returning ``(pooled, switches)``.

    The switches are what the deconvnet's unpooling needs (paper Sec. 2.1, Fig. 1 bottom): for every
    output element, the flat index of the input element that won the max, with the batch included,
    i.e. ``((b * H + y) * W + x) * C + c`` for input shape ``[N, H, W, C]``.

    Args:
        pool_size: int or (rows, cols) window size. ZFNet uses 3 (overlapping pools).
        strides: int or (rows, cols); defaults to ``pool_size``.
        padding: ``"valid"`` or ``"same"`` (TF semantics; padded cells never win the max).

    Call:
        inputs: float tensor ``[N, H, W, C]``.
        Returns ``pooled [N, H', W', C]`` (same dtype) and ``switches [N, H', W', C]`` (int64).
    """

    # MaxPoolWithArgmax has no XLA kernel; tell Keras so that jit_compile="auto" stays off.
    supports_jit = False

    def __init__(self, pool_size=2, strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.pool_size = check_pair(pool_size, "pool_size")
        self.strides = check_pair(strides if strides is not None else pool_size, "strides")
        self.padding = check_padding(padding)

    def call(self, inputs):
        window = dict(ksize=(1, *self.pool_size, 1), strides=(1, *self.strides, 1), padding=self.padding.upper())
        # Two ops, not one: the pooled maps (and their gradient) come from plain max pooling, the
        # switches from max_pool_with_argmax. A traced graph that never reads the switches (training,
        # predict, features) drops the argmax op, which costs ~20x a plain pool on CPU; the values
        # are the same (the maximum of the same window).
        pooled = tf.nn.max_pool2d(inputs, **window)
        _, switches = tf.nn.max_pool_with_argmax(inputs, **window, include_batch_in_index=True)
        return pooled, switches

    def compute_output_spec(self, inputs):
        # Spelled out (not compute_output_shape) so the symbolic switches are int64 like the real ones.
        shape = pooled_shape(inputs.shape, self.pool_size, self.strides, self.padding)
        return (keras.KerasTensor(shape, dtype=inputs.dtype), keras.KerasTensor(shape, dtype="int64"))

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding)
        return config


def pooled_shape(input_shape, pool_size, strides, padding):
    """Output shape ``(N, H', W', C)`` of a 2D pool (or conv) on ``input_shape`` ``(N, H, W, C)``."""
    n, h, w, c = input_shape

    def length(size, window, stride):
        if size is None:
            return None
        if padding == "same":
            return -(-size // stride)
        return (size - window) // stride + 1

    return (n, length(h, pool_size[0], strides[0]), length(w, pool_size[1], strides[1]), c)
