"""Per-class train/test folds and the Caltech metric, shared by transfer and per-layer analysis.

The paper (Sec. 5.2) follows Fei-Fei et al. for Caltech-101: for each of 5 folds, draw ``N``
training images per class and test on up to 50 other images per class, and report the mean over
classes of the per-class accuracy, as mean +- std over the folds.
"""

import dataclasses

import numpy as np

from zfkeras.io.validation import positive_int


@dataclasses.dataclass(frozen=True)
class Fold:
    """One draw: ``train`` and ``test`` are sorted int64 indices into the source's split."""

    index: int
    per_class: int
    train: np.ndarray
    test: np.ndarray


def class_folds(labels, per_class, folds=5, test_per_class=50, seed=0, class_names=None):
    """``folds`` :class:`Fold` draws of exactly ``per_class`` training images per class and up to
    ``test_per_class`` test images per class from the rest.

    Fold ``f`` shuffles each class with a generator seeded by ``(seed, f)`` and takes training
    images from the front and test images right after them, so within a fold the training set of
    a smaller ``per_class`` is part of a larger one's, and train and test never overlap.

    Args:
        labels: int ``[N]`` class of each image of the split (any order on disk).
        per_class: training images per class (>= 1).
        folds: number of draws (>= 1). test_per_class: cap on test images per class (>= 1).
        class_names: names used in errors (default: the label numbers).

    Raises:
        ValueError naming the first class with fewer than ``per_class + 1`` images, and its count.
    """
    labels = np.asarray(labels, np.int64)
    for name, value in (("per_class", per_class), ("folds", folds), ("test_per_class", test_per_class)):
        positive_int(name, value)
    classes = np.unique(labels)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    for c in classes:
        if len(members[c]) <= per_class:
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            raise ValueError(
                f"class {name!r} has {len(members[c])} images; {per_class} per class for training needs at least {per_class + 1} (one left to test)"
            )
    result = []
    for fold in range(folds):
        rng = np.random.default_rng([int(seed), fold])
        train, test = [], []
        for c in classes:
            order = rng.permutation(members[c])
            train.append(order[:per_class])
            test.append(order[per_class : per_class + test_per_class])
        result.append(Fold(fold, per_class, np.sort(np.concatenate(train)), np.sort(np.concatenate(test))))
    return result


def mean_class_accuracy(labels, predictions):
    """Mean over the classes present in ``labels`` of the fraction of that class predicted right.

    Args:
        labels, predictions: int ``[N]``.

    Returns:
        float in [0, 1].
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape or labels.ndim != 1 or not len(labels):
        raise ValueError(f"labels and predictions must be equal non-empty [N] arrays, got {labels.shape} and {predictions.shape}")
    return float(np.mean([np.mean(predictions[labels == c] == c) for c in np.unique(labels)]))


def mean_and_std(values):
    """``(mean, std)`` over folds (population std, as over a fixed set of folds); NaN for none."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std())


def summarize(records, keys):
    """Mean and std of ``mean_class_accuracy`` over folds, per group.

    Args:
        records: dicts with the ``keys`` and ``"mean_class_accuracy"`` (one per fold).
        keys: the fields that define a group, e.g. ``("method", "n_per_class")``.

    Returns:
        list of dicts ``{**group, "mean": m, "std": s, "folds": count}`` in first-seen order.
    """
    groups = {}
    for record in records:
        groups.setdefault(tuple(record[key] for key in keys), []).append(record["mean_class_accuracy"])
    rows = []
    for group, values in groups.items():
        mean, std = mean_and_std(values)
        rows.append({**dict(zip(keys, group)), "mean": mean, "std": std, "folds": len(values)})
    return rows
