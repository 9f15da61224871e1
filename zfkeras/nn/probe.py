"""One interface to a trained model for every analysis, whether it is a Keras model or an export.

Analyses (top-k, occlusion, invariance, ...) take a :class:`Probe`, so they run the same on a
``.keras`` model (:class:`KerasProbe`) and on an exported SavedModel
(:class:`zfkeras.export.ExportedProbe`). A Probe also carries what commands need to know of a model
(its receptive fields, its layer table), so a command opens a model once
(:func:`zfkeras.export.open_model`). All images are raw pixels 0-255, float32 ``[N, H, W, C]`` at
``input_shape``.
"""

import keras
import numpy as np

from zfkeras.io.validation import layer_names
from zfkeras.nn.adjoint import RULES
from zfkeras.nn.applications import ImageNetPreprocessing
from zfkeras.nn.deconv import Deconvnet
from zfkeras.nn.fields import receptive_fields
from zfkeras.nn.layers import SubtractMean
from zfkeras.nn.precision import as_float32, check_precision, compute_function, computing_in
from zfkeras.nn.table import architecture


class Probe:
    """What analyses may ask of a model.

    Attributes:
        input_shape: ``(H, W, C)`` of the model input.
        layer_names: maps that can be projected (conv layers, and ReLU layers of a DAG such as
            ResNet's block outputs), input to output.
        feature_names: every key :meth:`features` can return (conv layers, then fc6/fc7).
        class_names: one name per output class.
        class_layer: the output layer whose class scores (before its softmax) :meth:`project`
            also takes, channel = class (see :class:`zfkeras.nn.deconv.Deconvnet`), or None.
        rules: the backward rules :meth:`project` can use (an export written before the rules:
            the deconvnet's only).
        mean_image: ``(H, W, C)`` float32 raw-pixel mean the model subtracts first (for a Keras
            application, the pixel its preprocessing maps to 0).
        path: where the model was read from (None for a model made in memory).
        record: the training run's ``config.json`` contents, when known (else None).
        layer_aliases: ``{name: listed name}``: other names accepted wherever a layer is named (every
            check goes through :meth:`check_layers`): the Keras name of the layer whose output a
            map is, when the map is listed under its conv's name (ResNet50's ``conv3_block2_2_relu``
            is the map ``conv3_block2_2_conv``).
        precision: what :meth:`predict` and :meth:`features` compute in
            (:data:`zfkeras.nn.precision.PRECISIONS`; results always come back float32). The
            deconvnet's projections are float32 whatever it is.
    """

    input_shape = ()
    layer_names = ()
    feature_names = ()
    class_names = ()
    class_layer = None
    rules = RULES
    mean_image = None
    path = None
    record = None
    layer_aliases = {}
    precision = "float32"

    @property
    def keras_model(self):
        """The Keras model (weights, geometry); an export loads its ``model.keras`` once, on first use."""
        raise NotImplementedError

    @property
    def fields(self):
        """``{layer: Field}``: the receptive field of every spatial layer (:func:`zfkeras.nn.fields.receptive_fields`)."""
        if getattr(self, "_fields", None) is None:
            self._fields = receptive_fields(self.keras_model)
        return self._fields

    def layer_table(self):
        """The model's layers as :class:`zfkeras.nn.table.LayerRow` s, input to output."""
        return architecture(self.keras_model)

    def predict(self, images, batch_size=256):
        """Class probabilities ``[N, classes]``."""
        raise NotImplementedError

    def features(self, images, layers=None, batch_size=256):
        """``{name: array}``: conv layers' rectified pre-pool maps ``[N, h, w, K]``, fc ``[N, units]``."""
        raise NotImplementedError

    def feature_tensors(self, images, layers=None):
        """:meth:`features` as TensorFlow tensors for a ``tf.Tensor`` batch, traceable inside a
        ``tf.function`` (so reductions of the maps run in the same graph, e.g. the atlas scan's)."""
        raise NotImplementedError

    def project(self, images, layer, channel, position="max", batch_size=64, rule="deconvnet"):
        """Reconstructions shaped like ``images`` under backward ``rule`` ("deconvnet", "guided"
        or "gradient"), of maps of ``layer`` or, with ``layer=class_layer``, of the class scores
        ``channel`` (see :meth:`Deconvnet.project`)."""
        raise NotImplementedError

    def projectable(self):
        """The names :meth:`project` takes: :attr:`layer_names`, then :attr:`class_layer` if any."""
        return list(self.layer_names) + ([self.class_layer] if self.class_layer else [])

    def check_images(self, images):
        """``images`` as float32 ``[N, H, W, C]``, or a ValueError naming the expected shape."""
        images = np.asarray(images, dtype="float32")
        if images.ndim != 4 or images.shape[1:] != tuple(self.input_shape):
            raise ValueError(f"images must have shape [N, {', '.join(map(str, self.input_shape))}], got {images.shape}")
        return images

    def check_layers(self, layers, names=None):
        """``layers`` (default all of ``names``, itself :attr:`feature_names` by default) as a list
        of those names, aliases (:attr:`layer_aliases`) replaced by the names they stand for, or a
        ValueError listing the valid names."""
        return layer_names(layers, self.feature_names if names is None else names, aliases=self.layer_aliases)


def batched(function, images, batch_size):
    """Apply ``function`` to slices of ``images`` and concatenate (arrays or dicts of arrays)."""
    parts = [function(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    if not parts:
        parts = [function(images[:0])]
    if isinstance(parts[0], dict):
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return np.concatenate(parts)


class KerasProbe(Probe):
    """:class:`Probe` over an in-memory Keras convnet (weights shared, nothing copied).

    Args:
        model: a Keras classifier made of the layer types :class:`Deconvnet` supports: a chain
            (zfkeras models) or a DAG (e.g. :func:`zfkeras.nn.applications.build`). Its
            ``layer_names`` are the deconvnet's projectable maps, ``feature_names`` those and the
            hidden ReLU Dense layers (fc6, fc7; VGG16's fc1, fc2).
        class_names: names of the outputs; default ``"0"``, ``"1"``, ...
        path, record: where the model was read from and its training record, if known.
        precision: what ``predict`` and ``features`` compute in (:mod:`zfkeras.nn.precision`);
            the model itself, its weights and the deconvnet stay float32.
    """

    def __init__(self, model, class_names=None, path=None, record=None, precision="float32"):
        self.model, self.path, self.record = model, path, record
        self.precision = check_precision(precision)
        self.deconvnet = Deconvnet(model)
        self.input_shape = self.deconvnet.input_shape
        self.layer_names = list(self.deconvnet.layer_names)
        self.class_layer = self.deconvnet.class_layer
        selected = {name: self.deconvnet.selection_layer(name).name for name in self.layer_names}
        self.layer_aliases = {own: name for name, own in selected.items() if own != name}
        classes = int(model.outputs[0].shape[-1])
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(classes)]
        if len(self.class_names) != classes:
            raise ValueError(f"class_names has {len(self.class_names)} names but the model has {classes} outputs")
        dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        fc = [layer for layer in dense[:-1] if getattr(layer.activation, "__name__", "") == "relu"]
        outputs = {name: self.deconvnet.selection_layer(name).output for name in self.layer_names}
        outputs.update({layer.name: layer.output for layer in fc})
        self.feature_names = list(outputs)
        self._feature_tensors = outputs
        means = [layer for layer in model.layers if isinstance(layer, SubtractMean)]
        pixels = [layer for layer in model.layers if isinstance(layer, ImageNetPreprocessing)]
        if means:
            self.mean_image = np.asarray(means[0].mean)
        elif pixels:  # a Keras application: the raw pixel its preprocessing maps to 0
            self.mean_image = np.broadcast_to(pixels[0].mean_pixel, self.input_shape).astype("float32")
        else:
            self.mean_image = np.zeros(self.input_shape, "float32")
        self._predict = compute_function(model, lambda x: model(x, training=False), self.precision)
        self._features = {}

    @property
    def keras_model(self):
        return self.model

    def predict(self, images, batch_size=256):
        images = self.check_images(images)
        return batched(lambda x: self._predict(x).numpy(), images, batch_size)

    def features(self, images, layers=None, batch_size=256):
        images = self.check_images(images)
        layers = tuple(self.check_layers(layers))
        if layers not in self._features:
            model = keras.Model(self.model.inputs[0], {name: self._feature_tensors[name] for name in layers})
            self._features[layers] = compute_function(self.model, lambda x: model(x, training=False), self.precision)
        function = self._features[layers]
        return batched(lambda x: {k: v.numpy() for k, v in function(x).items()}, images, batch_size)

    def feature_tensors(self, images, layers=None):
        layers = tuple(self.check_layers(layers))
        key = ("tensors", layers)
        if key not in self._features:
            self._features[key] = keras.Model(self.model.inputs[0], {name: self._feature_tensors[name] for name in layers})
        # In ``precision`` where this is traced (a tf.function reads the layers' policies then); float32 out.
        with computing_in(self.model, self.precision):
            return as_float32(self._features[key](images, training=False))

    def project(self, images, layer, channel, position="max", batch_size=64, rule="deconvnet"):
        layer = self.check_layers(layer, self.projectable())[0]
        return self.deconvnet.project(self.check_images(images), layer, channel, position, batch_size=batch_size, rule=rule)
