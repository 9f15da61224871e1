"""Top-1 / top-5 error from one centre crop and from 10 crops, per model and for their average.

The paper's Table 2 reports top-1 and top-5 error of single models and of ensembles (the average of
several models' softmax outputs), and Sec. 3 tests on 10 crops (4 corners + centre, with and without
a horizontal flip), averaging the 10 predictions. Here every test image comes as its 10 views in
:func:`zfkeras.data.ten_crop` order; view 4 is the centre crop, which gives the single-crop numbers,
and the mean of the 10 views' probabilities gives the 10-crop numbers.
"""

import numpy as np

from zfkeras.data import eval_dataset

CENTER_VIEW = 4  # index of the centre crop in zfkeras.data.ten_crop's order
ENSEMBLE = "ensemble"


def top_k_correct(probs, labels, k):
    """Number of rows of ``probs [N, C]`` whose ``labels [N]`` is among the ``k`` largest (ties: lower index first)."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    k = min(k, probs.shape[1])
    # Stable descending order: a tie does not count as a hit for a class ranked after the k-th.
    ranks = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return int(np.sum(np.any(ranks == labels[:, None], axis=1)))


class ErrorCounter:
    """Accumulates top-1/top-k hits of single-crop and 10-crop probabilities over batches."""

    def __init__(self, k=5):
        self.k = k
        self.count = 0
        self.hits = {"single_top1": 0, "single_topk": 0, "ten_top1": 0, "ten_topk": 0}
        self.ten_crop = True

    def add(self, views, labels):
        """``views``: probabilities ``[B, 10, C]`` (10-crop) or ``[B, C]`` (centre crop only)."""
        views = np.asarray(views)
        if views.ndim == 2:
            single, ten = views, None
            self.ten_crop = False
        else:
            single, ten = views[:, CENTER_VIEW], views.mean(axis=1)
        self.count += len(labels)
        self.hits["single_top1"] += top_k_correct(single, labels, 1)
        self.hits["single_topk"] += top_k_correct(single, labels, self.k)
        if ten is not None:
            self.hits["ten_top1"] += top_k_correct(ten, labels, 1)
            self.hits["ten_topk"] += top_k_correct(ten, labels, self.k)

    def errors(self):
        """``{"top1_error", "top5_error", "ten_crop_top1_error", "ten_crop_top5_error"}`` as fractions."""
        if not self.count:
            raise ValueError("no images were evaluated")
        k = self.k
        result = {"top1_error": 1 - self.hits["single_top1"] / self.count, f"top{k}_error": 1 - self.hits["single_topk"] / self.count}
        if self.ten_crop:
            result["ten_crop_top1_error"] = 1 - self.hits["ten_top1"] / self.count
            result[f"ten_crop_top{k}_error"] = 1 - self.hits["ten_topk"] / self.count
        return result


def check_compatible(probes):
    """ValueError unless every probe has the same input shape and number of classes (needed to average)."""
    names = list(probes)
    first = probes[names[0]]
    for name in names[1:]:
        probe = probes[name]
        if tuple(probe.input_shape) != tuple(first.input_shape):
            raise ValueError(f"models {names[0]} and {name} take different inputs {tuple(first.input_shape)} and {tuple(probe.input_shape)}")
        if len(probe.class_names) != len(first.class_names):
            raise ValueError(f"models {names[0]} and {name} have {len(first.class_names)} and {len(probe.class_names)} classes")


def check_labels(probes, source):
    """ValueError unless the source's label ``i`` can be each probe's class ``i``. Where the two
    name their classes alike (any name shared), the names must be the same, in the same order: a
    folder whose sorted class names differ from the model's (another subset, another order) would
    otherwise be scored against the wrong outputs. Names with nothing in common (an ImageNet
    folder's WordNet ids against a Keras application's words, a test's folders ``a``, ``b``)
    cannot be compared and pass, unless the source has more classes than the model has outputs."""
    theirs = list(source.class_names or ())
    for name, probe in probes.items():
        ours = list(probe.class_names or ())
        if not ours or not theirs or ours == theirs:
            continue
        comparable = bool(set(ours) & set(theirs))
        if len(theirs) > len(ours) or (comparable and len(ours) != len(theirs)):
            raise ValueError(f"model {name} has {len(ours)} classes but {source.name} has {len(theirs)}: evaluate it on data of its own classes")
        if comparable:
            index = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
            raise ValueError(
                f"{source.name}'s label {index} is {theirs[index]!r} but model {name}'s class {index} is {ours[index]!r}: "
                "the data's classes must be the model's, in its order"
            )


def evaluate(probes, batches, k=5, batch_size=256, on_batch=None):
    """Error rates of each probe and of their average, on ``batches``.

    Args:
        probes: ``{name: zfkeras.nn.probe.Probe}``, all with the same input shape and classes.
        batches: iterable of ``(images, labels)``: images float32 raw pixels, either
            ``[B, 10, S, S, C]`` (:func:`zfkeras.data.ten_crop` views) or ``[B, S, S, C]`` (centre crops);
            labels int ``[B]``.
        k: the "top-5" of top-5 error (capped at the number of classes).
        batch_size: images per model call.
        on_batch: called with the number of images after each batch (progress bars).

    Returns:
        ``{"num_images": N, "models": {name: errors}, "ensemble": errors or None}`` where ``errors``
        is :meth:`ErrorCounter.errors` (fractions in [0, 1]); ``ensemble`` averages the models'
        probabilities (per view) and is None for a single model.
    """
    if not probes:
        raise ValueError("evaluate needs at least one model")
    check_compatible(probes)
    counters = {name: ErrorCounter(k) for name in probes}
    ensemble = ErrorCounter(k) if len(probes) > 1 else None
    for images, labels in batches:
        images, labels = np.asarray(images, np.float32), np.asarray(labels)
        views_shape = images.shape[:-3]  # [B] or [B, 10]
        flat = images.reshape((-1,) + images.shape[-3:])
        total = 0
        for name, probe in probes.items():
            probs = probe.predict(flat, batch_size=batch_size).reshape(views_shape + (-1,))
            counters[name].add(probs, labels)
            total = total + probs
        if ensemble is not None:
            ensemble.add(total / len(probes), labels)
        if on_batch is not None:
            on_batch(len(labels))
    return {
        "num_images": counters[next(iter(probes))].count,
        "models": {name: counter.errors() for name, counter in counters.items()},
        "ensemble": ensemble.errors() if ensemble is not None else None,
    }


def evaluate_source(probes, source, crops="ten", batch_size=100, on_batch=None):
    """:func:`evaluate` of ``probes`` on a data :class:`~zfkeras.data.Source`.

    Images are resized (smaller side to ``load_size(S)``) and centre-cropped to ``S x S`` (single
    crop), or cut into the paper's 10 crops, exactly as :func:`zfkeras.data.eval_dataset` does.
    ``batch_size`` counts the views in one forward pass: 10 crops of each image are 10 views.
    """
    check_compatible(probes)
    check_labels(probes, source)
    size, _, channels = next(iter(probes.values())).input_shape
    images = max(1, batch_size // 10) if crops == "ten" else batch_size
    dataset = eval_dataset(source, size, channels, images, crops="ten" if crops == "ten" else "center")
    return evaluate(probes, dataset.as_numpy_iterator(), on_batch=on_batch)
