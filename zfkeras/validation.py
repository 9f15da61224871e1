"""Checks of the arguments analyses share: positive ints, layer names and projection positions.

Each raises ValueError with one line naming the bad value and what is accepted, so the ``zf``
commands can show that line as it is. No TensorFlow here (numpy only).
"""

import numpy as np

__all__ = ["is_positive_int", "positive_int", "layer_names", "positions"]


def is_positive_int(value):
    """Whether ``value`` is an int (Python or numpy, not bool) >= 1."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def positive_int(name, value):
    """``value`` as an int if it is a positive int (:func:`is_positive_int`), else a ValueError
    ``NAME must be a positive int, got VALUE``."""
    if not is_positive_int(value):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def layer_names(layers, valid, what="valid layers"):
    """``layers`` (a name, a list of names, or None for all of ``valid``) as a list, or a
    ValueError ``unknown layer 'NAME'; valid layers: ...`` (``what`` replaces "valid layers"
    there, e.g. "projectable layers")."""
    valid = list(valid)
    layers = valid if layers is None else [layers] if isinstance(layers, str) else list(layers)
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
