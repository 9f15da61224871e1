"""zfkeras.model_input.fit_image against crops and resizes worked out by hand.

References: a photo already at the load size is only cropped, so its pixels are ``image[box]``
with the box computed here; a linear ramp resized by 1/2 has known values (an antialiased
bilinear resize keeps a linear function exact away from the borders). A 112 input has load size
128 (the paper's 224 -> 256 scaled); a small 28 input has load size 28 (no zoom).
"""

import numpy as np
import pytest

from zfkeras.data.transforms import fit_image


def test_photo_at_load_size_is_its_centre_crop(rng):
    image = rng.integers(0, 256, (128, 192, 3)).astype("uint8")  # 112 -> load size 128: no resize
    fitted = fit_image(image, (112, 112, 3))
    assert fitted.source_size == (128, 192) and fitted.resized_size == (128, 192)
    # rows: (128 - 128) // 2 + (128 - 112) // 2 = 8; columns: (192 - 128) // 2 + 8 = 40
    assert fitted.box == (8, 120, 40, 152)
    assert fitted.pixels.dtype == np.float32 and fitted.pixels.shape == (112, 112, 3)
    np.testing.assert_array_equal(fitted.pixels, image[8:120, 40:152])
    grey = fit_image(image, (112, 112, 1)).pixels
    luma = image[8:120, 40:152].astype("float64") @ [0.299, 0.587, 0.114]
    np.testing.assert_allclose(grey[..., 0], np.round(luma), atol=1.0)  # rounded in float32 by TF
    np.testing.assert_array_equal(fit_image(image[..., :1], (112, 112, 3)).pixels, np.repeat(image[8:120, 40:152, :1], 3, -1))


def test_small_input_keeps_a_native_photo_and_only_crops_others(rng):
    native = rng.integers(0, 256, (28, 28, 1)).astype("uint8")
    fitted = fit_image(native, (28, 28, 1))
    assert fitted.box == (0, 28, 0, 28) and fitted.resized_size == (28, 28)
    np.testing.assert_array_equal(fitted.pixels, native)
    wide = rng.integers(0, 256, (28, 42, 1)).astype("uint8")  # already 28 on its smaller side
    assert fit_image(wide, (28, 28, 1)).box == (0, 28, 7, 35)
    np.testing.assert_array_equal(fit_image(wide, (28, 28, 1)).pixels, wide[:, 7:35])


def test_resized_photo_geometry_and_pixels():
    # a 256 x 384 ramp: the smaller side 256 -> 128 halves it, to 128 x 192; resized pixel (i, j) sits
    # at source (2i + 0.5, 2j + 0.5), where the ramp y + x / 2 is (2i + 0.5) + (2j + 0.5) / 2
    y, x = np.mgrid[:256, :384].astype("float32")
    fitted = fit_image((y + 0.5 * x)[..., None], (112, 112, 1))
    assert fitted.resized_size == (128, 192) and fitted.box == (8, 120, 40, 152)
    i, j = np.mgrid[8:120, 40:152]
    np.testing.assert_allclose(fitted.pixels[..., 0], (2 * i + 0.5) + 0.5 * (2 * j + 0.5), atol=1e-2)
    np.testing.assert_allclose(fitted.source_box, (16.0, 240.0, 80.0, 304.0))


def test_tall_photo_is_cut_top_and_bottom():
    # 240 x 160: smaller side 160 -> 128 (scale 0.8), so 192 x 128; crop rows (192 - 128) // 2 + 8 = 40
    fitted = fit_image(np.full((240, 160, 1), 77, "uint8"), (112, 112, 1))
    assert fitted.resized_size == (192, 128) and fitted.box == (40, 152, 8, 120)
    np.testing.assert_allclose(fitted.pixels, 77.0, atol=1e-4)
    np.testing.assert_allclose(fitted.source_box, (50.0, 190.0, 10.0, 150.0))


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="square inputs.*40x56"):
        fit_image(np.zeros((50, 60, 1)), (40, 56, 1))
    with pytest.raises(ValueError, match=r"image must be \[H, W, 1-4 channels\], got shape \(5, 5\)"):
        fit_image(np.zeros((5, 5)), (28, 28, 1))
