"""The Sec. 4.1 / Fig. 6 numbers of one model's first layer: dead filters, filter spectra, and the
aliasing of second-layer projections (definitions in :mod:`zfkeras.diagnostics`).

:func:`first_layer_report` scans a data set once for the first layer's mean activations and the
second layer's strongest activation per chosen map, then projects each such activation to pixels
with the deconvnet and measures the share of its energy above the first layer's Nyquist limit.
``zf filters`` and ``zf ablate`` both report it.
"""

import dataclasses

import numpy as np

from zfkeras import diagnostics
from zfkeras.receptive_field import crop, receptive_fields
from zfkeras.topk import TopK, gather_images


@dataclasses.dataclass
class FirstLayerReport:
    """Diagnostics of a model's first two conv layers.

    Attributes:
        first, second: names of the first and second conv layers.
        kernel: the first layer's kernel ``[kh, kw, in_channels, filters]``.
        stride: the first layer's stride in input pixels.
        images: number of images scanned.
        mean_activation: ``[filters]`` mean rectified activation of each first-layer filter.
        dead: ``[filters]`` bool, :func:`zfkeras.diagnostics.dead_filters` at ``threshold``.
        threshold: the dead-filter threshold (fraction of the median mean activation).
        band_shares: ``[filters, 3]`` low/mid/high energy shares (:func:`~zfkeras.diagnostics.band_shares`).
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
                "band_shares": dict(zip(diagnostics.BAND_NAMES, np.nanmean(self.band_shares, axis=0).round(4).tolist())),
                "band_edges_cycles_per_pixel": [round(e, 4) for e in diagnostics.BAND_EDGES],
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


def first_layer_report(probe, model, batches, maps=None, threshold=0.01, batch_size=64, on_batch=None):
    """Dead filters, band shares and aliasing of ``model``'s first layer (Sec. 4.1, Fig. 6).

    Args:
        probe: a :class:`zfkeras.probe.Probe` of the model (features and deconvnet projections).
        model: the Keras model itself (first-layer kernel and receptive fields).
        batches: a re-iterable of image batches ``[B, S, S, C]`` (raw pixels, the probe's input
            shape), read twice in the same order: once to scan, once to fetch the top images.
        maps: second-layer channels to project (default: all).
        threshold: dead filter = mean activation <= ``threshold`` x the median filter's.
        batch_size: projections per deconvnet call.
        on_batch: called with the batch size after each scanned batch (progress bars).

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
    means = diagnostics.ActivationMean()
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
    projections = probe.project(np.stack([found[i] for i in images]), second, maps, np.stack([ys, xs], 1).astype("int32"), batch_size=batch_size)
    crops = np.stack([crop(p, fields[second], y, x, fill=np.nan) for p, y, x in zip(projections, ys, xs)])
    return FirstLayerReport(
        first=first,
        second=second,
        kernel=kernel,
        stride=stride,
        images=top.images_seen,
        mean_activation=means.mean,
        dead=diagnostics.dead_filters(means.mean, threshold),
        threshold=threshold,
        band_shares=diagnostics.band_shares(kernel),
        maps=maps,
        aliasing=diagnostics.aliasing_share(projections, stride),
        silent=entries["value"][:, 0] <= 0,
        crops=crops,
    )
