"""What every section of ``zf report`` reads: the model (opened once), the data, example images,
and where the model's training run and checkpoints are."""

import json
import os
import re

import numpy as np

from pipelines import loading, output


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "image"


class Context:
    """The model and data every section reads; one method per section, each returning a :class:`page.Section`."""

    def __init__(self, path, seed, batch_size):
        self.path, self.seed, self.batch_size = path, seed, batch_size
        self.probe = loading.open_model(path)  # opened once: sections needing weights read probe.keras_model
        self.record = self.probe.record
        self.class_names = list(self.probe.class_names)
        self.meta = export_metadata(path)
        self._examples = None

    @property
    def keras(self):
        """The Keras model (an export's ``model.keras``, loaded when a section first needs weights)."""
        return loading.keras_model(self.probe)

    def fields(self):
        return loading.model_fields(self.probe)

    def identity(self):
        from zfkeras.export import model_file

        meta = self.meta or {}
        return {
            "path": self.path,
            "keras_file": os.path.relpath(self.probe.path if self.probe.path and self.probe.path.endswith(".keras") else model_file(self.path)),
            "input_shape": list(self.probe.input_shape),
            "classes": self.class_names,
            "model_name": meta.get("model_name") or self.keras.name,
            "zfkeras_version": meta.get("zfkeras_version"),
        }

    def save(self, figure, name):
        output.save_figure(figure, os.path.join(self.target, name))
        return name

    def examples(self):
        """``[(name, image [H, W, C], label)]``: ``--examples`` images of the split, distinct
        classes where possible, drawn with ``--seed`` from its first 500 (or --images) images."""
        if self._examples is None:
            images, labels = [], []
            from zfkeras.data import ImageBatches

            pool = ImageBatches(self.batches.source, self.probe.input_shape, self.batch_size, min(self.batches.count or 500, 500))
            for batch, batch_labels in pool.dataset().as_numpy_iterator():
                images.append(batch), labels.append(batch_labels)
            images, labels = np.concatenate(images), np.concatenate(labels)
            order = np.random.default_rng(self.seed).permutation(len(images))
            chosen, seen = [], set()
            for index in order:  # first one image per class, then the rest in the same order
                if int(labels[index]) not in seen:
                    chosen.append(int(index)), seen.add(int(labels[index]))
            chosen += [int(i) for i in order if int(i) not in chosen]
            chosen = sorted(chosen[: self.examples_wanted])
            self._examples = [(f"{slug(self.class_names[labels[i]])}-{i}", images[i], int(labels[i])) for i in chosen]
        return self._examples


def export_metadata(path):
    """zfkeras.json of the export MODEL is (or holds the .keras file of), else None."""
    for directory in (path, os.path.dirname(os.path.abspath(path))):
        meta = os.path.join(directory, "zfkeras.json") if os.path.isdir(directory) else None
        if meta and os.path.exists(meta):
            with open(meta) as handle:
                return json.load(handle)
    return None


def find_run(path, command):
    """``(run directory holding history.json or None, [places looked])``: MODEL itself, the folder
    of MODEL's .keras file and its parent, then the run directory the recorded command wrote."""
    from zfkeras.training import RunDir

    here = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    places = [here, os.path.relpath(os.path.dirname(os.path.abspath(here)))]
    recorded = RunDir.of_command(command)
    if recorded is not None:
        places.append(recorded.path)
    for place in places:
        if os.path.exists(RunDir(place).history_file):
            return place, places
    return None, places


def checkpoint_home(path):
    """Where MODEL's epoch checkpoints are: MODEL's directory (an export or run dir, with checkpoints/)."""
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
