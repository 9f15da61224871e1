"""Callbacks of a training run: kept checkpoints, conv1's filters and live projections in TensorBoard.

:func:`zfkeras.training.train` adds :class:`EpochCheckpoints` and :class:`FirstLayerFilters` itself;
:class:`ProjectionLogger` (Fig. 4 live) is one a caller passes in (``zf train --log-projections``).
"""

import errno
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from zfkeras.io.atomic import save_model
from zfkeras.io.display import display_tiles, filter_grid, mosaic
from zfkeras.nn.fields import crop, receptive_fields
from zfkeras.nn.probe import KerasProbe


class FirstLayerFilters(keras.callbacks.Callback):
    """Writes the first conv layer's filters as a TensorBoard image every epoch (``logdir/filters``)."""

    def __init__(self, logdir):
        super().__init__()
        self.logdir = logdir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        conv = next(layer for layer in self.model.layers if isinstance(layer, keras.layers.Conv2D))
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.logdir, "filters"))
        with self._writer.as_default():
            tf.summary.image(f"{conv.name}_filters", filter_grid(conv.kernel.numpy())[None], step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


class GuardedBackup(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` that first checks the disk has room for the backup.

    h5py crashes the whole process (a segmentation fault) when the disk fills up while it writes
    the backup weights, so each epoch's backup is written only when the free space holds the
    weights and optimizer state (their bytes + 10% + 256 KiB of HDF5's own); otherwise an OSError
    names the backup file:
    ``PATH: No space left on device``. Same arguments as ``BackupAndRestore``.
    """

    def on_epoch_end(self, epoch, logs=None):
        variables = list(self.model.weights) + (list(self.model.optimizer.variables) if self.model.optimizer is not None else [])
        needed = int(1.1 * sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in variables)) + 2**18  # bfloat16 too
        os.makedirs(self.backup_dir, exist_ok=True)
        if shutil.disk_usage(self.backup_dir).free < needed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(self.backup_dir, "latest.weights.h5"))
        super().on_epoch_end(epoch, logs)


class EpochCheckpoints(keras.callbacks.Callback):
    """Saves the model (weights and architecture, no optimizer) as the run's checkpoint of each kept
    epoch (:meth:`RunDir.checkpoint`, ``epoch-NNN.keras``). ``run``: a :class:`RunDir`."""

    def __init__(self, run, epochs):
        super().__init__()
        self.run, self.epochs = run, set(epochs)
        self._twin = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 not in self.epochs:
            return
        if self._twin is None:  # an uncompiled copy keeps optimizer state out of the kept files
            self._twin = keras.models.clone_model(self.model)
        self._twin.set_weights(self.model.get_weights())
        save_model(self._twin, self.run.checkpoint(epoch + 1))


def strongest_projections(probe, images, maps, fields, batch_size=64):
    """The strongest activation of each chosen map across ``images``, projected and cropped.

    Args:
        probe: a :class:`~zfkeras.nn.probe.Probe`.
        images: float32 ``[N, H, W, C]`` raw pixels, in memory.
        maps: ``{layer: channel indices}``.
        fields: ``{layer: Field}`` (:func:`zfkeras.nn.fields.receptive_fields`).

    Returns:
        ``{layer: float32 [maps, fh, fw, C]}``: each map's top-1 activation (ties: the lowest image
        index, then the lowest (y, x)) projected with the deconvnet and cropped to its receptive
        field, NaN where the field reaches past the image.
    """
    crops = {}
    for layer, channels in maps.items():
        acts = probe.features(images, [layer], batch_size=batch_size)[layer][..., list(channels)]
        flat = np.moveaxis(acts, -1, 0).reshape(len(channels), -1)
        image, y, x = np.unravel_index(np.argmax(flat, axis=1), acts.shape[:3])
        position = np.stack([y, x], axis=1).astype("int32")
        projected = probe.project(images[image], layer, np.asarray(channels), position, batch_size=batch_size)
        crops[layer] = np.stack([crop(p, fields[layer], py, px, fill=np.nan) for p, py, px in zip(projected, y, x)])
    return crops


class ProjectionLogger(keras.callbacks.Callback):
    """Log, each epoch, the projections of a fixed set of maps to TensorBoard as images.

    For every layer, the strongest activation of each chosen map across ``images`` is projected
    with the deconvnet of the model being trained, cropped to its receptive field, contrast-enhanced
    (:func:`~zfkeras.io.display.to_display`) and laid out in one row; the row is written as image
    summary ``projections/<layer>`` at step ``epoch + 1`` (1-based, as checkpoint names).

    Args:
        images: float32 ``[N, H, W, C]`` raw pixels, a fixed set (e.g. some validation images).
        maps: ``{layer: channel indices}``.
        log_dir: TensorBoard directory (e.g. ``<run_dir>/logs/projections``).
        percentile: contrast: |values| above this percentile of each projection saturate.
        batch_size: images per forward / projection call.
    """

    def __init__(self, images, maps, log_dir, percentile=99.0, batch_size=64):
        super().__init__()
        self.images = np.asarray(images, "float32")
        if self.images.ndim != 4 or not len(self.images):
            raise ValueError(f"images must be a non-empty batch [N, H, W, C], got shape {self.images.shape}")
        self.maps = {layer: list(channels) for layer, channels in maps.items()}
        self.log_dir = log_dir
        self.percentile = percentile
        self.batch_size = batch_size
        self._writer = None
        self._probe = None

    def _probe_for_model(self):
        if self._probe is None or self._probe.model is not self.model:
            self._probe = KerasProbe(self.model)
            self._fields = receptive_fields(self.model)
        return self._probe

    def projection_rows(self):
        """``{layer: float32 [h, w, 3]}``: what :meth:`on_epoch_end` logs, for the current weights."""
        probe = self._probe_for_model()
        crops = strongest_projections(probe, self.images, self.maps, self._fields, self.batch_size)
        return {layer: mosaic(display_tiles(tiles, self.percentile), columns=len(tiles)) for layer, tiles in crops.items()}

    def on_train_begin(self, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        self.on_train_begin()
        rows = self.projection_rows()
        with self._writer.as_default():
            for layer, row in rows.items():
                tf.summary.image(f"projections/{layer}", row[None], step=epoch + 1)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
