"""Exports and opening models: a SavedModel a consumer uses without zfkeras (:mod:`.savedmodel`),
and one call that opens any model a command is given as its Probe (:mod:`.opening`)."""

from zfkeras.export.savedmodel import METADATA_FILE, ExportedProbe, export_model, load_exported, read_metadata

from zfkeras.export.opening import MODEL_FORMS, is_export, load_keras, model_file, open_model  # isort: skip

__all__ = [
    "METADATA_FILE",
    "MODEL_FORMS",
    "ExportedProbe",
    "export_model",
    "is_export",
    "load_exported",
    "load_keras",
    "model_file",
    "open_model",
    "read_metadata",
]
