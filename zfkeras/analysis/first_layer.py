"""The first layer's diagnostics of Sec. 4.1 / Fig. 6: dead filters, filter spectra and aliasing.

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

The Sec. 4.1 / Fig. 6 numbers of one model's first layer: dead filters, filter spectra, and the
aliasing of second-layer projections (definitions above).

:func:`first_layer_report` scans a data set once for the first layer's mean activations and the
second layer's strongest activation per chosen map, then projects each such activation to pixels
with the deconvnet and measures the share of its energy above the first layer's Nyquist limit.
``zf filters`` and ``zf ablate`` both report it.
"""

import dataclasses

import numpy as np

from zfkeras.analysis.top_activations import TopK, gather_images
from zfkeras.io.validation import positive_int
from zfkeras.nn.fields import crop, receptive_fields

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


@dataclasses.dataclass
class FirstLayerReport:
    """Diagnostics of a model's first two conv layers.

    Attributes:
        first, second: names of the first and second conv layers.
        kernel: the first layer's kernel ``[kh, kw, in_channels, filters]``.
        stride: the first layer's stride in input pixels.
        images: number of images scanned.
        mean_activation: ``[filters]`` mean rectified activation of each first-layer filter.
        dead: ``[filters]`` bool, :func:`zfkeras.dead_filters` at ``threshold``.
        threshold: the dead-filter threshold (fraction of the median mean activation).
        band_shares: ``[filters, 3]`` low/mid/high energy shares (:func:`~zfkeras.band_shares`).
        maps: second-layer channels projected.
        aliasing: ``[maps]`` aliasing share of each map's top-1 projection.
        silent: ``[maps]`` bool, True where the map never fired (its aliasing is not counted).
        crops: ``[maps, h, w, C]`` the projections cut to the second layer's receptive field (NaN
            outside the image), for figures.
    """

    first: str
    second: str
    kernel: np.ndarray
    stride: int
    images: int
    mean_activation: np.ndarray
    dead: np.ndarray
    threshold: float
    band_shares: np.ndarray
    maps: list
    aliasing: np.ndarray
    silent: np.ndarray
    crops: np.ndarray

    @property
    def dead_fraction(self):
        """Fraction of first-layer filters that are dead."""
        return float(self.dead.mean())

    @property
    def aliasing_share(self):
        """Mean aliasing share over the maps that fired, or None if none did."""
        if self.silent.all():
            return None
        return float(np.nanmean(np.where(self.silent, np.nan, self.aliasing)))

    def to_dict(self):
        """JSON-able ``{"images", "first_layer": {...}, "second_layer": {...}}`` (the layout of ``zf filters``'s filters.json)."""
        return {
            "images": self.images,
            "first_layer": {
                "name": self.first,
                "kernel": list(self.kernel.shape[:2]),
                "stride": self.stride,
                "filters": int(self.kernel.shape[-1]),
                "dead_fraction": self.dead_fraction,
                "dead_filters": np.nonzero(self.dead)[0].tolist(),
                "dead_threshold": self.threshold,
                "mean_activation_median": float(np.median(self.mean_activation)),
                "band_shares": dict(zip(BAND_NAMES, np.nanmean(self.band_shares, axis=0).round(4).tolist())),
                "band_edges_cycles_per_pixel": [round(e, 4) for e in BAND_EDGES],
            },
            "second_layer": {
                "name": self.second,
                "maps": list(self.maps),
                "nyquist_cycles_per_pixel": 1 / (2 * self.stride),
                "aliasing_share": self.aliasing_share,
                "aliasing_per_map": {str(c): (None if s else round(float(a), 4)) for c, a, s in zip(self.maps, self.aliasing, self.silent)},
                "silent_maps": [int(c) for c, s in zip(self.maps, self.silent) if s],
            },
        }


def first_layer_report(probe, model, batches, maps=None, threshold=0.01, batch_size=64, on_batch=None, rule="deconvnet"):
    """Dead filters, band shares and aliasing of ``model``'s first layer (Sec. 4.1, Fig. 6).

    Args:
        probe: a :class:`zfkeras.nn.probe.Probe` of the model (features and deconvnet projections).
        model: the Keras model itself (first-layer kernel and receptive fields).
        batches: a re-iterable of image batches ``[B, S, S, C]`` (raw pixels, the probe's input
            shape), read twice in the same order: once to scan, once to fetch the top images.
        maps: second-layer channels to project (default: all).
        threshold: dead filter = mean activation <= ``threshold`` x the median filter's.
        batch_size: projections per deconvnet call.
        on_batch: called with the batch size after each scanned batch (progress bars).
        rule: the backward rule of the second-layer projections (:meth:`zfkeras.nn.probe.Probe.project`).

    Returns:
        a :class:`FirstLayerReport`.
    """
    if len(probe.layer_names) < 2:
        raise ValueError(f"model {model.name!r} needs two conv layers for first-layer diagnostics, has {', '.join(probe.layer_names)}")
    first, second = probe.layer_names[:2]
    kernel = np.asarray(model.get_layer(first).kernel)
    if kernel.shape[2] not in (1, 3):
        raise ValueError(f"{first} has {kernel.shape[2]} input channels; filters can be drawn for 1 (grey) or 3 (RGB)")
    fields = receptive_fields(model)
    stride = int(fields[first].jump[0])
    if maps is None:
        count = probe.features(np.zeros((1, *probe.input_shape), "float32"), layers=[second])[second].shape[-1]
        maps = list(range(count))
    maps = [int(c) for c in maps]
    means = ActivationMean()
    top = TopK({second: maps}, k=1)
    index = 0
    for batch in batches:
        features = probe.features(batch, layers=[first, second], batch_size=len(batch))
        means.update(features[first])
        top.update(features, index)
        index += len(batch)
        if on_batch is not None:
            on_batch(len(batch))
    if not index:
        raise ValueError("no images to scan for first-layer diagnostics")
    entries = top.entries(second)
    images, ys, xs = entries["image"][:, 0], entries["y"][:, 0], entries["x"][:, 0]
    found = gather_images(batches, images)
    projections = probe.project(
        np.stack([found[i] for i in images]), second, maps, np.stack([ys, xs], 1).astype("int32"), batch_size=batch_size, rule=rule
    )
    crops = np.stack([crop(p, fields[second], y, x, fill=np.nan) for p, y, x in zip(projections, ys, xs)])
    return FirstLayerReport(
        first=first,
        second=second,
        kernel=kernel,
        stride=stride,
        images=top.images_seen,
        mean_activation=means.mean,
        dead=dead_filters(means.mean, threshold),
        threshold=threshold,
        band_shares=band_shares(kernel),
        maps=maps,
        aliasing=aliasing_share(projections, stride),
        silent=entries["value"][:, 0] <= 0,
        crops=crops,
    )
