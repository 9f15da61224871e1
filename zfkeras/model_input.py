"""Fitting a photo of any size to a model's input, as evaluation does (``zf project``, ``zf occlusion``, ...).

The photo's channels are converted to the model's (grey <-> RGB, alpha dropped), its smaller side
is resized to the data pipeline's load size ``L = zfkeras.data.load_size(S)`` (bilinear, antialiased;
``round(S * 256 / 224)``, or ``S`` itself for small inputs) and the centre ``L x L`` is kept, then the
centre ``S x S`` of that (:func:`zfkeras.data.native_to_input`, the single-crop evaluation view that
exported ``serve`` endpoints apply, so a photo is seen exactly as a test image of the same size would be).
"""

import dataclasses

import numpy as np

from zfkeras import data


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
    load = data.load_size(height)
    rows, cols = image.shape[:2]
    # the same sizes as data.resize_and_center_crop: the other side is round(side * L / smaller side)
    scale = load / min(rows, cols)
    resized = (max(load, int(np.round(rows * scale))), max(load, int(np.round(cols * scale))))
    top = (resized[0] - load) // 2 + (load - height) // 2
    left = (resized[1] - load) // 2 + (load - height) // 2
    pixels = data.native_to_input(data.to_channels(image, channels), height)
    return FittedImage(
        pixels=np.asarray(pixels, "float32"), source_size=(rows, cols), resized_size=resized, box=(top, top + height, left, left + height)
    )
