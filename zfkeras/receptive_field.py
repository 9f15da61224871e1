"""Receptive fields: which input pixels can influence one unit of a layer.

For a chain of convolutions, poolings and paddings, a unit at ``(y, x)`` of a layer sees the input
rows ``offset[0] + y * jump[0]`` to ``offset[0] + y * jump[0] + size[0] - 1`` (columns alike), where,
going up one layer with kernel ``k``, stride ``s`` and ``p`` padded rows before the first row::

    size'   = size + (k - 1) * jump         (dilation d: k -> (k - 1) * d + 1)
    jump'   = jump * s
    offset' = offset - p * jump

starting from ``size = jump = 1, offset = 0`` at the input. ``offset`` is negative where the field of
the first unit reaches into zero padding. ``"same"`` padding follows TensorFlow: ``p = total // 2``
with ``total = max((ceil(n / s) - 1) * s + k - n, 0)`` for an ``n``-long input, so it depends on the
layer's input size, which is propagated from the model's input shape.
"""

import dataclasses

import keras
import numpy as np

from zfkeras.layers import LocalResponseNormalization, SubtractMean, SwitchMaxPool

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
END = (keras.layers.Flatten, keras.layers.Dense, keras.layers.GlobalMaxPooling2D, keras.layers.GlobalAveragePooling2D)
SUPPORTED_LAYERS = (
    "Conv2D, ZeroPadding2D, MaxPooling2D, AveragePooling2D, SwitchMaxPool, and spatially pass-through "
    "SubtractMean, LocalResponseNormalization, ReLU, Activation, Dropout, BatchNormalization, Rescaling "
    "(Flatten, Dense and global pooling end the spatial part)"
)


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


def _chain(model):
    """The model's layers (without InputLayer) in order, checked to form a single chain."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if isinstance(model, keras.Sequential):
        return layers
    previous = model.inputs[0]
    for layer in layers:
        if layer.input is not previous:
            raise ValueError(f"receptive fields need a chain of layers; {layer.name!r} does not take the output of the layer before it")
        output = layer.output
        previous = output[0] if isinstance(output, (list, tuple)) else output
    return layers


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


def layer_steps(layers, input_size):
    """:class:`Step` of each layer of a chain, from the first up to (not including) the first
    Flatten/Dense/global pooling. ``input_size``: (height, width) of the first layer's input.

    Returns ``[(layer, Step)]``. Raises ValueError naming the first layer not covered
    (see :data:`SUPPORTED_LAYERS`).
    """
    length = [int(d) for d in input_size]
    steps = []
    for layer in layers:
        if isinstance(layer, END):
            break
        kernel, stride, before, output = [1, 1], [1, 1], [0, 0], list(length)
        if isinstance(layer, keras.layers.ZeroPadding2D):
            for axis in range(2):
                before[axis] = layer.padding[axis][0]
                output[axis] = length[axis] + sum(layer.padding[axis])
        elif isinstance(layer, (keras.layers.Conv2D,) + POOLS) and not isinstance(layer, keras.layers.Conv2DTranspose):
            if isinstance(layer, keras.layers.Conv2D):
                dilation = _pair(layer.dilation_rate)
                kernel = [(k - 1) * d + 1 for k, d in zip(_pair(layer.kernel_size), dilation)]
            else:
                kernel = list(_pair(layer.pool_size))
            stride = list(_pair(layer.strides))
            padding = layer.padding.lower()
            for axis in range(2):
                before[axis] = _padding_before(padding, length[axis], kernel[axis], stride[axis])
                output[axis] = _output_length(padding, length[axis], kernel[axis], stride[axis])
        elif not isinstance(layer, PASS_THROUGH):
            raise ValueError(
                f"receptive fields: layer {layer.name!r} ({type(layer).__name__}) is not supported; supported: {SUPPORTED_LAYERS}"
            )
        steps.append((layer, Step(tuple(kernel), tuple(stride), tuple(before), tuple(length), tuple(output))))
        length = output
    return steps


def receptive_fields(model):
    """Receptive field of every spatial layer of ``model``, from its layers' own settings.

    Args:
        model: a Keras model whose layers form a chain from one image input (all zfkeras models).

    Returns:
        ``{layer name: Field}`` in input-to-output order, for every layer up to (not including) the
        first Flatten/Dense/global pooling.

    Raises:
        ValueError: naming the first layer that changes geometry in a way not covered
        (see :data:`SUPPORTED_LAYERS`).
    """
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ValueError(
            f"receptive fields need a model with one [N, H, W, C] image input; {model.name!r} has {[tuple(i.shape) for i in model.inputs]}"
        )
    size, jump, offset = [1, 1], [1, 1], [0, 0]
    fields = {}
    for layer, step in layer_steps(_chain(model), model.inputs[0].shape[1:3]):
        for axis in range(2):
            offset[axis] -= step.before[axis] * jump[axis]
            size[axis] += (step.kernel[axis] - 1) * jump[axis]
            jump[axis] *= step.stride[axis]
        fields[layer.name] = Field(tuple(size), tuple(jump), tuple(offset), step.output_size)
    return fields


def unit_windows(steps):
    """Input windows of every layer in ``steps`` (a :func:`layer_steps` list) that one unit of the
    last layer's output depends on.

    Returns ``[(size, jump, offset)]``, one per step, each per axis: unit ``(y, x)`` of the last
    layer reads rows ``offset[0] + y * jump[0]`` to ``... + size[0] - 1`` of that step's input map
    (columns alike); the window may run past the map into the layer's padding. For the first step
    this is the unit's :class:`Field` in the model input.
    """
    size, jump, offset = [1, 1], [1, 1], [0, 0]
    windows = []
    for _, step in reversed(steps):
        for axis in range(2):
            size[axis] = (size[axis] - 1) * step.stride[axis] + step.kernel[axis]
            offset[axis] = offset[axis] * step.stride[axis] - step.before[axis]
            jump[axis] *= step.stride[axis]
        windows.append((tuple(size), tuple(jump), tuple(offset)))
    return windows[::-1]


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
        patch[inner_top - top : inner_bottom - top, inner_left - left : inner_right - left] = image[
            inner_top:inner_bottom, inner_left:inner_right
        ]
    return patch
