"""Faithfulness of relevance maps: deletion and insertion curves (Petsiuk et al., RISE, BMVC 2018).

A relevance map ranks an image's pixels. **Deletion** removes the most relevant pixels first, in
``steps`` equal steps (a removed pixel takes the baseline's value: by default the model's mean
image, 0 after the mean subtraction, "no signal") and follows a score; **insertion** starts from
the baseline and puts the most relevant pixels back first. A map that points at what the model
uses makes the score fall fast under deletion (small area under the curve) and rise fast under
insertion (large area). A random ranking (a seeded permutation) is the reference every map must beat.

Targets and scores:

- ``"class"``: p(class), the softmax output of the image's class, for each rule's projection of
  that class score (:attr:`zfkeras.nn.probe.Probe.class_layer`) and for the occlusion map (a
  pixel's relevance: the mean drop of p(class) over the square positions that cover it,
  :func:`occlusion_relevance`);
- ``"unit"``: the activation of one unit (the strongest of the top conv layer in the clean image,
  as in :func:`zfkeras.analysis.sanity.choose_targets`) for each rule's projection of that unit.

A rule's map ranks pixels by its absolute values summed over channels; ties go in row-major order.
At step ``k`` (0..steps) ``round(k * P / steps)`` of the ``P`` pixels are changed, all channels of a
pixel together; the area under a curve is the trapezoid rule over the fractions ``k / steps``.

Batched: the images of many steps of many images go through the model together, ``batch_size`` at a
time, built chunk by chunk (memory bounded by ``batch_size`` images), not one ``predict`` per step.
"""

import dataclasses

import numpy as np

from zfkeras.analysis.occlusion import occlusion_map
from zfkeras.analysis.sanity import choose_targets
from zfkeras.io.validation import positive_int
from zfkeras.nn.adjoint import RULES, check_rule

KINDS = ("deletion", "insertion")


def step_counts(pixels, steps):
    """int ``[steps + 1]``: pixels changed at each step, ``round(k * pixels / steps)``."""
    return np.rint(np.arange(steps + 1) * pixels / steps).astype("int64")


def pixel_order(relevance):
    """int64 ``[N, H * W]``: each image's pixels (row-major index), most relevant first; ties in
    row-major order. ``relevance``: ``[N, H, W]``."""
    relevance = np.asarray(relevance, "float64")
    return np.argsort(-relevance.reshape(len(relevance), -1), axis=1, kind="stable")


def random_orders(count, pixels, seed):
    """int64 ``[count, pixels]``: one seeded random permutation of the pixels per image."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(pixels) for _ in range(count)]) if count else np.zeros((0, pixels), "int64")


def map_relevance(maps):
    """``[N, H, W]`` relevance of projections ``[N, H, W, C]``: absolute values summed over channels."""
    return np.abs(np.asarray(maps, "float64")).sum(axis=-1)


def occlusion_relevance(result):
    """``[H, W]`` relevance from an :class:`~zfkeras.analysis.occlusion.OcclusionResult`: each
    pixel's mean drop of p(class) (``clean_probs[label] - true_class_prob``) over the square
    positions covering it."""
    height, width = result.image.shape[:2]
    drop = float(result.clean_probs[result.label]) - np.asarray(result.true_class_prob, "float64")
    total, count = np.zeros((height, width)), np.zeros((height, width))
    for (y, x), value in zip(result.positions.reshape(-1, 2), drop.reshape(-1)):
        rows = slice(max(int(y), 0), max(min(int(y) + result.patch, height), 0))
        cols = slice(max(int(x), 0), max(min(int(x) + result.patch, width), 0))
        total[rows, cols] += value
        count[rows, cols] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def auc(curves, steps=None):
    """Area under curves ``[..., steps + 1]`` over the fractions 0..1 (trapezoid rule)."""
    curves = np.asarray(curves, "float64")
    steps = curves.shape[-1] - 1 if steps is None else steps
    return (curves[..., 1:] + curves[..., :-1]).sum(axis=-1) / (2.0 * steps)


def changed_images(images, ranks, owners, counts, deleting, baseline):
    """The images of rows ``owners`` (index into ``images``) with their ``counts`` most relevant
    pixels (``ranks`` ``[N, H*W]``: each pixel's place in the order) taken from ``baseline``
    (``deleting`` True) or the rest taken from it (insertion). ``[B, H, W, C]`` float32."""
    shape = images.shape[1:3]
    moved = (ranks[owners] < counts[:, None]).reshape(len(owners), *shape, 1)
    source = images[owners]
    return np.where(moved == deleting[:, None, None, None], baseline[None], source).astype("float32")


def curves(score, images, orders, baseline, steps=32, batch_size=256, kinds=KINDS):
    """Deletion and insertion curves of ``images`` ``[N, H, W, C]`` under pixel ``orders``
    ``[N, H*W]`` (most relevant first).

    Args:
        score: ``score(batch [B, H, W, C], owners int [B]) -> [B]``: the score of each changed
            image, ``owners`` saying which of ``images`` it was made from.
        baseline: ``[H, W, C]`` values of removed pixels (and the insertion start).
        steps: equal steps from no pixel to all pixels. batch_size: changed images per ``score`` call.
        kinds: which curves, of :data:`KINDS`.

    Returns:
        ``{kind: float64 [N, steps + 1]}``.
    """
    images = np.asarray(images, "float32")
    steps, batch_size = positive_int("steps", steps), positive_int("batch_size", batch_size)
    count, pixels = len(images), int(np.prod(images.shape[1:3]))
    orders = np.asarray(orders)
    if orders.shape != (count, pixels):
        raise ValueError(f"orders must be [{count}, {pixels}] (one pixel order per image), got {orders.shape}")
    baseline = np.broadcast_to(np.asarray(baseline, "float32"), images.shape[1:])
    ranks = np.empty_like(orders)
    np.put_along_axis(ranks, orders, np.arange(pixels)[None].repeat(count, 0), axis=1)
    counts = step_counts(pixels, steps)
    rows = [(kind, n, k) for kind in kinds for n in range(count) for k in range(steps + 1)]
    found = np.zeros(len(rows), "float64")
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        owners = np.array([n for _, n, _ in chunk], "int64")
        deleting = np.array([kind == "deletion" for kind, _, _ in chunk])
        batch = changed_images(images, ranks, owners, counts[[k for *_, k in chunk]], deleting, baseline)
        found[start : start + len(chunk)] = np.asarray(score(batch, owners), "float64")
    return {kind: found[i * count * (steps + 1) : (i + 1) * count * (steps + 1)].reshape(count, steps + 1) for i, kind in enumerate(kinds)}


def class_score(probe, labels):
    """``score`` for :func:`curves`: p(``labels[owner]``) of each changed image."""
    labels = np.asarray(labels)
    return lambda batch, owners: probe.predict(batch, batch_size=len(batch))[np.arange(len(batch)), labels[owners]]


def unit_score(probe, layer, channels, positions):
    """``score`` for :func:`curves`: the activation of unit (``positions[owner]``, ``channels[owner]``) of ``layer``."""
    channels, positions = np.asarray(channels), np.asarray(positions)

    def score(batch, owners):
        acts = probe.features(batch, [layer], batch_size=len(batch))[layer]
        return acts[np.arange(len(batch)), positions[owners, 0], positions[owners, 1], channels[owners]]

    return score


@dataclasses.dataclass
class FaithfulnessResult:
    """Deletion and insertion curves of every map.

    Attributes:
        steps: steps per curve (fractions ``k / steps``).
        curves: ``{target: {method: {kind: float64 [N, steps + 1]}}}``; methods: the rules,
            "occlusion" (class target) and "random".
        labels: int ``[N]`` classes scored; unit: ``{"layer", "channels", "positions"}``.
        clean: ``{target: float64 [N]}``: the score of each unchanged image.
    """

    steps: int
    curves: dict
    labels: np.ndarray
    unit: dict
    clean: dict

    def aucs(self):
        """``{target: {method: {kind: float64 [N]}}}``: the area under each image's curve."""
        return {t: {m: {k: auc(c, self.steps) for k, c in per.items()} for m, per in methods.items()} for t, methods in self.curves.items()}

    def to_dict(self):
        """Mean ± std of the AUCs and the mean curves, per target, method and kind."""
        table = {}
        for target, methods in self.aucs().items():
            for method, kinds in methods.items():
                entry = table.setdefault(target, {}).setdefault(method, {})
                for kind, values in kinds.items():
                    entry[kind] = {
                        "auc_mean": float(values.mean()),
                        "auc_std": float(values.std()),
                        "mean_curve": self.curves[target][method][kind].mean(axis=0).tolist(),
                        "std_curve": self.curves[target][method][kind].std(axis=0).tolist(),
                    }
        return {
            "images": int(len(self.labels)),
            "steps": self.steps,
            "fractions": (np.arange(self.steps + 1) / self.steps).tolist(),
            "labels": self.labels.tolist(),
            "unit": self.unit,
            "clean_score_mean": {target: float(values.mean()) for target, values in self.clean.items()},
            "targets": table,
        }


def faithfulness(
    probe, images, labels=None, rules=RULES, occlusion=True, unit_layer=None, steps=32, baseline=None, seed=0, batch_size=256, progress=None
):
    """Deletion and insertion curves of each rule's class-score and unit projections, the occlusion
    map and a random ranking, for ``images`` (module docs).

    Args:
        probe: a :class:`~zfkeras.nn.probe.Probe` with class-score projections under ``rules``.
        images: ``[N, H, W, C]`` raw pixels at the model's input size.
        labels: class of each image (``[N]``); default the model's top class on the clean image.
        rules: backward rules compared. occlusion: include the occlusion map (default square and grid).
        unit_layer: conv layer of the unit target (default the top one).
        steps: steps per curve. baseline: ``[H, W, C]`` raw values of removed pixels (default the
            model's mean image). seed: the random ranking. batch_size: changed images per forward pass.
        progress: called with (done, total) after each map's curves.

    Returns:
        :class:`FaithfulnessResult`.
    """
    images = probe.check_images(images)
    rules = tuple(check_rule(rule) for rule in rules)
    missing = [rule for rule in rules if rule not in probe.rules]
    if probe.class_layer is None or missing:
        raise ValueError(
            f"{probe.path or 'the model'} has no class-score projections under {', '.join(missing or rules)} (an export written before the rules)"
        )
    baseline = np.asarray(probe.mean_image if baseline is None else baseline, "float32")
    targets = choose_targets(probe, images, labels, unit_layer)
    scores = {"class": class_score(probe, targets.labels), "unit": unit_score(probe, targets.layer, targets.channels, targets.positions)}
    orders = {"class": {}, "unit": {}}
    for rule in rules:
        orders["class"][rule] = pixel_order(map_relevance(probe.project(images, probe.class_layer, targets.labels, rule=rule)))
        orders["unit"][rule] = pixel_order(map_relevance(probe.project(images, targets.layer, targets.channels, targets.positions, rule=rule)))
    if occlusion:
        relevance = [occlusion_relevance(occlusion_map(probe, image, label=int(label))) for image, label in zip(images, targets.labels)]
        orders["class"]["occlusion"] = pixel_order(np.stack(relevance))
    pixels = int(np.prod(images.shape[1:3]))
    for index, target in enumerate(orders):
        orders[target]["random"] = random_orders(len(images), pixels, [seed, index])
    total = sum(map(len, orders.values()))
    found, done = {}, 0
    for target, methods in orders.items():
        for method, order in methods.items():
            found.setdefault(target, {})[method] = curves(scores[target], images, order, baseline, steps, batch_size)
            done += 1
            if progress is not None:
                progress(done, total)
    clean = {target: found[target]["random"]["deletion"][:, 0] for target in found}  # step 0: nothing removed yet
    unit = {"layer": targets.layer, "channels": targets.channels.tolist(), "positions": targets.positions.tolist()}
    return FaithfulnessResult(steps, found, targets.labels, unit, clean)
