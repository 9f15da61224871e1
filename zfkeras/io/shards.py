"""Per-shard partial results of a long job on disk, so a killed job resumes where it stopped.

:class:`ShardStore` keeps one ``.npz`` file of arrays per finished shard in a directory, each
written atomically (:mod:`zfkeras.io.atomic`: a file is whole or absent), beside ``job.json``, the
description of the job they belong to. Opening the store for another job removes the old shards,
so a changed model, data set or setting never mixes with an earlier run's partial results.

No TensorFlow here.
"""

import json
import os
import shutil
import zipfile

import numpy as np

from zfkeras.io.atomic import atomic_output, write_json

JOB_FILE = "job.json"


class ShardStore:
    """Finished shards of one job in ``directory`` (created if missing).

    Args:
        directory: where the shard files live.
        job: a JSON-able dict naming everything the shards depend on (model, data, settings).

    Attributes:
        stale: True if the directory held shards of another job (removed when the store opened).
    """

    def __init__(self, directory, job):
        self.directory = os.fspath(directory)
        self.job = json.loads(json.dumps(job))
        self.stale = False
        os.makedirs(self.directory, exist_ok=True)
        foreign = [name for name in os.listdir(self.directory) if not (name == JOB_FILE or name.startswith(("shard-", f".{JOB_FILE}", ".shard-")))]
        if foreign:
            raise ValueError(f"{self.directory} holds {foreign[0]!r}, so it is not a directory of shards; give an empty or new directory")
        path = os.path.join(self.directory, JOB_FILE)
        try:
            with open(path) as handle:
                recorded = json.load(handle)
        except (OSError, ValueError):
            recorded = None
        if recorded != self.job:
            self.stale = bool(self.done())
            for name in os.listdir(self.directory):
                if name.startswith("shard-"):
                    os.remove(os.path.join(self.directory, name))
            write_json(path, self.job)

    def path(self, index):
        return os.path.join(self.directory, f"shard-{int(index):05d}.npz")

    def done(self):
        """Indices of the shards whose file is complete."""
        found = set()
        for name in os.listdir(self.directory):
            if name.startswith("shard-") and name.endswith(".npz") and name[6:-4].isdigit():
                if zipfile.is_zipfile(os.path.join(self.directory, name)):
                    found.add(int(name[6:-4]))
        return found

    def save(self, index, arrays):
        """Write shard ``index``'s ``{name: array}`` atomically."""
        with atomic_output(self.path(index)) as temp:
            with open(temp, "wb") as handle:
                np.savez(handle, **arrays)

    def load(self, index):
        """Shard ``index``'s ``{name: array}``."""
        with np.load(self.path(index), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def remove(self):
        """Delete the directory (the job finished)."""
        shutil.rmtree(self.directory, ignore_errors=True)
