"""SavedModel export: a trained convnet and its deconvnet, usable with no zfkeras import.

``export_model(model, "saved_models/NAME", class_names=...)`` writes::

    saved_models/NAME/saved_model.pb, variables/   tf.saved_model.load(path) gives the endpoints below
    saved_models/NAME/model.keras                  the Keras model (``import zfkeras`` to load it)
    saved_models/NAME/mean.npy                     float32 [H, W, C] mean image the model subtracts
    saved_models/NAME/zfkeras.json                 input shape, names, training command/config, metrics
    saved_models/NAME/checkpoints/epoch-NNN.keras  (optional) models kept during training
    saved_models/NAME/history.json                 (optional) the run's per-epoch loss, accuracy, lr

Endpoints (images: float32 raw pixels 0-255; the mean is subtracted inside):

- ``serve(images)`` -> class probabilities ``[N, classes]`` of native images ``[N, H, W, C]`` of any
  size: it applies the evaluation preprocessing itself (:func:`zfkeras.data.transforms.native_to_input`: the
  smaller side resized to ``load_size(S)``, then the centre ``S x S``; a small model's native
  ``S x S`` image goes in unchanged);
- ``preprocess(images)`` -> that model-input view ``[N, S, S, C]`` of native images;

The endpoints below take images at the model's input size ``[N, S, S, C]`` (``preprocess`` output),
and projections are returned in that pixel space:

- ``features(images)`` -> ``{name: array}``: every conv layer's rectified, pre-pool map
  ``[N, h, w, K]`` and fc6/fc7 ``[N, units]``, keyed by layer name;
- ``project_<conv>(images, channel int32 [N], position int32 [N, 2])`` -> deconvnet reconstruction
  shaped like ``images``, from the activation at ``position`` (y, x) of map ``channel``, (-1, -1)
  meaning that map's strongest activation (:meth:`zfkeras.nn.deconv.Deconvnet.projection_function`);
- ``project_map_<conv>(images, channel int32 [N])`` -> the same from the whole map;
- ``project_<conv>_guided``, ``project_map_<conv>_guided``, ``project_<conv>_gradient`` and
  ``project_map_<conv>_gradient`` -> the same under guided backpropagation and the plain gradient
  (:mod:`zfkeras.nn.adjoint`; :func:`endpoint_name` spells them);
- ``project_<class layer>(images, channel int32 [N])`` (and ``_guided``, ``_gradient``) -> the
  projection of class score ``channel`` (the output layer before its softmax, seeded with 1).

``zfkeras.json`` lists the endpoints, the ``rules`` and the ``class_layer``; an export written before
the rules has the deconvnet's ``project_*`` endpoints only, and :class:`ExportedProbe` says so in one
line when another rule or the class scores are asked of it.

The directory is written beside its final place and renamed at the end, so a crash never leaves a
half-written export (an older export at ``path`` stays whole until the new one replaces it).
:func:`load_exported` wraps an export as a :class:`zfkeras.nn.probe.Probe`.
"""

import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from zfkeras.data.transforms import load_size, native_to_input, train_padding
from zfkeras.io.atomic import atomic_output
from zfkeras.io.paths import inside
from zfkeras.io.validation import positions as as_positions
from zfkeras.nn.adjoint import RULES, as_channels, check_rule
from zfkeras.nn.fields import Field, receptive_fields
from zfkeras.nn.precision import check_precision
from zfkeras.nn.probe import KerasProbe, Probe, batched
from zfkeras.nn.table import LayerRow, architecture
from zfkeras.training.rundir import RunDir
from zfkeras.version import __version__

METADATA_FILE = "zfkeras.json"
FORMAT = "zfkeras-export"
FORMAT_VERSION = 2  # 2: serve takes native images of any size; preprocess endpoint
REQUIRED_METADATA = ("input_shape", "class_names", "layer_names", "feature_names", "feature_shapes", "mean_image")
FILE_ENTRIES = ("mean_image", "keras_model", "history")  # zfkeras.json entries naming one file of the export (and checkpoints: a list)


def _jsonable(value):
    """``value`` with numpy scalars/arrays and tuples turned into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def endpoint_name(layer, rule="deconvnet", whole_map=False):
    """The endpoint projecting ``layer`` under ``rule``: ``project_<layer>`` (``project_map_<layer>``
    with ``whole_map``) for the deconvnet, as exports always had, with ``_<rule>`` appended for the others."""
    name = f"project_map_{layer}" if whole_map else f"project_{layer}"
    return name if rule == "deconvnet" else f"{name}_{rule}"


def _projection_endpoints(deconvnet, layer, rule):
    """``(images, channel, position)`` and whole-map ``(images, channel)`` projections of ``layer``."""
    point = deconvnet.projection_function(layer, rule=rule)
    whole = deconvnet.projection_function(layer, whole_map=True, rule=rule)

    def project(images, channel, position):
        return point(images, channel, position)

    def project_map(images, channel):
        return whole(images, channel, tf.fill(tf.stack([tf.shape(channel)[0], 2]), -1))

    return project, project_map


def export_model(model, path, *, class_names, config=None, metrics=None, command=None, checkpoints=(), history=None, rules=RULES):
    """Export ``model`` with its deconvnet to the directory ``path`` (see the module docstring).

    Args:
        model: a trained Keras convnet (zfkeras layer names: ``subtract_mean``, ``conv1``...).
        path: output directory; replaced atomically if it exists.
        class_names: one name per output class.
        config: the training configuration (e.g. the run's ``config.json`` contents), or None.
        metrics: final metrics, e.g. ``{"test_top1_error": 0.08}``, or None.
        command: the command line that trained the model, or None.
        checkpoints: ``.keras`` files saved during training (``epoch-NNN.keras``), copied into
            ``path/checkpoints/`` and listed in ``zfkeras.json`` (for the feature-evolution figure).
        history: the run's per-epoch history (``history.json`` of :func:`zfkeras.training.train`), written
            as ``path/history.json`` so the export carries its training curves (``zf report``), or None.
        rules: the backward rules whose projection endpoints are exported (default all three; each
            adds its endpoints' tracing time and size).

    Returns:
        The metadata written to ``zfkeras.json`` (a dict).
    """
    probe = KerasProbe(model, class_names=class_names)
    rules = [rule for rule in RULES if rule in {check_rule(given) for given in rules}]  # checked, in RULES' order
    if "deconvnet" not in rules:
        raise ValueError(f"rules must include deconvnet (the project_<layer> endpoints), got {list(rules)}")
    archive, feature_shapes = _archive(model, probe, rules)
    metadata = _metadata(model, probe, feature_shapes, checkpoints, history, rules)
    metadata.update(training={"command": command, "config": _jsonable(config)}, metrics=_jsonable(metrics))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"export path {path} exists and is not a directory")
    with atomic_output(path, directory=True) as temp:  # leftovers of killed exports are cleaned first
        archive.write_out(temp, verbose=False)
        model.save(os.path.join(temp, metadata["keras_model"]))
        np.save(os.path.join(temp, metadata["mean_image"]), np.asarray(probe.mean_image, np.float32))
        run = RunDir(temp)
        if history is not None:
            with open(run.history_file, "w") as handle:
                json.dump(_jsonable(history), handle)
        if checkpoints:
            os.makedirs(run.checkpoints_dir)
            for checkpoint in checkpoints:
                shutil.copy2(checkpoint, os.path.join(run.checkpoints_dir, os.path.basename(checkpoint)))
        with open(os.path.join(temp, METADATA_FILE), "w") as handle:
            json.dump(metadata, handle, indent=2)
            handle.write("\n")
    return metadata


def _archive(model, probe, rules):
    """The ``keras.export.ExportArchive`` with every endpoint, and ``{feature: shape}``."""
    deconvnet = probe.deconvnet
    height, width, channels = probe.input_shape
    images = tf.TensorSpec((None, height, width, channels), tf.float32, name="images")
    channel = tf.TensorSpec((None,), tf.int32, name="channel")
    position = tf.TensorSpec((None, 2), tf.int32, name="position")

    def selected(name):
        return (deconvnet.selection_layer(name) if name in probe.layer_names else model.get_layer(name)).output

    feature_model = keras.Model(model.inputs, {name: selected(name) for name in probe.feature_names})
    archive = keras.export.ExportArchive()
    archive.track(model)
    native = tf.TensorSpec((None, None, None, channels), tf.float32, name="images")
    archive.add_endpoint("serve", lambda x: model(native_to_input(x, height), training=False), input_signature=[native])
    archive.add_endpoint("preprocess", lambda x: native_to_input(x, height), input_signature=[native])
    archive.add_endpoint("features", lambda x: feature_model(x, training=False), input_signature=[images])
    for rule in rules:
        for layer in probe.layer_names:
            point, whole = _projection_endpoints(deconvnet, layer, rule)
            archive.add_endpoint(endpoint_name(layer, rule), point, input_signature=[images, channel, position])
            archive.add_endpoint(endpoint_name(layer, rule, whole_map=True), whole, input_signature=[images, channel])
        if probe.class_layer is not None:  # a class score has no position: (images, channel) like a whole map
            _, scores = _projection_endpoints(deconvnet, probe.class_layer, rule)
            archive.add_endpoint(endpoint_name(probe.class_layer, rule), scores, input_signature=[images, channel])
    return archive, {name: list(selected(name).shape[1:]) for name in probe.feature_names}


def _metadata(model, probe, feature_shapes, checkpoints, history, rules):
    """``zfkeras.json`` of an export, without the training record."""
    height, width, channels = probe.input_shape
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "zfkeras_version": __version__,
        "model_name": model.name,
        "input_shape": [height, width, channels],
        "input": {
            "serve": {
                "dtype": "float32",
                "shape": [None, None, None, channels],
                "range": [0, 255],
                "what": "native images of any size, raw pixel values; serve resizes and crops them itself",
            },
            "model": {
                "dtype": "float32",
                "shape": [None, height, width, channels],
                "range": [0, 255],
                "what": "features, project_* and model.keras take images at input_shape (preprocess's output); the mean is subtracted inside",
            },
        },
        "preprocessing": _preprocessing(height),
        "ten_crop": _ten_crop(height),
        "class_names": list(probe.class_names),
        "layer_names": list(probe.layer_names),
        "layer_aliases": dict(probe.layer_aliases),
        "feature_names": list(probe.feature_names),
        "feature_shapes": feature_shapes,
        "fields": {name: field.to_dict() for name, field in receptive_fields(model).items()},
        "architecture": [row.to_dict() for row in architecture(model)],
        "endpoints": ["serve", "preprocess", "features"]
        + [endpoint_name(layer, rule, whole) for rule in rules for whole in (False, True) for layer in probe.layer_names]
        + ([endpoint_name(probe.class_layer, rule) for rule in rules] if probe.class_layer else []),
        "rules": list(rules),
        "class_layer": probe.class_layer,
        "mean_image": "mean.npy",
        "checkpoints": [f"{RunDir.CHECKPOINTS}/{os.path.basename(p)}" for p in checkpoints],
        "history": RunDir.HISTORY if history is not None else None,
        "keras_model": RunDir.MODEL,
    }


def _preprocessing(size):
    side, pad = load_size(size), train_padding(size)
    if side == size:
        return (
            f"none for native {size}x{size} images: the model is evaluated on the image as it is (other sizes: the "
            f"smaller side resized to {size}, bilinear with antialiasing, then the centre {size}x{size}); training "
            f"used random {size}x{size} crops of the image zero-padded by {pad} on each side, flipped at random; "
            f"10-crop evaluation takes the corner and centre crops of that padded image and their mirror images"
        )
    return (
        f"the smaller side resized to {side} (bilinear, antialiased), the centre {side}x{side} kept, then its centre "
        f"{size}x{size} (serve does this itself); training used random {size}x{size} crops of the {side}x{side} image "
        f"with random flips; 10-crop evaluation takes its corner and centre crops and their mirror images"
    )


def _ten_crop(size):
    """The 10-crop view in numbers, for consumers: resize the smaller side to ``resize_to`` (native
    images: not resized), keep the centre square, zero-pad it by ``pad``, then take the 4 corner and
    the centre ``crop`` x ``crop`` crops and their mirror images."""
    side = load_size(size)
    return {"resize_to": side, "pad": train_padding(size) if side == size else 0, "crop": size}


def read_metadata(path):
    """The ``zfkeras.json`` of an export directory, or a ValueError saying why ``path`` is not one."""
    path = os.fspath(path)
    expected = "a zfkeras export directory (saved_model.pb, zfkeras.json, mean.npy from `zf export`)"
    if not os.path.isdir(path):
        raise ValueError(f"{path}: no such directory; expected {expected}")
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"{path}: not a SavedModel (no saved_model.pb); expected {expected}")
    meta_path = os.path.join(path, METADATA_FILE)
    if not os.path.exists(meta_path):
        raise ValueError(f"{path}: a SavedModel but not a zfkeras export (no {METADATA_FILE}); expected {expected}")
    try:
        with open(meta_path) as handle:
            metadata = json.load(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"{meta_path}: unreadable ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f'{meta_path}: not zfkeras export metadata (no "format": "{FORMAT}")')
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(
            f"{meta_path}: missing {', '.join(missing)} (an export from an older zfkeras, or not "
            f"zfkeras's); re-export its model.keras with `zf export`"
        )
    export_files(path, metadata)
    return metadata


def export_files(path, metadata):
    """``{entry: file}`` of every file the export ``path``'s ``zfkeras.json`` (``metadata``) names
    (``mean_image``, ``keras_model``, ``history``, ``checkpoints[i]``), each checked to resolve inside
    ``path`` (:func:`zfkeras.io.paths.inside`: a ValueError naming the entry otherwise)."""
    meta_path = os.path.join(path, METADATA_FILE)
    files = {key: inside(path, metadata[key], key, meta_path) for key in FILE_ENTRIES if metadata.get(key) is not None}
    checkpoints = metadata.get("checkpoints") or []
    if not isinstance(checkpoints, list):
        raise ValueError(f"{meta_path}: checkpoints must be a list of file names inside {path}, got {checkpoints!r}")
    files.update({f"checkpoints[{i}]": inside(path, name, f"checkpoints[{i}]", meta_path) for i, name in enumerate(checkpoints)})
    return files


class ExportedProbe(Probe):
    """:class:`zfkeras.nn.probe.Probe` over an export directory, through ``tf.saved_model.load`` only.

    Attributes (besides the Probe ones): ``path``; ``metadata`` (the ``zfkeras.json`` dict);
    ``files`` (``{entry: path}`` of the files it names, each inside ``path``: :func:`export_files`);
    ``saved_model`` (the loaded SavedModel object with its endpoints).

    ``precision`` other than float32: ``predict`` and ``features`` run the export's ``model.keras``
    in that precision (a :class:`KerasProbe`, loaded on first use); the SavedModel's endpoints are
    float32 and projections always come from them.
    """

    def __init__(self, path, precision="float32"):
        self.path = os.fspath(path)
        self.precision = check_precision(precision)
        self._computing = None
        self.metadata = read_metadata(self.path)
        try:
            self.saved_model = tf.saved_model.load(self.path)
        except Exception as error:  # corrupt files: one line naming the directory
            raise ValueError(f"{self.path}: cannot load the SavedModel ({str(error).splitlines()[0]})") from None
        meta = self.metadata
        missing = [name for name in meta.get("endpoints", ["serve", "features"]) if not hasattr(self.saved_model, name)]
        if missing:
            raise ValueError(f"{self.path}: the SavedModel lacks endpoint {missing[0]!r} listed in {METADATA_FILE}")
        self.input_shape = tuple(meta["input_shape"])
        self.class_names = list(meta["class_names"])
        self.layer_names = list(meta["layer_names"])
        self.layer_aliases = dict(meta.get("layer_aliases") or {})  # exports before they were recorded: none
        self.feature_names = list(meta["feature_names"])
        self.feature_shapes = {name: tuple(shape) for name, shape in meta["feature_shapes"].items()}
        self.files = export_files(self.path, meta)
        self.mean_image = np.load(self.files["mean_image"])
        self.rules = list(meta.get("rules", ["deconvnet"]))  # exports written before the rules: the deconvnet's only
        self.class_layer = meta.get("class_layer")
        self.record = (meta.get("training") or {}).get("config")
        self._keras = None
        if meta.get("fields") is not None:
            self._fields = {name: Field.from_dict(values) for name, values in meta["fields"].items()}

    @property
    def keras_model(self):
        """The export's ``model.keras``, loaded on first use only (weights, and the receptive
        fields and layer table of an export written before ``zfkeras.json`` recorded them)."""
        if self._keras is None:
            file = self.files.get("keras_model") or inside(self.path, RunDir.MODEL, "keras_model", os.path.join(self.path, METADATA_FILE))
            try:
                self._keras = keras.saving.load_model(file, compile=False)
            except Exception as error:  # corrupt or missing: one line naming the file
                raise ValueError(f"{file}: cannot load the export's Keras model ({str(error).strip().splitlines()[0]})") from None
        return self._keras

    def layer_table(self):
        rows = self.metadata.get("architecture")
        return [LayerRow.from_dict(row) for row in rows] if rows is not None else super().layer_table()

    def computing_probe(self):
        """The :class:`KerasProbe` of ``model.keras`` that answers ``predict`` and ``features`` in a
        16-bit precision, or None in float32 (the SavedModel answers)."""
        if self.precision == "float32":
            return None
        if self._computing is None:
            self._computing = KerasProbe(self.keras_model, self.class_names, self.path, self.record, precision=self.precision)
        return self._computing

    def predict(self, images, batch_size=256):
        if self.computing_probe() is not None:
            return self.computing_probe().predict(images, batch_size)
        images = self.check_images(images)
        return batched(lambda x: self.saved_model.serve(tf.constant(x)).numpy(), images, batch_size)

    def features(self, images, layers=None, batch_size=256):
        if self.computing_probe() is not None:
            return self.computing_probe().features(images, layers, batch_size)
        images = self.check_images(images)
        layers = self.check_layers(layers)
        return batched(
            lambda x: {name: value.numpy() for name, value in self.saved_model.features(tf.constant(x)).items() if name in layers}, images, batch_size
        )

    def feature_tensors(self, images, layers=None):
        if self.computing_probe() is not None:
            return self.computing_probe().feature_tensors(images, layers)
        layers = self.check_layers(layers)
        return {name: value for name, value in self.saved_model.features(images).items() if name in layers}

    def project(self, images, layer, channel, position="max", batch_size=64, rule="deconvnet"):
        images = self.check_images(images)
        check_rule(rule)
        if rule not in self.rules:
            raise ValueError(
                f"{self.path}: this export has {', '.join(self.rules)} projections only, no {rule!r} ones (written before zfkeras "
                f"exported the guided and gradient rules, or without them); re-export its model.keras with `zf export`"
            )
        layer = self.check_layers(layer, self.projectable())[0]
        n = len(images)
        if layer == self.class_layer:
            if not (isinstance(position, str) and position == "max"):
                raise ValueError(f"position does not apply to the class scores of {layer!r}: leave it 'max', got {position!r}")
            shape, whole_map = (len(self.class_names),), True  # (images, channel) like a whole map
        else:
            shape = self.feature_shapes.get(layer)
            if shape is None:
                raise ValueError(
                    f"{self.path}: {METADATA_FILE} has no feature_shapes entry for {layer!r}; re-export its model.keras with `zf export`"
                )
            whole_map = isinstance(position, str) and position == "map"
        channel = as_channels(channel, n, shape[-1])
        position = as_positions(position, n, shape[:2] if len(shape) == 3 else (1, 1))
        function = getattr(self.saved_model, endpoint_name(layer, rule, whole_map and layer != self.class_layer))

        def run(i):
            part = slice(i, i + batch_size)
            if whole_map:
                return function(tf.constant(images[part]), tf.constant(channel[part]))
            return function(tf.constant(images[part]), tf.constant(channel[part]), tf.constant(position[part]))

        parts = [run(i).numpy() for i in range(0, n, batch_size)]
        return np.concatenate(parts) if parts else np.zeros_like(images)


def load_exported(path, precision="float32"):
    """An :class:`ExportedProbe` for the export directory ``path`` (ValueError if it is not one)."""
    return ExportedProbe(path, precision)
