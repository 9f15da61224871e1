"""What an image file's header says, read without decoding a pixel: its size, channels and EXIF
orientation. One parser (:func:`parse_header`, plain Python over the file's first bytes) for every
reader: folder sources run it on each file inside ``tf.data`` (:func:`read_checked`, one
``numpy_function`` that reads the file), IMAGE arguments and uploads run it directly
(:func:`read_header`).

Formats (those ``tf.io.decode_image`` reads): JPEG (the frame header; EXIF in an APP1 segment
before it), PNG (IHDR; EXIF in an ``eXIf`` chunk before the pixels), GIF (the logical screen) and
BMP (the info header). Anything else, or a header that does not parse, is "unknown" (width -1),
which readers treat as unreadable.

The EXIF orientation says how a camera held sideways stored its photo; :func:`orient` turns the
pixels the way image viewers and browsers show them (CSS ``image-orientation: from-image``).
"""

from __future__ import annotations

import dataclasses
import os
import struct

import numpy as np
import tensorflow as tf

# The largest image (width x height) read by default: 100 megapixels, a 10,000 x 10,000 photo,
# 300 MB once decoded as RGB bytes (phone photos are 12-50). Above it a file is refused undecoded.
MAX_PIXELS = 100_000_000

FORMATS = ("unknown", "JPEG", "PNG", "GIF", "BMP")  # the format codes of parse_header
UNKNOWN = (-1, -1, 0, 1, 0)
_EXIF_ORIENTATION = 0x0112  # the TIFF tag: 1 as stored, 2-8 mirrored and/or turned (see orient)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey + alpha, RGBA
_SEGMENTS = 256  # JPEG segments / PNG chunks walked at most before the frame header / the pixels


def _tiff_orientation(tiff):
    """The orientation tag (1-8) of an EXIF (TIFF) block's first directory; 1 when absent or bad."""
    order = {b"II": "<", b"MM": ">"}.get(bytes(tiff[:2]))
    try:
        (offset,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[offset : offset + 2])
        for entry in range(offset + 2, offset + 2 + 12 * min(count, 64), 12):
            tag, _, _, value = struct.unpack(order + "HHIH", tiff[entry : entry + 10])
            if tag == _EXIF_ORIENTATION:
                return value if 1 <= value <= 8 else 1
    except (TypeError, struct.error):  # no byte order mark, or a directory past the block's end
        pass
    return 1


def _jpeg(data):
    position, orientation = 2, 1
    for _ in range(_SEGMENTS):
        if position + 4 > len(data) or data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
            position += 2
            continue
        (size,) = struct.unpack(">H", data[position + 2 : position + 4])
        if marker == 0xE1 and data[position + 4 : position + 10] == b"Exif\x00\x00":
            orientation = _tiff_orientation(data[position + 10 : position + 2 + size])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header (SOFn)
            height, width, channels = struct.unpack(">HHB", data[position + 5 : position + 10])
            return width, height, channels, orientation, 1
        if marker == 0xDA:  # pixels before any frame header
            break
        position += 2 + size
    return UNKNOWN


def _png(data):
    if data[12:16] != b"IHDR":
        return UNKNOWN
    width, height = struct.unpack(">II", data[16:24])
    position, orientation = 8, 1
    for _ in range(_SEGMENTS):
        if position + 8 > len(data):
            break
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"eXIf":
            orientation = _tiff_orientation(data[position + 8 : position + 8 + length])
        position += 12 + length
    return width, height, _PNG_CHANNELS.get(data[25], 3), orientation, 2


def _gif(data):
    width, height = struct.unpack("<HH", data[6:10])
    return width, height, 3, 1, 3


def _bmp(data):
    width, height = struct.unpack("<ii", data[18:26])  # a negative height: rows stored top-down
    (bits,) = struct.unpack("<H", data[28:30])
    return abs(width), abs(height), 4 if bits == 32 else 1 if bits <= 8 else 3, 1, 4


def parse_header(data) -> tuple:
    """``(width, height, channels, orientation, format)`` of the image file whose bytes (its first
    ones suffice: its header) are ``data``: the stored size, the channels ``tf.io.decode_image``
    gives, the EXIF orientation (1-8, 1 when absent) and a code into :data:`FORMATS`;
    :data:`UNKNOWN` ``(-1, -1, 0, 1, 0)`` when it is no JPEG, PNG, GIF or BMP or does not parse."""
    data = data.item() if isinstance(data, np.ndarray) else bytes(data)  # numpy_function hands a string over as bytes
    readers = {b"\xff\xd8\xff": _jpeg, b"\x89PN": _png, b"GIF": _gif}
    reader = readers.get(bytes(data[:3])) or (_bmp if data[:2] == b"BM" else None)
    try:
        return tuple(int(v) for v in reader(data)) if reader is not None else UNKNOWN
    except (struct.error, IndexError):  # a header cut short
        return UNKNOWN


def too_large(width, height, max_pixels=MAX_PIXELS):
    """Why an image of ``width x height`` pixels is refused under ``max_pixels`` (``"an image of
    WxH pixels (N megapixels), above the limit of M ..."``), or ``""`` when it is not."""
    if width * height <= max_pixels:
        return ""
    return (
        f"an image of {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), "
        f"above the limit of {int(max_pixels):,} (max_pixels; zf: --max-pixels)"
    )


def read_checked(path, max_pixels=MAX_PIXELS):
    """``(data string, orientation int32, ok bool, reason string)`` of the image file ``path`` (a
    string tensor), in a graph (``tf.data``): its bytes, read and checked by one
    ``numpy_function`` (:func:`parse_header`). ``ok`` when it is a JPEG, PNG, GIF or BMP of at most
    ``max_pixels`` pixels; otherwise ``data`` is empty (nothing to decode) and ``reason`` says why a
    readable image was refused (:func:`too_large`; ``""`` for a file that is no image or cannot
    be read). Never raises, so it can run in a plain parallel map."""

    def check(name):
        # One string out (each more output of a numpy_function costs more than the parse): a
        # 4-byte prefix (orientation, ok, reason length) + the reason + the file's bytes if ok.
        try:
            with open(name.decode() if isinstance(name, bytes) else name.item().decode(), "rb") as handle:
                data = handle.read()
        except (OSError, UnicodeDecodeError):
            return struct.pack(">BBH", 1, 0, 0)
        width, height, _, orientation, kind = parse_header(data)
        reason = (too_large(width, height, max_pixels) if kind else "").encode()[:65_535]
        ok = kind > 0 and not reason
        return struct.pack(">BBH", orientation, ok, len(reason)) + reason + (data if ok else b"")

    packed = tf.numpy_function(check, [path], tf.string, stateful=False)
    packed.set_shape([])
    prefix = tf.cast(tf.io.decode_raw(tf.strings.substr(packed, 0, 4), tf.uint8), tf.int32)
    length = prefix[2] * 256 + prefix[3]
    return tf.strings.substr(packed, 4 + length, 2**31 - 1), prefix[0], prefix[1] > 0, tf.strings.substr(packed, 4, length)


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says (:func:`read_header`): ``width`` and ``height`` as stored
    (pixels), ``channels`` (what ``tf.io.decode_image`` gives: 1 grey, 2 grey + alpha, 3 colour,
    4 colour + alpha), ``orientation`` (EXIF, 1-8; 1 when absent) and ``format`` (JPEG, PNG, GIF, BMP)."""

    width: int
    height: int
    channels: int
    orientation: int
    format: str

    @property
    def pixels(self):
        return self.width * self.height

    def too_large(self, max_pixels=MAX_PIXELS):
        """Why an image of this size is refused under ``max_pixels``, or ``""``."""
        return too_large(self.width, self.height, max_pixels)


def read_header(source) -> ImageHeader:
    """The :class:`ImageHeader` of an image file ``source`` (a path, or the file's bytes, e.g. an
    upload), read without decoding any pixel; a ValueError naming it when it is not a JPEG, PNG,
    GIF or BMP file or its header does not parse."""
    upload = isinstance(source, (bytes, bytearray, memoryview))
    name = "image" if upload else os.fspath(source)
    if upload:
        data = bytes(source)
    else:
        with open(name, "rb") as handle:
            data = handle.read()
    width, height, channels, orientation, kind = parse_header(data)
    if kind == 0:
        raise ValueError(f"{name}: not a readable image (JPEG, PNG, BMP or GIF)")
    return ImageHeader(width, height, channels, orientation, FORMATS[kind])


# How each EXIF orientation (1-8) is undone: (transpose, reverse rows, reverse columns), in that order.
_TURNS = [[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 0, 0], [1, 0, 1], [1, 1, 1], [1, 1, 0]]


def orient(image, orientation):
    """``image [H, W, C]`` turned as EXIF ``orientation`` (1-8) says, i.e. as viewers and browsers
    show it: 2 mirrored, 3 turned 180, 4 flipped, 5 transposed, 6 turned 90 clockwise, 7
    transverse, 8 turned 90 counter-clockwise; 1 (and anything else) unchanged. No branches (a few
    ops whatever the orientation, cheap in ``tf.data``)."""
    image = tf.convert_to_tensor(image)
    orientation = tf.cast(orientation, tf.int32)
    transpose, rows, columns = tf.unstack(tf.gather(tf.constant(_TURNS, tf.int32), tf.where((orientation >= 1) & (orientation <= 8), orientation, 0)))
    image = tf.transpose(image, tf.stack([transpose, 1 - transpose, 2]))
    return tf.reverse(image, tf.boolean_mask(tf.constant([0, 1]), tf.stack([rows > 0, columns > 0])))
