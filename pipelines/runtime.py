"""The process a command runs in: TensorFlow imported without its start-up chatter, seeds, and
errors met mid-command turned into one line (a corrupt image named, ``PATH: reason``)."""

import os
import re

import click


def seed_everything(seed):
    """Seed Python, NumPy, TF and Keras, and make TF ops deterministic on CPU."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def import_tensorflow_quietly():
    """``import tensorflow`` without its start-up chatter (:func:`zfkeras.io.quiet.import_tensorflow_quietly`)."""
    from zfkeras.io import quiet

    quiet.import_tensorflow_quietly()


def quiet_libjpeg():
    """Drop the decoder's own lines about corrupt JPEGs (:func:`zfkeras.io.quiet.jpeg_noise`) while files are decoded."""
    from zfkeras.io import quiet

    return quiet.quiet_stderr(quiet.jpeg_noise)


def corrupt_data_error(error, option="--data"):
    """A one-line click error naming the corrupt image file (or too large image, or truncated
    TFRecord shard) a data read failed on (a TF error raised mid-command by a folder or tfrecord
    source without ``--skip-corrupt``), or None for other errors."""
    import sys

    if "zfkeras.data" not in sys.modules:
        return None
    from zfkeras import data

    if isinstance(error, data.CorruptImageError):
        path, reason = error.path, error.reason
    else:
        path, reason = data.corrupt_file_in(error), data.corrupt_reason_in(error)
    if path is None:
        return None
    if reason:
        return click.BadParameter(f"{path}: {reason}; skip such data with --skip-corrupt", param_hint=option)
    return click.BadParameter(f"corrupt or unreadable image file {path}; skip such files with --skip-corrupt", param_hint=option)


def os_error_line(error):
    """``PATH: reason`` for an OSError (its first line when it names no path)."""
    if error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return full_disk_line(error) or (str(error).strip().splitlines() or [type(error).__name__])[0]


FULL_DISK = os.strerror(28)  # "No space left on device" (errno.ENOSPC)


def full_disk_line(error):
    """``PATH: No space left on device`` for an error of a full disk that did not come through
    :func:`zfkeras.io.atomic.atomic_output` (which names its output itself): TensorFlow's writers
    (TensorBoard's events, ``PATH; No space left on device``) and h5py's (Keras' backup weights,
    ``filename = 'PATH'`` ... ``errno = 28``) name the file only inside their message. None for
    other errors."""
    text = str(error)
    if FULL_DISK not in text and getattr(error, "errno", None) != 28:
        return None
    found = re.search(r"filename = '([^']+)'", text) or re.search(r"(\S+); " + FULL_DISK, text)
    return f"{found[1] if found else getattr(error, 'filename', None) or 'the output'}: {FULL_DISK}"
