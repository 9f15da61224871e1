"""Unpooling with switches: the exact adjoint of max pooling."""

import keras
import tensorflow as tf


def unpool(values, switches, output_shape):
    """Place ``values`` at the input locations recorded in ``switches``, summing collisions.

    Overlapping pools (3x3 stride 2) often pick the same input element for two outputs; summing
    there (``scatter_nd`` adds duplicates) makes this exactly the gradient of max pooling.

    Args:
        values: float ``[N, H', W', C]``, e.g. a reconstruction arriving from the layer above.
        switches: int64 ``[N, H', W', C]`` from :class:`SwitchMaxPool` (batch included in index).
        output_shape: ``(H, W, C)`` of the pooling layer's input (batch size comes from ``values``).

    Returns:
        float ``[N, H, W, C]``, zero everywhere except at switch locations.
    """
    height, width, channels = (int(d) for d in output_shape)
    batch = tf.shape(values)[0]
    size = tf.cast(batch, tf.int64) * (height * width * channels)
    flat = tf.scatter_nd(tf.reshape(tf.cast(switches, tf.int64), (-1, 1)), tf.reshape(values, (-1,)), tf.reshape(size, (1,)))
    return tf.reshape(flat, tf.stack([batch, height, width, channels]))


@keras.saving.register_keras_serializable(package="zfkeras")
class Unpool(keras.layers.Layer):
    """Keras layer form of :func:`unpool`: ``Unpool(output_shape=(H, W, C))([values, switches])``.

    Args:
        output_shape: ``(H, W, C)``, the shape (without batch) of the tensor that was pooled.
    """

    def __init__(self, output_shape, **kwargs):
        super().__init__(**kwargs)
        try:
            shape = tuple(int(d) for d in output_shape)
        except (TypeError, ValueError):
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"output_shape must be (height, width, channels) > 0, got {output_shape!r}")
        self.unpooled_shape = shape

    def call(self, inputs):
        values, switches = inputs
        return unpool(values, switches, self.unpooled_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], *self.unpooled_shape)

    def get_config(self):
        config = super().get_config()
        config.update(output_shape=self.unpooled_shape)
        return config
