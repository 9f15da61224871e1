"""zfkeras.validation: the one place positive ints, layer names and projection positions are checked
(used by the library's analyses and by every ``zf`` command)."""

import re

import numpy as np
import pytest

from zfkeras.io.validation import is_positive_int, layer_names, positions, positive_int


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.int32(1)])
def test_positive_ints_accepted(value):
    assert is_positive_int(value)
    assert positive_int("k", value) == int(value) and type(positive_int("k", value)) is int


@pytest.mark.parametrize("value", [0, -2, 1.5, 2.0, "3", True, None, np.float32(2)])
def test_positive_ints_refused_with_the_name(value):
    assert not is_positive_int(value)
    with pytest.raises(ValueError, match="^" + re.escape(f"stride must be a positive int, got {value!r}") + "$"):
        positive_int("stride", value)


def test_layer_names():
    valid = ["conv1", "conv2", "fc7"]
    assert layer_names(None, valid) == valid  # default: all, in the model's order
    assert layer_names("conv2", valid) == ["conv2"]
    assert layer_names(("fc7", "conv1"), valid) == ["fc7", "conv1"]  # the order asked for
    with pytest.raises(ValueError, match=r"^unknown layer 'conv9'; valid layers: conv1, conv2, fc7$"):
        layer_names(["conv1", "conv9"], valid)
    with pytest.raises(ValueError, match=r"^unknown layer 'x'; projectable layers: none$"):
        layer_names("x", [], "projectable layers")
    with pytest.raises(ValueError, match="no layers given"):
        layer_names([], valid)


def test_positions():
    np.testing.assert_array_equal(positions("max", 3, (5, 6)), -np.ones((3, 2)))
    np.testing.assert_array_equal(positions("map", 1, (5, 6)), [[-1, -1]])
    np.testing.assert_array_equal(positions((4, 5), 2, (5, 6)), [[4, 5], [4, 5]])  # one (y, x) for all
    given = np.array([[0, 0], [-1, -1], [4, 5]])
    got = positions(given, 3, (5, 6))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, given)
    with pytest.raises(ValueError, match=r"position out of range: the layer's maps are 5x6"):
        positions((5, 0), 1, (5, 6))  # y == height
    with pytest.raises(ValueError, match=r"position out of range"):
        positions(np.array([[0, 6]]), 1, (5, 6))  # x == width
    with pytest.raises(ValueError, match=r"position out of range"):
        positions(np.array([[2, -3]]), 1, (5, 6))  # a negative x with a valid y is not "strongest"
    with pytest.raises(ValueError, match=r"an int array \[2, 2\], got shape \(3, 2\)"):
        positions(np.zeros((3, 2), int), 2, (5, 6))
    with pytest.raises(ValueError, match="an int array"):
        positions(np.zeros((2, 2)), 2, (5, 6))  # floats
    with pytest.raises(ValueError, match="position must be 'max', 'map'"):
        positions("top", 1, (5, 6))
