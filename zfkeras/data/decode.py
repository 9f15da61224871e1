"""Reading image files: headers first, decoding on both cores, and bad files named.

Every image read goes through here (folder sources, ``zf prepare``, IMAGE arguments, uploads):
its header is read first (:mod:`zfkeras.data.headers`: size, channels, EXIF orientation, no pixel
decoded), an image above ``max_pixels`` (:data:`MAX_PIXELS` by default) is refused before it is
decoded, and the EXIF orientation is applied (:func:`~zfkeras.data.headers.orient`), as image
viewers and browsers show a photo. :func:`read_image` does all three for one file or upload.

A folder source decodes files only when they are read, so a corrupt or too large file is found
then. A read of one (:func:`read_images`) never fails: it gives ``ok=False`` and the reason for
that file, and :func:`read_or_fail` turns that into a TF error whose message carries the path and
the reason, which :func:`corrupt_file_in` / :func:`corrupt_reason_in` read back and
:func:`corrupt_file_error` turns into one line naming the file.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import tensorflow as tf

from zfkeras.data.headers import MAX_PIXELS, ImageHeader, orient, read_checked, read_header
from zfkeras.data.source import CorruptImageError
from zfkeras.data.transforms import to_channels

_AUTOTUNE = tf.data.AUTOTUNE

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

# Headers read at open time to decide grey vs colour (a seeded sample when a folder has more files).
HEADER_SAMPLE = 256
HEADER_SEED = 0  # the seed of that sample


# PIL modes of colour images (TF decodes palette images and GIFs to RGB too); all others are grey.
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


# How a read names the bad file in its error (see corrupt_file_in); "<" ">" delimit the path, the
# reason follows in its own brackets.
_CORRUPT_MARK = "unreadable image file <"


def check_image(source, max_pixels: int = MAX_PIXELS) -> ImageHeader:
    """The :class:`~zfkeras.data.headers.ImageHeader` of ``source`` (a path, or the file's bytes:
    an upload) if it is an image of at most ``max_pixels`` pixels, else a :class:`CorruptImageError`
    (a ValueError; ``reason`` set) naming it and the limit; a ValueError when it is no image.
    Decodes nothing, so a hostile file (a 23,170 x 23,170 PNG of 1.5 MB) costs no memory."""
    header = read_header(source)
    reason = header.too_large(max_pixels)
    if reason:
        name = "image" if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
        raise CorruptImageError(f"{name}: {reason}; not decoded", name, reason)
    return header


def read_image(source, channels: int = 0, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image file or upload ``source`` (a path, or the file's bytes) as uint8 ``[H, W, C]``,
    as a browser shows it: its header checked first (:func:`check_image`: refused above
    ``max_pixels`` before any pixel is decoded), then decoded (the first frame of a GIF) and its
    EXIF orientation applied. ``channels`` 0 keeps the file's own (1-4), else 1 or 3. A
    ValueError naming the file when it is too large or does not decode."""
    header = check_image(source, max_pixels)
    name = "image" if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
    data = tf.constant(bytes(source)) if name == "image" else tf.io.read_file(name)
    try:
        image = tf.io.decode_image(data, expand_animations=False, dtype=tf.uint8)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        raise ValueError(f"{name}: not a readable image ({str(error).strip().splitlines()[0][:120]})") from None
    image = orient(image, header.orientation)
    return (image if channels == 0 else to_channels(image, channels)).numpy()


def decode_file(path, channels: int = 0):
    """Read and decode one image file: ``uint8 [H, W, C]``; ``channels=0`` keeps the file's own.
    A corrupt file raises TF's InvalidArgumentError, which does not name it (see :func:`read_images`)."""
    image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False, dtype=tf.uint8)
    return image if channels == 0 else to_channels(image, channels)


def header_channels(path: str) -> int | None:
    """3 for a colour image, 1 for a grey one, from the file's header only (PIL reads no pixels);
    None when the header is unreadable."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the read applies max_pixels itself
            with Image.open(path) as image:
                colour = image.mode in _COLOUR_MODES or image.format == "GIF"
    except Exception:  # PIL raises many kinds for broken files (and refuses huge ones); the first read names the file
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
    """The path of the corrupt (or too large) image file a read of a folder source failed on,
    from the error its dataset raised (``skip_corrupt`` off; also when wrapped by Keras or
    tf.function), else None."""
    found = _read_failure(error)
    return found[0] if found else None


def corrupt_reason_in(error: BaseException) -> str:
    """Why that file was refused (:func:`too_large`'s sentence), or ``""`` when it did not decode."""
    found = _read_failure(error)
    return found[1] if found else ""


def _read_failure(error):
    """``(path, reason)`` from the message :func:`read_or_fail` puts in its error, or None."""
    text = str(error)
    start = text.find(_CORRUPT_MARK)
    if start < 0:
        return None
    start += len(_CORRUPT_MARK)
    end = text.find(">", start)
    while end >= 0 and text[end + 1 : end + 2] not in ("]", ""):  # a ">" inside the path
        end = text.find(">", end + 1)
    if end < 0:
        return None
    reason = ""
    if text[end + 1 : end + 4] == "] [":
        close = text.find("]", end + 4)
        reason = text[end + 4 : close] if close >= 0 else ""
    return text[start:end], reason


def corrupt_file_error(path: str, reason: str = "") -> CorruptImageError:
    """The one-line error naming the corrupt image file ``path`` (``reason``: why a readable one
    was refused, e.g. :func:`too_large`'s sentence)."""
    if reason:
        return CorruptImageError(f"{path}: {reason}; skip such data with skip_corrupt=True (zf: --skip-corrupt)", path, reason)
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
        raise corrupt_file_error(path, corrupt_reason_in(error)) from None


def find_corrupt(files, max_pixels: int = MAX_PIXELS) -> list:
    """The paths among ``files`` that do not decode or are above ``max_pixels``, in order (every
    other file is decoded, both cores)."""
    files = [os.fspath(f) for f in files]
    if not files:
        return []
    paths = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))
    flags = read_images(paths, 0, max_pixels).map(lambda image, ok, reason: ok)
    return [path for path, ok in zip(files, flags.as_numpy_iterator()) if not ok]


def read_images(paths: tf.data.Dataset, channels: int, max_pixels: int | None = MAX_PIXELS) -> tf.data.Dataset:
    """``(image uint8 [H, W, channels], ok bool, reason string)`` for each path of ``paths``, in
    order, both cores: each file is read and its header checked first
    (:func:`~zfkeras.data.headers.read_checked`: no pixel decoded), a file above ``max_pixels``
    pixels is not decoded, and the EXIF orientation is applied (:func:`~zfkeras.data.headers.orient`).

    A file that does not decode (or is no JPEG, PNG, GIF or BMP), or is too large, gives
    ``ok=False`` and an empty ``[0, 0, C]`` image instead of an error (``reason``: why a readable
    one was refused, ``""`` for one that does not decode): each file is decoded in a one-element
    dataset whose errors are dropped, then a fallback element follows. (A plain map would stop the
    whole dataset with an error not naming the file.) ``channels=0`` keeps each file's own
    channels; ``max_pixels`` None: :data:`MAX_PIXELS`.
    """
    max_pixels = MAX_PIXELS if max_pixels is None else int(max_pixels)
    empty = tf.zeros([0, 0, channels or 1], tf.uint8)

    def image_of(data):
        image = tf.io.decode_image(data, expand_animations=False, dtype=tf.uint8)
        return image if channels == 0 else to_channels(image, channels)

    def decode(data, orientation, ok, reason):
        # Decoded in a one-element dataset whose errors are dropped, then the fallback; a refused
        # file has no bytes, so it does not decode either. Turned (rarely needed) after, outside.
        decoded = tf.data.Dataset.from_tensors(data).map(lambda data: (image_of(data), True, reason, orientation)).ignore_errors()
        return decoded.concatenate(tf.data.Dataset.from_tensors((empty, False, reason, orientation))).take(1)

    def turned(image, ok, reason, orientation):
        return tf.cond(orientation > 1, lambda: orient(image, orientation), lambda: image), ok, reason

    checked = paths.map(lambda path: read_checked(path, max_pixels), num_parallel_calls=_AUTOTUNE, deterministic=True)
    decoded = checked.interleave(decode, cycle_length=8, block_length=1, num_parallel_calls=_AUTOTUNE, deterministic=True)
    return decoded.map(turned, num_parallel_calls=_AUTOTUNE, deterministic=True)


def read_or_fail(path, decoded):
    """The image of one :func:`read_images` element ``decoded = (image, ok, reason)``, or a TF
    error whose message names ``path`` and the reason when it was not read (:func:`corrupt_file_in`
    and :func:`corrupt_reason_in` read them back)."""
    image, ok, reason = decoded
    with tf.control_dependencies([read_check(path, ok, reason)]):
        return tf.identity(image)


def read_check(path, ok, reason):
    """The op that fails, unless ``ok``, with a TF error naming ``path`` and ``reason``
    (:func:`corrupt_file_in`, :func:`corrupt_reason_in` read them back); for control dependencies."""
    return tf.debugging.Assert(ok, [tf.strings.join([_CORRUPT_MARK, path, ">"]), reason])
