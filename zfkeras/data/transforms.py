"""Image operations of the paper's preprocessing (Sec. 3), scaled to the model input size ``S``.

Each image is resized so its smaller side is ``L = load_size(S)`` (256 for S=224), the centre
``L x L`` is kept, then training takes random ``S x S`` crops with random horizontal flips and
testing takes the centre crop or 10 crops (:func:`ten_crop`). Small inputs (S <= 64: MNIST, CIFAR,
Emoji-64) are not zoomed: ``L = S``, so the model is evaluated on the native image, and training
shifts it instead (zero-pad :func:`train_padding`, then a random crop, as CIFAR training does).
Single images are ``[H, W, C]``; crops also accept batches ``[..., H, W, C]``. Pixels stay raw
0-255: the model's first layer subtracts the mean.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

# Inputs up to this side are "small" (MNIST, CIFAR): evaluated on the native image, no zoom.
SMALL_INPUT = 64


def load_size(input_size: int) -> int:
    """Side ``L`` an image's smaller side is resized to (then centre-cropped to ``L x L``) before the
    ``input_size`` crops, in training and evaluation alike.

    Large inputs follow the paper: ``round(S * 256 / 224)`` (224 -> 256), and test views are crops of
    that image. Small inputs (``S <= SMALL_INPUT``: 28, 32) use ``L = S``: a native 28x28 image goes
    into the model as it is, and training shifts it with :func:`train_padding` instead of zooming.
    """
    size = int(input_size)
    return size if size <= SMALL_INPUT else int(round(size * 256 / 224))


def train_padding(input_size: int) -> int:
    """Zero rows/columns added on each side before a random ``input_size`` crop in training, and
    before the 10 test crops: ``round(S / 14)`` for small inputs (2 for 28, as CIFAR's 4 for 32 is
    the same shift in proportion), 0 for large ones, which crop inside the ``L x L`` image instead."""
    size = int(input_size)
    return max(1, int(round(size / 14))) if load_size(size) == size else 0


def _luminance(rgb):
    """ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of ``[..., 3]``; keeps the dtype (uint8 rounds)."""
    weights = tf.constant([0.299, 0.587, 0.114], tf.float32)
    grey = tf.reduce_sum(tf.cast(rgb, tf.float32) * weights, axis=-1, keepdims=True)
    if rgb.dtype.is_integer:
        return tf.saturate_cast(tf.round(grey), rgb.dtype)
    return tf.cast(grey, rgb.dtype)


def to_channels(image, channels: int):
    """Convert ``image [..., H, W, c]`` (c = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) to ``channels``.

    Alpha is dropped; grey -> RGB repeats the grey plane; RGB -> grey is the BT.601 luma
    ``0.299 R + 0.587 G + 0.114 B`` (rounded for integer images). Dtype is kept. ``c`` may be
    unknown until run time (decoded files).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    image = tf.convert_to_tensor(image)
    c = image.shape[-1]
    if c is not None:
        if c not in (1, 2, 3, 4):
            raise ValueError(f"images must have 1-4 channels, got {c}")
        if channels == 3:
            return image[..., :3] if c >= 3 else tf.repeat(image[..., :1], 3, axis=-1)
        return _luminance(image[..., :3]) if c >= 3 else image[..., :1]
    has_colour = tf.shape(image)[-1] >= 3
    if channels == 3:
        out = tf.cond(has_colour, lambda: image[..., :3], lambda: tf.repeat(image[..., :1], 3, axis=-1))
    else:
        out = tf.cond(has_colour, lambda: _luminance(image[..., :3]), lambda: image[..., :1])
    out.set_shape(image.shape[:-1].concatenate([channels]))
    return out


def resize_and_center_crop(image, size: int):
    """Resize ``image [H, W, C]`` (or a batch ``[N, H, W, C]``) so its smaller side is ``size``, then keep
    the centre ``size x size``.

    Bilinear with antialiasing (the other side becomes ``round(side * size / smaller side)``); an
    image already of the target size is returned unchanged. The crop starts at
    ``((H' - size) // 2, (W' - size) // 2)`` of the resized ``H' x W'`` image.
    Returns float32 ``[size, size, C]`` (``[N, size, size, C]``), raw pixel units (0-255 for uint8 input).
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    h, w = shape[-3], shape[-2]
    scale = tf.cast(size, tf.float64) / tf.cast(tf.minimum(h, w), tf.float64)
    new_h = tf.maximum(size, tf.cast(tf.round(tf.cast(h, tf.float64) * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(tf.cast(w, tf.float64) * scale), tf.int32))
    resized = tf.cond(
        tf.logical_and(tf.equal(h, new_h), tf.equal(w, new_w)),
        lambda: tf.cast(image, tf.float32),
        lambda: tf.cast(tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True), tf.float32),
    )
    out = _crop(resized, (new_h - size) // 2, (new_w - size) // 2, size)
    out.set_shape(image.shape[:-3].concatenate([size, size, image.shape[-1]]))
    return out


def _crop(image, top, left, size: int):
    return image[..., top : top + size, left : left + size, :]


def center_crop(image, input_size: int):
    """Centre ``input_size`` crop of ``image [..., H, W, C]``: rows from ``(H - S) // 2``, columns from
    ``(W - S) // 2`` (offset 2 for 32 -> 28, 16 for 256 -> 224). Dtype kept."""
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    return _crop(image, (shape[-3] - input_size) // 2, (shape[-2] - input_size) // 2, input_size)


def native_to_input(images, input_size: int):
    """The single evaluation view of native images ``[N, H, W, C]`` (any H, W; float or uint8) at the
    model input: smaller side resized to ``load_size(S)`` (:func:`resize_and_center_crop`), then the
    centre ``S x S`` (:func:`center_crop`). float32 raw 0-255; an ``S x S`` small image is unchanged.
    Exported ``serve`` endpoints apply it, so consumers pass images as they are."""
    resized = resize_and_center_crop(images, load_size(input_size))
    return center_crop(resized, input_size)


def pad_image(image, pad: int):
    """``image [..., H, W, C]`` with ``pad`` zero rows and columns added on each side (dtype kept)."""
    if not pad:
        return tf.convert_to_tensor(image)
    image = tf.convert_to_tensor(image)
    rank = image.shape.rank
    paddings = [[0, 0]] * (rank - 3) + [[pad, pad], [pad, pad], [0, 0]]
    return tf.pad(image, paddings)


def ten_crop(image, input_size: int):
    """The paper's 10 test views of ``image [H, W, C]`` -> ``[10, S, S, C]`` (``[N, 10, S, S, C]`` for a batch).

    With ``S = input_size`` and ``F = image[:, ::-1]`` (horizontal flip), in this order:
    0 top-left ``image[:S, :S]``, 1 top-right ``image[:S, W-S:]``, 2 bottom-left ``image[H-S:, :S]``,
    3 bottom-right ``image[H-S:, W-S:]``, 4 centre ``image[(H-S)//2 :+S, (W-S)//2 :+S]``,
    5-9 the same five crops taken from ``F`` (so view 5 is the mirror of view 1, 6 of 0, 7 of 3,
    8 of 2, and 9 of the centre crop when ``W - S`` is even). Dtype kept.
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    h, w, s = shape[-3], shape[-2], input_size

    def five(x):
        return [_crop(x, 0, 0, s), _crop(x, 0, w - s, s), _crop(x, h - s, 0, s), _crop(x, h - s, w - s, s), _crop(x, (h - s) // 2, (w - s) // 2, s)]

    return tf.stack(five(image) + five(tf.reverse(image, axis=[-2])), axis=-4)


def random_crop_flip(image, input_size: int, seed, pad: int = 0, flip: bool = True):
    """Training augmentation: a uniformly random ``S x S`` crop of ``image [L, L, C]`` (first padded
    with ``pad`` zero rows/columns on each side, :func:`train_padding`), flipped left-right with
    probability 1/2 (never with ``flip=False``: for data a mirror changes, such as digits).

    ``seed`` is a stateless seed, int ``[2]``; the same seed gives the same crop and flip.
    Returns ``[S, S, C]`` of the input dtype.
    """
    image = pad_image(image, pad)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2))
    size = tf.stack([input_size, input_size, tf.shape(image)[-1]])
    crop = tf.image.stateless_random_crop(image, size=size, seed=crop_seed)
    if flip:
        crop = tf.image.stateless_random_flip_left_right(crop, seed=flip_seed)
    crop.set_shape([input_size, input_size, image.shape[-1]])
    return crop


# ---- a photo of any size fitted to a model's input, as evaluation does (zf project, zf occlusion, ...) ----


@dataclasses.dataclass
class FittedImage:
    """A photo fitted to a model's input, and where the model's view lies in it.

    Attributes:
        pixels: float32 ``[S, S, C]`` raw pixels (0-255 for 8-bit photos) at the model's input.
        source_size: ``(height, width)`` of the given photo.
        resized_size: ``(height, width)`` after resizing its smaller side to the load size.
        box: ``(top, bottom, left, right)``, half-open, of ``pixels`` in the resized photo.
    """

    pixels: np.ndarray
    source_size: tuple
    resized_size: tuple
    box: tuple

    @property
    def source_box(self):
        """``box`` in the given photo's pixel coordinates (floats: the resize is not by an integer)."""
        sy = self.source_size[0] / self.resized_size[0]
        sx = self.source_size[1] / self.resized_size[1]
        top, bottom, left, right = self.box
        return (top * sy, bottom * sy, left * sx, right * sx)


def fit_image(image, input_shape):
    """Fit ``image [H, W, c]`` (c = 1-4, any dtype) to a square ``input_shape (S, S, C)``.

    Returns:
        A :class:`FittedImage`. Raises ValueError for a non-square input shape (the data pipeline
        makes square crops) or an image that is not ``[H, W, 1-4]``.
    """
    height, width, channels = (int(v) for v in input_shape)
    if height != width:
        raise ValueError(f"photos are fitted to square inputs (as the data pipeline crops); the model's input is {height}x{width}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"image must be [H, W, 1-4 channels], got shape {image.shape}")
    load = load_size(height)
    rows, cols = image.shape[:2]
    # the same sizes as resize_and_center_crop: the other side is round(side * L / smaller side)
    scale = load / min(rows, cols)
    resized = (max(load, int(np.round(rows * scale))), max(load, int(np.round(cols * scale))))
    top = (resized[0] - load) // 2 + (load - height) // 2
    left = (resized[1] - load) // 2 + (load - height) // 2
    pixels = native_to_input(to_channels(image, channels), height)
    return FittedImage(
        pixels=np.asarray(pixels, "float32"), source_size=(rows, cols), resized_size=resized, box=(top, top + height, left, left + height)
    )
