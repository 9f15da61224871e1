"""Deconvnet (paper Sec. 2.1): project feature activity of a convnet back to pixel space.

The deconvnet is not a second model with copied weights: it walks the convnet's own layers, so
changing the convnet's weights (training, ``set_weights``) changes the projections at once.

It walks the model's graph (:class:`zfkeras.receptive_field.Graph`): a chain such as ZFNet, or any
Keras Functional DAG such as ResNet, DenseNet or Inception. Going up, it runs the layers below the
projected one and records every max pool's switches (argmax per pooling region, for THIS image).
Going down from that layer to the input, in reverse topological order, it applies:
    max pool        -> unpool with the recorded switches (summing where overlapping pools agree)
    ReLU            -> ReLU of the signal coming down (rectify); a Conv2D or Dense with a built-in
                       ReLU is the layer, then the ReLU
    linear layers   -> their exact adjoint, no bias: conv and depthwise conv by the transposed
                       filters, Dense by the transposed weights, BatchNormalization (inference) and
                       Rescaling by their per-channel scale, average pools and global average
                       pooling by spreading the signal evenly, global max pooling to its argmax,
                       zero padding cropped off, Flatten/Reshape reshaped back, and any layer with a
                       ``pixelwise_adjoint(signal)`` method (zfkeras.applications' preprocessing) by it
    LRN, dropout    -> passed through unchanged (LRN only rescales the maps; dropout is off at
                       inference), as in the paper's deconvnet, which has no such layers
    subtract_mean   -> passed through (a constant shift)
    Add             -> the signal goes to each input (summed over broadcast axes)
    Concatenate     -> the signal is split between the inputs
and a tensor read by several layers gets the sum of what comes back from each. Without LRN this
equals the input gradient of the chosen activations (seeded by their values) with every ReLU's
backward pass replaced by a ReLU of the incoming signal (tested on ZFNet, VGG16, ResNet50 and
DenseNet121). Other non-linearities (swish, GELU, ReLU6, sigmoid gates, ...) and other layer types
are refused, naming the layer.

Single activations run on their receptive field only. One unit of a layer depends on a window of
each tensor below it (:func:`zfkeras.receptive_field.unit_windows`, aligned to the strides; on a DAG
the union of what each reader needs). :meth:`Deconvnet.project` with positions cuts the image to the
unit's field, runs every layer unpadded on its window (with the layer's own padding filled in where
the window runs past the map: zeros, or nothing that can win a max pool), goes down on the same
windows and pastes the result into a zero image. That costs a fraction of one whole-image pass and
equals the whole-image projection to float rounding (tested at borders, corners and centre). With
``position="max"`` a whole-image forward pass finds the strongest unit first and the way down reads
its windows from it. Where a unit's field is not a window (a global pooling or Dense below the
layer, paths of different strides meeting) the projection runs on whole images.
"""

import keras
import numpy as np
import tensorflow as tf

from zfkeras.layers import LocalResponseNormalization, SubtractMean, SwitchMaxPool, unpool
from zfkeras.receptive_field import Graph, unit_windows
from zfkeras.validation import positions as _as_positions

SUPPORTED_LAYERS = (
    "InputLayer, SubtractMean, ZeroPadding2D, Conv2D and DepthwiseConv2D (relu or linear), ReLU, "
    "Activation('relu'|'linear'), BatchNormalization, Rescaling, MaxPooling2D, SwitchMaxPool, AveragePooling2D, "
    "GlobalAveragePooling2D, GlobalMaxPooling2D, LocalResponseNormalization, Dropout, Flatten, Reshape, "
    "Dense (relu or linear), Add, Concatenate, layers with a pixelwise_adjoint method"
)
MAX_POOLS = (SwitchMaxPool, keras.layers.MaxPooling2D)
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


def _activation_name(layer):
    """'relu' / 'linear' for the activations the deconvnet can invert, else the name found."""
    if isinstance(layer, keras.layers.ReLU):
        plain = layer.max_value is None and not layer.negative_slope and not layer.threshold
        return "relu" if plain else "relu(with arguments)"
    return getattr(layer.activation, "__name__", str(layer.activation))


def _is_relu_layer(layer):
    return isinstance(layer, (keras.layers.Activation, keras.layers.ReLU)) and _activation_name(layer) == "relu"


def _unsupported_reason(layer, graph, node):
    """Why the deconvnet cannot pass ``layer`` on the way down, or None if it can."""
    if callable(getattr(layer, "pixelwise_adjoint", None)):
        return None
    if not isinstance(layer, PLAIN + ACTIVATED):
        return type(layer).__name__
    if isinstance(layer, ACTIVATED) and _activation_name(layer) not in ("relu", "linear"):
        return f"{type(layer).__name__} with activation {_activation_name(layer)!r}"
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


def _check_supported(node, graph):
    """Raise one clear error if the deconvnet cannot pass ``node`` on the way down."""
    reason = _unsupported_reason(node.layer, graph, node)
    if reason is not None:
        raise ValueError(f"Deconvnet cannot project through layer {node.layer.name!r} ({reason}); supported: {SUPPORTED_LAYERS}")


def _linear_chain(model):
    """The model's layers (without InputLayer) in order; they must form a single chain."""
    return Graph(model).chain("Deconvnet")


def _projectable(graph):
    """``{name: node whose output is that map}`` of the projectable maps, in topological order.

    Every Conv2D/DepthwiseConv2D under its own name: its rectified map (its output with a built-in
    ReLU, else the ReLU it alone feeds, directly or through BatchNormalization), or, where nothing
    follows it but other layers, its linear output. A linear conv whose BatchNormalization feeds no
    ReLU (ResNet's last conv of a block and its shortcut, rectified only after the Add) is left out.
    Every ReLU layer not claimed so is projectable under its own name (ResNet's block outputs).
    """
    readers = graph.consumers()

    def sole_reader(node):
        found = readers.get(node.outputs[0], [])
        return found[0] if len(found) == 1 else None

    selected, claimed = {}, set()
    for node in graph.nodes:
        layer = node.layer
        if len(graph.shapes[node.outputs[0]]) != 3:
            continue
        if isinstance(layer, CONVS):
            if _activation_name(layer) != "linear":
                selected[layer.name] = node
                continue
            follow = node
            while sole_reader(follow) is not None and isinstance(sole_reader(follow).layer, keras.layers.BatchNormalization):
                follow = sole_reader(follow)
            after = sole_reader(follow)
            if after is not None and _is_relu_layer(after.layer):
                selected[layer.name] = after
                claimed.add(after)
            elif follow is node:
                selected[layer.name] = node
        elif _is_relu_layer(layer) and node not in claimed:
            selected[layer.name] = node
    return selected


def _window_args(layer, window):
    return dict(ksize=(1, *layer.pool_size, 1), strides=(1, *layer.strides, 1), padding="VALID" if window else layer.padding.upper())


def _in_map_counts(layer, start, size, input_size):
    """Per output unit of an average pool run unpadded on a window ``[N, *size]`` at ``start`` of a
    map of ``input_size``: how many of its inputs lie in the map (at least 1). ``[N, h, w, 1]``."""
    inside = tf.cast(_inside(start, size, input_size), tf.float32)
    area = float(np.prod(layer.pool_size))
    counts = tf.nn.avg_pool2d(inside, layer.pool_size, layer.strides, "VALID") * area
    return tf.maximum(counts, 1.0)


def _up(layer, x, window=None, switches=True, input_size=None):
    """Forward through one single-input layer at inference; returns (output, switches or None).

    With ``window`` (int32 ``[N, 2]``, where ``x``'s top-left element sits in the layer's input
    map), ``x`` is a window of that map whose padding the caller has already filled in (see
    :func:`window_inputs`): convs and pools then run unpadded and a ZeroPadding2D changes nothing.
    An average pool on a window also needs ``input_size`` (the map's (h, w)): like TensorFlow's
    "same" average pool, it averages over the inputs in the map only.
    Without ``switches``, max pools skip the argmax (about 10x cheaper on CPU) and return None.
    """
    if isinstance(layer, MAX_POOLS):
        shape = _window_args(layer, window is not None)
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
        return total / _in_map_counts(layer, window, x.shape[1:3], input_size), None
    if isinstance(layer, CONVS):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            y = tf.nn.depthwise_conv2d(x, layer.kernel, (1, *layer.strides, 1), "VALID", dilations=layer.dilation_rate)
        else:
            y = tf.nn.convolution(x, layer.kernel, strides=layer.strides, padding="VALID", dilations=layer.dilation_rate)
        return layer.activation(y + layer.bias if layer.use_bias else y), None
    return layer(x), None  # spatially pointwise layers (LRN, ReLU, Activation, BatchNormalization, ...)


def _down(layer, signal, in_shape, x=None, aux=None, window=None):
    """Deconvnet step through a single-input ``layer``: ``signal`` at its output -> at its input.

    Args:
        in_shape: static shape of the input without the batch axis (a window's, on windows).
        x: the layer's input, where the step needs it (max pools, GlobalMaxPooling2D).
        aux: a max pool's switches (whole maps) or pooled output (windows, :func:`_unpool_window`).
        window: None on whole maps; on windows ``(start int32 [N, 2], (h, w) of the input map)``:
            the step is then unpadded.
    """
    if isinstance(layer, MAX_POOLS):
        if window is not None:
            return _unpool_window(layer, signal, x, aux)
        return unpool(signal, aux, in_shape)
    if isinstance(layer, ACTIVATED) and _activation_name(layer) == "relu":
        signal = tf.nn.relu(signal)
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
        if window is not None:  # the adjoint of _up's in-map average: divide, then spread as a sum
            signal = signal / _in_map_counts(layer, window[0], in_shape[:2], window[1]) * float(np.prod(layer.pool_size))
        return tf.raw_ops.AvgPoolGrad(orig_input_shape=full_shape, grad=signal, **_window_args(layer, window is not None))
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


def _down_merge(layer, signal, in_shapes, out_shape):
    """Deconvnet step through Add (each input gets the signal, summed over the axes it was
    broadcast along) or Concatenate (each input gets its slice)."""
    if isinstance(layer, keras.layers.Concatenate):
        return tf.split(signal, [shape[-1] for shape in in_shapes], axis=-1)
    parts = []
    for shape in in_shapes:
        axes = [a + 1 for a, (n, m) in enumerate(zip(shape, out_shape)) if n == 1 and m != 1]
        parts.append(tf.reduce_sum(signal, axis=axes, keepdims=True) if axes else signal)
    return parts


def _unpool_window(layer, signal, x, pooled):
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
    return tf.where(_inside(starts, size, (height, width)), cut, tf.cast(fill, cut.dtype))


def _inside(starts, size, extent):
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
    return tf.where(_inside(start, x.shape[1:3], step.input_size), x, tf.cast(fill, x.dtype))


class Deconvnet:
    """A deconvnet attached to every conv layer of ``model``, sharing its weights.

    Args:
        model: a Keras Sequential or Functional convnet with one image input: a chain or a DAG
            (see ``SUPPORTED_LAYERS``; other layer types are fine above the projected layer).

    Attributes:
        layer_names: the projectable maps, input to output (topological order): every conv
            layer's rectified, pre-pool map under the conv's name (its output with a built-in
            ReLU, else the ReLU it feeds, directly or through BatchNormalization), and every other
            ReLU layer's output under its own name (see :func:`_projectable`).
    """

    def __init__(self, model):
        self.model = model
        self.graph = Graph(model)
        if len(model.inputs[0].shape) != 4:
            raise ValueError(f"Deconvnet needs an [N, H, W, C] image input; {model.name!r} takes {tuple(model.inputs[0].shape)}")
        self.input_shape = tuple(model.inputs[0].shape[1:])
        self._selected = _projectable(self.graph)
        self.layer_names = list(self._selected)
        self._functions = {}

    def selection_layer(self, layer):
        """The Keras layer whose output is ``layer``'s rectified feature map."""
        return self._node(layer).layer

    def windowed(self, layer):
        """Whether single activations of ``layer`` are projected on their receptive-field windows
        (else on whole images: the field is no window, or the windows cost more; module docs)."""
        return self._windows(self._node(layer)) is not None

    def _node(self, layer):
        """The node whose output is map ``layer``, after checking every layer below it."""
        if layer not in self._selected:
            raise ValueError(f"unknown layer {layer!r}; projectable layers: {', '.join(self.layer_names) or 'none'}")
        node = self._selected[layer]
        for below in self._below(node):
            _check_supported(below, self.graph)
        return node

    def _below(self, node):
        return self._function(("below", node), lambda: self.graph.below([node.outputs[0]]))

    def _windows(self, node):
        """:class:`zfkeras.receptive_field.Windows` of one unit of ``node``'s output, or None where
        that is no window or where the windows hold more values than the whole maps (deep layers
        of small images: ResNet50's last field is 483 px wide), so the whole-image pass is cheaper."""

        def build():
            windows = unit_windows(self.graph, node.outputs[0])
            if windows is None:
                return None
            shapes = self.graph.shapes
            window = sum(np.prod(w[0]) * shapes[key][-1] for key, w in windows.tensors.items())
            whole = sum(np.prod(shapes[key]) for key in windows.tensors)
            return windows if window <= whole else None

        return self._function(("windows", node), build)

    # ---- whole images ----------------------------------------------------------------------

    def _forward(self, images, nodes, switches=True):
        """Run ``nodes`` (topological) on ``images``; returns ({key: tensor}, {node: switches or None})."""
        values, recorded = {self.graph.input: images}, {}
        for node in nodes:
            if isinstance(node.layer, MAX_POOLS):
                output, recorded[node] = _up(node.layer, values[node.inputs[0]], switches=switches)
            else:
                output = self.graph.apply(node, values)
            outputs = output if isinstance(output, (list, tuple)) else [output]
            values.update(zip(node.outputs, outputs))
        return values, recorded

    def _backward(self, signal, top, values, switches, nodes):
        """The way down from ``signal`` at ``top``'s output through ``nodes`` to the input."""
        shapes = self.graph.shapes
        signals = {top.outputs[0]: signal}
        for node in reversed(nodes):
            signal = signals.pop(node.outputs[0], None)
            if signal is None:
                continue
            in_shapes = [shapes[key] for key in node.inputs]
            if isinstance(node.layer, (keras.layers.Add, keras.layers.Concatenate)):
                parts = _down_merge(node.layer, signal, in_shapes, shapes[node.outputs[0]])
            else:
                parts = [_down(node.layer, signal, in_shapes[0], values.get(node.inputs[0]), switches.get(node))]
            _accumulate(signals, node.inputs, parts)
        return signals.get(self.graph.input, tf.zeros_like(values[self.graph.input]))

    # ---- receptive-field windows -------------------------------------------------------------

    def _starts(self, window, position):
        """Int32 ``[N, 2]``: where ``window`` (size, jump, offset) of unit ``position`` ``[N, 2]`` starts."""
        _, jump, offset = window
        return tf.constant(offset, tf.int32) + position * tf.constant(jump, tf.int32)

    def _window_forward(self, images, position, windows):
        """The forward pass on the windows one unit per image (``position`` int32 ``[N, 2]``) depends on.

        Returns (activations ``[N, 1, 1, K]`` of that unit, and for each max pool node its filled
        input window and pooled output: what the way down needs).
        """
        top = windows.nodes[-1].outputs[0]
        values = {
            self.graph.input: crop_windows(images, self._starts(windows.tensors[self.graph.input], position), windows.tensors[self.graph.input][0])
        }
        pools = {}
        for node in windows.nodes:
            step = windows.steps[node]
            inputs = {}
            for index, key in enumerate(node.inputs):
                read = windows.reads[(node, index)]
                x = _sub_window(values[key], read, windows.tensors[key])
                inputs[key] = window_inputs(node.layer, step, x, self._starts(read, position))
            if isinstance(node.layer, (keras.layers.Add, keras.layers.Concatenate)):
                output = self.graph.apply(node, inputs)
            else:
                x = inputs[node.inputs[0]]
                start = self._starts(windows.reads[(node, 0)], position)
                output, _ = _up(node.layer, x, start, switches=False, input_size=step.input_size)
                if isinstance(node.layer, MAX_POOLS):
                    pools[node] = (x, output)
            values[node.outputs[0]] = output
        return values[top], pools

    def _window_backward(self, signal, pools, position, windows):
        """The way down from ``signal`` ``[N, 1, 1, K]`` at unit ``position`` of the top through the
        windows of :meth:`_window_forward`; returns the reconstruction pasted into zero images."""
        channels = {key: shape[-1] for key, shape in self.graph.shapes.items()}
        signals = {windows.nodes[-1].outputs[0]: signal}
        for node in reversed(windows.nodes):
            signal = signals.pop(node.outputs[0], None)
            if signal is None:
                continue
            step = windows.steps[node]
            reads = [windows.reads[(node, i)] for i in range(len(node.inputs))]
            in_shapes = [(*read[0], channels[key]) for read, key in zip(reads, node.inputs)]
            if isinstance(node.layer, (keras.layers.Add, keras.layers.Concatenate)):
                parts = _down_merge(node.layer, signal, in_shapes, (*windows.tensors[node.outputs[0]][0], channels[node.outputs[0]]))
            else:
                x, pooled = pools.get(node, (None, None))
                start = self._starts(reads[0], position)
                parts = [_down(node.layer, signal, in_shapes[0], x, pooled, window=(start, step.input_size))]
            placed = []
            for part, read, key in zip(parts, reads, node.inputs):
                # What lands on the layer's padding is dropped, as the full-size step crops it off.
                part = tf.where(_inside(self._starts(read, position), read[0], step.input_size), part, 0.0)
                placed.append(_paste_window(part, read, windows.tensors[key]))
            _accumulate(signals, node.inputs, placed)
        start = self._starts(windows.tensors[self.graph.input], position)
        return crop_windows(signals[self.graph.input], -start, self.input_shape[:2])

    def _project_given(self, images, channel, position, windows):
        """Single-activation projections, forward and way down on the unit's receptive-field windows."""
        acts, pools = self._window_forward(images, position, windows)
        seed = acts * tf.one_hot(channel, tf.shape(acts)[-1], dtype=acts.dtype)[:, None, None, :]
        return self._window_backward(seed, pools, position, windows)

    def _project_strongest(self, images, channel, position, windows):
        """As :meth:`_project_given`, but each (-1, -1) in ``position`` is first replaced by its
        map's strongest unit, found by a whole-image forward pass (no switches); the way down then
        reads its max pools' windows from that pass's maps instead of recomputing them."""
        top = windows.nodes[-1]
        values, _ = self._forward(images, windows.nodes, switches=False)
        acts = values[top.outputs[0]]
        position = strongest_positions(acts, channel, position)
        pools = {}
        for node in windows.nodes:
            if isinstance(node.layer, MAX_POOLS):
                read, out = windows.reads[(node, 0)], windows.tensors[node.outputs[0]]
                x = crop_windows(values[node.inputs[0]], self._starts(read, position), read[0], values[node.inputs[0]].dtype.min)
                pools[node] = (x, crop_windows(values[node.outputs[0]], self._starts(out, position), out[0]))
        seed = select_activations(crop_windows(acts, position, (1, 1)), channel, tf.zeros_like(position))
        return self._window_backward(seed, pools, position, windows)

    def _function(self, key, build):
        if key not in self._functions:
            self._functions[key] = build()
        return self._functions[key]

    def _images(self, images):
        images = np.asarray(images, dtype="float32")
        if images.ndim == 3:
            raise ValueError(f"images must be a batch [N, {', '.join(map(str, self.input_shape))}]; got one image of shape {images.shape}")
        if images.shape[1:] != self.input_shape:
            raise ValueError(f"images must have shape [N, {', '.join(map(str, self.input_shape))}], got {images.shape}")
        return images

    def activations(self, images, layers=None):
        """Rectified outputs of conv layers: ``{name: array [N, h, w, maps]}`` (default all)."""
        images = self._images(images)
        names = list(self.layer_names) if layers is None else list(layers)
        keys = [self._node(name).outputs[0] for name in names]

        def build():
            nodes = self.graph.below(keys)

            @tf.function(input_signature=[tf.TensorSpec((None, *self.input_shape), tf.float32)], autograph=False)
            def run(x):
                values, _ = self._forward(x, nodes, switches=False)
                return [values[key] for key in keys]

            return run

        results = self._function(("activations", tuple(names)), build)(images)
        return {name: value.numpy() for name, value in zip(names, results)}

    def projection_function(self, layer, whole_map=False):
        """A traceable ``tf.function(images, channel, position) -> reconstructions``.

        ``images`` float32 ``[N, H, W, C]`` raw pixels; ``channel`` int32 ``[N]``; ``position``
        int32 ``[N, 2]`` as (y, x), with (-1, -1) meaning the strongest activation of that map in
        that image. With ``whole_map`` the whole map is projected and ``position`` is ignored.
        Used by :meth:`project` and by SavedModel export.
        """
        top = self._node(layer)
        windows = None if whole_map else self._windows(top)

        def build():
            spec = [tf.TensorSpec((None, *self.input_shape), tf.float32), tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None, 2), tf.int32)]

            @tf.function(input_signature=spec, autograph=False)
            def project(images, channel, position):
                if windows is not None:
                    return tf.cond(
                        tf.reduce_any(position[:, 0] < 0),
                        lambda: self._project_strongest(images, channel, position, windows),
                        lambda: self._project_given(images, channel, position, windows),
                    )
                nodes = self._below(top)
                values, switches = self._forward(images, nodes)
                seed = select_activations(values[top.outputs[0]], channel, position, whole_map)
                return self._backward(seed, top, values, switches, nodes)

            return project

        return self._function(("project", layer, whole_map), build)

    def project(self, images, layer, channel, position="max", batch_size=None):
        """Project activations of ``layer`` down to pixel space.

        Args:
            images: ``[N, H, W, C]`` raw pixels (0-255) at the model's input size.
            layer: a name from :attr:`layer_names`.
            channel: feature map index, an int or one per image (``[N]``).
            position: ``"max"`` (the strongest activation of that map in each image; all other
                activations set to zero), ``"map"`` (the whole feature map), ``(y, x)``, or an int
                array ``[N, 2]`` of (y, x) with (-1, -1) meaning max. Single activations run on
                their receptive-field windows where the field is one (module docs); each
                (image, map, position) triple is one row of the batch.
            batch_size: images per forward/backward pass (bounds memory); default all at once.

        Returns:
            float32 array shaped like ``images``: the reconstruction in the model's input space.
        """
        images = self._images(images)
        n = len(images)
        top = self._node(layer)
        shape = self.graph.shapes[top.outputs[0]]
        channel = _as_channels(channel, n, int(shape[-1]))
        whole_map = isinstance(position, str) and position == "map"
        position = _as_positions(position, n, tuple(shape[:2]))
        function = self.projection_function(layer, whole_map)
        step = batch_size or max(n, 1)
        parts = [function(images[i : i + step], channel[i : i + step], position[i : i + step]).numpy() for i in range(0, n, step)]
        return np.concatenate(parts) if parts else np.zeros_like(images)


def _accumulate(signals, keys, parts):
    """Add each of ``parts`` to the signal of its tensor in ``keys`` (a tensor read by several layers sums them)."""
    for key, part in zip(keys, parts):
        signals[key] = part if key not in signals else signals[key] + part


def _sub_window(value, read, window):
    """The part ``read`` (size, jump, offset) of a tensor's ``value`` on its ``window`` (same jump)."""
    if read == window:
        return value
    (rows, cols), (top, left) = read[0], (read[2][0] - window[2][0], read[2][1] - window[2][1])
    return value[:, top : top + rows, left : left + cols, :]


def _paste_window(part, read, window):
    """``part`` on window ``read`` placed into zeros on the tensor's ``window`` (inverse of :func:`_sub_window`)."""
    if read == window:
        return part
    top, left = read[2][0] - window[2][0], read[2][1] - window[2][1]
    bottom, right = window[0][0] - top - read[0][0], window[0][1] - left - read[0][1]
    return tf.pad(part, [[0, 0], [top, bottom], [left, right], [0, 0]])


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


def _as_channels(channel, n, maps):
    """``channel`` (an int or one per image) as int32 ``[n]``, each in ``[0, maps)``."""
    channel = np.broadcast_to(np.asarray(channel), (n,)) if np.ndim(channel) == 0 else np.asarray(channel)
    if channel.shape != (n,) or not np.issubdtype(channel.dtype, np.integer):
        raise ValueError(f"channel must be an int or {n} ints (one per image), got {channel!r}")
    if n and (channel.min() < 0 or channel.max() >= maps):
        raise ValueError(f"channel must be in [0, {maps}) for this layer, got {channel.tolist()}")
    return channel.astype("int32")
