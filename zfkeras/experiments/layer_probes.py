"""How discriminative each layer's features are (paper Table 7): a linear classifier per layer.

Each layer's frozen features (:class:`zfkeras.experiments.transfer.FrozenFeatures`, computed once
per image) are fed to a softmax or a linear SVM (:func:`zfkeras.experiments.linear.fit_linear`)
trained on the few training images of each fold and scored by mean per-class accuracy on its test
images (:func:`zfkeras.experiments.folds.mean_class_accuracy`).
"""

import numpy as np

from zfkeras.experiments.folds import mean_class_accuracy
from zfkeras.experiments.linear import KINDS, fit_linear

__all__ = ["probe_layers"]


def probe_layers(features, labels, folds_by_n, layers, classifiers=("softmax", "svm"), C=1.0, num_classes=None, on_step=None):
    """One linear classifier per layer, classifier kind, images per class and fold.

    Args:
        features: a :class:`~zfkeras.experiments.transfer.FrozenFeatures` holding ``layers``'
            features of every image the folds use (``features.get(layer, indices)``).
        labels: int ``[num_examples]`` labels of the source the folds index.
        folds_by_n: ``{images per class: [Fold, ...]}`` (:func:`zfkeras.experiments.folds.class_folds`).
        layers: layer names, in the order of the records.
        classifiers: kinds of :func:`~zfkeras.experiments.linear.fit_linear` (``"softmax"``, ``"svm"``).
        C: weight of the data term against the L2 penalty.
        num_classes: classes of the source (default: ``labels.max() + 1``).
        on_step: called after each classifier is scored (progress).

    Returns:
        list of ``{"layer", "classifier", "n_per_class", "fold", "mean_class_accuracy", "converged"}``.
    """
    unknown = [kind for kind in classifiers if kind not in KINDS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a classifier; use {', '.join(KINDS)}")
    labels = np.asarray(labels)
    classes = int(num_classes if num_classes is not None else labels.max() + 1)
    records = []
    for layer in layers:
        for kind in classifiers:
            for n, draws in folds_by_n.items():
                for fold in draws:
                    classifier = fit_linear(features.get(layer, fold.train), labels[fold.train], classes, kind=kind, C=C)
                    accuracy = mean_class_accuracy(labels[fold.test], classifier.predict(features.get(layer, fold.test)))
                    records.append(
                        {
                            "layer": layer,
                            "classifier": kind,
                            "n_per_class": n,
                            "fold": fold.index,
                            "mean_class_accuracy": accuracy,
                            "converged": classifier.converged,
                        }
                    )
                    if on_step is not None:
                        on_step()
    return records
