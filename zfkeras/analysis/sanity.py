"""Sanity checks of projections (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

A projection that explains the model must change when the model's weights do. **Model-parameter
randomisation**: re-initialise the layers with weights from the top down, one more at each step
(*cascading*) or one at a time with the others trained (*independent*), recompute each backward
rule's projections of the same images and units, and measure how similar they stay to the trained
model's. **Data randomisation**: the same comparison of the class-score maps against a model of the same
architecture trained on shuffled labels (not of the units: a channel of a model trained apart is
another feature). A rule whose maps stay alike has shown the image, not the model.

Targets (what is projected): ``"class"``, the score of each image's class (the output layer's
input gradient seed, :attr:`zfkeras.nn.probe.Probe.class_layer`; the paper's saliency map), and
``"unit"``, the strongest unit of the top conv layer in the trained model (the deconvnet's own
use; the same channel and position after randomisation). A layer is re-initialised from its own
initializers (its config, seeded per layer), so a paper-init model gets N(0, 0.01) weights back.
Projections at or below a unit's layer do not depend on the layers above it: randomising those
cannot change them.

Similarity (per pair of maps ``[H, W, C]``, as in the paper): each map's absolute values summed
over channels (a grey map); the Spearman rank correlation of the two grey maps; then each grey map
divided by its 99th percentile and clipped to [0, 1], and the SSIM of the two (Wang et al. 2004:
7x7 uniform windows, K1 = 0.01, K2 = 0.03, sample covariances, data range 1, the mean over the
windows; scikit-image's default) and the Pearson correlation of their HOG features (9 orientations,
8x8 cells over the map, 2x2-cell blocks). A map that is all zero (a unit the new weights silenced)
has no rank order or HOG direction: against a map that is not, its Spearman and HOG values are 0
(nothing in common) and such maps are counted (``silent``); two all-zero maps give NaN, left out of
the means.
"""

import contextlib
import dataclasses
import functools
import zlib

import numpy as np

from zfkeras.io.validation import layer_names as check_layer_names
from zfkeras.io.validation import positive_int
from zfkeras.nn.adjoint import RULES, check_rule
from zfkeras.nn.probe import KerasProbe, Probe

METRICS = ("spearman", "ssim", "hog")
TARGETS = ("class", "unit")


def grey(maps):
    """``[N, H, W, C]`` -> ``[N, H, W]`` float64: absolute values summed over channels."""
    return np.abs(np.asarray(maps, "float64")).sum(axis=-1)


def normalised(grey_maps):
    """Grey maps ``[N, H, W]`` divided by their 99th percentile and clipped to [0, 1] (a map whose
    99th percentile is 0 is divided by its maximum instead; an all-zero map stays zero)."""
    grey_maps = np.asarray(grey_maps, "float64")
    flat = grey_maps.reshape(len(grey_maps), -1)
    scale = np.percentile(flat, 99, axis=1)
    scale = np.where(scale > 0, scale, flat.max(axis=1) if flat.size else 0.0)
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(grey_maps / scale[:, None, None], 0.0, 1.0)


def average_ranks(values):
    """Ranks 1..M of each row of ``values`` ``[N, M]``, ties sharing their average rank."""
    values = np.asarray(values)
    ranks = np.empty(values.shape, "float64")
    for value, out in zip(values, ranks):
        order = np.argsort(value, kind="stable")
        ordered = value[order]
        starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
        ends = np.append(starts[1:], len(ordered))  # group g holds sorted positions starts[g] .. ends[g]-1
        average = (starts + ends + 1) / 2.0  # mean of the 1-based positions starts+1 .. ends
        out[order] = np.repeat(average, ends - starts)
    return ranks


def pearson(x, y):
    """Row-wise Pearson correlation of ``x`` and ``y`` ``[N, M]``; NaN where a row is constant."""
    x = np.asarray(x, "float64") - np.mean(x, axis=1, keepdims=True)
    y = np.asarray(y, "float64") - np.mean(y, axis=1, keepdims=True)
    norms = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, (x * y).sum(axis=1) / np.where(norms > 0, norms, 1.0), np.nan)


def spearman(a, b):
    """Spearman rank correlation of the grey maps (absolute values) of ``a`` and ``b`` ``[N, H, W, C]`` -> ``[N]``."""
    first, second = grey(a), grey(b)
    return pearson(average_ranks(first.reshape(len(first), -1)), average_ranks(second.reshape(len(second), -1)))


def _box_means(x, window):
    """Means over every ``window`` x ``window`` square lying wholly inside ``x`` ``[N, H, W]``."""
    total = np.pad(x, ((0, 0), (1, 0), (1, 0))).cumsum(axis=1).cumsum(axis=2)
    sums = total[:, window:, window:] - total[:, :-window, window:] - total[:, window:, :-window] + total[:, :-window, :-window]
    return sums / window**2


def ssim(a, b, window=7, data_range=1.0):
    """Mean structural similarity of image stacks ``a`` and ``b`` ``[N, H, W]`` -> ``[N]`` (module docs)."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    if min(a.shape[1:]) < window:
        raise ValueError(f"ssim needs maps of at least {window}x{window}, got {a.shape[1]}x{a.shape[2]}")
    mean_a, mean_b = _box_means(a, window), _box_means(b, window)
    correction = window**2 / (window**2 - 1.0)  # sample (not population) covariances
    var_a = correction * (_box_means(a * a, window) - mean_a**2)
    var_b = correction * (_box_means(b * b, window) - mean_b**2)
    cov = correction * (_box_means(a * b, window) - mean_a * mean_b)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = (2 * mean_a * mean_b + c1) * (2 * cov + c2) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    return index.mean(axis=(1, 2))


def hog_features(images):
    """HOG features ``[N, F]`` of grey images ``[N, H, W]`` (9 orientations, 8x8 cells, 2x2 blocks)."""
    from skimage.feature import hog

    images = np.asarray(images, "float64")
    cell = (max(1, images.shape[1] // 8), max(1, images.shape[2] // 8))
    return np.stack([hog(image, orientations=9, pixels_per_cell=cell, cells_per_block=(2, 2), feature_vector=True) for image in images])


def similarities(reference, maps):
    """``{metric: float64 [N]}`` of each map of ``maps`` to the same one of ``reference`` (both
    ``[N, H, W, C]``); all-zero maps as the module docs say."""
    first, second = normalised(grey(reference)), normalised(grey(maps))
    found = {"spearman": spearman(reference, maps), "ssim": ssim(first, second), "hog": pearson(hog_features(first), hog_features(second))}
    empty_first, empty_second = ~first.reshape(len(first), -1).any(axis=1), ~second.reshape(len(second), -1).any(axis=1)
    for metric, values in found.items():
        if metric != "ssim":
            values[empty_first != empty_second] = 0.0
        values[empty_first & empty_second] = np.nan
    return found


def silent(maps):
    """How many of ``maps`` ``[N, H, W, C]`` are all zero."""
    return int((~np.asarray(maps).reshape(len(maps), -1).any(axis=1)).sum())


def weighted_layers(model):
    """Names of ``model``'s layers with trainable weights, input to output."""
    return [layer.name for layer in model.layers if layer.trainable_weights]


def reinitialize(layer, seed):
    """Give ``layer``'s trainable weights new values drawn from its own initializers (as configured),
    seeded by ``seed`` and the layer's name."""
    config = layer.get_config()
    draws = np.random.default_rng([seed, zlib.crc32(layer.name.encode())]).integers(0, 2**31 - 1, size=len(config))
    for (key, value), draw in zip(sorted(config.items()), draws):
        if key.endswith("_initializer") and isinstance(value, dict) and "seed" in value.get("config", {}):
            value["config"]["seed"] = int(draw)
    fresh = type(layer).from_config(config)
    fresh.build(layer.input.shape)
    if [w.shape for w in fresh.trainable_weights] != [w.shape for w in layer.trainable_weights]:
        raise ValueError(f"cannot re-initialise layer {layer.name!r}: a fresh copy has other weights")
    for old, new in zip(layer.trainable_weights, fresh.trainable_weights):
        old.assign(new)


@dataclasses.dataclass
class Targets:
    """What is projected for each image: its class (``labels``) and one unit of ``layer``.

    Attributes: labels int32 ``[N]``; layer (name); channels int32 ``[N]``; positions int32 ``[N, 2]`` (y, x).
    """

    labels: np.ndarray
    layer: str
    channels: np.ndarray
    positions: np.ndarray


def choose_targets(probe, images, labels=None, unit_layer=None):
    """:class:`Targets` from the trained model: labels default to its top class; the unit is the
    strongest of ``unit_layer`` (default the top conv layer) in each image."""
    layer = check_layer_names(unit_layer if unit_layer is not None else probe.layer_names[-1], probe.layer_names, "projectable layers")[0]
    if labels is None:
        labels = np.argmax(probe.predict(images), axis=1)
    labels = np.asarray(labels, "int32")
    if labels.shape != (len(images),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= len(probe.class_names):
        raise ValueError(f"labels must be {len(images)} class indices in [0, {len(probe.class_names)})")
    acts = probe.features(images, [layer])[layer]
    flat = acts.reshape(len(acts), -1)
    y, x, channels = np.unravel_index(np.argmax(flat, axis=1), acts.shape[1:])
    return Targets(labels, layer, channels.astype("int32"), np.stack([y, x], axis=1).astype("int32"))


def project_targets(probe, images, targets, rules, batch_size):
    """``{rule: {target: float32 [N, H, W, C]}}``: each rule's projections of the class scores (if
    the model has them) and of the units."""
    maps = {}
    for rule in rules:
        maps[rule] = {"unit": probe.project(images, targets.layer, targets.channels, targets.positions, batch_size=batch_size, rule=rule)}
        if probe.class_layer is not None:
            maps[rule]["class"] = probe.project(images, probe.class_layer, targets.labels, batch_size=batch_size, rule=rule)
    return maps


@dataclasses.dataclass
class SanityResult:
    """Similarities of randomised models' projections to the trained model's.

    Attributes:
        rules, targets: what was compared (targets: "class" and/or "unit").
        layers: the layers re-initialised, top first (cascading step i: layers[:i + 1]).
        unit: the :class:`Targets` (labels, unit layer, channels, positions).
        cascading, independent: ``{rule: {target: {metric: float64 [layers, N]}}}``, and under
            the key ``"silent"`` int ``[layers]``: how many maps were all zero at each step.
        data: the same ``[1, N]`` against the shuffled-label model, for the class target only (a
            unit of a model trained apart is another feature), or None.
        grid: ``{rule: {target: float32 [1 + layers, shown, H, W, C]}}``: the first ``shown``
            images' maps, trained then at each cascading step.
        images: N.
    """

    rules: tuple
    targets: tuple
    layers: list
    unit: Targets
    cascading: dict
    independent: dict
    data: dict | None
    grid: dict
    images: int

    def summary(self, mode):
        """``{rule: {target: {metric: {"mean": [steps], "std": [steps], "n": [steps]}, "silent": [steps]}}}``
        of ``mode`` ("cascading", "independent" or "data"), NaN left out (``n`` counts the rest)."""
        table = getattr(self, mode)
        if table is None:
            return None
        out = {}
        for rule, per_target in table.items():
            for target, per_metric in per_target.items():
                out.setdefault(rule, {}).setdefault(target, {})["silent"] = per_metric["silent"].tolist()
                for metric in METRICS:
                    values = per_metric[metric]
                    defined = ~np.isnan(values)
                    count = defined.sum(axis=1)
                    with np.errstate(invalid="ignore"):
                        mean = np.where(count > 0, np.nansum(values, axis=1) / np.maximum(count, 1), np.nan)
                        std = np.array([np.std(row[ok]) if ok.any() else np.nan for row, ok in zip(values, defined)])
                    out.setdefault(rule, {}).setdefault(target, {})[metric] = {"mean": mean.tolist(), "std": std.tolist(), "n": count.tolist()}
        return out

    def to_dict(self):
        return {
            "rules": list(self.rules),
            "targets": list(self.targets),
            "metrics": list(METRICS),
            "layers": list(self.layers),
            "images": self.images,
            "unit": {"layer": self.unit.layer, "channels": self.unit.channels.tolist(), "positions": self.unit.positions.tolist()},
            "labels": self.unit.labels.tolist(),
            "cascading": self.summary("cascading"),
            "independent": self.summary("independent"),
            "data": self.summary("data"),
        }


def _keras_probe(model):
    if isinstance(model, KerasProbe):
        return model
    if isinstance(model, Probe):
        return KerasProbe(model.keras_model, class_names=model.class_names, path=model.path)
    return KerasProbe(model)


def _compare(trained, maps, table, index, steps):
    """Put the similarities of ``maps`` ``{rule: {target: [N, H, W, C]}}`` to ``trained`` (and how
    many are silent) at step ``index`` of ``table`` (one of :class:`SanityResult`'s dicts)."""
    for rule, per_target in maps.items():
        for target, projected in per_target.items():
            slot = table.setdefault(rule, {}).setdefault(target, {m: np.full((steps, len(projected)), np.nan) for m in METRICS})
            for metric, values in similarities(trained[rule][target], projected).items():
                slot[metric][index] = values
            slot.setdefault("silent", np.zeros(steps, "int64"))[index] = silent(projected)


@contextlib.contextmanager
def _reinitialized(layer, seed):
    """``layer`` re-initialised (:func:`reinitialize`) within the block, its weights put back after."""
    before = [weight.numpy() for weight in layer.trainable_weights]
    reinitialize(layer, seed)
    try:
        yield
    finally:
        for weight, value in zip(layer.trainable_weights, before):
            weight.assign(value)


def sanity_check(
    model, images, labels=None, layers=None, rules=RULES, unit_layer=None, random_labels_model=None, shown=2, seed=0, batch_size=64, progress=None
):
    """Model-parameter (cascading and independent) and data randomisation tests (module docs).

    Args:
        model: a Keras model or a :class:`~zfkeras.nn.probe.Probe` (an export's weights are read
            from its ``model.keras``). Its weights are changed during the test and put back.
        images: ``[N, H, W, C]`` raw pixels at the model's input size.
        labels: class per image (``[N]``) whose score is projected; default the trained model's top class.
        layers: layers to re-initialise, top first (default every layer with weights, output to input).
        rules: backward rules compared. unit_layer: conv layer of the "unit" target (default the top one).
        random_labels_model: the same architecture trained on shuffled labels (Keras model or
            Probe), for the data randomisation test, or None.
        shown: images kept for the image grid. seed: seeds the new weights.
        batch_size: projections per call. progress: called with (done, total) after each step.

    Returns:
        :class:`SanityResult`.
    """
    probe = _keras_probe(model)
    images = probe.check_images(images)
    rules = tuple(check_rule(rule) for rule in rules)
    keras_model = probe.keras_model
    order = (
        list(reversed(weighted_layers(keras_model)))
        if layers is None
        else check_layer_names(layers, weighted_layers(keras_model), "layers with weights")
    )
    positive_int("batch_size", batch_size)
    targets = choose_targets(probe, images, labels, unit_layer)
    total, done = 1 + 2 * len(order) + (random_labels_model is not None), 0

    def step():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    trained = project_targets(probe, images, targets, rules, batch_size)
    step()
    kept = {rule: {target: [maps[:shown]] for target, maps in per.items()} for rule, per in trained.items()}

    compare = functools.partial(_compare, trained)
    saved = keras_model.get_weights()
    cascading, independent = {}, {}
    try:
        for index, name in enumerate(order):
            reinitialize(keras_model.get_layer(name), seed)
            maps = project_targets(probe, images, targets, rules, batch_size)
            compare(maps, cascading, index, len(order))
            for rule, per in maps.items():
                for target, projected in per.items():
                    kept[rule][target].append(projected[:shown])
            step()
        keras_model.set_weights(saved)
        for index, name in enumerate(order):
            with _reinitialized(keras_model.get_layer(name), seed):
                compare(project_targets(probe, images, targets, rules, batch_size), independent, index, len(order))
            step()
    finally:
        keras_model.set_weights(saved)
    data = None
    if random_labels_model is not None:
        other = _keras_probe(random_labels_model)
        if tuple(other.input_shape) != tuple(probe.input_shape) or other.projectable() != probe.projectable():
            raise ValueError("random_labels_model must have the model's architecture (input shape and projectable layers)")
        # Class scores only: a unit (channel, position) of a model trained apart is another feature.
        maps = project_targets(other, images, targets, rules, batch_size)
        data = {}
        compare({rule: {"class": per["class"]} for rule, per in maps.items() if "class" in per}, data, 0, 1)
        data = data or None
        step()
    grid = {rule: {target: np.stack(stack) for target, stack in per.items()} for rule, per in kept.items()}
    present = tuple(t for t in TARGETS if t in trained[rules[0]])
    return SanityResult(rules, present, order, targets, cascading, independent, data, grid, len(images))
