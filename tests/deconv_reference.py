"""The deconvnet reference for any Keras model: autodiff with every ReLU's gradient overridden.

The deconvnet's projection of one activation equals the gradient of that activation (seeded with
its own value) with respect to the input when every ReLU's backward pass is a ReLU of the incoming
signal and LRN passes it unchanged; max pools' gradient is already the unpooling by switches and
every linear layer's gradient its adjoint. Here the model's own layers run (Keras' Functional
call, not zfkeras' graph walk) with the relu activations swapped for such a ReLU, and
GradientTape does the rest: nothing is shared with zfkeras.deconv.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from zfkeras.nn.layers import LocalResponseNormalization


@tf.custom_gradient
def deconv_relu(x):
    """ReLU going up; ReLU of the incoming signal going down (the deconvnet's rectification)."""
    return tf.nn.relu(x), lambda dy: tf.nn.relu(dy)


def _identity_backward(function):
    @tf.custom_gradient
    def run(x):
        return function(x), lambda dy: dy

    return run


@contextlib.contextmanager
def deconv_gradients(model):
    """Within the block, ``model``'s ReLUs back-propagate a ReLU of the signal, its LRNs pass it."""
    undo = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.ReLU):
            undo.append((layer, "call", layer.__dict__.get("call")))
            layer.call = lambda x, *args, **kwargs: deconv_relu(x)
        elif isinstance(layer, LocalResponseNormalization):
            undo.append((layer, "call", layer.__dict__.get("call")))
            layer.call = _identity_backward(type(layer).call.__get__(layer))
        elif getattr(getattr(layer, "activation", None), "__name__", None) == "relu":
            undo.append((layer, "activation", layer.activation))
            layer.activation = deconv_relu
    try:
        yield
    finally:
        for layer, name, value in undo:
            if value is None:
                del layer.__dict__[name]
            else:
                setattr(layer, name, value)


def reference_projection(model, images, output_layer, channels, positions):
    """Autodiff projections of map ``channels[n]`` of ``output_layer``'s output in image ``n``.

    ``positions`` per image: (y, x), "max" (that map's strongest unit, first in row-major order)
    or "map" (the whole map). Returns float32 ``[N, H, W, C]``.
    """
    sub = keras.Model(model.inputs[0], model.get_layer(output_layer).output)
    x = tf.constant(np.asarray(images, "float32"))
    with deconv_gradients(model), tf.GradientTape() as tape:
        tape.watch(x)
        acts = sub(x, training=False)
        values = acts.numpy()
        mask = np.zeros_like(values)
        for n, (channel, position) in enumerate(zip(channels, positions)):
            if isinstance(position, str) and position == "map":
                mask[n, :, :, channel] = 1
                continue
            if isinstance(position, str):
                position = np.unravel_index(np.argmax(values[n, :, :, channel]), values.shape[1:3])
            mask[n, position[0], position[1], channel] = 1
        target = tf.reduce_sum(acts * tf.constant(mask * values))
    return tape.gradient(target, x).numpy()


def assert_close(projection, reference, tolerance=1e-5):
    """Relative error <= ``tolerance`` per image (a chosen activation of 0 must give exactly 0);
    at least half the references must be non-zero, else the test would prove little."""
    assert projection.shape == reference.shape
    for got, want in zip(projection, reference):
        scale = np.abs(want).max()
        if scale == 0:
            assert not np.any(got)
        else:
            assert np.abs(got - want).max() / scale <= tolerance, np.abs(got - want).max() / scale
    assert np.count_nonzero(np.abs(reference).max(axis=(1, 2, 3))) >= max(1, len(reference) // 2), "references are zero"
