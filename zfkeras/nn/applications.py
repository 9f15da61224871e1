"""Keras applications by name (``keras:resnet50``) as zfkeras models: raw 0-255 RGB pixels in.

:func:`build` makes ``keras.applications.<Name>`` on top of an :class:`ImageNetPreprocessing`
layer, the model's own ``preprocess_input`` as a layer, so the model takes raw pixel values 0-255
like every zfkeras model and the deconvnet passes the preprocessing by its exact adjoint
(its projections come back in raw-pixel units, RGB). The result is one flat Functional model
(input, preprocess, then the application's layers), so :class:`zfkeras.nn.deconv.Deconvnet` and
every analysis see its whole graph.

Weights: ``"imagenet"`` (Keras' cache in ``~/.keras/models``, else a download, which fails
offline), None (random, from Keras' initializers and its global seed), or a weights file
(``.h5`` as Keras publishes them, or ``.weights.h5`` from ``model.save_weights``).
Class names: :func:`imagenet_class_names` (offline, from Keras' cached index or Debian's opencv-doc).
"""

import contextlib
import json
import os
import sys

import keras
import numpy as np

# name -> (keras.applications constructor, preprocess_input mode of that family)
APPLICATIONS = {
    "vgg16": ("VGG16", "caffe"),
    "vgg19": ("VGG19", "caffe"),
    "resnet50": ("ResNet50", "caffe"),
    "resnet101": ("ResNet101", "caffe"),
    "resnet152": ("ResNet152", "caffe"),
    "resnet50v2": ("ResNet50V2", "tf"),
    "resnet101v2": ("ResNet101V2", "tf"),
    "resnet152v2": ("ResNet152V2", "tf"),
    "densenet121": ("DenseNet121", "torch"),
    "densenet169": ("DenseNet169", "torch"),
    "densenet201": ("DenseNet201", "torch"),
    "inceptionv3": ("InceptionV3", "tf"),
}
OPENCV_CLASSES = "/usr/share/doc/opencv-doc/examples/data/dnn/classification_classes_ILSVRC2012.txt"

# preprocess_input of keras.applications.imagenet_utils, per mode: output channel j is input
# channel order[j] times scale[j] plus offset[j].
_MODES = {
    "caffe": dict(order=(2, 1, 0), scale=(1.0, 1.0, 1.0), offset=(-103.939, -116.779, -123.68)),
    "tf": dict(order=(0, 1, 2), scale=(1 / 127.5,) * 3, offset=(-1.0,) * 3),
    "torch": dict(
        order=(0, 1, 2),
        scale=tuple(1 / (255.0 * s) for s in (0.229, 0.224, 0.225)),
        offset=tuple(-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),
    ),
}


@keras.saving.register_keras_serializable(package="zfkeras")
class ImageNetPreprocessing(keras.layers.Layer):
    """``keras.applications.imagenet_utils.preprocess_input(x, mode=mode)`` as a layer (RGB input).

    ``mode``: "caffe" (RGB -> BGR, minus the ImageNet mean pixel; VGG, ResNet), "tf" (to [-1, 1];
    Inception, ResNetV2) or "torch" (to [0, 1], minus mean, over std; DenseNet).
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        self.mode = mode
        spec = _MODES[mode]
        self._order = list(spec["order"])
        self._inverse = list(np.argsort(spec["order"]))
        self._scale = np.asarray(spec["scale"], "float32")
        self._offset = np.asarray(spec["offset"], "float32")

    def call(self, inputs):
        return keras.ops.take(inputs, self._order, axis=-1) * self._scale + self._offset

    def pixelwise_adjoint(self, signal):
        """The deconvnet's step down: the transpose of the linear part (scale, channel order)."""
        return keras.ops.take(signal * self._scale, self._inverse, axis=-1)

    @property
    def mean_pixel(self):
        """Raw RGB values ``[3]`` that the layer maps to 0 (the mean pixel, "no signal")."""
        zero = -self._offset / self._scale
        return zero[self._inverse].astype("float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def parse_name(text):
    """``"keras:resnet50"`` (or ``"keras:resnet50@96x128"`` for another input size) ->
    ``(name, input_shape or None)``; ValueError listing the known names."""
    spec = text[len("keras:") :] if text.startswith("keras:") else text
    name, _, size = spec.partition("@")
    name = name.strip().lower()
    if name not in APPLICATIONS:
        raise ValueError(f"{text}: unknown Keras application {name!r}; known: {', '.join(APPLICATIONS)}")
    if not size:
        return name, None
    parts = size.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"{text}: the input size after @ must be HxW, e.g. keras:{name}@224x224")
    return name, (int(parts[0]), int(parts[1]), 3)


def build(name, weights="imagenet", input_shape=None, seed=None):
    """``keras.applications.<name>`` taking raw 0-255 RGB pixels (module docs).

    Args:
        name: a key of :data:`APPLICATIONS` (e.g. "resnet50").
        weights: "imagenet", None (random) or the path of a weights file.
        input_shape: ``(H, W, 3)``; default the application's own (224x224, 299x299 for
            InceptionV3). Other sizes need weights other than ImageNet's with their Dense top.
        seed: with ``weights=None``, the seed of the random initial weights (Keras' global seed,
            ``keras.utils.set_random_seed``: the same seed gives the same weights); None: unseeded.

    Raises:
        ValueError: unknown name, missing weights file, or no ImageNet weights (not cached and
        no download possible); the message says how to give a weights file.
    """
    if name not in APPLICATIONS:
        raise ValueError(f"unknown Keras application {name!r}; known: {', '.join(APPLICATIONS)}")
    constructor, mode = APPLICATIONS[name]
    if weights not in ("imagenet", None) and not os.path.isfile(weights):
        raise ValueError(f"{weights}: no such weights file (--weights takes a .h5 / .weights.h5 file, or none)")
    default = (299, 299, 3) if name == "inceptionv3" else (224, 224, 3)
    shape = tuple(input_shape) if input_shape is not None else default
    inputs = keras.Input(shape, name="images")
    preprocessed = ImageNetPreprocessing(mode, name="preprocess")(inputs)
    if weights is None and seed is not None:
        keras.utils.set_random_seed(int(seed))
    try:
        # Keras prints "Downloading data from ..." to stdout, where results go: it is progress.
        with contextlib.redirect_stdout(sys.stderr):
            return getattr(keras.applications, constructor)(weights=weights, input_tensor=preprocessed, input_shape=shape)
    except Exception as error:  # Keras' own errors: a failed download, a mismatched file, a bad size
        line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if weights == "imagenet":
            raise ValueError(
                f"no ImageNet weights for {name}: Keras has none cached in ~/.keras/models and cannot download "
                f"them ({line}); give a weights file with --weights FILE, or --weights none for random weights"
            ) from None
        raise ValueError(f"cannot build {name} with weights {weights!r} at input {shape}: {line}") from None


def imagenet_class_names():
    """The 1000 ImageNet class names in Keras' output order, or None where none are on the machine.

    From Keras' cached ``imagenet_class_index.json`` (``~/.keras/models``, the names
    ``decode_predictions`` gives), else from Debian's ``opencv-doc`` list (first synonym of each line).
    """
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    index = os.path.join(home, "models", "imagenet_class_index.json")
    if os.path.isfile(index):
        with open(index) as handle:
            found = json.load(handle)
        return [found[str(i)][1] for i in range(1000)]
    if os.path.isfile(OPENCV_CLASSES):
        with open(OPENCV_CLASSES) as handle:
            lines = [line.strip() for line in handle if line.strip()]
        if len(lines) == 1000:
            return [line.split(",")[0].strip() for line in lines]
    return None


def load(text, weights="imagenet", seed=None):
    """``(model, class_names)`` for ``"keras:NAME[@HxW]"``; ``weights`` and ``seed`` as in :func:`build`, with
    the string "none" meaning None. Class names default to "0".."999" where none are found."""
    name, input_shape = parse_name(text)
    if isinstance(weights, str) and weights.lower() == "none":
        weights = None
    model = build(name, weights=weights, input_shape=input_shape, seed=seed)
    names = imagenet_class_names() or [str(i) for i in range(1000)]
    return model, names
