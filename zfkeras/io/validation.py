"""Argument checks every part of zfkeras shares: positive ints and numbers, pairs, paddings, layer
names, projection positions, and the first line of an error.

Each raises ValueError with one line naming the bad value and what is accepted, so the ``zf``
commands can show that line as it is. No TensorFlow here (numpy only).
"""

import numpy as np

__all__ = [
    "check_padding",
    "check_pair",
    "check_positive",
    "first_line",
    "is_positive_int",
    "layer_names",
    "parse_pairs",
    "positions",
    "positive_int",
]


def is_positive_int(value):
    """Whether ``value`` is an int (Python or numpy, not bool) >= 1."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def positive_int(name, value):
    """``value`` as an int if it is a positive int (:func:`is_positive_int`), else a ValueError
    ``NAME must be a positive int, got VALUE``."""
    if not is_positive_int(value):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def layer_names(layers, valid, what="valid layers", aliases=None):
    """``layers`` (a name, a list of names, or None for all of ``valid``) as a list of names of
    ``valid``, or a ValueError ``unknown layer 'NAME'; valid layers: ...`` (``what`` replaces
    "valid layers" there, e.g. "projectable layers"). ``aliases``: ``{other name: name of valid}``
    also accepted and given back as the valid name (a Probe's ``layer_aliases``: Keras' own name of
    the layer whose output a map is, e.g. ResNet50's ``conv3_block2_2_relu`` for ``conv3_block2_2_conv``)."""
    valid = list(valid)
    aliases = aliases or {}
    layers = valid if layers is None else [layers] if isinstance(layers, str) else list(layers)
    layers = [name if name in valid else aliases.get(name, name) for name in layers]
    unknown = [name for name in layers if name not in valid]
    if unknown:
        raise ValueError(f"unknown layer {unknown[0]!r}; {what}: {', '.join(valid) or 'none'}")
    if not layers:
        raise ValueError(f"no layers given; {what}: {', '.join(valid) or 'none'}")
    return layers


def positions(position, n, size):
    """int32 ``[n, 2]`` (y, x) positions in a layer's ``size`` (height, width) maps, from
    ``position``: ``"max"`` or ``"map"`` (all ``(-1, -1)``, meaning "the strongest"), one ``(y, x)``
    for all ``n``, or an int array ``[n, 2]`` whose ``(-1, -1)`` rows mean "the strongest"."""
    if isinstance(position, str):
        if position not in ("max", "map"):
            raise ValueError(f"position must be 'max', 'map', (y, x) or an [N, 2] array, got {position!r}")
        return np.full((n, 2), -1, dtype="int32")
    position = np.asarray(position)
    if position.shape == (2,):
        position = np.broadcast_to(position, (n, 2))
    if position.shape != (n, 2) or not np.issubdtype(position.dtype, np.integer):
        raise ValueError(f"position must be 'max', 'map', (y, x) or an int array [{n}, 2], got shape {position.shape}")
    points = position[position[:, 0] >= 0]
    if len(points) and (points.min() < 0 or points[:, 0].max() >= size[0] or points[:, 1].max() >= size[1]):
        raise ValueError(f"position out of range: the layer's maps are {size[0]}x{size[1]} (y, x from 0)")
    return position.astype("int32")


def check_pair(value, name):
    """Return ``value`` as a tuple of two positive ints; accepts an int or a pair."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}") from None
    if len(pair) != 2 or min(pair) < 1 or any(float(v) != p for v, p in zip(value, pair)):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return pair


def check_padding(value):
    """Return ``"valid"`` or ``"same"``; anything else is an error naming the argument."""
    padding = str(value).lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {value!r}")
    return padding


def check_positive(value, name, integer=False):
    """Return ``value`` if it is a positive number (an int when ``integer``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive int" if integer else "a positive number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


def first_line(error):
    """``TypeName: first line of the message`` of an exception, for one-line errors that quote it."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def parse_pairs(text, separator="=", what="KEY=VALUE pairs like conv3=512,fc6=2048"):
    """``"a=1,b=2"`` -> ``[("a", "1"), ("b", "2")]`` (comma-separated ``KEY<separator>VALUE`` items,
    stripped); a ValueError quoting the bad item and ``what`` is expected, or saying none was given."""
    pairs = []
    for item in filter(None, (part.strip() for part in str(text).split(","))):
        key, sep, value = item.partition(separator)
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{item!r} should be {what}")
        pairs.append((key.strip(), value.strip()))
    if not pairs:
        raise ValueError(f"nothing given: expected {what}")
    return pairs
