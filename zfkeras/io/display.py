"""Turning projections and filters into viewable images: contrast, tiles, mosaics and filter grids
(pure numpy; plotting lives in pipelines)."""

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


def display_tiles(tiles, percentile=99.5):
    """Signed tiles ``[N, h, w, C]`` (projections, filters) to [0, 1] with :func:`to_display`
    (0 -> mid-grey, each tile scaled by its ``percentile`` of |values|), keeping NaN (outside the
    image, counted as 0 for the scale) and the channel axis."""
    tiles = np.asarray(tiles, "float32")
    shown = to_display(np.nan_to_num(tiles), percentile).reshape(tiles.shape)
    return np.where(np.isnan(tiles), np.nan, shown).astype("float32")


def mosaic(tiles, columns, pad=1, fill=1.0, missing=(0.85, 0.9, 1.0)):
    """Lay ``tiles [N, h, w, C]`` (values in [0, 1], C 1 or 3) out in a grid as one RGB image.

    Args:
        columns: tiles per row.
        pad: pixels between tiles (and around them), coloured ``fill``.
        missing: RGB colour for NaN pixels (parts of a receptive field outside the image).

    Returns:
        float32 ``[rows * (h + pad) + pad, columns * (w + pad) + pad, 3]``.
    """
    tiles = np.asarray(tiles, "float32")
    if tiles.ndim != 4 or tiles.shape[-1] not in (1, 3):
        raise ValueError(f"tiles must be [N, h, w, 1 or 3], got shape {tiles.shape}")
    if tiles.shape[-1] == 1:
        tiles = np.repeat(tiles, 3, axis=-1)
    tiles = np.where(np.isnan(tiles), np.asarray(missing, "float32"), tiles)
    count, height, width, _ = tiles.shape
    rows = max(1, -(-count // columns))
    grid = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), fill, "float32")
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        top, left = pad + row * (height + pad), pad + column * (width + pad)
        grid[top : top + height, left : left + width] = tile
    return grid


def filter_grid(kernel, columns=None, pad=1, scale="filter"):
    """First-layer filters as one RGB image (Fig. 6 a-c).

    Args:
        kernel: ``[kh, kw, in_channels, filters]`` with 1 (grey) or 3 (RGB) input channels.
        columns: filters per row (default about square).
        scale: ``"filter"`` scales each filter by its own largest |weight| (shape is visible);
            ``"global"`` uses one scale for all (shows filters that dominate, as in Fig. 6a).

    Returns:
        float32 ``[rows * (kh + pad) + pad, columns * (kw + pad) + pad, 3]`` in [0, 1]; weight 0 is grey.
    """
    kernel = np.asarray(kernel, "float32")
    if kernel.ndim != 4 or kernel.shape[2] not in (1, 3):
        raise ValueError(f"kernel must be [kh, kw, 1 or 3 input channels, filters], got shape {kernel.shape}")
    if scale not in ("filter", "global"):
        raise ValueError(f"scale must be 'filter' or 'global', got {scale!r}")
    filters = np.moveaxis(kernel, -1, 0)
    if scale == "global":
        tiles = display_tiles(filters.reshape(1, -1, 1, 1), 100.0).reshape(filters.shape)
    else:
        tiles = display_tiles(filters, 100.0)
    columns = columns or int(np.ceil(np.sqrt(len(filters))))
    return mosaic(tiles, columns, pad=pad, fill=1.0)
