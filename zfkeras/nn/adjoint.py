"""One layer at a time, up and down: the forward step and the step back of every layer, for each rule.

:func:`forward` runs one layer at inference (recording a max pool's switches, or running unpadded
on a receptive-field window); :func:`adjoint` takes a signal at a layer's output back to its input
(unpool with the switches, the rule's step at a ReLU, the exact adjoint of linear layers, see
:mod:`zfkeras.nn.deconv`); :func:`adjoint_merge` does it for Add and Concatenate.

Three backward rules (:data:`RULES`) share every step but two:

    rule        at a ReLU (forward output y)             at LRN
    deconvnet   ReLU of the signal (the paper)           passed through (the paper)
    guided      ReLU of the signal where y > 0           its exact gradient
    gradient    the signal where y > 0                   its exact gradient

``guided`` is guided backpropagation (Springenberg et al. 2015) and ``gradient`` the input gradient
(Simonyan et al. 2014, the paper's reference [27]); both are gradients with at most the ReLU's step
changed, so they take LRN's true gradient, while the deconvnet passes LRN as the paper's deconvnet
(which has none) would. Max pools unpool by the switches and linear layers take their adjoint in all
three: that is already their gradient. The deconvnet,
incremental occlusion and windowed projections are built from these steps and the window helpers
below (:func:`crop_windows`, :func:`inside`, :func:`window_inputs`).
"""

import keras
import numpy as np
import tensorflow as tf

from zfkeras.nn.layers import LocalResponseNormalization, SubtractMean, SwitchMaxPool, unpool

SUPPORTED_LAYERS = (
    "InputLayer, SubtractMean, ZeroPadding2D, Conv2D and DepthwiseConv2D (relu or linear), ReLU, "
    "Activation('relu'|'linear'), BatchNormalization, Rescaling, MaxPooling2D, SwitchMaxPool, AveragePooling2D, "
    "GlobalAveragePooling2D, GlobalMaxPooling2D, LocalResponseNormalization, Dropout, Flatten, Reshape, "
    "Dense (relu or linear), Add, Concatenate, layers with a pixelwise_adjoint method"
)


MAX_POOLS = (SwitchMaxPool, keras.layers.MaxPooling2D)


RULES = ("deconvnet", "guided", "gradient")


CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


ACTIVATED = CONVS + (keras.layers.Dense, keras.layers.Activation, keras.layers.ReLU)


PLAIN = (
    SubtractMean,
    LocalResponseNormalization,
    keras.layers.Dropout,
    keras.layers.ZeroPadding2D,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.BatchNormalization,
    keras.layers.Rescaling,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Add,
    keras.layers.Concatenate,
) + MAX_POOLS


def activation_name(layer):
    """'relu' / 'linear' for the activations the deconvnet can invert, else the name found."""
    if isinstance(layer, keras.layers.ReLU):
        plain = layer.max_value is None and not layer.negative_slope and not layer.threshold
        return "relu" if plain else "relu(with arguments)"
    return getattr(layer.activation, "__name__", str(layer.activation))


def is_relu_layer(layer):
    return isinstance(layer, (keras.layers.Activation, keras.layers.ReLU)) and activation_name(layer) == "relu"


def check_rule(rule):
    """``rule`` if it is one of :data:`RULES`, else a one-line ValueError listing them."""
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    return rule


def rectifies(layer):
    """Whether ``layer`` ends in a ReLU (a ReLU layer, or a conv/Dense/Activation with relu)."""
    return isinstance(layer, ACTIVATED) and activation_name(layer) == "relu"


def reads_output(layer, rule):
    """Whether ``rule``'s step back through ``layer`` needs the layer's forward output (and, for
    LRN, its input): ReLUs and LRN under the guided and gradient rules; never under the deconvnet's."""
    return rule != "deconvnet" and (rectifies(layer) or isinstance(layer, LocalResponseNormalization))


def rectify(signal, rule, output=None):
    """The step back through a ReLU whose forward output was ``output`` (same shape as ``signal``;
    unused by the deconvnet rule): module docs."""
    if rule == "deconvnet":
        return tf.nn.relu(signal)
    # ReluGrad is TensorFlow's own ReLU backward step (signal where output > 0), one fused kernel:
    # cheaper than a comparison and a select, and exactly what autodiff computes.
    if rule == "guided":
        return tf.raw_ops.ReluGrad(gradients=tf.nn.relu(signal), features=output)
    return tf.raw_ops.ReluGrad(gradients=signal, features=output)


def lrn_gradient(layer, signal, x):
    """The exact gradient of :class:`LocalResponseNormalization` at input ``x`` applied to
    ``signal``: with ``s = k + alpha * (sum of x**2 over the channel window)``,
    ``dx = signal * s**-beta - 2 alpha beta x * (window sum of signal * x * s**(-beta - 1))``.
    Spatially pointwise, so windows need nothing else."""
    return _fused_lrn_gradient(signal, x, layer.size // 2, float(layer.k), float(layer.alpha), float(layer.beta))


# XLA fuses these dozen elementwise passes into one loop over the data: 2.7-3.8x less CPU time than
# running them one op at a time (and than TensorFlow's LRNGrad kernel, what autodiff runs), which
# was most of what the guided and gradient rules cost beyond the deconvnet on windows. Elementwise
# sums in a fixed order, so it stays deterministic under op determinism.
@tf.function(jit_compile=True)
def _fused_lrn_gradient(signal, x, radius, k, alpha, beta):
    total = k + alpha * _channel_window_sum(x * x, radius)
    scale = tf.math.rsqrt(tf.sqrt(total)) * tf.math.rsqrt(total) if beta == 0.75 else tf.pow(total, -beta)
    return signal * scale - (2.0 * alpha * beta) * x * _channel_window_sum(signal * x * scale / total, radius)


def _channel_window_sum(values, radius):
    """Sum of ``values`` over channels ``c - radius .. c + radius`` (those that exist), per channel."""
    depth = values.shape[-1]
    padded = tf.pad(values, [[0, 0]] * (values.shape.rank - 1) + [[radius, radius]])
    total = padded[..., :depth]
    for shift in range(1, 2 * radius + 1):
        total = total + padded[..., shift : shift + depth]
    return total


def unsupported_reason(layer, graph, node):
    """Why the deconvnet cannot pass ``layer`` on the way down, or None if it can."""
    if callable(getattr(layer, "pixelwise_adjoint", None)):
        return None
    if not isinstance(layer, PLAIN + ACTIVATED):
        return type(layer).__name__
    if isinstance(layer, ACTIVATED) and activation_name(layer) not in ("relu", "linear"):
        return f"{type(layer).__name__} with activation {activation_name(layer)!r}"
    if isinstance(layer, CONVS) and (getattr(layer, "groups", 1) != 1 or layer.data_format != "channels_last"):
        return f"{type(layer).__name__} with groups or channels_first"
    if isinstance(layer, keras.layers.Conv2D) and type(layer) is not keras.layers.Conv2D:
        return type(layer).__name__
    rank = len(graph.shapes[node.outputs[0]]) + 1
    if isinstance(layer, keras.layers.BatchNormalization) and layer.axis not in (-1, rank - 1):
        return f"BatchNormalization on axis {layer.axis}"
    if isinstance(layer, keras.layers.Concatenate) and layer.axis not in (-1, rank - 1):
        return f"Concatenate on axis {layer.axis}"
    if isinstance(layer, keras.layers.Add) and any(len(graph.shapes[k]) + 1 != rank for k in node.inputs):
        return "Add of tensors of different ranks"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"{type(layer).__name__} with channels_first"
    return None


def check_supported(node, graph):
    """Raise one clear error if the deconvnet cannot pass ``node`` on the way down."""
    reason = unsupported_reason(node.layer, graph, node)
    if reason is not None:
        raise ValueError(f"Deconvnet cannot project through layer {node.layer.name!r} ({reason}); supported: {SUPPORTED_LAYERS}")


def pool_args(layer, window):
    return dict(ksize=(1, *layer.pool_size, 1), strides=(1, *layer.strides, 1), padding="VALID" if window else layer.padding.upper())


def in_map_counts(layer, start, size, input_size):
    """Per output unit of an average pool run unpadded on a window ``[N, *size]`` at ``start`` of a
    map of ``input_size``: how many of its inputs lie in the map (at least 1). ``[N, h, w, 1]``."""
    in_map = tf.cast(inside(start, size, input_size), tf.float32)
    area = float(np.prod(layer.pool_size))
    counts = tf.nn.avg_pool2d(in_map, layer.pool_size, layer.strides, "VALID") * area
    return tf.maximum(counts, 1.0)


def forward(layer, x, window=None, switches=True, input_size=None):
    """Forward through one single-input layer at inference; returns (output, switches or None).

    With ``window`` (int32 ``[N, 2]``, where ``x``'s top-left element sits in the layer's input
    map), ``x`` is a window of that map whose padding the caller has already filled in (see
    :func:`window_inputs`): convs and pools then run unpadded and a ZeroPadding2D changes nothing.
    An average pool on a window also needs ``input_size`` (the map's (h, w)): like TensorFlow's
    "same" average pool, it averages over the inputs in the map only.
    Without ``switches``, max pools skip the argmax (about 10x cheaper on CPU) and return None.
    """
    if isinstance(layer, MAX_POOLS):
        shape = pool_args(layer, window is not None)
        if not switches:
            return tf.nn.max_pool2d(x, **shape), None
        return tf.nn.max_pool_with_argmax(x, **shape, include_batch_in_index=True)
    if isinstance(layer, keras.layers.Dropout):
        return x, None
    if window is None:
        return layer(x), None
    if isinstance(layer, keras.layers.ZeroPadding2D):
        return x, None
    if isinstance(layer, SubtractMean):
        return x - crop_windows(layer.mean, window, x.shape[1:3]), None
    if isinstance(layer, keras.layers.AveragePooling2D):
        total = tf.nn.avg_pool2d(x, layer.pool_size, layer.strides, "VALID") * float(np.prod(layer.pool_size))
        return total / in_map_counts(layer, window, x.shape[1:3], input_size), None
    if isinstance(layer, CONVS):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            y = tf.nn.depthwise_conv2d(x, layer.kernel, (1, *layer.strides, 1), "VALID", dilations=layer.dilation_rate)
        else:
            y = tf.nn.convolution(x, layer.kernel, strides=layer.strides, padding="VALID", dilations=layer.dilation_rate)
        return layer.activation(y + layer.bias if layer.use_bias else y), None
    return layer(x), None  # spatially pointwise layers (LRN, ReLU, Activation, BatchNormalization, ...)


def adjoint(layer, signal, in_shape, x=None, aux=None, window=None, rule="deconvnet", y=None):
    """The step back through a single-input ``layer`` under ``rule``: ``signal`` at its output -> at its input.

    Args:
        in_shape: static shape of the input without the batch axis (a window's, on windows).
        x: the layer's input, where the step needs it (max pools, GlobalMaxPooling2D; LRN under
            the guided and gradient rules).
        aux: a max pool's switches (whole maps) or pooled output (windows, :func:`unpool_window`).
        window: None on whole maps; on windows ``(start int32 [N, 2], (h, w) of the input map)``:
            the step is then unpadded.
        rule: one of :data:`RULES` (module docs).
        y: the layer's forward output where :func:`reads_output` says the rule needs it.
    """
    if isinstance(layer, MAX_POOLS):
        if window is not None:
            return unpool_window(layer, signal, x, aux)
        return unpool(signal, aux, in_shape)
    if rule != "deconvnet" and isinstance(layer, LocalResponseNormalization):
        return lrn_gradient(layer, signal, x)
    if rectifies(layer):
        signal = rectify(signal, rule, y)
    full_shape = tf.stack([tf.shape(signal)[0], *in_shape])
    if isinstance(layer, keras.layers.Conv2D) and window is not None and tuple(layer.strides) == (1, 1):
        # Same sums as conv2d_transpose, but the forward convolution with the flipped, transposed
        # kernel on the fully padded signal runs 2-4x faster on CPU for these small windows.
        kernel = tf.transpose(layer.kernel[::-1, ::-1], (0, 1, 3, 2))
        rows, cols = ((k - 1) * d for k, d in zip(layer.kernel.shape[:2], layer.dilation_rate))
        padded = tf.pad(signal, [[0, 0], [rows, rows], [cols, cols], [0, 0]])
        return tf.nn.convolution(padded, kernel, padding="VALID", dilations=layer.dilation_rate)
    padding = getattr(layer, "padding", "valid")
    padding = "VALID" if window is not None or not isinstance(padding, str) else padding.upper()
    if isinstance(layer, keras.layers.Conv2D):
        return tf.nn.conv2d_transpose(
            signal, layer.kernel, output_shape=full_shape, strides=(1, *layer.strides, 1), padding=padding, dilations=(1, *layer.dilation_rate, 1)
        )
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return tf.nn.depthwise_conv2d_backprop_input(
            full_shape, layer.kernel, signal, strides=(1, *layer.strides, 1), padding=padding, dilations=(1, *layer.dilation_rate, 1)
        )
    if isinstance(layer, keras.layers.Dense):
        if signal.shape.rank == 2:
            return tf.matmul(signal, layer.kernel, transpose_b=True)
        return tf.tensordot(signal, tf.transpose(layer.kernel), 1)
    if isinstance(layer, keras.layers.BatchNormalization):
        scale = tf.math.rsqrt(layer.moving_variance + layer.epsilon)
        return signal * (scale * layer.gamma if layer.gamma is not None else scale)
    if isinstance(layer, keras.layers.Rescaling):
        return signal * tf.cast(layer.scale, signal.dtype)
    if callable(getattr(layer, "pixelwise_adjoint", None)):
        return layer.pixelwise_adjoint(signal)
    if isinstance(layer, keras.layers.AveragePooling2D):
        if window is not None:  # the adjoint of forward's in-map average: divide, then spread as a sum
            signal = signal / in_map_counts(layer, window[0], in_shape[:2], window[1]) * float(np.prod(layer.pool_size))
        return tf.raw_ops.AvgPoolGrad(orig_input_shape=full_shape, grad=signal, **pool_args(layer, window is not None))
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        height, width, channels = in_shape
        spread = tf.reshape(signal, (-1, 1, 1, channels)) / float(height * width)
        return tf.broadcast_to(spread, full_shape)
    if isinstance(layer, keras.layers.GlobalMaxPooling2D):
        height, width, channels = in_shape
        winner = tf.argmax(tf.reshape(x, (-1, height * width, channels)), axis=1)  # [N, C]
        spot = tf.one_hot(winner, height * width, axis=1, dtype=signal.dtype)  # [N, h*w, C]
        return tf.reshape(spot * tf.reshape(signal, (-1, 1, channels)), full_shape)
    if isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
        return tf.reshape(signal, full_shape)
    if isinstance(layer, keras.layers.ZeroPadding2D) and window is None:
        (top, _), (left, _) = layer.padding
        return signal[:, top : top + in_shape[0], left : left + in_shape[1], :]
    return signal  # SubtractMean, LRN, Dropout, ReLU/linear activations; ZeroPadding2D on windows


def adjoint_merge(layer, signal, in_shapes, out_shape):
    """Deconvnet step through Add (each input gets the signal, summed over the axes it was
    broadcast along) or Concatenate (each input gets its slice)."""
    if isinstance(layer, keras.layers.Concatenate):
        return tf.split(signal, [shape[-1] for shape in in_shapes], axis=-1)
    parts = []
    for shape in in_shapes:
        axes = [a + 1 for a, (n, m) in enumerate(zip(shape, out_shape)) if n == 1 and m != 1]
        parts.append(tf.reduce_sum(signal, axis=axes, keepdims=True) if axes else signal)
    return parts


def unpool_window(layer, signal, x, pooled):
    """:func:`unpool` on windows, by max pooling's gradient kernel: ``signal`` goes to the element
    that won each pooling region of ``x`` (``pooled`` is the pool's output). The kernel picks the
    same winner as the switches, ties included, and sums collisions alike; it needs no switches,
    whose argmax pooling costs about 10x a plain max pool on CPU."""
    return tf.raw_ops.MaxPoolGrad(
        orig_input=x, orig_output=pooled, grad=signal, ksize=(1, *layer.pool_size, 1), strides=(1, *layer.strides, 1), padding="VALID"
    )


def crop_windows(maps, starts, size, fill=0.0):
    """One window per example: ``[N, size[0], size[1], C]`` cut from ``maps`` at ``starts``.

    Args:
        maps: ``[N, H, W, C]``, or ``[H, W, C]`` shared by all examples.
        starts: int32 ``[N, 2]``, (row, column) of each window's top-left in ``maps`` (may be
            negative or run past the far border).
        size: static (rows, columns) of the windows.
        fill: value where a window runs past ``maps``.
    """
    starts = tf.cast(starts, tf.int32)
    rows = starts[:, :1] + tf.range(size[0])
    cols = starts[:, 1:] + tf.range(size[1])
    height, width = tf.shape(maps)[-3], tf.shape(maps)[-2]
    cut = tf.gather(maps, tf.clip_by_value(rows, 0, height - 1), axis=maps.shape.rank - 3, batch_dims=maps.shape.rank - 3)
    cut = tf.gather(cut, tf.clip_by_value(cols, 0, width - 1), axis=2, batch_dims=1)
    return tf.where(inside(starts, size, (height, width)), cut, tf.cast(fill, cut.dtype))


def inside(starts, size, extent):
    """Bool ``[N, rows, cols, 1]``: which elements of windows at ``starts`` lie in a map of ``extent``."""
    rows = starts[:, :1] + tf.range(size[0])
    cols = starts[:, 1:] + tf.range(size[1])
    rows = (rows >= 0) & (rows < extent[0])
    cols = (cols >= 0) & (cols < extent[1])
    return (rows[:, :, None] & cols[:, None, :])[..., None]


def window_inputs(layer, step, x, start):
    """Fill the part of window ``x`` (at ``start`` of ``layer``'s input map) that lies past the map
    with what ``layer`` pads with: nothing wins a max pool there, everything else sees zeros."""
    if step.kernel == (1, 1) and step.before == (0, 0) and not isinstance(layer, keras.layers.ZeroPadding2D):
        return x  # spatially pointwise: its out-of-map elements are never used
    fill = x.dtype.min if isinstance(layer, (SwitchMaxPool, keras.layers.MaxPooling2D)) else 0.0
    return tf.where(inside(start, x.shape[1:3], step.input_size), x, tf.cast(fill, x.dtype))


def select_activations(acts, channel, position, whole_map=False):
    """Zero all activations but the chosen ones: the deconvnet's starting signal.

    Args:
        acts: ``[N, h, w, K]`` activations. channel: int32 ``[N]``.
        position: int32 ``[N, 2]`` (y, x); (-1, -1) picks each image's strongest activation of
            its channel (first in row-major order on ties).
        whole_map: keep the whole chosen map instead of one position.
    """
    depth = tf.shape(acts)[-1]
    in_channel = acts * tf.one_hot(channel, depth, dtype=acts.dtype)[:, None, None, :]
    if whole_map:
        return in_channel
    shape = tf.shape(acts)
    position = strongest_positions(acts, channel, position)
    index = position[:, 0] * shape[2] + position[:, 1]
    spot = tf.reshape(tf.one_hot(index, shape[1] * shape[2], dtype=acts.dtype), (shape[0], shape[1], shape[2], 1))
    return in_channel * spot


def strongest_positions(acts, channel, position):
    """``position`` int32 ``[N, 2]`` with each (-1, -1) replaced by the (y, x) of the strongest
    activation of map ``channel[n]`` in ``acts[n]`` ``[N, h, w, K]`` (first in row-major order on ties)."""
    shape = tf.shape(acts)
    chosen = tf.gather(acts, channel, axis=3, batch_dims=1)
    strongest = tf.argmax(tf.reshape(chosen, (shape[0], -1)), axis=1, output_type=tf.int32)
    found = tf.stack([strongest // shape[2], strongest % shape[2]], axis=1)
    return tf.where(position[:, :1] < 0, found, position)


def as_channels(channel, n, maps):
    """``channel`` (an int or one per image) as int32 ``[n]``, each in ``[0, maps)``."""
    channel = np.broadcast_to(np.asarray(channel), (n,)) if np.ndim(channel) == 0 else np.asarray(channel)
    if channel.shape != (n,) or not np.issubdtype(channel.dtype, np.integer):
        raise ValueError(f"channel must be an int or {n} ints (one per image), got {channel!r}")
    if n and (channel.min() < 0 or channel.max() >= maps):
        raise ValueError(f"channel must be in [0, {maps}) for this layer, got {channel.tolist()}")
    return channel.astype("int32")
