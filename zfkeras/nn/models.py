"""ZFNet-family convnets from one spec: ZFNet (Fig. 3), AlexNet (dense), a small ZFNet, and both at 64 px.

A :class:`ModelSpec` describes a network of up to five conv blocks and two fully connected layers,
so the paper's Table 3 variants are one-line changes::

    spec = ZFNET.without(3, 4)                             # "removed layers 3,4"
    spec = ZFNET.with_units(fc6=2048, fc7=2048)            # "adjust layers 6,7: 2048 units"
    spec = ZFNET.with_units(conv3=512, conv4=1024, conv5=512)
    model = build_model(spec)

Layer names are fixed so tools can find them: ``subtract_mean``, ``pad<i>``, ``conv<i>`` (Conv2D with
ReLU built in, so its output is the rectified, pre-pool feature map), ``pool<i>``
(:class:`~zfkeras.nn.layers.SwitchMaxPool`), ``norm<i>`` (LRN), ``flatten``, ``fc6``, ``drop6``,
``fc7``, ``drop7``, ``predictions`` (softmax). Removed layers keep the others' numbers.
"""

import dataclasses
from typing import Optional, Tuple, Union

import keras

from zfkeras.io.validation import is_positive_int
from zfkeras.nn.layers import FilterRMSNorm, LocalResponseNormalization, SubtractMean, SwitchMaxPool, pooled_shape

KERNEL_INITS = ("normal", "he_normal", "glorot_uniform")


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """Max pooling after a conv layer: ``size`` x ``size`` windows, ``stride``, ``padding``."""

    size: int = 3
    stride: int = 2
    padding: str = "valid"


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One conv block: conv (+ReLU), then optional max pooling, then optional LRN.

    ``padding`` is ``"valid"``, ``"same"`` or an int: that many zero rows/columns on every side
    (a ``ZeroPadding2D`` named ``pad<i>`` followed by a valid conv).
    """

    filters: int
    kernel: int
    stride: int = 1
    padding: Union[str, int] = "same"
    pool: Optional[PoolSpec] = None
    lrn: bool = False


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A whole network. ``convs`` has one entry per conv layer number (None = removed layer);
    ``fc`` gives the units of fc6 and fc7 (None = removed). ``init_std`` is the std of the
    N(0, init_std) weight init (paper: 1e-2, biases 0) used when ``kernel_init == "normal"``;
    ``filter_radius`` is the filter RMS cap of every conv layer (None = off)."""

    name: str
    input_shape: Tuple[int, int, int]
    num_classes: int
    convs: Tuple[Optional[ConvSpec], ...]
    fc: Tuple[Optional[int], Optional[int]] = (4096, 4096)
    dropout: float = 0.5
    kernel_init: str = "normal"
    init_std: float = 1e-2
    filter_radius: Optional[float] = 0.1

    def __post_init__(self):
        validate_spec(self)

    def replace(self, **changes):
        """A copy with fields replaced (validated)."""
        return dataclasses.replace(self, **changes)

    def without(self, *layers):
        """A copy with conv layers (1-5) and/or fc layers (6, 7) removed."""
        convs = list(self.convs)
        fc = list(self.fc)
        for number in layers:
            if 1 <= number <= len(convs):
                convs[number - 1] = None
            elif number in (6, 7):
                fc[number - 6] = None
            else:
                raise ValueError(f"layers: no layer {number} to remove (conv 1-{len(convs)}, fc 6-7)")
        return self.replace(convs=tuple(convs), fc=tuple(fc))

    def with_units(self, **units):
        """A copy with new sizes, e.g. ``with_units(conv3=512, fc6=2048)``."""
        convs = list(self.convs)
        fc = list(self.fc)
        for key, value in units.items():
            number = key[4:] if key.startswith("conv") else ""
            if number.isdigit() and 1 <= int(number) <= len(convs):
                if convs[int(number) - 1] is None:
                    raise ValueError(f"{key}: that layer is removed in this spec")
                convs[int(number) - 1] = dataclasses.replace(convs[int(number) - 1], filters=value)
            elif key in ("fc6", "fc7"):
                fc[int(key[2]) - 6] = value
            else:
                raise ValueError(f"{key}: unknown layer; use conv1..conv{len(convs)}, fc6, fc7")
        return self.replace(convs=tuple(convs), fc=tuple(fc))

    def with_conv(self, layer, **fields):
        """A copy with fields of one conv layer changed, e.g. ``with_conv("conv1", kernel=7, stride=2)``
        (an AlexNet-like or ZFNet-like first layer for the Sec. 4.1 comparison)."""
        number = layer[4:] if isinstance(layer, str) and layer.startswith("conv") else ""
        if not (number.isdigit() and 1 <= int(number) <= len(self.convs)):
            raise ValueError(f"{layer!r}: unknown conv layer; use conv1..conv{len(self.convs)}")
        conv = self.convs[int(number) - 1]
        if conv is None:
            raise ValueError(f"{layer}: that layer is removed in this spec")
        known = {f.name for f in dataclasses.fields(ConvSpec)} - {"pool"}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"{layer}: unknown field {unknown[0]!r}; fields: {', '.join(sorted(known))}")
        convs = list(self.convs)
        convs[int(number) - 1] = dataclasses.replace(conv, **fields)
        return self.replace(convs=tuple(convs))


def validate_spec(spec):
    """Raise ValueError naming the first bad field of ``spec``; check feature maps stay >= 1x1."""
    if not (len(spec.input_shape) == 3 and all(is_positive_int(d) for d in spec.input_shape)):
        raise ValueError(f"input_shape must be (height, width, channels) of positive ints, got {spec.input_shape!r}")
    if not is_positive_int(spec.num_classes) or spec.num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {spec.num_classes!r}")
    if not spec.convs or all(c is None for c in spec.convs):
        raise ValueError("convs must contain at least one ConvSpec")
    if len(spec.fc) != 2:
        raise ValueError(f"fc must be (fc6 units, fc7 units), None for a removed layer, got {spec.fc!r}")
    for i, units in zip((6, 7), spec.fc):
        if units is not None and not is_positive_int(units):
            raise ValueError(f"fc{i}: units must be a positive int or None, got {units!r}")
    if not 0.0 <= spec.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {spec.dropout!r}")
    if spec.kernel_init not in KERNEL_INITS:
        raise ValueError(f"kernel_init must be one of {KERNEL_INITS}, got {spec.kernel_init!r}")
    if not spec.init_std > 0:
        raise ValueError(f"init_std must be > 0, got {spec.init_std!r}")
    if spec.filter_radius is not None and not spec.filter_radius > 0:
        raise ValueError(f"filter_radius must be > 0 or None, got {spec.filter_radius!r}")
    height, width = spec.input_shape[:2]
    for number, conv in enumerate(spec.convs, 1):
        if conv is None:
            continue
        field = f"convs[{number - 1}] (conv{number})"
        for attr in ("filters", "kernel", "stride"):
            if not is_positive_int(getattr(conv, attr)):
                raise ValueError(f"{field}.{attr} must be a positive int, got {getattr(conv, attr)!r}")
        if isinstance(conv.padding, int) and not isinstance(conv.padding, bool):
            if conv.padding < 0:
                raise ValueError(f"{field}.padding must be >= 0, got {conv.padding}")
            height, width = height + 2 * conv.padding, width + 2 * conv.padding
            padding = "valid"
        elif conv.padding in ("valid", "same"):
            padding = conv.padding
        else:
            raise ValueError(f"{field}.padding must be 'valid', 'same' or an int, got {conv.padding!r}")
        _, height, width, _ = pooled_shape((None, height, width, None), (conv.kernel,) * 2, (conv.stride,) * 2, padding)
        if conv.pool is not None:
            pool = conv.pool
            if not (is_positive_int(pool.size) and is_positive_int(pool.stride) and pool.padding in ("valid", "same")):
                raise ValueError(f"{field}.pool must have positive size/stride and padding 'valid'/'same', got {pool!r}")
            if min(height, width) >= 1:
                _, height, width, _ = pooled_shape((None, height, width, None), (pool.size,) * 2, (pool.stride,) * 2, pool.padding)
        if min(height, width) < 1:
            raise ValueError(f"{field}: feature maps shrink to nothing for input_shape {spec.input_shape}")


def _kernel_initializer(spec, seed):
    if spec.kernel_init == "normal":
        return keras.initializers.RandomNormal(stddev=spec.init_std, seed=seed)
    return keras.initializers.get({"class_name": spec.kernel_init, "config": {"seed": seed}})


def build_model(spec, seed=None):
    """Build the Keras functional model that ``spec`` describes (uncompiled).

    Args:
        spec: a :class:`ModelSpec`.
        seed: int for a reproducible initialization (layer ``i`` uses ``seed + i``), or None.

    Returns:
        ``keras.Model`` mapping raw pixels ``[N, H, W, C]`` (0-255) to class probabilities ``[N, classes]``.
    """
    validate_spec(spec)
    counter = iter(range(1000))

    def init():
        return _kernel_initializer(spec, None if seed is None else seed + next(counter))

    constraint = FilterRMSNorm(spec.filter_radius) if spec.filter_radius else None
    inputs = keras.Input(spec.input_shape, name="images")
    x = SubtractMean(name="subtract_mean")(inputs)
    for number, conv in enumerate(spec.convs, 1):
        if conv is None:
            continue
        padding = conv.padding
        if isinstance(padding, int):
            x = keras.layers.ZeroPadding2D(padding, name=f"pad{number}")(x)
            padding = "valid"
        x = keras.layers.Conv2D(
            conv.filters,
            conv.kernel,
            strides=conv.stride,
            padding=padding,
            activation="relu",
            kernel_initializer=init(),
            bias_initializer="zeros",
            kernel_constraint=constraint,
            name=f"conv{number}",
        )(x)
        if conv.pool is not None:
            x, _ = SwitchMaxPool(conv.pool.size, conv.pool.stride, conv.pool.padding, name=f"pool{number}")(x)
        if conv.lrn:
            x = LocalResponseNormalization(name=f"norm{number}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for number, units in zip((6, 7), spec.fc):
        if units is None:
            continue
        x = keras.layers.Dense(units, activation="relu", kernel_initializer=init(), bias_initializer="zeros", name=f"fc{number}")(x)
        x = keras.layers.Dropout(spec.dropout, name=f"drop{number}")(x)
    outputs = keras.layers.Dense(spec.num_classes, activation="softmax", kernel_initializer=init(), bias_initializer="zeros", name="predictions")(x)
    return keras.Model(inputs, outputs, name=spec.name)


def zfnet_spec(num_classes=1000, input_shape=(224, 224, 3)):
    """Fig. 3: maps 110 (conv1) -> 55 (pool1) -> 26 (conv2) -> 13 (pool2, conv3-5) -> 6 (pool5).

    Paddings that give those sizes from 224: conv1 7x7/2 on a 1-pixel zero border (226 -> 110),
    pool1 3x3/2 "same" (110 -> 55), conv2 5x5/2 "valid" (55 -> 26), pool2 3x3/2 "same" (26 -> 13),
    conv3-5 3x3/1 "same" (13), pool5 3x3/2 "valid" (13 -> 6); 6 * 6 * 256 = 9216 inputs to fc6.
    """
    return ModelSpec(
        name="zfnet",
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        convs=(
            ConvSpec(96, 7, 2, padding=1, pool=PoolSpec(3, 2, "same"), lrn=True),
            ConvSpec(256, 5, 2, padding="valid", pool=PoolSpec(3, 2, "same"), lrn=True),
            ConvSpec(384, 3, 1, padding="same"),
            ConvSpec(384, 3, 1, padding="same"),
            ConvSpec(256, 3, 1, padding="same", pool=PoolSpec(3, 2, "valid")),
        ),
        fc=(4096, 4096),
    )


def alexnet_spec(num_classes=1000, input_shape=(224, 224, 3)):
    """Krizhevsky et al. 2012 with dense connections (no two-GPU split): conv1 96@11x11/4 on a
    2-pixel border (224 -> 55), pools 3x3/2 "valid" (55 -> 27, 27 -> 13, 13 -> 6), LRN after
    pools 1 and 2, conv2 256@5x5, conv3-4 384@3x3, conv5 256@3x3 ("same"), fc 4096, 4096."""
    return ModelSpec(
        name="alexnet",
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        convs=(
            ConvSpec(96, 11, 4, padding=2, pool=PoolSpec(3, 2, "valid"), lrn=True),
            ConvSpec(256, 5, 1, padding="same", pool=PoolSpec(3, 2, "valid"), lrn=True),
            ConvSpec(384, 3, 1, padding="same"),
            ConvSpec(384, 3, 1, padding="same"),
            ConvSpec(256, 3, 1, padding="same", pool=PoolSpec(3, 2, "valid")),
        ),
        fc=(4096, 4096),
    )


def zfnet_small_spec(num_classes=10, input_shape=(28, 28, 1)):
    """ZFNet's shape scaled for 28-64 px grey or colour inputs and a 2-core CPU.

    conv1 32@3x3/1, pool 3x3/2 "same", LRN; conv2 64@3x3/1, pool 3x3/2 "same", LRN; conv3-4 96@3x3,
    conv5 64@3x3, pool 3x3/2 "valid"; fc6, fc7 256. For 28x28: 28 -> 14 -> 7 -> 3 (576 inputs to fc6).
    """
    return ModelSpec(
        name="zfnet_small",
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        convs=(
            ConvSpec(32, 3, 1, padding="same", pool=PoolSpec(3, 2, "same"), lrn=True),
            ConvSpec(64, 3, 1, padding="same", pool=PoolSpec(3, 2, "same"), lrn=True),
            ConvSpec(96, 3, 1, padding="same"),
            ConvSpec(96, 3, 1, padding="same"),
            ConvSpec(64, 3, 1, padding="same", pool=PoolSpec(3, 2, "valid")),
        ),
        fc=(256, 256),
    )


def zfnet64_spec(num_classes=1000, input_shape=(64, 64, 3)):
    """ZFNet's pattern at 64x64 colour: conv1 48@7x7/2, every pool 3x3/2 (overlapping), LRN after
    pools 1 and 2, conv2 128@5x5/1, conv3-4 192@3x3, conv5 128@3x3, fc6 and fc7 1024.

    Maps 64 -> 32 (conv1) -> 16 (pool1, conv2) -> 8 (pool2, conv3-5) -> 3 (pool5); 3 * 3 * 128 = 1152
    inputs to fc6. Receptive fields 7, 27, 51, 67, 83 px for conv1-conv5: conv5 sees the whole image.
    """
    return ModelSpec(
        name="zfnet64",
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        convs=(
            ConvSpec(48, 7, 2, padding="same", pool=PoolSpec(3, 2, "same"), lrn=True),
            ConvSpec(128, 5, 1, padding="same", pool=PoolSpec(3, 2, "same"), lrn=True),
            ConvSpec(192, 3, 1, padding="same"),
            ConvSpec(192, 3, 1, padding="same"),
            ConvSpec(128, 3, 1, padding="same", pool=PoolSpec(3, 2, "valid")),
        ),
        fc=(1024, 1024),
    )


def alexnet64_spec(num_classes=1000, input_shape=(64, 64, 3)):
    """:func:`zfnet64_spec` with AlexNet's kind of first layer (Sec. 4.1): conv1 48@11x11 at stride 4,
    then pool1 3x3 at stride 1, so from conv2 on every map has zfnet64's size (64 -> 16 -> 16 -> 16
    -> 8 -> 3) and the two differ only in how the first stage subsamples 4x: one stride-4 conv here,
    a stride-2 conv and a stride-2 pool there."""
    spec = zfnet64_spec(num_classes, input_shape)
    first = dataclasses.replace(spec.convs[0], kernel=11, stride=4, pool=PoolSpec(3, 1, "same"))
    return spec.replace(name="alexnet64", convs=(first, *spec.convs[1:]))


ZFNET = zfnet_spec()
ALEXNET = alexnet_spec()


def zfnet(num_classes=1000, input_shape=(224, 224, 3), seed=None):
    """ZFNet exactly as Fig. 3 (see :func:`zfnet_spec` for the paddings)."""
    return build_model(zfnet_spec(num_classes, input_shape), seed=seed)


def alexnet(num_classes=1000, input_shape=(224, 224, 3), seed=None):
    """AlexNet's layout with dense connections, for the Fig. 6 / Sec. 4.1 comparison."""
    return build_model(alexnet_spec(num_classes, input_shape), seed=seed)


def zfnet_small(num_classes=10, input_shape=(28, 28, 1), seed=None):
    """The small ZFNet (see :func:`zfnet_small_spec`), trainable on a 2-core CPU."""
    return build_model(zfnet_small_spec(num_classes, input_shape), seed=seed)


def zfnet64(num_classes=1000, input_shape=(64, 64, 3), seed=None):
    """ZFNet's pattern at 64x64 colour (see :func:`zfnet64_spec`): the Emoji-64 reproduction's model."""
    return build_model(zfnet64_spec(num_classes, input_shape), seed=seed)


def alexnet64(num_classes=1000, input_shape=(64, 64, 3), seed=None):
    """:func:`zfnet64` with AlexNet's kind of first layer (see :func:`alexnet64_spec`)."""
    return build_model(alexnet64_spec(num_classes, input_shape), seed=seed)


ARCHITECTURES = {"zfnet": zfnet_spec, "alexnet": alexnet_spec, "zfnet_small": zfnet_small_spec, "zfnet64": zfnet64_spec, "alexnet64": alexnet64_spec}
