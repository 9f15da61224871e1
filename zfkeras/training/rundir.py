"""The run directory of a training run: the one place its layout is spelled out.

::

    <run_dir>/config.json                  TrainConfig, data sources, class names, metadata (command)
    <run_dir>/checkpoints/epoch-001.keras  the model after each kept epoch (1-based, no optimizer)
    <run_dir>/backup/                      BackupAndRestore state while the run is unfinished: the
                                           weights and epoch of the last two epochs (latest.weights.h5,
                                           training_metadata.json, and the previous ones as *.bkp)
    <run_dir>/logs/                        TensorBoard: loss, accuracy, lr, histograms, conv1 filters
    <run_dir>/history.json                 per-epoch loss, accuracy, val_loss, val_accuracy, lr, seconds
    <run_dir>/skipped_files.json           unreadable images skipped so far (``skip_corrupt`` sources)
    <run_dir>/model.keras                  the final model (with optimizer state), written last

An export (:mod:`zfkeras.export`) carries the same ``checkpoints/`` and ``history.json``, so a
:class:`RunDir` of an export directory reads those too.
"""

import json
import os
import re
import shlex

HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")
_CHECKPOINT = re.compile(r"epoch-(\d+)\.keras")


class RunDir:
    """The files of one run directory ``path`` (which need not exist yet)."""

    CONFIG = "config.json"
    HISTORY = "history.json"
    MODEL = "model.keras"
    CHECKPOINTS = "checkpoints"
    LOGS = "logs"
    BACKUP = "backup"
    SKIPPED = "skipped_files.json"
    # The files keras.callbacks.BackupAndRestore(double_checkpoint=True) keeps in backup/.
    BACKUP_WEIGHTS = "latest.weights.h5"
    BACKUP_STATE = "training_metadata.json"
    PREVIOUS = ".bkp"

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return f"RunDir({self.path!r})"

    def _file(self, name):
        return os.path.join(self.path, name)

    config_file = property(lambda self: self._file(self.CONFIG), doc="``config.json``.")
    history_file = property(lambda self: self._file(self.HISTORY), doc="``history.json``.")
    model_file = property(lambda self: self._file(self.MODEL), doc="``model.keras``, the final model.")
    checkpoints_dir = property(lambda self: self._file(self.CHECKPOINTS), doc="``checkpoints/``.")
    logs_dir = property(lambda self: self._file(self.LOGS), doc="``logs/`` (TensorBoard).")
    backup_dir = property(lambda self: self._file(self.BACKUP), doc="``backup/`` of an unfinished run.")
    skipped_file = property(lambda self: self._file(self.SKIPPED), doc="``skipped_files.json``.")

    @property
    def finished(self):
        """Whether the run ended (its final ``model.keras`` is written)."""
        return os.path.exists(self.model_file)

    def worker(self, task_id):
        """The directory a non-chief worker ``task_id`` keeps its own backup in."""
        return RunDir(self._file(f"worker-{int(task_id)}"))

    @staticmethod
    def checkpoint_name(epoch):
        """``epoch-NNN.keras`` for a 1-based epoch."""
        return f"epoch-{int(epoch):03d}.keras"

    @staticmethod
    def checkpoint_epoch(path):
        """The epoch of a checkpoint file ``.../epoch-NNN.keras``, or None for any other name."""
        match = _CHECKPOINT.fullmatch(os.path.basename(os.fspath(path)))
        return int(match[1]) if match else None

    def checkpoint(self, epoch):
        """Path of the checkpoint of ``epoch`` (1-based)."""
        return os.path.join(self.checkpoints_dir, self.checkpoint_name(epoch))

    def checkpoints(self):
        """``[(epoch, path)]`` of the finished checkpoints, in epoch order (a killed writer's
        ``.epoch-NNN.keras.partial-*`` left out)."""
        if not os.path.isdir(self.checkpoints_dir):
            return []
        found = [(self.checkpoint_epoch(name), os.path.join(self.checkpoints_dir, name)) for name in os.listdir(self.checkpoints_dir)]
        return sorted((epoch, path) for epoch, path in found if epoch is not None)

    def _read(self, path):
        if not os.path.exists(path):
            return None
        with open(path) as handle:
            return json.load(handle)

    def read_config(self):
        """``config.json`` as a dict, or None when there is none."""
        return self._read(self.config_file)

    def read_history(self):
        """``history.json`` as a dict of per-epoch lists, or None when there is none."""
        return self._read(self.history_file)

    def command(self):
        """The recorded ``zf train`` command (``config.json``'s ``command``), or None."""
        return (self.read_config() or {}).get("command")

    def load_history(self, epochs_done):
        """The first ``epochs_done`` epochs of the saved history (a resumed run continues it)."""
        history = {key: [] for key in HISTORY_KEYS}
        saved = self.read_history() if epochs_done else None
        if saved is not None:
            history = {key: list(saved.get(key, []))[:epochs_done] for key in HISTORY_KEYS}
        if len(history["epoch"]) != epochs_done:
            raise ValueError(f"{self.history_file} does not record the {epochs_done} epochs the backup has; cannot resume this run")
        return history

    def unfinished_config(self):
        """The recorded ``TrainConfig`` dict of an unfinished run here (one with a backup to resume
        from), or None."""
        if not (os.path.isdir(self.backup_dir) and os.path.exists(self.config_file)):
            return None
        return self.read_config().get("config", {})

    def check_trainable(self, record, defaults):
        """A ValueError unless a run recorded as ``record`` may train here: a finished run is never
        overwritten, and an unfinished one resumes only with the same config (``defaults``: the
        values of config keys an older run did not record)."""
        if self.finished:
            raise ValueError(f"{self.path} already holds a finished run ({self.MODEL}); choose another run directory")
        before, now = self.unfinished_config(), record["config"]
        if before is None:
            return
        changed = [key for key in now if key != "strategy" and before.get(key, defaults.get(key)) != now[key]]
        if changed:
            key = changed[0]
            raise ValueError(
                f"{self.path} holds an unfinished run with {key}={before.get(key)!r}, not {now[key]!r}; "
                "resume it with the same settings or choose another run directory"
            )

    def recover_backup(self):
        """Make the backup of an unfinished run loadable before it resumes; returns a sentence
        saying what was done, or None when the backup is whole (or there is none).

        A backup is the weights and the epoch of the last epoch (``latest.weights.h5`` and
        ``training_metadata.json``) and of the one before (the same names + ``.bkp``); a run killed
        while writing it leaves the latest weights truncated (or written before their epoch). Then
        the previous pair, when whole, replaces it: the run resumes one epoch earlier, with the same
        result (each epoch depends only on the seed and its number). With no whole pair: a backup
        whose epoch was never recorded is dropped (the run starts again from epoch 1); otherwise a
        ValueError names the file and what to do.
        """
        latest, previous = self._backup_pair(""), self._backup_pair(self.PREVIOUS)
        weights = os.path.join(self.backup_dir, self.BACKUP_WEIGHTS)
        if not os.path.exists(weights):
            return None
        problem = _unreadable_weights(weights)
        same_epoch = latest["epoch"] is not None and latest["epoch"] == previous["epoch"]
        if problem is None and latest["epoch"] is not None and not (same_epoch and previous["whole"]):
            return None
        if previous["whole"]:
            for name in (self.BACKUP_WEIGHTS, self.BACKUP_STATE):
                os.replace(os.path.join(self.backup_dir, name + self.PREVIOUS), os.path.join(self.backup_dir, name))
            if problem is None:  # killed between writing the weights and their epoch: the previous pair is the consistent one
                return None
            return f"{weights} is unreadable ({problem}): resuming from the backup of the epoch before (epoch {previous['epoch']} done)"
        if latest["epoch"] is None and previous["epoch"] is None:
            import shutil

            shutil.rmtree(self.backup_dir)
            return f"{weights} is unreadable ({problem or 'no epoch recorded with it'}): the run was killed while writing its first backup; starting again from epoch 1"
        raise ValueError(
            f"{weights}: the backup of this unfinished run is unreadable ({problem or 'no epoch recorded with it'}) and no earlier backup is whole; "
            f"delete {self.backup_dir} to train this run again from epoch 1 (its kept checkpoints stay in {self.checkpoints_dir})"
        )

    def _backup_pair(self, suffix):
        """``{"epoch": int or None, "whole": bool}`` of the backup weights + state ending in ``suffix``."""
        state = os.path.join(self.backup_dir, self.BACKUP_STATE + suffix)
        weights = os.path.join(self.backup_dir, self.BACKUP_WEIGHTS + suffix)
        epoch = None
        try:
            with open(state) as handle:
                epoch = int(json.load(handle)["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        whole = epoch is not None and os.path.exists(weights) and _unreadable_weights(weights) is None
        return {"epoch": epoch, "whole": whole}

    @classmethod
    def holding(cls, path):
        """The run (or export) directory a model path belongs to: ``path`` itself if a directory,
        the folder of a ``.keras`` file, or the folder above a checkpoint's ``checkpoints/``."""
        path = os.path.abspath(os.fspath(path))
        if os.path.isdir(path):
            return cls(path)
        here = os.path.dirname(path)
        return cls(os.path.dirname(here) if os.path.basename(here) == cls.CHECKPOINTS else here)

    @classmethod
    def of_command(cls, command):
        """The run directory a recorded ``zf train`` command wrote (its ``--out``, or the older
        ``--run-dir``), or None when ``command`` names none."""
        words = shlex.split(command or "")
        for option in ("--out", "--run-dir"):
            if option in words[:-1]:
                return cls(words[words.index(option) + 1])
        return None


def _unreadable_weights(path):
    """None if the HDF5 weights file ``path`` opens and every array in it reads, else the first line
    of why not (a killed writer leaves it truncated: h5py's "truncated file" and the like)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            arrays = []
            handle.visititems(lambda name, item: arrays.append(item) if isinstance(item, h5py.Dataset) else None)
            for array in arrays:
                array[()]
    except Exception as error:  # h5py raises OSError, KeyError, RuntimeError... for damaged files
        text = str(error).strip().splitlines()
        return text[0] if text else type(error).__name__
    return None
