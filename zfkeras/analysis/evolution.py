"""Feature evolution during training (paper Sec. 4, Fig. 4).

For chosen maps, the strongest activation across a data set is found for each kept epoch's
model and projected to pixels; :func:`stable_epoch` says from which epoch on the image holding that
strongest activation no longer changes (the paper: lower layers converge within a few epochs), and
:func:`layer_stability` applies it to every map of a layer and to the layer as a whole.
:class:`zfkeras.training.callbacks.ProjectionLogger` logs such projections to TensorBoard while a model trains.
"""

import dataclasses

import numpy as np

from zfkeras.analysis.top_activations import project_topk, scan
from zfkeras.nn.fields import receptive_fields
from zfkeras.nn.probe import KerasProbe


def strongest(probe, batches, maps, first_image=0):
    """The strongest activation of each chosen map across ``batches`` for one model.

    Args:
        probe: a :class:`~zfkeras.nn.probe.Probe`.
        batches: iterable of raw-pixel batches ``[B, H, W, C]`` (or ``(images, labels)``).
        maps: ``{layer: channel indices}``.

    Returns:
        A :class:`~zfkeras.analysis.top_activations.TopK` with ``k=1`` (ties go to the lowest image index, then the
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
        tops: one k=1 :class:`~zfkeras.analysis.top_activations.TopK` per epoch (e.g. :func:`strongest`), all scanned
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


def follow_maps(model, checkpoints, batches, maps, batch_size=64, scan_batches=None, on_checkpoint=None, rule="deconvnet"):
    """Fig. 4's data: at each checkpoint, the strongest activation of each chosen map across the
    data set, projected to pixels.

    Each checkpoint's weights are loaded in turn into ``model``, so its traced forward and deconvnet
    functions serve every epoch (a new model per checkpoint would trace them all again); ``model``'s
    own weights are put back at the end.

    Args:
        model: a Keras model of the checkpoints' architecture.
        checkpoints: iterable of ``(epoch, Keras model)`` (e.g. loaded one at a time).
        batches: re-iterable raw-pixel batches (:class:`zfkeras.data.ImageBatches`).
        maps: ``{layer: channel indices}``.
        scan_batches: ``(index, epoch, batches) -> iterable`` wrapping each scan (progress), or None.
        on_checkpoint: called with the index of each checkpoint done, while its weights are still
            in ``model`` (e.g. to compute more of that epoch), or None.
        rule: the backward rule of the projections (:meth:`zfkeras.nn.probe.Probe.project`).

    Returns:
        ``(epochs, tops, tiles)``: the epochs, one k=1 :class:`~zfkeras.analysis.top_activations.TopK`
        per checkpoint, and ``{layer: float32 [maps, epochs, fh, fw, C]}`` projections cropped to the
        receptive field (NaN outside the image).

    Raises:
        ValueError naming the epoch of a checkpoint of another architecture.
    """
    probe = KerasProbe(model)
    fields = receptive_fields(model)
    final = model.get_weights()
    epochs, tops, tiles = [], [], {layer: [] for layer in maps}
    try:
        for index, (epoch, checkpoint) in enumerate(checkpoints):
            try:
                if receptive_fields(checkpoint) != fields:
                    raise ValueError
                model.set_weights(checkpoint.get_weights())
            except ValueError:
                raise ValueError(f"the checkpoint of epoch {epoch} has a different architecture; all checkpoints must come from one run") from None
            scanned = scan_batches(index, epoch, batches) if scan_batches is not None else batches
            top = strongest(probe, scanned, maps)
            crops = project_topk(probe, top, batches, fields, batch_size=batch_size, rule=rule)
            for layer in maps:
                tiles[layer].append(crops[layer]["projections"][:, 0])
            epochs.append(epoch)
            tops.append(top)
            if on_checkpoint is not None:
                on_checkpoint(index)
    finally:
        model.set_weights(final)
    return epochs, tops, {layer: np.stack(stack, axis=1) for layer, stack in tiles.items()}


def peak_activations(probe, images, layers, batch_size=64):
    """``{layer: float32 [N, K]}``: each unit's strongest activation (spatial max of its map) in each image."""
    features = probe.features(images, layers, batch_size=batch_size)
    return {layer: value.reshape(len(value), -1, value.shape[-1]).max(axis=1) for layer, value in features.items()}


def correlations_with_last(responses):
    """Fig. 4 as a number that survives near-ties: how alike each unit's responses are at each
    checkpoint and at the last one.

    For every unit, its peak activation on each image of a fixed set (:func:`peak_activations`) is
    a response vector; the Pearson correlation of the vector at checkpoint ``t`` with the vector at
    the last checkpoint says how settled the unit is (1: it ranks and scales the images as it will
    at the end). Unlike the top-1 image (:func:`stable_epoch`), it does not flip between images
    whose activations nearly tie. A unit silent on every image at either checkpoint has no
    correlation (NaN).

    Args:
        responses: one ``{layer: [N, units]}`` per checkpoint, in epoch order (e.g. computed by
            :func:`follow_maps`'s ``on_checkpoint`` while each checkpoint's weights are loaded).

    Returns:
        ``{layer: float64 [checkpoints, units]}``.
    """
    correlations = {}
    for layer in responses[-1]:
        last = responses[-1][layer] - responses[-1][layer].mean(axis=0)
        rows = []
        for response in responses:
            now = response[layer] - response[layer].mean(axis=0)
            norms = np.sqrt((now**2).sum(axis=0) * (last**2).sum(axis=0))
            with np.errstate(invalid="ignore", divide="ignore"):
                rows.append(np.where(norms > 0, (now * last).sum(axis=0) / np.where(norms > 0, norms, 1), np.nan))
        correlations[layer] = np.stack(rows)
    return correlations


def settle_epoch(epochs, curve, threshold=0.9):
    """The first epoch from which ``curve`` (one value per epoch) stays at or above ``threshold``
    through the last epoch; None if it never does (NaN counts as below)."""
    above = np.asarray(curve, np.float64) >= threshold
    if not above[-1]:
        return None
    first = len(above) - int(np.argmin(above[::-1])) if not above.all() else 0
    return int(epochs[first])
