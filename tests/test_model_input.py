"""zfkeras.model_input.fit_image against crops and resizes worked out by hand.

References: a photo already at the load size is only cropped, so its pixels are ``image[box]``
with the box computed here; a linear ramp resized by 1/2 has known values (an antialiased
bilinear resize keeps a linear function exact away from the borders).
"""

import numpy as np
import pytest

from zfkeras.model_input import fit_image


def test_photo_at_load_size_is_its_centre_crop(rng):
    image = rng.integers(0, 256, (32, 48, 3)).astype("uint8")  # 28 -> load size 32: no resize
    fitted = fit_image(image, (28, 28, 3))
    assert fitted.source_size == (32, 48) and fitted.resized_size == (32, 48)
    # rows: (32 - 32) // 2 + (32 - 28) // 2 = 2; columns: (48 - 32) // 2 + 2 = 10
    assert fitted.box == (2, 30, 10, 38)
    assert fitted.pixels.dtype == np.float32 and fitted.pixels.shape == (28, 28, 3)
    np.testing.assert_array_equal(fitted.pixels, image[2:30, 10:38])
    grey = fit_image(image, (28, 28, 1)).pixels
    luma = image[2:30, 10:38].astype("float64") @ [0.299, 0.587, 0.114]
    np.testing.assert_allclose(grey[..., 0], np.round(luma), atol=1.0)  # rounded in float32 by TF
    np.testing.assert_array_equal(fit_image(image[..., :1], (28, 28, 3)).pixels, np.repeat(image[2:30, 10:38, :1], 3, -1))


def test_resized_photo_geometry_and_pixels():
    # a 64 x 96 ramp: the smaller side 64 -> 32 halves it, to 32 x 48; resized pixel (i, j) sits at
    # source (2i + 0.5, 2j + 0.5), where the ramp y + x / 2 is (2i + 0.5) + (2j + 0.5) / 2
    y, x = np.mgrid[:64, :96].astype("float32")
    fitted = fit_image((y + 0.5 * x)[..., None], (28, 28, 1))
    assert fitted.resized_size == (32, 48) and fitted.box == (2, 30, 10, 38)
    i, j = np.mgrid[2:30, 10:38]
    np.testing.assert_allclose(fitted.pixels[..., 0], (2 * i + 0.5) + 0.5 * (2 * j + 0.5), atol=1e-3)
    np.testing.assert_allclose(fitted.source_box, (4.0, 60.0, 20.0, 76.0))


def test_tall_photo_is_cut_top_and_bottom():
    # 60 x 40: smaller side 40 -> 32 (scale 0.8), so 48 x 32; crop rows (48 - 32) // 2 + 2 = 10
    fitted = fit_image(np.full((60, 40, 1), 77, "uint8"), (28, 28, 1))
    assert fitted.resized_size == (48, 32) and fitted.box == (10, 38, 2, 30)
    np.testing.assert_allclose(fitted.pixels, 77.0, atol=1e-4)
    np.testing.assert_allclose(fitted.source_box, (12.5, 47.5, 2.5, 37.5))


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="square inputs.*40x56"):
        fit_image(np.zeros((50, 60, 1)), (40, 56, 1))
    with pytest.raises(ValueError, match=r"image must be \[H, W, 1-4 channels\], got shape \(5, 5\)"):
        fit_image(np.zeros((5, 5)), (28, 28, 1))
