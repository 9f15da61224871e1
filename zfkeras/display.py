"""Turning projections and filters into viewable images (pure numpy; plotting lives in pipelines)."""

import numpy as np


def to_display(array, percentile=99.5):
    """Map signed values to [0, 1] around mid-grey: 0 -> 0.5, +-scale -> 1 / 0.

    ``scale`` is the given percentile of ``|array|`` (99.5 by default: a few extreme pixels do not
    wash out the rest, the "contrast enhanced" display of the paper's figures). Works on one image
    ``[H, W, C]`` or a batch ``[N, H, W, C]`` (each image scaled on its own). Grey images come back
    as ``[..., H, W]`` for ``imshow(cmap="gray")``.
    """
    array = np.asarray(array, dtype="float64")
    batch = array if array.ndim == 4 else array[None]
    out = np.empty_like(batch)
    for i, image in enumerate(batch):
        scale = np.percentile(np.abs(image), percentile)
        scale = scale if scale > 0 else 1.0
        out[i] = np.clip(0.5 + 0.5 * image / scale, 0.0, 1.0)
    out = out if array.ndim == 4 else out[0]
    return out[..., 0] if out.shape[-1] == 1 else out


def pixels_to_display(images):
    """Raw pixels 0-255 ``[..., H, W, C]`` -> [0, 1] floats (grey squeezed to ``[..., H, W]``)."""
    images = np.clip(np.asarray(images, dtype="float64") / 255.0, 0.0, 1.0)
    return images[..., 0] if images.shape[-1] == 1 else images
