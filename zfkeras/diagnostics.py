"""Architecture diagnostics of Sec. 4.1 / Fig. 6, and the arrays the figures are drawn from.

Definitions (all frequencies in cycles per input pixel; the Nyquist limit of the pixel grid is 0.5):

- **Band shares of a filter** (:func:`band_shares`): the filter's 2D discrete-time Fourier
  transform is sampled on a ``size x size`` grid (the filter zero-padded to ``size``), its energy
  ``|W(f)|^2`` summed over input channels, and each grid frequency ``f = (fy, fx)`` is put in a band
  by its radius ``|f| = sqrt(fy^2 + fx^2)``: **low** ``|f| < 1/6``, **mid** ``1/6 <= |f| < 1/3``,
  **high** ``|f| >= 1/3`` (up to ``sqrt(2)/2`` in the corners). The bands split the Nyquist range
  ``[0, 0.5]`` into thirds. Shares are band energy / total energy (they sum to 1; the DC term
  counts as low). A filter with zero energy has no shares (NaN).
- **Dead filter** (:func:`dead_filters`): a filter whose mean rectified activation over a data set
  (mean over images and positions of its ReLU output map) is at most ``threshold`` (default 1%) of
  the median of the layer's filters' mean activations. A filter that never fires (mean 0) is always
  dead, even when the median is 0.
- **Aliasing** (:func:`aliasing_share`): for a stride-``s`` first layer the layer-2 input is sampled
  every ``s`` pixels, whose baseband is ``|fy| < 1/(2s)`` and ``|fx| < 1/(2s)``. The aliasing share
  of a pixel-space projection is the share of its DFT energy (summed over colour channels) at
  frequencies outside that square, ``max(|fy|, |fx|) > 1/(2s)``. Stride 1 gives 0 by definition.
"""

import numpy as np

from zfkeras.display import to_display
from zfkeras.validation import positive_int

BAND_EDGES = (1.0 / 6.0, 1.0 / 3.0)
BAND_NAMES = ("low", "mid", "high")


def band_shares(kernel, size=64, edges=BAND_EDGES):
    """Share of each filter's energy in the low / mid / high frequency bands.

    Args:
        kernel: conv kernel ``[kh, kw, in_channels, filters]`` (Keras layout).
        size: DTFT sampling grid (>= kh, kw); finer grids approximate the continuous bands better.
        edges: the two band edges in cycles per pixel.

    Returns:
        float64 ``[filters, 3]`` shares (rows sum to 1; NaN rows for all-zero filters).
    """
    kernel = np.asarray(kernel, "float64")
    if kernel.ndim != 4:
        raise ValueError(f"kernel must be [kh, kw, in_channels, filters], got shape {kernel.shape}")
    if size < max(kernel.shape[:2]):
        raise ValueError(f"size must be >= the kernel size {kernel.shape[:2]}, got {size}")
    spectrum = np.abs(np.fft.fft2(kernel, s=(size, size), axes=(0, 1))) ** 2
    energy = spectrum.sum(axis=2)  # [size, size, filters]
    frequency = np.fft.fftfreq(size)
    radius = np.hypot(frequency[:, None], frequency[None, :])
    band = np.digitize(radius, edges)  # 0 low, 1 mid, 2 high
    per_band = np.stack([energy[band == b].sum(axis=0) for b in range(3)], axis=1)
    total = per_band.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, per_band / np.where(total > 0, total, 1), np.nan)


def dead_filters(mean_activation, threshold=0.01):
    """Boolean ``[filters]``: mean activation <= ``threshold`` x the median (see module docstring).

    Args:
        mean_activation: ``[filters]`` mean rectified activation of each filter over a data set
            (e.g. :attr:`ActivationMean.mean`).
    """
    mean_activation = np.asarray(mean_activation, "float64")
    if mean_activation.ndim != 1 or not len(mean_activation):
        raise ValueError(f"mean_activation must be a non-empty [filters] vector, got shape {mean_activation.shape}")
    return mean_activation <= threshold * np.median(mean_activation)


class ActivationMean:
    """Running mean of each map of one layer over images and positions (streaming, ``[K]`` memory)."""

    def __init__(self):
        self.total = None
        self.count = 0

    def update(self, acts):
        """Add a batch of activations ``[B, h, w, K]``."""
        acts = np.asarray(acts, "float64")
        if acts.ndim != 4:
            raise ValueError(f"activations must be [B, h, w, K], got shape {acts.shape}")
        sums = acts.sum(axis=(0, 1, 2))
        self.total = sums if self.total is None else self.total + sums
        self.count += acts.shape[0] * acts.shape[1] * acts.shape[2]

    @property
    def mean(self):
        """``[K]`` mean activation per map."""
        if not self.count:
            raise ValueError("no activations were added")
        return self.total / self.count


def aliasing_share(projections, stride):
    """Share of each projection's energy outside the stride-``stride`` baseband.

    Args:
        projections: ``[N, H, W, C]`` pixel-space projections (e.g. of layer-2 activations).
        stride: the first layer's stride ``s``; the baseband is ``max(|fy|, |fx|) <= 1/(2s)``.

    Returns:
        float64 ``[N]`` shares in [0, 1] (NaN for an all-zero projection).
    """
    projections = np.asarray(projections, "float64")
    if projections.ndim != 4:
        raise ValueError(f"projections must be [N, H, W, C], got shape {projections.shape}")
    positive_int("stride", stride)
    energy = (np.abs(np.fft.fft2(projections, axes=(1, 2))) ** 2).sum(axis=-1)
    fy = np.abs(np.fft.fftfreq(projections.shape[1]))
    fx = np.abs(np.fft.fftfreq(projections.shape[2]))
    outside = np.maximum(fy[:, None], fx[None, :]) > 1.0 / (2 * stride)
    total = energy.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, energy[:, outside].sum(axis=1) / np.where(total > 0, total, 1), np.nan)


def display_tiles(tiles, percentile=99.5):
    """Signed tiles ``[N, h, w, C]`` (projections, filters) to [0, 1] with :func:`zfkeras.display.to_display`
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
