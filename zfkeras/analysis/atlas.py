"""Every unit of every layer over a data set, in one streaming pass: the atlas (``zf atlas``).

A *unit* is one feature map (channel) of a projectable layer. :class:`AtlasScan` reads the data once
and keeps, for every chosen unit, in memory bounded by units x :data:`TOP` (never by the number of
images):

- its top :data:`TOP` activations, at most one per image (:class:`~zfkeras.analysis.top_activations.TopK`,
  the Fig. 2 rule: each image's strongest position); the first :data:`SHOWN` are Fig. 2's top-9;
- ``fires``: the number of images in which it is positive anywhere (its *peak*, the largest value
  of its map in that image, is > 0); a unit with ``fires == 0`` is **dead** (never fires on the data);
- ``histogram``: counts of the per-image peaks in fixed bins (:data:`HISTOGRAM_EDGES`, the same for
  every unit, layer and model, so histograms of any shards add up): bin 0 counts peaks <= 0, bin 1
  peaks in (0, 2^-10), bins 2..101 the log grid of 4 bins per octave from 2^-10 to 2^15, bin 102
  peaks >= 2^15;
- ``mean``: its mean activation over all positions of all images;
- per class ``c``: the mean over the images of class ``c`` of the unit's per-image mean activation
  (its *class means*), from which the **class-selectivity index** (Morcos et al. 2018) is
  ``(mu_max - mu_rest) / (mu_max + mu_rest)``: ``mu_max`` the largest class mean, ``mu_rest`` the
  mean of the other classes' means (classes with images only); 0 for a dead unit, None with fewer than
  two classes. 1 means it responds to one class only, 0 to all alike;
- the labels of the images of its top :data:`TOP`, for its **class distribution** (the classes of
  the top-100 images in which it fires).

**Near-duplicate units.** Two live units ``a != b`` of one layer are near-duplicates when their top
activations are correlated: let ``v_a`` be the vector over the N scanned images holding ``a``'s
peak on each image of its top :data:`TOP` list where that peak is > 0, and 0 on every other image;
their correlation is the Pearson correlation of ``v_a`` and ``v_b`` over the N images, and they are
near-duplicates when it is >= ``duplicate_threshold`` (0.9 by default). With N <= 100 it is the plain
correlation of their per-image peaks; with more images it compares where and how strongly each unit
fires most, which is what their top-9 pictures show. It is computed from the kept entries alone.

**Merging.** A scan can be split into shards (disjoint image ranges with their global indices) whose
:meth:`AtlasScan.merge` gives exactly the result of one scan: the top lists, counts and histograms are
exact in any merge order; the float sums (means) are kept per part (each shard's image range) and
added in image order (:func:`fold_parts` adds the run of parts from image 0 as it forms, so a scan
merged shard by shard keeps one), so any split of the same shards, merged in any order, gives the
same bits.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from zfkeras.analysis.top_activations import ENTRY_FIELDS, TopK, project_topk
from zfkeras.io.validation import positive_int

TOP = 100
SHOWN = 9
HISTOGRAM_EDGES = 2.0 ** (np.arange(-40, 61) / 4)
HISTOGRAM_BINS = len(HISTOGRAM_EDGES) + 2


def unit_reducer(probe, maps):
    """A ``tf.function(images) -> {layer: (peak, y, x, mean)}``, each ``[B, M]`` for the ``M``
    chosen channels of ``maps`` ``{layer: channels}``: each map's peak in each image, where it is
    (the first in row-major order among equal values) and the map's mean. Runs the probe's
    :meth:`~zfkeras.nn.probe.Probe.feature_tensors` and the reductions in one graph, so only
    ``[B, M]`` arrays leave TensorFlow."""
    layers = list(maps)
    chosen = {layer: np.asarray(maps[layer], "int32") for layer in layers}

    def reduce(images):
        features = probe.feature_tensors(images, layers)
        result = {}
        for layer in layers:
            acts = features[layer]
            if not np.array_equal(chosen[layer], np.arange(acts.shape[-1])):
                acts = tf.gather(acts, chosen[layer], axis=-1)
            shape = tf.shape(acts)
            width, cells = shape[2], shape[1] * shape[2]
            flat = tf.reshape(acts, [shape[0], cells, shape[3]])
            peak = tf.reduce_max(flat, axis=1)
            index = tf.range(cells)[None, :, None]
            where = tf.reduce_min(tf.where(flat == peak[:, None, :], index, cells), axis=1)
            result[layer] = (peak, where // width, where % width, tf.reduce_mean(flat, axis=1))
        return result

    return tf.function(reduce, reduce_retracing=True)


class AtlasScan:
    """The atlas's per-unit state over a set of images (see the module docstring), updated batch by batch.

    Args:
        maps: ``{layer: channel indices}``, the units to track.
        classes: number of classes (labels are ints in ``[0, classes)``).
        k: entries kept per unit (default :data:`TOP`).

    Attributes:
        top: the :class:`TopK` of every unit (``top.images_seen`` counts the images).
        fires, histogram: ``{layer: int64 [M]}`` and ``{layer: int64 [M, HISTOGRAM_BINS]}``.
        class_images: int64 ``[classes]`` images seen per class.
    """

    def __init__(self, maps, classes, k=TOP):
        positive_int("classes", classes)
        self.top = TopK(maps, k)
        self.maps, self.classes = self.top.maps, int(classes)
        self.fires = {layer: np.zeros(len(c), "int64") for layer, c in self.maps.items()}
        self.histogram = {layer: np.zeros((len(c), HISTOGRAM_BINS), "int64") for layer, c in self.maps.items()}
        self.class_images = np.zeros(self.classes, "int64")
        self.parts = {}  # first image -> [images, {layer: (mean sums [M], class sums [classes, M])}], float64
        self.label_images, self.label_values = np.zeros(0, "int64"), np.zeros(0, "int64")

    @property
    def images(self):
        return self.top.images_seen

    def update(self, reduced, first_image, labels):
        """Fold in one batch: ``reduced`` ``{layer: (peak, y, x, mean)}`` of :func:`unit_reducer`
        (numpy or tensors, ``[B, M]``), its first global image index and its ``labels`` ``[B]``."""
        labels = np.asarray(labels, "int64").reshape(-1)
        if len(labels) and (labels.min() < 0 or labels.max() >= self.classes):
            raise ValueError(f"labels must be class indices 0-{self.classes - 1}, got {labels.min()}..{labels.max()}")
        first_image = int(first_image)
        if not self.parts:
            self.parts[first_image] = [0, {}]
        start, (count, part) = next(iter(self.parts.items()))
        if len(self.parts) > 1 or start + count != first_image:
            raise ValueError(
                f"update takes consecutive batches of one image range (next image {start + count}, got {first_image}); merge scans instead"
            )
        for layer, channels in self.maps.items():
            peak, y, x, mean = (np.asarray(v) for v in reduced[layer])
            if peak.shape != (len(labels), len(channels)):
                raise ValueError(f"reduced[{layer!r}] must be [{len(labels)}, {len(channels)}] (batch, units), got {peak.shape}")
            images = np.broadcast_to(np.arange(first_image, first_image + len(labels))[None, :], peak.T.shape)
            self.top.offer(layer, {"image": images, "y": y.T, "x": x.T, "value": peak.T})
            self.fires[layer] += (peak > 0).sum(axis=0)
            bins = np.where(peak > 0, 1 + np.searchsorted(HISTOGRAM_EDGES, peak.astype("float64"), side="right"), 0)
            flat = (bins + HISTOGRAM_BINS * np.arange(len(channels))[None, :]).ravel()
            self.histogram[layer] += np.bincount(flat, minlength=len(channels) * HISTOGRAM_BINS).reshape(len(channels), HISTOGRAM_BINS)
            mean = mean.astype("float64")
            sums, by_class = part.get(layer, (np.zeros(len(channels)), np.zeros((self.classes, len(channels)))))
            np.add.at(by_class, labels, mean)
            part[layer] = (sums + mean.sum(axis=0), by_class)
        self.parts[start][0] += len(labels)
        self.class_images += np.bincount(labels, minlength=self.classes)
        self.top.images_seen += len(labels)
        self._remember_labels(np.arange(first_image, first_image + len(labels)), labels)

    def _remember_labels(self, images, labels):
        """Keep the labels of images that are in some unit's top list (pruned once it doubles)."""
        self.label_images = np.concatenate([self.label_images, images])
        self.label_values = np.concatenate([self.label_values, labels])
        limit = 2 * sum(len(c) for c in self.maps.values()) * self.top.k
        if len(self.label_images) > max(limit, 4096):
            self._prune_labels()

    def _prune_labels(self):
        wanted = np.unique(np.concatenate([self.top.entries(layer)["image"].ravel() for layer in self.maps]))
        images, first = np.unique(self.label_images, return_index=True)
        keep = np.isin(images, wanted)
        self.label_images, self.label_values = images[keep], self.label_values[first][keep]

    def merge(self, other):
        """A new scan of both (which must cover disjoint images and track the same units)."""
        if other.classes != self.classes:
            raise ValueError(f"can only merge scans with the same classes, got {self.classes} and {other.classes}")
        merged = AtlasScan(self.maps, self.classes, self.top.k)
        merged.top = self.top.merge(other.top)
        for layer in self.maps:
            merged.fires[layer] = self.fires[layer] + other.fires[layer]
            merged.histogram[layer] = self.histogram[layer] + other.histogram[layer]
        merged.class_images = self.class_images + other.class_images
        if set(self.parts) & set(other.parts):
            raise ValueError("merged scans start at the same image: shards must cover disjoint images")
        merged.parts = fold_parts({**self.parts, **other.parts})
        merged.label_images = np.concatenate([self.label_images, other.label_images])
        merged.label_values = np.concatenate([self.label_values, other.label_values])
        merged._prune_labels()
        return merged

    def sums(self, layer):
        """``(mean sums [M], class sums [classes, M])`` of ``layer``: the parts added in image order."""
        total = np.zeros(len(self.maps[layer]))
        by_class = np.zeros((self.classes, len(self.maps[layer])))
        for first in sorted(self.parts):
            if layer in self.parts[first][1]:
                total = total + self.parts[first][1][layer][0]
                by_class = by_class + self.parts[first][1][layer][1]
        return total, by_class

    def labels_of(self, images):
        """Labels of the given image indices (each must be in some unit's top list); -1 for -1."""
        images = np.asarray(images, "int64")
        known, first = np.unique(self.label_images, return_index=True)
        values = self.label_values[first]
        position = np.minimum(np.searchsorted(known, images), max(len(known) - 1, 0))
        found = (images >= 0) & (len(known) > 0)
        if len(known):
            found &= known[position] == images
        if ((images >= 0) & ~found).any():
            raise ValueError("an image of a top list has no recorded label")
        return np.where(found, values[position] if len(known) else -1, -1)

    def to_arrays(self):
        """``{name: array}`` of the whole state (for ``np.savez``; :meth:`from_arrays` reads it back)."""
        arrays = {
            "classes": np.int64(self.classes),
            "k": np.int64(self.top.k),
            "images": np.int64(self.images),
            "class_images": self.class_images,
            "label_images": self.label_images,
            "label_values": self.label_values,
            "parts": np.asarray(sorted(self.parts), "int64"),
            "part_images": np.asarray([self.parts[first][0] for first in sorted(self.parts)], "int64"),
        }
        for index, layer in enumerate(self.maps):
            prefix = f"layer{index}"
            arrays[f"{prefix}/name"] = np.asarray(layer)
            arrays[f"{prefix}/channels"] = self.maps[layer]
            arrays[f"{prefix}/fires"] = self.fires[layer]
            arrays[f"{prefix}/histogram"] = self.histogram[layer]
            for field, value in self.top.entries(layer).items():
                arrays[f"{prefix}/top_{field}"] = value
            for number, first in enumerate(sorted(self.parts)):
                sums, by_class = self.parts[first][1].get(layer, (np.zeros(len(self.maps[layer])), np.zeros((self.classes, len(self.maps[layer])))))
                arrays[f"{prefix}/part{number}_sums"], arrays[f"{prefix}/part{number}_classes"] = sums, by_class
        return arrays

    @classmethod
    def from_arrays(cls, arrays):
        """The scan saved by :meth:`to_arrays` (a dict or an ``np.load`` result)."""
        try:
            count = sum(1 for name in arrays if name.endswith("/name"))
            names = [str(arrays[f"layer{i}/name"]) for i in range(count)]
            maps = {name: arrays[f"layer{i}/channels"] for i, name in enumerate(names)}
            scan = cls(maps, int(arrays["classes"]), int(arrays["k"]))
            entries = {name: {f: arrays[f"layer{i}/top_{f}"] for f in ENTRY_FIELDS} for i, name in enumerate(names)}
            scan.top = TopK.from_entries(maps, int(arrays["k"]), entries, images_seen=int(arrays["images"]))
            parts = [int(first) for first in arrays["parts"]]
            scan.parts = {first: [int(count), {}] for first, count in zip(parts, arrays["part_images"])}
            for i, name in enumerate(names):
                scan.fires[name] = np.asarray(arrays[f"layer{i}/fires"], "int64")
                scan.histogram[name] = np.asarray(arrays[f"layer{i}/histogram"], "int64")
                for number, first in enumerate(parts):
                    scan.parts[first][1][name] = (
                        np.asarray(arrays[f"layer{i}/part{number}_sums"]),
                        np.asarray(arrays[f"layer{i}/part{number}_classes"]),
                    )
            scan.class_images = np.asarray(arrays["class_images"], "int64")
            scan.label_images = np.asarray(arrays["label_images"], "int64")
            scan.label_values = np.asarray(arrays["label_values"], "int64")
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"not a saved atlas scan ({error})") from None
        return scan


class Folder:
    """Folds consecutive reduced batches into an :class:`AtlasScan`, ``images`` at a time, on a
    thread of its own: the numpy bookkeeping of one group of batches runs while TensorFlow computes
    the next ones, and fewer, larger updates cost less. Updates run one after another in batch
    order, so the result is the same as folding each batch in turn.

    Args:
        scan: the :class:`AtlasScan` to update.
        first_image: global index of the first image of the first batch.
        images: images per update.
    """

    def __init__(self, scan, first_image, images=512):
        from concurrent.futures import ThreadPoolExecutor

        self.scan, self.next_image, self.images = scan, int(first_image), int(images)
        self.pending, self.labels, self.running = [], [], []
        self.worker = ThreadPoolExecutor(max_workers=1)

    def add(self, reduced, labels):
        """Queue one batch (``{layer: (peak, y, x, mean)}`` numpy ``[B, M]`` and its labels ``[B]``)."""
        self.pending.append(reduced)
        self.labels.append(np.asarray(labels, "int64").reshape(-1))
        if sum(map(len, self.labels)) >= self.images:
            self.submit()
        finished = [job for job in self.running if job.done()]
        for job in finished:
            job.result()  # a failed update raises here, not at the end
        self.running = [job for job in self.running if job not in finished]

    def submit(self):
        if not self.pending:
            return
        joined = {layer: tuple(np.concatenate([batch[layer][i] for batch in self.pending]) for i in range(4)) for layer in self.pending[0]}
        labels = np.concatenate(self.labels)
        self.running.append(self.worker.submit(self.scan.update, joined, self.next_image, labels))
        self.next_image += len(labels)
        self.pending, self.labels = [], []

    def flush(self):
        """Fold everything queued into the scan and wait for it."""
        self.submit()
        try:
            for job in self.running:
                job.result()
        finally:
            self.running = []
            self.worker.shutdown(wait=True)


def fold_parts(parts):
    """``parts`` with the run of consecutive parts from image 0 added into one, in image order (the
    order :meth:`AtlasScan.sums` adds them in, so the result is the same bits): a scan merged shard
    by shard from the first keeps one part, whatever the number of images."""
    parts = dict(parts)
    while 0 in parts and parts[0][0] in parts:
        count, first = parts[0]
        following, after = parts.pop(count)
        sums = {layer: (first[layer][0] + after[layer][0], first[layer][1] + after[layer][1]) for layer in first}
        parts[0] = [count + following, sums]
    return parts


def scan_units(probe, batches, maps, classes, first_image=0, reducer=None):
    """An :class:`AtlasScan` of ``batches`` (``(images, labels)`` raw-pixel batches in data set
    order, e.g. :meth:`zfkeras.data.ImageBatches.dataset`) in one streaming pass.

    Args:
        probe: a :class:`~zfkeras.nn.probe.Probe`.
        maps: ``{layer: channel indices}``.
        classes: number of classes of the labels.
        first_image: global index of the first image.
        reducer: :func:`unit_reducer` of ``probe`` and ``maps`` (made if None; pass it to reuse its trace).
    """
    reducer = reducer or unit_reducer(probe, maps)
    scan = AtlasScan(maps, classes)
    folder = Folder(scan, first_image)
    for images, labels in batches:
        reduced = reducer(tf.constant(np.asarray(images, "float32")))
        folder.add({layer: tuple(v.numpy() for v in values) for layer, values in reduced.items()}, labels)
    folder.flush()
    return scan


@dataclasses.dataclass
class LayerAtlas:
    """The atlas numbers of one layer's units (row ``m`` of each array: unit ``channels[m]``).

    Attributes:
        layer, channels: the layer and its units.
        images: images scanned.
        top: ``{field: [M, SHOWN]}`` the top-9 (``image`` -1 where fewer images were seen) and
            ``labels`` ``[M, SHOWN]`` their classes.
        fires: int64 ``[M]``; fire_rate: ``fires / images``; dead: bool ``[M]`` (``fires == 0``).
        mean: float64 ``[M]`` mean activation; class_means: float64 ``[classes, M]`` (NaN for a class
            without images); selectivity: float64 ``[M]`` (NaN when undefined).
        histogram: int64 ``[M, HISTOGRAM_BINS]``.
        top_classes: int64 ``[M, classes]`` classes of the top-100 images in which each unit fires.
        correlation: float64 ``[M, M]`` of the near-duplicate test (NaN for dead units and the diagonal).
        duplicates: ``[(a, b, correlation)]`` unit pairs (channels, a < b) at or above the threshold.
    """

    layer: str
    channels: np.ndarray
    images: int
    top: dict
    fires: np.ndarray
    fire_rate: np.ndarray
    dead: np.ndarray
    mean: np.ndarray
    class_means: np.ndarray
    selectivity: np.ndarray
    histogram: np.ndarray
    top_classes: np.ndarray
    correlation: np.ndarray
    duplicates: list
    duplicate_threshold: float


def layer_atlas(scan, layer, duplicate_threshold=0.9):
    """The :class:`LayerAtlas` of ``layer`` from a finished (merged) :class:`AtlasScan`."""
    if layer not in scan.maps:
        raise ValueError(f"layer {layer!r} was not scanned (scanned: {', '.join(scan.maps)})")
    if not 0 < duplicate_threshold <= 1:
        raise ValueError(f"duplicate_threshold must be in (0, 1], got {duplicate_threshold}")
    channels, images = scan.maps[layer], max(scan.images, 1)
    entries = scan.top.entries(layer)
    shown = {f: v[:, :SHOWN] for f, v in entries.items()}
    shown["labels"] = scan.labels_of(shown["image"])
    total, by_class = scan.sums(layer)
    with np.errstate(invalid="ignore", divide="ignore"):
        class_means = np.where(scan.class_images[:, None] > 0, by_class / scan.class_images[:, None], np.nan)
    fires = scan.fires[layer]
    positive = (entries["value"] > 0) & (entries["image"] >= 0)
    labels = scan.labels_of(np.where(positive, entries["image"], -1))
    top_classes = np.zeros((len(channels), scan.classes), "int64")
    rows = np.repeat(np.arange(len(channels)), positive.sum(axis=1))
    np.add.at(top_classes, (rows, labels[positive]), 1)
    correlation = top_correlation(entries, scan.images)
    correlation[fires == 0, :] = np.nan
    correlation[:, fires == 0] = np.nan
    pairs = [
        (int(channels[a]), int(channels[b]), float(correlation[a, b])) for a, b in zip(*np.nonzero(np.triu(correlation >= duplicate_threshold, 1)))
    ]
    return LayerAtlas(
        layer=layer,
        channels=channels,
        images=scan.images,
        top=shown,
        fires=fires,
        fire_rate=fires / images,
        dead=fires == 0,
        mean=total / (images if scan.images else 1),
        class_means=class_means,
        selectivity=selectivity_index(class_means, fires == 0),
        histogram=scan.histogram[layer],
        top_classes=top_classes,
        correlation=correlation,
        duplicates=pairs,
        duplicate_threshold=float(duplicate_threshold),
    )


def selectivity_index(class_means, dead):
    """Class-selectivity index per unit from ``class_means`` ``[classes, M]`` (NaN rows: classes
    without images): ``(mu_max - mu_rest) / (mu_max + mu_rest)``, 0 for ``dead`` units, NaN with
    fewer than two classes or where ``mu_max + mu_rest`` is 0."""
    means = np.asarray(class_means, "float64")
    means = means[~np.isnan(means).all(axis=1)]
    if len(means) < 2:
        return np.full(means.shape[1] if means.ndim == 2 else len(dead), np.nan)
    order = np.sort(means, axis=0)
    best, rest = order[-1], order[:-1].mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        index = np.where(best + rest != 0, (best - rest) / (best + rest), np.nan)
    return np.where(dead, 0.0, index)


def top_correlation(entries, images):
    """``[M, M]`` Pearson correlation over ``images`` images of the units' top-list vectors (each
    unit's positive kept peaks at their images, 0 elsewhere; see the module docstring); NaN on the
    diagonal and where a unit's vector is constant."""
    from scipy import sparse

    positive = (entries["value"] > 0) & (entries["image"] >= 0)
    units = positive.shape[0]
    rows = np.repeat(np.arange(units), positive.sum(axis=1))
    columns, values = entries["image"][positive], entries["value"][positive].astype("float64")
    matrix = sparse.csr_matrix((values, (rows, columns)), shape=(units, int(columns.max(initial=-1)) + 1))
    count = max(int(images), 1)
    mean = np.asarray(matrix.sum(axis=1)).ravel() / count
    products = (matrix @ matrix.T).toarray() / count
    spread = np.sqrt(np.maximum(np.diag(products) - mean**2, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = (products - np.outer(mean, mean)) / np.outer(spread, spread)
    correlation[np.outer(spread, spread) <= 0] = np.nan
    np.fill_diagonal(correlation, np.nan)
    return correlation


def project_units(probe, scan, batches, fields, layers, batch_size=64, progress=None, rule="deconvnet"):
    """Deconvnet projections (or backward ``rule``'s, :meth:`~zfkeras.nn.probe.Probe.project`) and image patches of the top-9 of every unit of ``layers`` (a name
    or a list), by :func:`~zfkeras.analysis.top_activations.project_topk`: one pass over
    ``batches`` (the scanned images, same order), on receptive-field windows, batched across units.

    Returns ``{layer: {"projections", "patches"}}``, each float32 ``[M, SHOWN, fh, fw, C]`` (NaN
    outside the image and in empty slots).
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    return project_topk(probe, scan.top.first(SHOWN), batches, fields, layers=layers, batch_size=batch_size, progress=progress, rule=rule)
