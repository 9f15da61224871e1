"""Feature evolution during training (paper Sec. 4, Fig. 4).

For chosen maps, the strongest activation across a data set is found for each kept epoch's
model and projected to pixels; :func:`stable_epoch` says from which epoch on the image holding that
strongest activation no longer changes (the paper: lower layers converge within a few epochs), and
:func:`layer_stability` applies it to every map of a layer and to the layer as a whole.
:class:`ProjectionLogger` logs the same projections to TensorBoard while a model trains.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from zfkeras.diagnostics import display_tiles, mosaic
from zfkeras.probe import KerasProbe
from zfkeras.receptive_field import receptive_fields
from zfkeras.topk import project_topk, scan


def strongest(probe, batches, maps, first_image=0):
    """The strongest activation of each chosen map across ``batches`` for one model.

    Args:
        probe: a :class:`~zfkeras.probe.Probe`.
        batches: iterable of raw-pixel batches ``[B, H, W, C]`` (or ``(images, labels)``).
        maps: ``{layer: channel indices}``.

    Returns:
        A :class:`~zfkeras.topk.TopK` with ``k=1`` (ties go to the lowest image index, then the
        lowest (y, x)).
    """
    return scan(probe, batches, maps, k=1, first_image=first_image)


def stable_epoch(epochs, images):
    """The first epoch from which the top-1 image stays the same through the last epoch.

    Args:
        epochs: kept epochs, increasing (e.g. ``[1, 2, 5, 10, 20]``).
        images: index of the image holding the strongest activation at each of those epochs.

    Returns:
        An element of ``epochs``: e.g. ``epochs=[1, 2, 5, 10]``, ``images=[7, 3, 3, 3]`` gives 2
        (the image stops changing after epoch 2). If it changed at the last epoch, the last epoch.
    """
    epochs, images = list(epochs), list(images)
    if not epochs or len(epochs) != len(images):
        raise ValueError(f"need one image per epoch, got {len(epochs)} epochs and {len(images)} images")
    if any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise ValueError(f"epochs must increase, got {epochs}")
    first = len(images) - 1
    while first > 0 and images[first - 1] == images[-1]:
        first -= 1
    return epochs[first]


@dataclasses.dataclass
class MapStability:
    """How one map's strongest activation moved across the kept epochs.

    Attributes:
        channel: the map's channel index.
        stable_epoch: :func:`stable_epoch` of its top-1 image, a silent epoch counting as image -1.
        silent_epochs: epochs at which the map never fired (top-1 value <= 0 on every image).
        top1: per epoch ``{"epoch", "image", "y", "x", "value"}``, the strongest activation.
    """

    channel: int
    stable_epoch: int
    silent_epochs: list
    top1: list

    @property
    def silent_at_end(self):
        """True if the map does not fire at the last epoch."""
        return bool(self.silent_epochs) and self.silent_epochs[-1] == self.top1[-1]["epoch"]


@dataclasses.dataclass
class LayerStability:
    """The stable epochs of one layer's chosen maps (Fig. 4).

    Attributes:
        layer: the layer name.
        epochs: the kept epochs, increasing.
        stable_epoch: the latest stable epoch over the maps that fire at the last epoch (over all
            maps if none does): from this epoch on no live map's top-1 image changes.
        maps: one :class:`MapStability` per chosen map, in the order scanned.
    """

    layer: str
    epochs: list
    stable_epoch: int
    maps: list

    def to_dict(self):
        """``{"stable_epoch", "maps": {str(channel): {"stable_epoch", "silent_epochs", "top1"}}}``
        (the per-layer layout of ``zf evolution``'s evolution.json)."""
        return {
            "stable_epoch": self.stable_epoch,
            "maps": {
                str(m.channel): {"stable_epoch": m.stable_epoch, "silent_epochs": list(m.silent_epochs), "top1": list(m.top1)} for m in self.maps
            },
        }


def layer_stability(epochs, tops, layer):
    """Stable epochs of every scanned map of ``layer`` and of the layer (see :class:`LayerStability`).

    Args:
        epochs: the kept epochs, increasing, one per element of ``tops``.
        tops: one k=1 :class:`~zfkeras.topk.TopK` per epoch (e.g. :func:`strongest`), all scanned
            with the same maps of ``layer`` over the same images.
        layer: the layer to summarise.

    Returns:
        A :class:`LayerStability`. A map that does not fire at some epoch has no strongest image
        there: that epoch counts as image -1, so waking up or falling silent is a change.
    """
    epochs = [int(e) for e in epochs]
    if len(tops) != len(epochs):
        raise ValueError(f"need one top-k result per epoch, got {len(tops)} for {len(epochs)} epochs")
    channels = [int(c) for c in tops[0].maps[layer]] if tops else []
    if not channels:
        raise ValueError(f"no epochs or no maps of {layer} to summarise")
    if any([int(c) for c in top.maps[layer]] != channels for top in tops):
        raise ValueError(f"the epochs' results track different maps of {layer}")
    entries = [top.entries(layer) for top in tops]
    maps = []
    for m, channel in enumerate(channels):
        top1 = [
            {"epoch": epoch, **{f: int(e[f][m, 0]) for f in ("image", "y", "x")}, "value": float(e["value"][m, 0])}
            for epoch, e in zip(epochs, entries)
        ]
        images = [t["image"] if t["value"] > 0 else -1 for t in top1]
        silent = [t["epoch"] for t in top1 if t["value"] <= 0]
        maps.append(MapStability(channel, stable_epoch(epochs, images), silent, top1))
    live = [m.stable_epoch for m in maps if not m.silent_at_end]
    stable = max(live or [m.stable_epoch for m in maps])
    return LayerStability(layer, epochs, stable, maps)


def strongest_projections(probe, images, maps, fields, batch_size=64):
    """Top-1 activation of each chosen map across ``images`` (an in-memory array), projected.

    Returns:
        ``(top, crops)``: the k=1 :class:`~zfkeras.topk.TopK` and ``{layer: [maps, fh, fw, C]}``
        projections cropped to the receptive field (NaN outside the image).
    """
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    top = strongest(probe, batches, maps)
    crops = project_topk(probe, top, batches, fields, batch_size=batch_size)
    return top, {layer: result["projections"][:, 0] for layer, result in crops.items()}


class ProjectionLogger(keras.callbacks.Callback):
    """Log, each epoch, the projections of a fixed set of maps to TensorBoard as images.

    For every layer, the strongest activation of each chosen map across ``images`` is projected
    with the deconvnet of the model being trained, cropped to its receptive field, contrast-enhanced
    (:func:`~zfkeras.diagnostics.to_display`) and laid out in one row; the row is written as image
    summary ``projections/<layer>`` at step ``epoch + 1`` (1-based, as checkpoint names).

    Args:
        images: float32 ``[N, H, W, C]`` raw pixels, a fixed set (e.g. some validation images).
        maps: ``{layer: channel indices}``.
        log_dir: TensorBoard directory (e.g. ``<run_dir>/logs/projections``).
        percentile: contrast: |values| above this percentile of each projection saturate.
        batch_size: images per forward / projection call.
    """

    def __init__(self, images, maps, log_dir, percentile=99.0, batch_size=64):
        super().__init__()
        self.images = np.asarray(images, "float32")
        if self.images.ndim != 4 or not len(self.images):
            raise ValueError(f"images must be a non-empty batch [N, H, W, C], got shape {self.images.shape}")
        self.maps = {layer: list(channels) for layer, channels in maps.items()}
        self.log_dir = log_dir
        self.percentile = percentile
        self.batch_size = batch_size
        self._writer = None
        self._probe = None

    def _probe_for_model(self):
        if self._probe is None or self._probe.model is not self.model:
            self._probe = KerasProbe(self.model)
            self._fields = receptive_fields(self.model)
        return self._probe

    def projection_rows(self):
        """``{layer: float32 [h, w, 3]}``: what :meth:`on_epoch_end` logs, for the current weights."""
        probe = self._probe_for_model()
        _, crops = strongest_projections(probe, self.images, self.maps, self._fields, self.batch_size)
        return {layer: mosaic(display_tiles(tiles, self.percentile), columns=len(tiles)) for layer, tiles in crops.items()}

    def on_train_begin(self, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        self.on_train_begin()
        rows = self.projection_rows()
        with self._writer.as_default():
            for layer, row in rows.items():
                tf.summary.image(f"projections/{layer}", row[None], step=epoch + 1)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
