"""Argument checks shared by the custom layers; messages name the argument and what is accepted."""


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
