"""The three backward rules' references for any Keras model: autodiff, with ReLU gradients overridden.

The deconvnet's projection of one activation equals the gradient of that activation (seeded with
its own value) with respect to the input when every ReLU's backward pass is a ReLU of the incoming
signal and LRN passes it unchanged; max pools' gradient is already the unpooling by switches and
every linear layer's gradient its adjoint. Guided backpropagation is the same gradient with every
ReLU's backward pass a ReLU of the incoming signal where the forward output was positive (LRN keeps
its true gradient); the gradient rule is the plain gradient. Here the model's own layers run
(Keras' Functional call, not zfkeras' graph walk) with the relu activations swapped for such a ReLU,
and GradientTape does the rest: nothing is shared with zfkeras.deconv.
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


@tf.custom_gradient
def guided_relu(x):
    """ReLU going up; ReLU of the incoming signal where the output was positive going down (guided backprop)."""
    y = tf.nn.relu(x)
    return y, lambda dy: tf.nn.relu(dy) * tf.cast(y > 0, dy.dtype)


def _identity_backward(function):
    @tf.custom_gradient
    def run(x):
        return function(x), lambda dy: dy

    return run


def deconv_gradients(model):
    """Within the block, ``model``'s ReLUs back-propagate a ReLU of the signal, its LRNs pass it."""
    return rule_gradients(model, "deconvnet")


@contextlib.contextmanager
def rule_gradients(model, rule):
    """Within the block, ``model``'s gradients are ``rule``'s: "deconvnet" (ReLUs back-propagate a
    ReLU of the signal, LRNs pass it), "guided" (ReLUs: guided_relu; LRN's true gradient) or
    "gradient" (nothing changed)."""
    relu = {"deconvnet": deconv_relu, "guided": guided_relu, "gradient": None}[rule]
    undo = []
    for layer in model.layers if relu is not None else ():
        if isinstance(layer, keras.layers.ReLU):
            undo.append((layer, "call", layer.__dict__.get("call")))
            layer.call = lambda x, *args, **kwargs: relu(x)
        elif isinstance(layer, LocalResponseNormalization):
            if rule == "deconvnet":
                undo.append((layer, "call", layer.__dict__.get("call")))
                layer.call = _identity_backward(type(layer).call.__get__(layer))
        elif getattr(getattr(layer, "activation", None), "__name__", None) == "relu":
            undo.append((layer, "activation", layer.activation))
            layer.activation = relu
    try:
        yield
    finally:
        for layer, name, value in undo:
            if value is None:
                del layer.__dict__[name]
            else:
                setattr(layer, name, value)


def reference_projection(model, images, output_layer, channels, positions, rule="deconvnet"):
    """Autodiff projections of map ``channels[n]`` of ``output_layer``'s output in image ``n``
    under ``rule`` ("deconvnet", "guided" or "gradient").

    ``positions`` per image: (y, x), "max" (that map's strongest unit, first in row-major order)
    or "map" (the whole map). Returns float32 ``[N, H, W, C]``.
    """
    sub = keras.Model(model.inputs[0], model.get_layer(output_layer).output)
    x = tf.constant(np.asarray(images, "float32"))
    with rule_gradients(model, rule), tf.GradientTape() as tape:
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


def reference_class_projection(model, images, dense_layer, classes, rule="deconvnet"):
    """Autodiff input gradient of class score ``classes[n]`` (the output Dense ``dense_layer``'s
    linear output, before its softmax) in image ``n`` under ``rule``. Float32 ``[N, H, W, C]``."""
    dense = model.get_layer(dense_layer)
    sub = keras.Model(model.inputs[0], dense.input)
    x = tf.constant(np.asarray(images, "float32"))
    with rule_gradients(model, rule), tf.GradientTape() as tape:
        tape.watch(x)
        scores = tf.matmul(sub(x, training=False), dense.kernel) + dense.bias
        target = tf.reduce_sum(scores * tf.one_hot(np.asarray(classes), scores.shape[-1]))
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
