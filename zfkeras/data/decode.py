"""Reading image files: decoding on both cores, headers without pixels, and corrupt files named.

A folder source decodes files only when they are read, so a corrupt file is found then. A read of
one (:func:`read_images`) never fails: it gives ``ok=False`` for that file, and :func:`read_or_fail`
turns that into a TF error whose message carries the path, which :func:`corrupt_file_in` reads
back and :func:`corrupt_file_error` turns into one line naming the file.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import tensorflow as tf

from zfkeras.data.source import CorruptImageError
from zfkeras.data.transforms import to_channels

_AUTOTUNE = tf.data.AUTOTUNE

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


# Headers read at open time to decide grey vs colour (a seeded sample when a folder has more files).
HEADER_SAMPLE = 256
HEADER_SEED = 0  # the seed of that sample


# PIL modes of colour images (TF decodes palette images and GIFs to RGB too); all others are grey.
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


# How a read names the corrupt file in its error (see corrupt_file_in); "<" ">" delimit the path.
_CORRUPT_MARK = "unreadable image file <"


def decode_file(path, channels: int = 0):
    """Read and decode one image file: ``uint8 [H, W, C]``; ``channels=0`` keeps the file's own.
    A corrupt file raises TF's InvalidArgumentError, which does not name it (see :func:`read_images`)."""
    image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False, dtype=tf.uint8)
    return image if channels == 0 else to_channels(image, channels)


def header_channels(path: str) -> int | None:
    """3 for a colour image, 1 for a grey one, from the file's header only (PIL reads no pixels);
    None when the header is unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            colour = image.mode in _COLOUR_MODES or image.format == "GIF"
    except Exception:  # PIL raises many kinds for broken files; the first read names the file
        return None
    return 3 if colour else 1


def probe_files(paths: list, sample: int = HEADER_SAMPLE, seed: int = HEADER_SEED) -> dict:
    """``{path: channels}`` from the headers of at most ``sample`` files (all when there are fewer,
    else a seeded random sample); unreadable headers are left out. Decodes nothing."""
    if len(paths) > sample:
        chosen = np.sort(np.random.default_rng(seed).choice(len(paths), sample, replace=False))
        paths = [paths[i] for i in chosen]
    found = {path: header_channels(path) for path in paths}
    return {path: channels for path, channels in found.items() if channels is not None}


def corrupt_file_in(error: BaseException) -> str | None:
    """The path of the corrupt image file a read of a folder source failed on, from the error its
    dataset raised (``skip_corrupt`` off; also when wrapped by Keras or tf.function), else None."""
    text = str(error)
    start = text.find(_CORRUPT_MARK)
    if start < 0:
        return None
    start += len(_CORRUPT_MARK)
    end = text.find(">", start)
    while end >= 0 and text[end + 1 : end + 2] not in ("]", ""):  # a ">" inside the path
        end = text.find(">", end + 1)
    return text[start:end] if end >= 0 else None


def corrupt_file_error(path: str) -> CorruptImageError:
    """The one-line error naming the corrupt image file ``path``."""
    return CorruptImageError(f"corrupt or unreadable image file {path}; skip such files with skip_corrupt=True (zf: --skip-corrupt)", path)


@contextlib.contextmanager
def naming_corrupt_files():
    """Turn the TF error of a folder source's read of a corrupt file into :class:`CorruptImageError`
    naming the file (other errors pass unchanged): ``with naming_corrupt_files(): model.fit(...)``."""
    try:
        yield
    except tf.errors.OpError as error:
        path = corrupt_file_in(error)
        if path is None:
            raise
        raise corrupt_file_error(path) from None


def find_corrupt(files) -> list:
    """The paths among ``files`` that do not decode, in order (every file is decoded, both cores)."""
    files = [os.fspath(f) for f in files]
    if not files:
        return []
    paths = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))
    flags = read_images(paths, 0).map(lambda image, ok: ok)
    return [path for path, ok in zip(files, flags.as_numpy_iterator()) if not ok]


def read_images(paths: tf.data.Dataset, channels: int) -> tf.data.Dataset:
    """``(image uint8 [H, W, channels], ok bool)`` for each path of ``paths``, in order, both cores.

    A file that does not decode gives ``ok=False`` and an empty ``[0, 0, C]`` image instead of an
    error: each file is decoded in a one-element dataset whose errors are dropped, then a fallback
    element follows. (A plain map would stop the whole dataset with an error not naming the file.)
    ``channels=0`` keeps each file's own channels.
    """

    def one(path):
        decoded = tf.data.Dataset.from_tensors(path).map(lambda p: (decode_file(p, channels), True)).ignore_errors()
        empty = tf.data.Dataset.from_tensors((tf.zeros([0, 0, channels or 1], tf.uint8), False))
        return decoded.concatenate(empty).take(1)

    return paths.interleave(one, cycle_length=8, block_length=1, num_parallel_calls=_AUTOTUNE, deterministic=True)


def read_or_fail(path, decoded):
    """The image of one :func:`read_images` element ``decoded = (image, ok)``, or a TF error whose
    message names ``path`` when it did not decode (:func:`corrupt_file_in` reads the path back)."""
    image, ok = decoded
    with tf.control_dependencies([tf.debugging.Assert(ok, [tf.strings.join([_CORRUPT_MARK, path, ">"])])]):
        return tf.identity(image)
