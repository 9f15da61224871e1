"""Feature generalization (paper Sec. 5.2-5.3): frozen features, new heads, and training from scratch.

Three ways to use a trained convnet on a new data set with ``N`` images per class
(:func:`zfkeras.experiments.folds.class_folds` draws them):

- **pretrained** (Tables 4-5, Fig. 9): layers up to ``layer`` (default fc7) stay fixed; a new
  softmax is trained on their features. The features of every image are computed once
  (:class:`FrozenFeatures`) and the softmax is fitted on them (:func:`zfkeras.experiments.linear.fit_linear`),
  instead of running the whole net at every step. :func:`with_linear_head` assembles the frozen
  layers and that softmax into one Keras model that predicts the same.
- **scratch**: the same architecture from random weights (:func:`scratch_model`), trained end to
  end on the ``N`` images with :func:`zfkeras.training.train`.
- **finetune**: every layer trainable from the pretrained weights (:func:`with_new_head`).

Features of a conv layer are its block's output, as the model pools it (after the block's max
pooling and LRN: what the next layer reads), flattened; fc layers give their rectified output.
Where a conv block's output has more than ``max_features`` values, it is max-pooled further over
equal spatial cells until it fits (``feature_layout`` says how).
"""

import dataclasses
import math

import keras
import numpy as np

from zfkeras.data import eval_dataset, subset
from zfkeras.experiments.folds import mean_class_accuracy
from zfkeras.experiments.linear import fit_linear
from zfkeras.nn.graph import Graph
from zfkeras.nn.layers import LocalResponseNormalization, SwitchMaxPool

# Layers that belong to a conv layer's block after it: its pooling and normalisation.
_BLOCK_LAYERS = (SwitchMaxPool, keras.layers.MaxPooling2D, LocalResponseNormalization, keras.layers.Dropout)


def feature_layers(model):
    """Names of the layers a linear classifier can read: conv layers and hidden Dense layers, in order."""
    chain = Graph(model).chain("transfer")
    names = [layer.name for layer in chain if isinstance(layer, keras.layers.Conv2D)]
    dense = [layer for layer in chain if isinstance(layer, keras.layers.Dense)]
    return names + [layer.name for layer in dense[:-1]]


def _block_output(model, name):
    """The tensor that stands for layer ``name``: a conv block's output, or a Dense layer's."""
    chain = Graph(model).chain("transfer")
    names = [layer.name for layer in chain]
    if name not in feature_layers(model):
        raise ValueError(f"unknown layer {name!r}; layers with features: {', '.join(feature_layers(model))}")
    index = names.index(name)
    output = chain[index].output
    if isinstance(chain[index], keras.layers.Conv2D):
        for layer in chain[index + 1 :]:
            if not isinstance(layer, _BLOCK_LAYERS):
                break
            output = layer.output[0] if isinstance(layer, SwitchMaxPool) else layer.output
    return output


def feature_layout(model, name, max_features=None):
    """``(block output shape, extra max-pool size or None, number of features)`` of layer ``name``."""
    shape = tuple(_block_output(model, name).shape[1:])
    if len(shape) != 3 or max_features is None or math.prod(shape) <= max_features:
        return shape, None, math.prod(shape)
    height, width, channels = shape
    for size in range(2, max(height, width) + 1):  # the finest cells that fit
        pooled = math.ceil(height / size) * math.ceil(width / size) * channels
        if pooled <= max_features:
            break
    return shape, (size, size), pooled


def _feature_tensor(model, name, max_features=None):
    tensor = _block_output(model, name)
    _, pool, _ = feature_layout(model, name, max_features)
    if pool is not None:
        tensor = keras.layers.MaxPooling2D(pool, padding="same", name=f"{name}_cells")(tensor)
    return keras.layers.Flatten(name=f"{name}_flat")(tensor) if len(tensor.shape) > 2 else tensor


def feature_model(model, layers, max_features=None):
    """A Keras model ``images [N, H, W, C] raw pixels -> {layer: float32 [N, D]}`` of flat features."""
    outputs = {name: _feature_tensor(model, name, max_features) for name in layers}
    return keras.Model(model.inputs[0], outputs, name=f"{model.name}_features")


class FrozenFeatures:
    """Features of a fixed model for images of one data source, computed once per image.

    Args:
        model: the trained Keras convnet (its weights are only read).
        source: a ``zfkeras.data.Source``; images are fitted to the model input as evaluation
            data is (:func:`zfkeras.data.eval_dataset`, centre crop).
        layers: names from :func:`feature_layers`.
        max_features: cap on the features of one conv layer (see the module docstring), or None.
        batch_size: images per forward pass.
    """

    def __init__(self, model, source, layers, max_features=None, batch_size=128):
        self.model, self.source, self.layers = model, source, list(layers)
        self.batch_size = batch_size
        self._extract = feature_model(model, self.layers, max_features)
        self._rows = {}  # image index -> its row in self._values
        self._values = {}  # layer -> float32 [images computed, D]

    def compute(self, indices, on_batch=None):
        """Compute the features of the images ``indices`` not computed yet (``on_batch(n)`` after each batch)."""
        missing = np.setdiff1d(np.unique(np.asarray(indices, np.int64)), np.fromiter(self._rows, np.int64))
        if not len(missing):
            return
        height, _, channels = self.model.inputs[0].shape[1:]
        batches = eval_dataset(subset(self.source, missing), height, channels, self.batch_size, crops="center", cache=False)
        parts = {name: [] for name in self.layers}
        for images, _ in batches.as_numpy_iterator():
            values = self._extract(images, training=False)
            for name in self.layers:
                parts[name].append(np.asarray(values[name], np.float32))
            if on_batch is not None:
                on_batch(len(images))
        computed = sum(len(part) for part in parts[self.layers[0]]) if self.layers else len(missing)
        if computed != len(missing):  # a skip_corrupt source left unreadable files out: rows would not match images
            raise ValueError(
                f"{len(missing) - computed} of the {len(missing)} images asked for could not be read from {self.source.name}; "
                "remove the unreadable files from the folder (a fold must see every image it names)"
            )
        first = len(self._rows)
        self._rows.update((int(index), first + row) for row, index in enumerate(missing))  # subset keeps index order
        for name in self.layers:
            self._values[name] = np.concatenate(([self._values[name]] if name in self._values else []) + parts[name])

    def get(self, layer, indices):
        """float32 ``[len(indices), D]`` features of ``layer`` for images ``indices`` (computed before)."""
        absent = [int(i) for i in indices if int(i) not in self._rows]
        if absent:
            raise ValueError(f"features of image {absent[0]} were not computed; call compute() with it first")
        return self._values[layer][[self._rows[int(i)] for i in indices]]


@dataclasses.dataclass
class TransferRun:
    """One method on one fold: ``mean_class_accuracy`` of its predictions on ``fold.test``."""

    method: str
    n_per_class: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    mean_class_accuracy: float

    def to_dict(self):
        return {
            "method": self.method,
            "n_per_class": self.n_per_class,
            "fold": self.fold,
            "train": self.train.tolist(),
            "test": self.test.tolist(),
            "mean_class_accuracy": self.mean_class_accuracy,
        }


def with_linear_head(model, layer, classifier, max_features=None):
    """The Keras model ``images -> softmax(classifier scores)``: ``model``'s layers up to ``layer``
    (shared, frozen) and a Dense layer holding the classifier (:meth:`LinearClassifier.folded`)."""
    weights, bias = classifier.folded()
    head = keras.layers.Dense(weights.shape[1], activation="softmax", name="predictions")
    outputs = head(_feature_tensor(model, layer, max_features))
    head.set_weights([weights, bias])
    assembled = keras.Model(model.inputs[0], outputs, name=f"{model.name}_{layer}_head")
    for item in assembled.layers:
        item.trainable = item is head
    return assembled


def with_new_head(model, num_classes, seed=None):
    """``model`` with its last Dense layer replaced by a new softmax of ``num_classes`` outputs
    (glorot-uniform, zero bias), named ``predictions``; the other layers are shared with ``model``."""
    chain = Graph(model).chain("transfer")
    last = chain[-1]
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(f"the model's last layer {last.name!r} is not a Dense classifier; cannot replace its head")
    head = keras.layers.Dense(num_classes, activation="softmax", name="predictions", kernel_initializer=keras.initializers.GlorotUniform(seed=seed))
    return keras.Model(model.inputs[0], head(last.input), name=model.name)


def scratch_model(model, num_classes, seed=None):
    """The architecture of ``model`` with fresh random weights (its own initializers) and a new
    ``num_classes`` head: the paper's "non-pretrained convnet"."""
    return with_new_head(keras.models.clone_model(model), num_classes, seed=seed)


def pretrained_run(features, layer, labels, fold, num_classes, kind="softmax", C=1.0):
    """``(TransferRun, LinearClassifier)``: a linear ``kind`` classifier fitted on the cached
    features of ``fold.train`` and scored on ``fold.test`` (``labels``: the whole split's)."""
    labels = np.asarray(labels)
    classifier = fit_linear(features.get(layer, fold.train), labels[fold.train], num_classes, kind=kind, C=C)
    accuracy = mean_class_accuracy(labels[fold.test], classifier.predict(features.get(layer, fold.test)))
    return TransferRun("pretrained", fold.per_class, fold.index, fold.train, fold.test, accuracy), classifier


def predict_classes(model, source, indices, batch_size=128):
    """``(labels, predicted classes)`` of ``model`` on images ``indices`` of ``source`` (centre crops)."""
    height, _, channels = model.inputs[0].shape[1:]
    part = subset(source, indices)
    labels, predictions = [], []
    for images, batch_labels in eval_dataset(part, height, channels, batch_size, cache=False).as_numpy_iterator():
        predictions.append(np.argmax(model(images, training=False), axis=1))
        labels.append(batch_labels)
    return np.concatenate(labels), np.concatenate(predictions)


def score(model, source, fold, method):
    """A :class:`TransferRun` of ``model`` (already trained on ``fold.train``) tested on ``fold.test``."""
    labels, predictions = predict_classes(model, source, fold.test)
    return TransferRun(method, fold.per_class, fold.index, fold.train, fold.test, mean_class_accuracy(labels, predictions))


def train_on_fold(model, source, fold, config, run_dir, method, compute_mean, callbacks=()):
    """Train ``model`` (a copy) on ``fold.train`` with :func:`zfkeras.training.train` and score it on
    ``fold.test``: ``(TransferRun, trained model)``.

    ``config`` is a ``zfkeras.training.TrainConfig`` with the model's input shape and the target's
    classes, ``val_split=0``; ``compute_mean`` gives the model the fold's mean image (scratch) or
    keeps the pretrained one (finetune).
    """
    from zfkeras.training import train

    part = subset(source, fold.train)
    trained, _ = train(config, part, None, run_dir, model=model, compute_mean=compute_mean, callbacks=callbacks, histograms=False)
    return score(trained, source, fold, method), trained
