"""Receptive fields and windows: which input pixels, and which part of each map, one unit depends on.

A model is walked as its graph of layer calls (:class:`zfkeras.nn.graph.Graph`). Along one path of convolutions, poolings and paddings, a unit at ``(y, x)``
of a layer sees the input rows ``offset[0] + y * jump[0]`` to ``offset[0] + y * jump[0] + size[0] - 1``
(columns alike), where, going up one layer with kernel ``k``, stride ``s`` and ``p`` padded rows
before the first row::

    size'   = size + (k - 1) * jump         (dilation d: k -> (k - 1) * d + 1)
    jump'   = jump * s
    offset' = offset - p * jump

starting from ``size = jump = 1, offset = 0`` at the input. ``offset`` is negative where the field of
the first unit reaches into zero padding. ``"same"`` padding follows TensorFlow: ``p = total // 2``
with ``total = max((ceil(n / s) - 1) * s + k - n, 0)`` for an ``n``-long input, so it depends on the
layer's input size, read from the model's (fixed) tensor shapes.

On a DAG a unit's field is the union over the paths into it. Where the paths have the same jump
(every ResNet, DenseNet, Inception and VGG), the union of their windows is again a window
``(size, jump, offset)``: the smallest one holding them all. Where not (paths of different strides
meeting, a map broadcast from a global pooling), the layer has no window and gets no
:class:`Field`; the deconvnet then runs on whole images.
"""

import dataclasses

import keras
import numpy as np

from zfkeras.nn.graph import Graph
from zfkeras.nn.layers import LocalResponseNormalization, SubtractMean, SwitchMaxPool

PASS_THROUGH = (
    SubtractMean,
    LocalResponseNormalization,
    keras.layers.ReLU,
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.BatchNormalization,
    keras.layers.Rescaling,
)


POOLS = (SwitchMaxPool, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


MERGES = (keras.layers.Add, keras.layers.Concatenate)


END = (keras.layers.Flatten, keras.layers.Dense, keras.layers.GlobalMaxPooling2D, keras.layers.GlobalAveragePooling2D, keras.layers.Reshape)


SUPPORTED_LAYERS = (
    "Conv2D, DepthwiseConv2D, ZeroPadding2D, MaxPooling2D, AveragePooling2D, SwitchMaxPool, Add, Concatenate, "
    "and spatially pass-through SubtractMean, LocalResponseNormalization, ReLU, Activation, Dropout, "
    "BatchNormalization, Rescaling, layers with pixelwise_adjoint (Flatten, Dense, Reshape and global pooling "
    "end the spatial part)"
)


def is_pixelwise(layer):
    """Whether ``layer`` acts on each pixel alone (its output at (y, x) reads only its input at (y, x))."""
    return isinstance(layer, PASS_THROUGH) or callable(getattr(layer, "pixelwise_adjoint", None))


@dataclasses.dataclass(frozen=True)
class Field:
    """Receptive field geometry of one layer's output, per axis as (rows, columns), in input pixels.

    Attributes:
        size: extent of one unit's field.
        jump: distance between the fields of neighbouring units (product of strides below).
        offset: input coordinate of the first pixel of unit (0, 0)'s field (negative inside padding).
        output_size: (height, width) of the layer's output maps.
    """

    size: tuple
    jump: tuple
    offset: tuple
    output_size: tuple

    def to_dict(self):
        """Plain lists, for JSON (an export's ``zfkeras.json``, results files)."""
        return {"size": list(self.size), "jump": list(self.jump), "offset": list(self.offset), "output_size": list(self.output_size)}

    @classmethod
    def from_dict(cls, values):
        return cls(*(tuple(int(v) for v in values[key]) for key in ("size", "jump", "offset", "output_size")))

    def box(self, y, x, image_size=None):
        """Input pixels of unit ``(y, x)`` as a half-open ``(top, bottom, left, right)``.

        With ``image_size`` ``(H, W)`` the box is clipped to the image, else it may extend past
        the image borders (into the padding).
        """
        top = self.offset[0] + int(y) * self.jump[0]
        left = self.offset[1] + int(x) * self.jump[1]
        box = (top, top + self.size[0], left, left + self.size[1])
        if image_size is None:
            return box
        height, width = image_size[:2]
        return (max(box[0], 0), min(box[1], height), max(box[2], 0), min(box[3], width))


def _pair(value):
    return (int(value), int(value)) if np.ndim(value) == 0 else tuple(int(v) for v in value)


def _padding_before(padding, length, kernel, stride):
    """Rows (or columns) padded before the first one by a conv/pool with ``padding``."""
    if padding == "valid":
        return 0
    output = -(-length // stride)
    return max((output - 1) * stride + kernel - length, 0) // 2


def _output_length(padding, length, kernel, stride):
    if padding == "same":
        return -(-length // stride)
    return (length - kernel) // stride + 1


@dataclasses.dataclass(frozen=True)
class Step:
    """Spatial geometry of one layer, per axis as (rows, columns), in that layer's own map units.

    Output unit ``o`` reads input units ``o * stride - before`` to ``o * stride - before + kernel - 1``;
    inputs outside ``[0, input_size)`` are the layer's padding. ZeroPadding2D is a step with
    kernel 1, stride 1 and ``before`` its top/left padding; pass-through layers have kernel 1,
    stride 1, before 0.
    """

    kernel: tuple
    stride: tuple
    before: tuple
    input_size: tuple
    output_size: tuple


def layer_step(layer, input_size):
    """:class:`Step` of ``layer`` on an input of ``(height, width)`` ``input_size``; None for the
    layers that end the spatial part (:data:`END`); ValueError naming other unsupported layers."""
    length = [int(d) for d in input_size]
    if isinstance(layer, END):
        return None
    kernel, stride, before, output = [1, 1], [1, 1], [0, 0], list(length)
    if isinstance(layer, keras.layers.ZeroPadding2D):
        for axis in range(2):
            before[axis] = layer.padding[axis][0]
            output[axis] = length[axis] + sum(layer.padding[axis])
    elif isinstance(layer, CONVS + POOLS) and not isinstance(layer, keras.layers.Conv2DTranspose):
        if isinstance(layer, CONVS):
            dilation = _pair(layer.dilation_rate)
            kernel = [(k - 1) * d + 1 for k, d in zip(_pair(layer.kernel_size), dilation)]
        else:
            kernel = list(_pair(layer.pool_size))
        stride = list(_pair(layer.strides))
        padding = layer.padding.lower()
        for axis in range(2):
            before[axis] = _padding_before(padding, length[axis], kernel[axis], stride[axis])
            output[axis] = _output_length(padding, length[axis], kernel[axis], stride[axis])
    elif not (is_pixelwise(layer) or isinstance(layer, MERGES)):
        raise ValueError(f"receptive fields: layer {layer.name!r} ({type(layer).__name__}) is not supported; supported: {SUPPORTED_LAYERS}")
    return Step(tuple(kernel), tuple(stride), tuple(before), tuple(length), tuple(output))


def layer_steps(layers, input_size):
    """:class:`Step` of each layer of a chain, from the first up to (not including) the first
    Flatten/Dense/global pooling. ``input_size``: (height, width) of the first layer's input.

    Returns ``[(layer, Step)]``. Raises ValueError naming the first layer not covered
    (see :data:`SUPPORTED_LAYERS`).
    """
    steps, size = [], input_size
    for layer in layers:
        step = layer_step(layer, size)
        if step is None:
            break
        steps.append((layer, step))
        size = step.output_size
    return steps


def node_step(graph, node):
    """:class:`Step` of ``node`` of ``graph`` from its tensors' shapes (None past the spatial part:
    an input or output that is not a ``[h, w, c]`` map, or an :data:`END` layer)."""
    shapes = [graph.shapes[key] for key in node.inputs + node.outputs[:1]]
    if any(len(shape) != 3 or None in shape[:2] for shape in shapes):
        return None
    if isinstance(node.layer, MERGES) and any(shape[:2] != shapes[-1][:2] for shape in shapes):
        return None  # a broadcast map: every unit reads all of it
    return layer_step(node.layer, shapes[0][:2])


def _hull(windows):
    """The smallest ``(size, jump, offset)`` holding every window of ``windows`` (same jump), or None."""
    if not windows or len({jump for _, jump, _ in windows}) != 1:
        return None
    offset = tuple(min(w[2][a] for w in windows) for a in range(2))
    end = tuple(max(w[2][a] + w[0][a] for w in windows) for a in range(2))
    return (tuple(e - o for e, o in zip(end, offset)), windows[0][1], offset)


def receptive_fields(model):
    """Receptive field of every spatial layer of ``model``, from its layers' own settings.

    Args:
        model: a Keras model with one ``[N, H, W, C]`` image input: a chain (all zfkeras models)
            or a DAG (see the module docs for the union over paths).

    Returns:
        ``{layer name: Field}`` in topological (for a chain: input-to-output) order, for every layer
        whose output is a map below the first Flatten/Dense/global pooling and whose field is a window.

    Raises:
        ValueError: naming the first layer that changes geometry in a way not covered
        (see :data:`SUPPORTED_LAYERS`).
    """
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ValueError(
            f"receptive fields need a model with one [N, H, W, C] image input; {model.name!r} has {[tuple(i.shape) for i in model.inputs]}"
        )
    graph = Graph(model)
    known = {graph.input: ((1, 1), (1, 1), (0, 0))}  # key -> (size, jump, offset)
    fields = {}
    for node in graph.nodes:
        if not all(key in known for key in node.inputs):
            continue
        step = node_step(graph, node)
        window = None if step is None else _hull([known[key] for key in node.inputs])
        if window is None:
            continue
        size, jump, offset = window
        size = tuple(s + (k - 1) * j for s, k, j in zip(size, step.kernel, jump))
        offset = tuple(o - b * j for o, b, j in zip(offset, step.before, jump))
        jump = tuple(j * s for j, s in zip(jump, step.stride))
        known[node.outputs[0]] = (size, jump, offset)
        fields[node.layer.name] = Field(size, jump, offset, step.output_size)
    return fields


@dataclasses.dataclass(frozen=True)
class Windows:
    """The windows of every tensor below one unit of a top tensor (:func:`unit_windows`).

    Each window is ``(size, jump, offset)`` per axis, in that tensor's own map units: unit
    ``(y, x)`` of the top reads rows ``offset[0] + y * jump[0]`` .. ``+ size[0] - 1`` (columns
    alike); windows may run past the map into padding.

    Attributes:
        nodes: the nodes from the input up to the top, topological order.
        steps: ``{node: Step}``.
        tensors: ``{key: window}`` of every tensor (the union of what its readers need).
        reads: ``{(node, i): window}`` of input ``i`` that ``node`` needs for its output's window.
    """

    nodes: list
    steps: dict
    tensors: dict
    reads: dict


def unit_windows(graph, top):
    """:class:`Windows` of everything one unit of tensor ``top`` (a key of ``graph``) depends on, or
    None where that is not a window (a layer without a :class:`Step` below the top, paths of
    different jumps meeting). For the input tensor the window is the unit's :class:`Field`."""
    nodes = graph.below([top])
    steps = {node: node_step(graph, node) for node in nodes}
    if any(step is None for step in steps.values()):
        return None
    tensors, reads, wanted = {}, {}, {top: [((1, 1), (1, 1), (0, 0))]}
    for node in reversed(nodes):
        window = _hull(wanted.pop(node.outputs[0], []))
        if window is None:
            return None
        tensors[node.outputs[0]] = window
        (size, jump, offset), step = window, steps[node]
        below = (
            tuple((n - 1) * s + k for n, s, k in zip(size, step.stride, step.kernel)),
            tuple(j * s for j, s in zip(jump, step.stride)),
            tuple(o * s - b for o, s, b in zip(offset, step.stride, step.before)),
        )
        for index, key in enumerate(node.inputs):
            reads[(node, index)] = below
            wanted.setdefault(key, []).append(below)
    window = _hull(wanted.pop(graph.input, [((1, 1), (1, 1), (0, 0))]))
    if window is None or wanted:
        return None
    tensors[graph.input] = window
    return Windows(nodes, steps, tensors, reads)


def changed_windows(steps, size, keep=1.0):
    """Output windows of every layer in ``steps`` that a change of ``size`` (rows, cols) input
    pixels of the first layer can reach, wherever the change sits.

    Returns ``[(rows, cols)]`` per step: the most output units one such change can alter, capped
    at the output map size. :func:`changed_start` places the window for one change. With
    ``keep`` < 1 (approximate, Krypton's projective-field threshold) each conv or pool keeps only
    that fraction (rounded up) of the window the layer below's kept window can reach, centred.
    """
    size = [int(s) for s in size]
    sizes = []
    for _, step in steps:
        # Outputs o with o*s - before + kernel - 1 >= a and o*s - before <= a + size - 1: at most
        # ceil((size + kernel - 1) / stride) of them, for the worst placement of a.
        grown = [min(-(-(size[a] + step.kernel[a] - 1) // step.stride[a]), step.output_size[a]) for a in range(2)]
        if step.kernel == (1, 1):
            size = grown  # pointwise layers do not spread the change: nothing to threshold
        else:
            size = [max(1, min(g, int(np.ceil(keep * g)))) for g in grown]
        sizes.append(tuple(size))
    return sizes


def changed_start(step, start, window, changed):
    """First output unit (per axis) of ``step``'s changed window of size ``window`` when ``changed``
    (rows, cols) input units change from ``start`` on (int arrays ``[..., 2]``); kept inside the
    output map. A window smaller than the reach (``keep`` < 1 in :func:`changed_windows`) is centred."""
    start = np.asarray(start)
    stride, kernel, before = (np.asarray(v) for v in (step.stride, step.kernel, step.before))
    first = -((kernel - 1 - before - start) // stride)  # ceil((start + before - kernel + 1) / stride)
    reach = -(-(np.asarray(changed) + kernel - 1) // stride)
    first = first + np.maximum(reach - np.asarray(window), 0) // 2
    return np.clip(first, 0, np.asarray(step.output_size) - np.asarray(window))


def crop(image, field, y, x, fill=0.0):
    """The input patch of unit ``(y, x)``: ``image [H, W, C]`` cut to ``field.box(y, x)``.

    Returns ``[size_h, size_w, C]``: the field's full extent, with ``fill`` where the field
    reaches past the image (so patches of one layer all have one shape).
    """
    image = np.asarray(image)
    height, width = image.shape[:2]
    top, bottom, left, right = field.box(y, x)
    patch = np.full((bottom - top, right - left) + image.shape[2:], fill, dtype=image.dtype)
    inner_top, inner_bottom, inner_left, inner_right = field.box(y, x, (height, width))
    if inner_bottom > inner_top and inner_right > inner_left:
        patch[inner_top - top : inner_bottom - top, inner_left - left : inner_right - left] = image[inner_top:inner_bottom, inner_left:inner_right]
    return patch
