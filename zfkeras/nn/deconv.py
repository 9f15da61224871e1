"""Deconvnet (paper Sec. 2.1): project feature activity of a convnet back to pixel space.

The deconvnet is not a second model with copied weights: it walks the convnet's own layers, so
changing the convnet's weights (training, ``set_weights``) changes the projections at once.

It walks the model's graph (:class:`zfkeras.nn.graph.Graph`): a chain such as ZFNet, or any
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
                       ``pixelwise_adjoint(signal)`` method (zfkeras.nn.applications' preprocessing) by it
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

Guided backpropagation and the input gradient take the same walk (``rule="guided"`` /
``"gradient"``, :mod:`zfkeras.nn.adjoint`): only the step at a ReLU (which then reads the forward
output, recorded on the way up on whole images and on windows alike) and at LRN (its exact
gradient) differ, so switches, windows, DAGs and speed are shared. Each equals its autodiff
definition (tested on ZFNet, the shipped model and ResNet50). :attr:`Deconvnet.class_layer`
projects a class score (the output Dense before its softmax), as Simonyan et al.'s saliency maps do.

Single activations run on their receptive field only. One unit of a layer depends on a window of
each tensor below it (:func:`zfkeras.nn.fields.unit_windows`, aligned to the strides; on a DAG
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

from zfkeras.io.validation import positions as as_positions
from zfkeras.nn.adjoint import (
    CONVS,
    MAX_POOLS,
    activation_name,
    adjoint,
    adjoint_merge,
    as_channels,
    check_rule,
    check_supported,
    crop_windows,
    forward,
    inside,
    is_relu_layer,
    reads_output,
    select_activations,
    strongest_positions,
    window_inputs,
)
from zfkeras.nn.fields import unit_windows
from zfkeras.nn.graph import Graph


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
            if activation_name(layer) != "linear":
                selected[layer.name] = node
                continue
            follow = node
            while sole_reader(follow) is not None and isinstance(sole_reader(follow).layer, keras.layers.BatchNormalization):
                follow = sole_reader(follow)
            after = sole_reader(follow)
            if after is not None and is_relu_layer(after.layer):
                selected[layer.name] = after
                claimed.add(after)
            elif follow is node:
                selected[layer.name] = node
        elif is_relu_layer(layer) and node not in claimed:
            selected[layer.name] = node
    return selected


def _class_node(graph):
    """The model's output node if it is a Dense with softmax or no activation (its linear outputs
    are the class scores), else None."""
    node = graph.producer.get(id(keras.tree.flatten(graph.model.outputs)[0]))
    if node is not None and isinstance(node.layer, keras.layers.Dense) and activation_name(node.layer) in ("softmax", "linear"):
        return node
    return None


class Deconvnet:
    """A deconvnet attached to every conv layer of ``model``, sharing its weights.

    Args:
        model: a Keras Sequential or Functional convnet with one image input: a chain or a DAG
            (see ``SUPPORTED_LAYERS``; other layer types are fine above the projected layer).
        rule: the backward rule :meth:`project` uses unless told otherwise: ``"deconvnet"`` (the
            paper's), ``"guided"`` (guided backpropagation) or ``"gradient"`` (the input gradient);
            one walk, the rules differ only at ReLUs and LRN (:mod:`zfkeras.nn.adjoint`).

    Attributes:
        layer_names: the projectable maps, input to output (topological order): every conv
            layer's rectified, pre-pool map under the conv's name (its output with a built-in
            ReLU, else the ReLU it feeds, directly or through BatchNormalization), and every other
            ReLU layer's output under its own name (see :func:`_projectable`).
        class_layer: the name of the output Dense whose class scores (its outputs before the
            softmax) :meth:`project` also takes, each seeded with 1, so that the gradient rule
            gives the class score's input gradient (Simonyan et al.); None if the model does not
            end in a softmax or linear Dense.
        rule: the default rule.
    """

    def __init__(self, model, rule="deconvnet"):
        self.model = model
        self.rule = check_rule(rule)
        self.graph = Graph(model)
        if len(model.inputs[0].shape) != 4:
            raise ValueError(f"Deconvnet needs an [N, H, W, C] image input; {model.name!r} takes {tuple(model.inputs[0].shape)}")
        self.input_shape = tuple(model.inputs[0].shape[1:])
        self._selected = _projectable(self.graph)
        self.layer_names = list(self._selected)
        self._class = _class_node(self.graph)
        self.class_layer = self._class.layer.name if self._class is not None else None
        self._functions = {}

    def selection_layer(self, layer):
        """The Keras layer whose output is ``layer``'s rectified feature map."""
        return self._node(layer).layer

    def windowed(self, layer):
        """Whether single activations of ``layer`` are projected on their receptive-field windows
        (else on whole images: the field is no window, or the windows cost more; module docs)."""
        return self._windows(self._node(layer)) is not None

    def _node(self, layer):
        """The node whose output is map ``layer`` (or the class scores), after checking every layer below it."""
        if self._class is not None and layer == self.class_layer:
            node = self._class
            below = self._below(node)[:-1]  # its own softmax is not walked: the scores are its linear part
        elif layer in self._selected:
            node = self._selected[layer]
            below = self._below(node)
        else:
            known = self.layer_names + ([self.class_layer] if self.class_layer else [])
            raise ValueError(f"unknown layer {layer!r}; projectable layers: {', '.join(known) or 'none'}")
        for each in below:
            check_supported(each, self.graph)
        return node

    def _below(self, node):
        return self._function(("below", node), lambda: self.graph.below([node.outputs[0]]))

    def _windows(self, node):
        """:class:`zfkeras.nn.fields.Windows` of one unit of ``node``'s output, or None where
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
                output, recorded[node] = forward(node.layer, values[node.inputs[0]], switches=switches)
            else:
                output = self.graph.apply(node, values)
            outputs = output if isinstance(output, (list, tuple)) else [output]
            values.update(zip(node.outputs, outputs))
        return values, recorded

    def _backward(self, signal, top, values, switches, nodes, rule):
        """The way down under ``rule`` from ``signal`` at ``top``'s output through ``nodes`` to the input."""
        shapes = self.graph.shapes
        signals = {top.outputs[0]: signal}
        for node in reversed(nodes):
            signal = signals.pop(node.outputs[0], None)
            if signal is None:
                continue
            in_shapes = [shapes[key] for key in node.inputs]
            if isinstance(node.layer, (keras.layers.Add, keras.layers.Concatenate)):
                parts = adjoint_merge(node.layer, signal, in_shapes, shapes[node.outputs[0]])
            else:
                y = values.get(node.outputs[0]) if reads_output(node.layer, rule) else None
                parts = [adjoint(node.layer, signal, in_shapes[0], values.get(node.inputs[0]), switches.get(node), rule=rule, y=y)]
            _accumulate(signals, node.inputs, parts)
        return signals.get(self.graph.input, tf.zeros_like(values[self.graph.input]))

    # ---- receptive-field windows -------------------------------------------------------------

    def _starts(self, window, position):
        """Int32 ``[N, 2]``: where ``window`` (size, jump, offset) of unit ``position`` ``[N, 2]`` starts."""
        _, jump, offset = window
        return tf.constant(offset, tf.int32) + position * tf.constant(jump, tf.int32)

    def _window_forward(self, images, position, windows, rule):
        """The forward pass on the windows one unit per image (``position`` int32 ``[N, 2]``) depends on.

        Returns (activations ``[N, 1, 1, K]`` of that unit, and ``{node: (input, output)}`` on the
        windows of what the way down needs: every max pool's filled input and pooled output, and
        under the guided and gradient rules every ReLU's and LRN's (:func:`reads_output`)).
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
                output, _ = forward(node.layer, x, start, switches=False, input_size=step.input_size)
                if isinstance(node.layer, MAX_POOLS) or reads_output(node.layer, rule):
                    pools[node] = (x, output)
            values[node.outputs[0]] = output
        return values[top], pools

    def _window_backward(self, signal, pools, position, windows, rule):
        """The way down under ``rule`` from ``signal`` ``[N, 1, 1, K]`` at unit ``position`` of the
        top through the windows of :meth:`_window_forward`; returns the reconstruction pasted into
        zero images."""
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
                parts = adjoint_merge(node.layer, signal, in_shapes, (*windows.tensors[node.outputs[0]][0], channels[node.outputs[0]]))
            else:
                x, output = pools.get(node, (None, None))
                start = self._starts(reads[0], position)
                parts = [adjoint(node.layer, signal, in_shapes[0], x, output, window=(start, step.input_size), rule=rule, y=output)]
            placed = []
            for part, read, key in zip(parts, reads, node.inputs):
                # What lands on the layer's padding is dropped, as the full-size step crops it off.
                part = tf.where(inside(self._starts(read, position), read[0], step.input_size), part, 0.0)
                placed.append(_paste_window(part, read, windows.tensors[key]))
            _accumulate(signals, node.inputs, placed)
        start = self._starts(windows.tensors[self.graph.input], position)
        return crop_windows(signals[self.graph.input], -start, self.input_shape[:2])

    def _project_given(self, images, channel, position, windows, rule):
        """Single-activation projections, forward and way down on the unit's receptive-field windows."""
        acts, pools = self._window_forward(images, position, windows, rule)
        seed = acts * tf.one_hot(channel, tf.shape(acts)[-1], dtype=acts.dtype)[:, None, None, :]
        return self._window_backward(seed, pools, position, windows, rule)

    def _project_strongest(self, images, channel, position, windows, rule):
        """As :meth:`_project_given`, but each (-1, -1) in ``position`` is first replaced by its
        map's strongest unit, found by a whole-image forward pass (no switches); the way down then
        reads its max pools' windows (and the rule's ReLU and LRN windows) from that pass's maps
        instead of recomputing them."""
        top = windows.nodes[-1]
        values, _ = self._forward(images, windows.nodes, switches=False)
        acts = values[top.outputs[0]]
        position = strongest_positions(acts, channel, position)
        pools = {}
        for node in windows.nodes:
            if isinstance(node.layer, MAX_POOLS) or reads_output(node.layer, rule):
                read, out = windows.reads[(node, 0)], windows.tensors[node.outputs[0]]
                below = values[node.inputs[0]]
                fill = below.dtype.min if isinstance(node.layer, MAX_POOLS) else 0.0
                x = crop_windows(below, self._starts(read, position), read[0], fill)
                pools[node] = (x, crop_windows(values[node.outputs[0]], self._starts(out, position), out[0]))
        seed = select_activations(crop_windows(acts, position, (1, 1)), channel, tf.zeros_like(position))
        return self._window_backward(seed, pools, position, windows, rule)

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

    def projection_function(self, layer, whole_map=False, rule=None):
        """A traceable ``tf.function(images, channel, position) -> reconstructions``.

        ``images`` float32 ``[N, H, W, C]`` raw pixels; ``channel`` int32 ``[N]``; ``position``
        int32 ``[N, 2]`` as (y, x), with (-1, -1) meaning the strongest activation of that map in
        that image. With ``whole_map`` the whole map is projected and ``position`` is ignored (and
        for :attr:`class_layer`, whose ``channel`` is the class). ``rule``: one of
        :data:`zfkeras.nn.adjoint.RULES` (default the Deconvnet's). Used by :meth:`project` and by
        SavedModel export.
        """
        rule = self.rule if rule is None else check_rule(rule)
        top = self._node(layer)
        windows = None if whole_map else self._windows(top)

        def build():
            spec = [tf.TensorSpec((None, *self.input_shape), tf.float32), tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None, 2), tf.int32)]

            @tf.function(input_signature=spec, autograph=False)
            def project(images, channel, position):
                if windows is not None:
                    return tf.cond(
                        tf.reduce_any(position[:, 0] < 0),
                        lambda: self._project_strongest(images, channel, position, windows, rule),
                        lambda: self._project_given(images, channel, position, windows, rule),
                    )
                nodes = self._below(top)
                if top is self._class:  # the class scores (pre-softmax), each seeded with 1: their input gradient's seed
                    values, switches = self._forward(images, nodes[:-1])
                    seed = tf.one_hot(channel, self.graph.shapes[top.outputs[0]][-1], dtype=images.dtype)
                else:
                    values, switches = self._forward(images, nodes)
                    seed = select_activations(values[top.outputs[0]], channel, position, whole_map)
                return self._backward(seed, top, values, switches, nodes, rule)

            return project

        return self._function(("project", layer, whole_map, rule), build)

    def project(self, images, layer, channel, position="max", batch_size=None, rule=None):
        """Project activations of ``layer`` down to pixel space.

        Args:
            images: ``[N, H, W, C]`` raw pixels (0-255) at the model's input size.
            layer: a name from :attr:`layer_names`, or :attr:`class_layer` (the class scores).
            channel: feature map index (for :attr:`class_layer`, the class), an int or one per image (``[N]``).
            position: ``"max"`` (the strongest activation of that map in each image; all other
                activations set to zero), ``"map"`` (the whole feature map), ``(y, x)``, or an int
                array ``[N, 2]`` of (y, x) with (-1, -1) meaning max. Single activations run on
                their receptive-field windows where the field is one (module docs); each
                (image, map, position) triple is one row of the batch.
                A class score has no position: leave it ``"max"``.
            batch_size: images per forward/backward pass (bounds memory); default all at once.
            rule: ``"deconvnet"``, ``"guided"`` or ``"gradient"`` (:mod:`zfkeras.nn.adjoint`);
                default the rule this Deconvnet was made with.

        Returns:
            float32 array shaped like ``images``: the reconstruction in the model's input space.
        """
        rule = self.rule if rule is None else check_rule(rule)
        images = self._images(images)
        n = len(images)
        top = self._node(layer)
        shape = self.graph.shapes[top.outputs[0]]
        channel = as_channels(channel, n, int(shape[-1]))
        if top is self._class and not (isinstance(position, str) and position == "max"):
            raise ValueError(f"position does not apply to the class scores of {layer!r}: leave it 'max', got {position!r}")
        whole_map = isinstance(position, str) and position == "map"
        position = as_positions(position, n, tuple(shape[:2]) if len(shape) == 3 else (1, 1))
        function = self.projection_function(layer, whole_map, rule)
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
