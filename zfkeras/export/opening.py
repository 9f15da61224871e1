"""Opening a model from where it lives, in one call: :func:`open_model` gives its :class:`Probe`.

A model is named by one string (``MODEL`` of every ``zf`` command):

- a SavedModel directory written by :func:`zfkeras.export.export_model` -> an :class:`ExportedProbe`
  (no Keras model is loaded unless asked for, e.g. for weights);
- a ``.keras`` file, or a training run directory holding ``model.keras``, or a checkpoint
  ``checkpoints/epoch-NNN.keras`` -> a :class:`zfkeras.nn.probe.KerasProbe` with the class names and
  training record found beside it (an export's ``zfkeras.json`` or a run's ``config.json``);
- ``keras:NAME[@HxW]`` -> a Keras application (:mod:`zfkeras.nn.applications`) with ``weights``.
"""

import json
import os
import zipfile

from zfkeras.export.savedmodel import METADATA_FILE, load_exported
from zfkeras.io.paths import inside
from zfkeras.nn.applications import load as load_application
from zfkeras.nn.precision import check_precision
from zfkeras.nn.probe import KerasProbe
from zfkeras.training.rundir import RunDir

MODEL_FORMS = (
    "a SavedModel directory (a zfkeras export), a .keras file, a run directory holding model.keras, "
    "or keras:NAME (a Keras application, with --weights)"
)


def is_export(path):
    """Whether ``path`` is a SavedModel directory (an export, if it also has ``zfkeras.json``)."""
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb"))


def model_file(path):
    """The ``.keras`` file of MODEL ``path``: the file itself, or the ``model.keras`` of an export or
    run directory; ValueError naming ``path`` for anything else."""
    if os.path.isdir(path):
        meta = os.path.join(path, METADATA_FILE)
        name = RunDir.MODEL
        if os.path.exists(meta):
            with open(meta) as handle:
                name = json.load(handle).get("keras_model", name)
        path = inside(path, name, "keras_model", meta)  # a name read from zfkeras.json stays inside the export
    if not (os.path.isfile(path) and path.endswith(".keras")):
        raise ValueError(f"{path}: MODEL must be {MODEL_FORMS}")
    return path


def _described(file):
    """``(class names or None, training record or None)`` from the metadata beside a ``.keras`` file:
    an export's ``zfkeras.json`` or a run's ``config.json`` (for a checkpoint, those of the run or
    export above its ``checkpoints/`` folder)."""
    here = os.path.dirname(os.path.abspath(file))
    folders = (here, RunDir.holding(file).path) if os.path.basename(here) == RunDir.CHECKPOINTS else (here,)
    class_names, record = None, None
    for directory in folders:
        for name in (METADATA_FILE, RunDir.CONFIG):
            meta = os.path.join(directory, name)
            if os.path.exists(meta):
                with open(meta) as handle:
                    found = json.load(handle)
                class_names = class_names or found.get("class_names")
                # An export keeps the run's config.json under training.config.
                record = record or (found.get("training", {}).get("config") if name == METADATA_FILE else found)
    return class_names, record


def load_keras(path):
    """The Keras model of a ``.keras`` MODEL (file, run or export directory), with one-line errors."""
    import keras

    import zfkeras.nn.layers  # noqa: F401  (registers the custom layers)

    file = model_file(path)
    if not zipfile.is_zipfile(file):
        raise ValueError(f"{file}: not a Keras model file (a .keras file is a zip archive)")
    try:
        return file, keras.saving.load_model(file, compile=False)
    except Exception as error:  # corrupt or foreign file: one line, name the file
        raise ValueError(f"cannot load Keras model {file}: {str(error).strip().splitlines()[0]}") from None


def open_model(path, weights=None, precision="float32", seed=None):
    """The :class:`~zfkeras.nn.probe.Probe` of MODEL ``path`` (see the module docstring).

    Args:
        path: an export directory, a ``.keras`` file, a run directory or ``keras:NAME[@HxW]``.
        weights: for ``keras:NAME`` only: a weights file, ``"none"`` (random) or None (ImageNet's).
        precision: what the probe's ``predict`` and ``features`` compute in
            (:data:`zfkeras.nn.precision.PRECISIONS`); projections are float32 whatever it is.
        seed: for ``keras:NAME`` with ``weights="none"``: the seed of the random weights.

    Raises:
        ValueError with one line naming ``path`` and what is accepted.
    """
    path = os.fspath(path)
    check_precision(precision)
    if path.startswith("keras:"):
        model, class_names = load_application(path, weights or "imagenet", seed=seed)
        return KerasProbe(model, class_names=class_names, path=path, precision=precision)
    if is_export(path):
        try:
            return load_exported(path, precision)
        except ValueError as error:  # not a zfkeras export, or inconsistent metadata
            message = str(error).splitlines()[0]
            raise ValueError(message if message.startswith(path) else f"{path}: {message}") from None
    file, model = load_keras(path)
    class_names, record = _described(file)
    try:
        return KerasProbe(model, class_names=class_names, path=file, record=record, precision=precision)
    except ValueError as error:
        raise ValueError(f"{path}: {str(error).splitlines()[0]}") from None
