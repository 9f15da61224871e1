"""Streaming top-k activations per feature map over a data set (paper Sec. 4, Fig. 2).

One pass over the images keeps, for every chosen layer and map, the ``k`` strongest activations
seen so far: image index, position (y, x) and value. Memory is ``maps x k`` entries whatever the
number of images, and a scan can be split into shards (disjoint image ranges, each with its global
image indices) whose results :meth:`TopK.merge` into exactly the answer of one scan.

Order: entries are ranked by value (largest first), then image index, y, x (smallest first). This
is a total order on distinct entries, so keeping the first ``k`` of a union is associative and
commutative: any sharding and any merge order give identical results, ties included.

With ``distinct_images=True`` (the default, as in Fig. 2: nine different patches) each image
contributes at most one entry per map, its strongest activation in that map (the first in
row-major order among equal values, consistent with the order above). With False every position
of every image competes.

:func:`strongest_maps` ranks the other way round: the maps of each single image by their peak.
"""

import dataclasses

import numpy as np

from zfkeras.io.validation import positive_int
from zfkeras.nn.fields import crop

ENTRY_FIELDS = ("image", "y", "x", "value")


class TopK:
    """The ``k`` strongest activations per chosen map, updated batch by batch.

    Args:
        maps: ``{layer: channel indices}``, the maps to track per layer.
        k: entries kept per map.
        distinct_images: at most one entry per image and map (see module docstring).

    Attributes:
        images_seen: number of images given to :meth:`update` (summed by :meth:`merge`).
    """

    def __init__(self, maps, k=9, distinct_images=True):
        positive_int("k", k)
        self.k = int(k)
        self.distinct_images = bool(distinct_images)
        self.maps = {}
        for layer, channels in maps.items():
            channels = np.asarray(channels)
            if (
                channels.ndim != 1
                or not np.issubdtype(channels.dtype, np.integer)
                or len(np.unique(channels)) != len(channels)
                or (channels < 0).any()
            ):
                raise ValueError(f"maps[{layer!r}] must be distinct non-negative channel indices, got {channels.tolist()}")
            self.maps[layer] = channels.astype("int64")
        self.images_seen = 0
        self._state = {layer: _empty(len(channels), self.k) for layer, channels in self.maps.items()}

    def update(self, features, first_image):
        """Fold in one batch.

        Args:
            features: ``{layer: [B, h, w, K]}`` activations of a batch (e.g. ``Probe.features``);
                must hold every tracked layer.
            first_image: global index of the batch's first image (images are numbered in data
                set order; image ``first_image + i`` is row ``i``).
        """
        batch = None
        for layer, channels in self.maps.items():
            if layer not in features:
                raise ValueError(f"features has no layer {layer!r} (has {', '.join(features)})")
            acts = np.asarray(features[layer])
            if acts.ndim != 4 or (len(channels) and channels.max() >= acts.shape[-1]):
                raise ValueError(f"features[{layer!r}] must be [B, h, w, K] with K > {int(channels.max()) if len(channels) else 0}, got {acts.shape}")
            if batch is not None and len(acts) != batch:
                raise ValueError(f"features disagree on batch size: {batch} and {len(acts)} ({layer!r})")
            batch = len(acts)
            self.offer(layer, _candidates(acts[..., channels], int(first_image), self.k, self.distinct_images))
        self.images_seen += batch or 0

    def offer(self, layer, candidates):
        """Fold candidate entries of ``layer`` into its top ``k`` (``images_seen`` is not changed).

        Args:
            candidates: ``{"image", "y", "x", "value"}``, each ``[maps, n]`` (row ``m``: map
                ``maps[layer][m]``; ``image`` -1 marks a filler). With ``distinct_images`` at most
                one entry per image and map, e.g. :func:`image_peaks`.

        Only candidates that come before a map's current ``k``-th entry in the module's order can
        enter, so the others are dropped before sorting: an exact shortcut that makes a scan's
        bookkeeping cheap once the top ``k`` have settled.
        """
        state = self._state[layer]
        candidates = {f: np.asarray(candidates[f]) for f in ENTRY_FIELDS}
        if candidates["value"].shape[0] != state["value"].shape[0]:
            raise ValueError(f"candidates for {layer!r} must have one row per map ({state['value'].shape[0]}), got {candidates['value'].shape}")
        last = {f: state[f][:, -1:] for f in ENTRY_FIELDS}
        value = candidates["value"]
        ties = value == last["value"]
        before = (candidates["image"] < last["image"]) | (
            (candidates["image"] == last["image"])
            & ((candidates["y"] < last["y"]) | ((candidates["y"] == last["y"]) & (candidates["x"] < last["x"])))
        )
        beats = (candidates["image"] >= 0) & ((last["image"] < 0) | (value > last["value"]) | (ties & before))
        rows = np.nonzero(beats.any(axis=1))[0]
        if not len(rows):
            return
        columns = np.nonzero(beats[rows].any(axis=0))[0]
        kept = {f: candidates[f][np.ix_(rows, columns)] for f in ENTRY_FIELDS}
        best = _best({f: state[f][rows] for f in ENTRY_FIELDS}, kept, self.k, self.distinct_images)
        for f in ENTRY_FIELDS:
            state[f][rows] = best[f]

    def merge(self, other):
        """A new TopK holding the top ``k`` of both (which must cover disjoint images)."""
        if (
            (other.k, other.distinct_images) != (self.k, self.distinct_images)
            or list(other.maps) != list(self.maps)
            or any(not np.array_equal(other.maps[n], self.maps[n]) for n in self.maps)
        ):
            raise ValueError("can only merge top-k results with the same k, distinct_images, layers and maps")
        merged = TopK(self.maps, self.k, self.distinct_images)
        merged.images_seen = self.images_seen + other.images_seen
        for layer in self.maps:
            mine, theirs = self._state[layer], other._state[layer]
            both = {f: np.concatenate([mine[f], theirs[f]], axis=1) for f in ENTRY_FIELDS}
            merged._state[layer] = _best(_empty(len(self.maps[layer]), self.k), both, self.k, self.distinct_images)
            _check_disjoint(merged._state[layer], layer)
        return merged

    def entries(self, layer):
        """``{field: array [maps, k]}`` for ``layer`` (``image`` -1 and ``value`` -inf mark
        empty slots when fewer than ``k`` candidates were seen)."""
        return {f: v.copy() for f, v in self._state[layer].items()}

    def to_dict(self):
        """``{layer: {map (str): [{"image", "y", "x", "value"}, ...]}}``, strongest first
        (the ``topk.json`` format; empty slots left out)."""
        result = {}
        for layer, channels in self.maps.items():
            state = self._state[layer]
            result[layer] = {
                str(int(channel)): [
                    {"image": int(state["image"][m, j]), "y": int(state["y"][m, j]), "x": int(state["x"][m, j]), "value": float(state["value"][m, j])}
                    for j in range(self.k)
                    if state["image"][m, j] >= 0
                ]
                for m, channel in enumerate(channels)
            }
        return result

    @classmethod
    def from_dict(cls, data, k, distinct_images=True, images_seen=0):
        """Rebuild from :meth:`to_dict` output (e.g. a shard's ``topk.json``) to merge it."""
        maps = {layer: [int(c) for c in per_map] for layer, per_map in data.items()}
        top = cls(maps, k, distinct_images)
        top.images_seen = int(images_seen)
        for layer, per_map in data.items():
            state = top._state[layer]
            for m, entries in enumerate(per_map.values()):
                if len(entries) > k:
                    raise ValueError(f"{layer} map {list(per_map)[m]}: {len(entries)} entries but k={k}")
                for j, entry in enumerate(entries):
                    for field in ENTRY_FIELDS:
                        state[field][m, j] = entry[field]
            top._state[layer] = _best(_empty(len(maps[layer]), k), state, k, distinct_images)
        return top

    @classmethod
    def from_entries(cls, maps, k, entries, distinct_images=True, images_seen=0):
        """Rebuild from :meth:`entries` arrays ``{layer: {field: [maps, k]}}`` (e.g. read back from
        a saved shard), checked to be in the module's order."""
        top = cls(maps, k, distinct_images)
        top.images_seen = int(images_seen)
        for layer, channels in top.maps.items():
            given = entries.get(layer)
            if given is None or any(np.shape(given.get(f)) != (len(channels), top.k) for f in ENTRY_FIELDS):
                raise ValueError(f"entries of {layer!r} must hold {', '.join(ENTRY_FIELDS)}, each [{len(channels)}, {top.k}]")
            state = {f: np.array(given[f], dtype=top._state[layer][f].dtype) for f in ENTRY_FIELDS}
            ordered = _best(_empty(len(channels), top.k), state, top.k, distinct_images)
            if any(not np.array_equal(ordered[f], state[f]) for f in ENTRY_FIELDS):
                raise ValueError(f"entries of {layer!r} are not a top-{top.k} in order (strongest first, one entry per slot)")
            top._state[layer] = state
        return top

    def first(self, k):
        """A new TopK of the first ``k`` entries of each map (``k`` <= this one's): the exact top ``k``,
        since the order is total (the top-9 of Fig. 2 from a top-100)."""
        positive_int("k", k)
        if k > self.k:
            raise ValueError(f"k must be at most {self.k}, got {k}")
        top = TopK(self.maps, k, self.distinct_images)
        top.images_seen = self.images_seen
        top._state = {layer: {f: v[:, :k].copy() for f, v in state.items()} for layer, state in self._state.items()}
        return top


def scan(probe, batches, maps, k=9, first_image=0, distinct_images=True):
    """Top-k activations over ``batches`` in one streaming pass.

    Args:
        probe: a :class:`zfkeras.nn.probe.Probe`.
        batches: iterable of float32 raw-pixel batches ``[B, H, W, C]`` or ``(images, labels)``
            pairs, in data set order (wrap it in a progress bar to show progress).
        maps: ``{layer: channel indices}``.
        k, distinct_images: see :class:`TopK`.
        first_image: global index of the first image (for a shard of a larger data set).

    Returns:
        A :class:`TopK`.
    """
    top = TopK(maps, k, distinct_images)
    index = int(first_image)
    layers = list(top.maps)
    for batch in batches:
        images = np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch)
        top.update(probe.features(images, layers=layers, batch_size=max(len(images), 1)), index)
        index += len(images)
    return top


def image_peaks(activations, first_image):
    """Each map's strongest activation in each image, as :meth:`TopK.offer` candidates.

    Args:
        activations: ``[B, h, w, M]`` one layer's maps for a batch.
        first_image: global index of the batch's first image.

    Returns:
        ``{"image", "y", "x", "value"}``, each ``[M, B]``: the peak of map ``m`` in image ``b`` and
        where it is (the first in row-major order among equal values).
    """
    activations = np.asarray(activations)
    if activations.ndim != 4:
        raise ValueError(f"activations must be [B, h, w, M], got shape {activations.shape}")
    return _candidates(activations, int(first_image), 1, True)


def gather_images(batches, indices, first_image=0):
    """``{index: image}`` for the wanted global image indices, in one streaming pass.

    ``batches`` as in :func:`scan` (the same data in the same order); reading stops after the
    largest wanted index. Raises ValueError if some index is past the end of the data.
    """
    wanted = {int(i) for i in indices}
    found = {}
    index = int(first_image)
    if not wanted:
        return found
    last = max(wanted)
    for batch in batches:
        images = np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch)
        for offset in range(len(images)):
            if index + offset in wanted:
                found[index + offset] = images[offset].copy()
        index += len(images)
        if index > last:
            break
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"images {missing[:5]} not found: the data holds images {first_image}..{index - 1}")
    return found


def project_topk(probe, top, batches, fields, layers=None, first_image=0, batch_size=64, progress=None, rule="deconvnet"):
    """Projection of every kept activation (deconvnet, or backward ``rule``), cropped to its receptive field, with its patch.

    Streams ``batches`` (the scanned data, same order) once more and projects entries as their
    images arrive, ``batch_size`` projections per deconvnet call, so only the crops are kept.

    Args:
        probe: the :class:`~zfkeras.nn.probe.Probe` that was scanned.
        top: a :class:`TopK`.
        batches: as in :func:`scan`.
        fields: ``{layer: Field}`` from :func:`zfkeras.nn.fields.receptive_fields`.
        layers: the layers of ``top`` to project (default all; fewer layers, less memory).
        first_image: global index of the first image of ``batches``.
        progress: optional callable, given the number of projections finished after each call.
        rule: the backward rule of the projections (:meth:`zfkeras.nn.probe.Probe.project`).

    Returns:
        ``{layer: {"projections": float32 [maps, k, fh, fw, C], "patches": float32 [maps, k, fh, fw, C]}}``
        with ``(fh, fw)`` the layer's field size: projections in the model's input space and raw
        pixel patches, NaN where the field reaches past the image and in empty slots.
    """
    channels = probe.input_shape[-1]
    layers = list(top.maps) if layers is None else list(layers)
    results, wanted = {}, {}
    for layer in layers:
        if layer not in top.maps:
            raise ValueError(f"layer {layer!r} was not scanned (scanned: {', '.join(top.maps)})")
        if layer not in fields:
            raise ValueError(f"no receptive field for layer {layer!r}")
        shape = (len(top.maps[layer]), top.k, *fields[layer].size, channels)
        results[layer] = {"projections": np.full(shape, np.nan, "float32"), "patches": np.full(shape, np.nan, "float32")}
        entries = top.entries(layer)
        for m, j in zip(*np.nonzero(entries["image"] >= 0)):
            wanted.setdefault(int(entries["image"][m, j]), []).append((layer, m, j, int(entries["y"][m, j]), int(entries["x"][m, j])))
    pending = {layer: [] for layer in layers}

    def flush(layer):
        requests, pending[layer] = pending[layer], []
        if not requests:
            return
        images = np.stack([image for image, *_ in requests])
        channel = top.maps[layer][[m for _, m, *_ in requests]]
        position = np.array([(y, x) for *_, y, x in requests], "int32")
        projected = probe.project(images, layer, channel, position, batch_size=batch_size, rule=rule)
        field = fields[layer]
        for (image, m, j, y, x), projection in zip(requests, projected):
            results[layer]["projections"][m, j] = crop(projection, field, y, x, fill=np.nan)
            results[layer]["patches"][m, j] = crop(image, field, y, x, fill=np.nan)
        if progress is not None:
            progress(len(requests))

    index = int(first_image)
    last = max(wanted, default=-1)
    for batch in batches:
        if index > last:
            break
        images = np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch, "float32")
        for offset in range(len(images)):
            for layer, m, j, y, x in wanted.pop(index + offset, ()):
                pending[layer].append((images[offset], m, j, y, x))
                if len(pending[layer]) >= batch_size:
                    flush(layer)
        index += len(images)
    for layer in pending:
        flush(layer)
    if wanted:
        raise ValueError(f"images {sorted(wanted)[:5]} not found in the data (it holds images {first_image}..{index - 1})")
    return results


@dataclasses.dataclass
class StrongestMaps:
    """The maps of each image with the largest single activation, strongest first.

    Attributes:
        channels: int64 ``[N, count]`` channel indices (ties: the lower channel first).
        peaks: float32 ``[N, count]`` each chosen map's largest activation in that image.
    """

    channels: np.ndarray
    peaks: np.ndarray


def strongest_maps(activations, count):
    """The ``count`` maps of each image whose largest activation is largest (``zf project``).

    Args:
        activations: ``[N, h, w, K]`` one layer's maps for N images.
        count: maps kept per image, 1 <= count <= K.

    Returns:
        A :class:`StrongestMaps`.
    """
    activations = np.asarray(activations)
    if activations.ndim != 4:
        raise ValueError(f"activations must be [N, h, w, K], got shape {activations.shape}")
    maps = activations.shape[-1]
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or not 1 <= count <= maps:
        raise ValueError(f"count must be an int in [1, {maps}] (the layer's maps), got {count!r}")
    peaks = activations.max(axis=(1, 2))
    channels = np.argsort(-peaks, axis=1, kind="stable")[:, :count]
    return StrongestMaps(channels.astype("int64"), np.take_along_axis(peaks, channels, axis=1).astype("float32"))


def _empty(maps, k):
    return {
        "image": np.full((maps, k), -1, "int64"),
        "y": np.zeros((maps, k), "int64"),
        "x": np.zeros((maps, k), "int64"),
        "value": np.full((maps, k), -np.inf, "float32"),
    }


def _candidates(acts, first_image, k, distinct_images):
    """``{field: [maps, n]}``: the entries of one batch ``acts [B, h, w, M]`` that can enter a top k."""
    batch, height, width, maps = acts.shape
    flat = acts.reshape(batch, height * width, maps)
    if distinct_images:
        where = np.argmax(flat, axis=1)  # first maximum in row-major order: the smallest (y, x)
        value = np.take_along_axis(flat, where[:, None, :], axis=1)[:, 0, :].T
        image = np.broadcast_to(np.arange(batch)[None, :] + first_image, (maps, batch))
        y, x = np.divmod(where.T, width)
        return {"image": image, "y": y, "x": x, "value": value}
    values = flat.transpose(2, 0, 1).reshape(maps, -1)  # [M, B * h * w] in (image, y, x) order
    if values.shape[1] > k:
        # everything >= the k-th largest value, so all entries tied with it stay candidates
        kth = np.partition(values, values.shape[1] - k, axis=1)[:, values.shape[1] - k]
        keep = values >= kth[:, None]
        counts = keep.sum(axis=1)
        rows = np.repeat(np.arange(maps), counts)
        cols = np.nonzero(keep)[1]
        width_c = counts.max()
        slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        index = np.zeros((maps, width_c), "int64")
        index[rows, slot] = cols
        value = np.full((maps, width_c), -np.inf, "float32")
        value[rows, slot] = values[rows, cols]
        filler = np.arange(width_c)[None, :] >= counts[:, None]
    else:
        index = np.broadcast_to(np.arange(values.shape[1]), values.shape)
        value = values
        filler = np.zeros(values.shape, bool)
    image, rest = np.divmod(index, height * width)
    y, x = np.divmod(rest, width)
    return {"image": np.where(filler, -1, image + first_image), "y": y, "x": x, "value": value}


def _best(state, candidates, k, distinct=False):
    """The first ``k`` of ``state`` and ``candidates`` together, in the module's order.

    ``distinct``: no two entries of a row share an image (distinct_images), so (value, image)
    decides the order alone and one sort of a combined key replaces the five-key lexsort."""
    both = {f: np.concatenate([np.asarray(state[f]), np.asarray(candidates[f])], axis=1) for f in ENTRY_FIELDS}
    value = both["value"].astype("float32") + np.float32(0)  # -0.0 -> 0.0: equal values, equal keys
    # empty slots (image -1) go last whatever their value
    empty = both["image"] < 0
    if distinct and both["image"].max(initial=0) < 2**32:
        bits = value.view(np.uint32)
        ascending = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))  # float order as unsigned ints
        key = ((~ascending).astype(np.uint64) << np.uint64(32)) | np.maximum(both["image"], 0).astype(np.uint64)
        order = np.argsort(np.where(empty, np.uint64(2**64 - 1), key), axis=1, kind="stable")[:, :k]
    else:  # lexsort's last key is the primary one
        order = np.lexsort((both["x"], both["y"], both["image"], -value, empty), axis=1)[:, :k]
    return {f: np.take_along_axis(both[f], order, axis=1).astype(state[f].dtype) for f in ENTRY_FIELDS}


def _check_disjoint(state, layer):
    for m in range(state["image"].shape[0]):
        used = state["image"][m] >= 0
        keys = set(zip(state["image"][m][used].tolist(), state["y"][m][used].tolist(), state["x"][m][used].tolist()))
        if len(keys) != int(used.sum()):
            raise ValueError(f"merged top-k results share entries ({layer}, map row {m}): shards must cover disjoint images")


def energy_extent(projections, fraction=0.9):
    """How spread out projections are: the number of pixels holding ``fraction`` of each one's energy.

    The energy of a pixel is the sum over channels of its squared value; pixels are taken from the
    most energetic down until their energy reaches ``fraction`` of the total. NaN (outside the image)
    counts as 0. A Fig. 2 hierarchy in one number: higher layers' top activations should be made of
    larger structures, so their projections should spread over more pixels.

    Args:
        projections: ``[..., H, W, C]`` (e.g. :func:`project_topk`'s ``[maps, k, fh, fw, C]``).
        fraction: in (0, 1].

    Returns:
        int ``[...]``: pixels per projection; 0 for an all-zero one.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    values = np.nan_to_num(np.asarray(projections, np.float64))
    energy = (values**2).sum(axis=-1).reshape(values.shape[:-3] + (-1,))
    ordered = -np.sort(-energy, axis=-1)
    cumulative = np.cumsum(ordered, axis=-1)
    total = cumulative[..., -1:]
    needed = (cumulative < fraction * total - 1e-12 * total).sum(axis=-1) + 1
    return np.where(total[..., 0] > 0, needed, 0).astype(np.int64)
