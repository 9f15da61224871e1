"""Filter diagnostics (Fig. 6 / Sec. 4.1) on hand-made filters and images, and ``zf filters``.

References: analytic values (band areas of a flat spectrum, pure sinusoids whose energy sits at
known frequencies), and spectra computed here with explicit DFT / DTFT matrices instead of np.fft.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_visualize import blobby_images, write_idx

from pipelines.commands.filters import filters
from zfkeras.analysis.first_layer import ActivationMean, aliasing_share, band_shares, dead_filters
from zfkeras.io.display import filter_grid
from zfkeras.nn.deconv import Deconvnet
from zfkeras.nn.models import ConvSpec, ModelSpec, PoolSpec, build_model

GRID = 64


def dtft_energy(filter_2d, size=GRID):
    """|W(f)|^2 on the size x size grid of frequencies k/size (wrapped to [-1/2, 1/2)), explicit sums."""
    frequency = np.where(np.arange(size) < size / 2, np.arange(size), np.arange(size) - size) / size
    rows = np.exp(-2j * np.pi * np.outer(frequency, np.arange(filter_2d.shape[0])))
    cols = np.exp(-2j * np.pi * np.outer(frequency, np.arange(filter_2d.shape[1])))
    return np.abs(rows @ filter_2d @ cols.T) ** 2, frequency


def reference_shares(filter_2d):
    energy, frequency = dtft_energy(filter_2d)
    radius = np.sqrt(frequency[:, None] ** 2 + frequency[None, :] ** 2)
    bands = [radius < 1 / 6, (radius >= 1 / 6) & (radius < 1 / 3), radius >= 1 / 3]
    return np.array([energy[b].sum() for b in bands]) / energy.sum()


def hand_filters(size=7):
    y, x = np.mgrid[:size, :size]
    return {
        "constant": np.ones((size, size)),
        "checkerboard": (-1.0) ** (y + x),
        "cosine_quarter": np.cos(2 * np.pi * 0.25 * x),  # 0.25 cycles/px: the mid band
        "impulse": (y == size // 2) & (x == size // 2),
    }


def test_band_shares_of_hand_made_filters():
    made = hand_filters()
    kernel = np.stack([np.asarray(f, "float64") for f in made.values()] + [np.zeros((7, 7))], axis=-1)[:, :, None, :]
    shares = band_shares(kernel)
    low, mid, high = shares[:4].T
    assert low[0] > 0.8 and high[1] > 0.99 and mid[2] > 0.8  # constant, checkerboard, cosine
    # an impulse has a flat spectrum: shares are the band areas in the [-1/2, 1/2)^2 square
    np.testing.assert_allclose(shares[3], [np.pi / 36, np.pi * (1 / 9 - 1 / 36), 1 - np.pi / 9], atol=0.005)
    assert np.isnan(shares[4]).all()  # an all-zero filter has no spectrum to share
    for index, name in enumerate(made):
        np.testing.assert_allclose(shares[index], reference_shares(np.asarray(made[name], "float64")), atol=1e-9)
    np.testing.assert_allclose(shares[:4].sum(axis=1), 1.0)


def test_band_shares_sum_channels():
    made = hand_filters()
    kernel = np.stack([made["constant"], made["checkerboard"], np.zeros((7, 7))], axis=-1)[:, :, :, None]
    expected_energy = dtft_energy(made["constant"])[0] + dtft_energy(made["checkerboard"])[0]
    energy, frequency = dtft_energy(np.ones((1, 1)))  # just for the frequency grid
    radius = np.sqrt(frequency[:, None] ** 2 + frequency[None, :] ** 2)
    high = expected_energy[radius >= 1 / 3].sum() / expected_energy.sum()
    np.testing.assert_allclose(band_shares(kernel)[0, 2], high, atol=1e-9)


def test_aliasing_share_of_sinusoids():
    y, x = np.mgrid[:32, :32]
    below = np.cos(2 * np.pi * 3 / 32 * y)  # 0.094 cycles/px < 1/8
    above = np.cos(2 * np.pi * 6 / 32 * x)  # 0.1875 cycles/px > 1/8
    images = np.stack([below, above, below + above, np.zeros_like(below)])[..., None]
    shares = aliasing_share(images, 4)
    np.testing.assert_allclose(shares[:3], [0.0, 1.0, 0.5], atol=1e-12)
    assert np.isnan(shares[3])
    np.testing.assert_allclose(aliasing_share(images[:3], 2), 0.0, atol=1e-12)  # both below 1/4
    np.testing.assert_allclose(aliasing_share(images[:3], 1), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="stride"):
        aliasing_share(images, 0)


def test_dead_filters_by_definition():
    np.testing.assert_array_equal(dead_filters([0.0, 5.0, 6.0, 0.05, 7.0]), [True, False, False, True, False])  # <= 1% of median 5
    np.testing.assert_array_equal(dead_filters([0.0, 0.0, 0.0, 2.0]), [True, True, True, False])  # median 0: never-firing ones
    with pytest.raises(ValueError):
        dead_filters([])


def test_activation_mean_streams(rng):
    acts = rng.uniform(size=(10, 4, 5, 3))
    mean = ActivationMean()
    for start in (0, 3, 7):
        mean.update(acts[start : {0: 3, 3: 7, 7: 10}[start]])
    np.testing.assert_allclose(mean.mean, acts.mean(axis=(0, 1, 2)))


def test_filter_grid_tiles():
    kernel = np.zeros((2, 2, 1, 3), "float32")
    kernel[..., 0, 0] = [[0.0, 1.0], [-2.0, 0.5]]
    kernel[..., 0, 1] = [[3.0, 0.0], [0.0, 0.0]]
    grid = filter_grid(kernel, columns=2, pad=1)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1, 3)
    np.testing.assert_allclose(grid[1:3, 1:3, 0], 0.5 + 0.5 * np.array([[0.0, 1.0], [-2.0, 0.5]]) / 2.0)  # own max |w| = 2
    np.testing.assert_allclose(grid[1:3, 4:6, 1], [[1.0, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(grid[4:6, 1:3, 2], 0.5)  # all-zero filter: grey
    np.testing.assert_allclose(grid[0], 1.0)  # white separators
    shared = filter_grid(kernel, columns=2, pad=1, scale="global")  # one scale (3) for all
    np.testing.assert_allclose(shared[1:3, 1:3, 0], 0.5 + 0.5 * np.array([[0.0, 1.0], [-2.0, 0.5]]) / 3.0)


def two_layer_spec(name, kernel, stride, filters=4):
    return ModelSpec(
        name=name,
        input_shape=(28, 28, 1),
        num_classes=10,
        convs=(ConvSpec(filters, kernel, stride, padding="same"), ConvSpec(6, 3, 1, padding="same", pool=PoolSpec(3, 2, "same"))),
        fc=(16, None),
        filter_radius=None,
    )


def explicit_aliasing(projection, stride):
    """Energy share outside the stride's baseband with explicit DFT matrices."""
    grey = projection.sum(axis=-1)  # one channel here
    size = grey.shape[0]
    matrix = np.exp(-2j * np.pi * np.outer(np.arange(size), np.arange(size)) / size)
    energy = np.abs(matrix @ grey @ matrix.T) ** 2
    frequency = np.abs(np.where(np.arange(size) < size / 2, np.arange(size), np.arange(size) - size) / size)
    outside = np.maximum(frequency[:, None], frequency[None, :]) > 1 / (2 * stride)
    return energy[outside].sum() / energy.sum()


def test_filters_cli_hand_made_model(tmp_path):
    rng = np.random.default_rng(0)
    raw = blobby_images(rng, 20)[:, 2:30, 2:30]  # native 28x28: the model sees each image as it is
    write_idx(tmp_path / "data", raw, rng.integers(0, 10, 20))
    # model A: conv1 3x3/2 with a zero filter and an all-negative filter (both dead on raw pixels
    # >= 0), a checkerboard and a top-heavy one (rows +1, +1, -1: not symmetric, so a transposed
    # drawing shows)
    model = build_model(two_layer_spec("a", 3, 2), seed=1)
    made = hand_filters(3)
    top_heavy = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    kernel = np.stack([np.zeros((3, 3)), -np.ones((3, 3)), made["checkerboard"], top_heavy], axis=-1)[:, :, None, :]
    model.get_layer("conv1").set_weights([kernel.astype("float32"), np.zeros(4, "float32")])
    model.save(tmp_path / "a.keras")
    build_model(two_layer_spec("b", 5, 1, filters=6), seed=2).save(tmp_path / "b.keras")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        filters,
        [
            str(tmp_path / "a.keras"),
            str(tmp_path / "b.keras"),
            "--data",
            f"idx:{tmp_path / 'data'}",
            "--maps",
            "all",
            "--batch-size",
            "6",
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.load(open(out / "filters.json"))["models"]
    first = report["a"]["first_layer"]
    assert first["dead_filters"] == [0, 1] and first["dead_fraction"] == 0.5 and first["stride"] == 2
    expected = np.mean([reference_shares(f) for f in (-np.ones((3, 3)), made["checkerboard"], top_heavy)], axis=0)
    np.testing.assert_allclose([first["band_shares"][b] for b in ("low", "mid", "high")], expected, atol=1e-4)
    # aliasing: recompute each conv2 map's top-1 projection with the deconvnet and an explicit DFT
    second = report["a"]["second_layer"]
    assert second["nyquist_cycles_per_pixel"] == 0.25 and second["maps"] == list(range(6))
    images = raw[..., None].astype("float32")
    deconvnet = Deconvnet(model)
    acts = deconvnet.activations(images, ["conv2"])["conv2"]
    checked = 0
    for channel in range(6):
        flat = acts[..., channel].reshape(len(images), -1)
        if flat.max() <= 0:
            assert second["aliasing_per_map"][str(channel)] is None and channel in second["silent_maps"]
            continue
        image = int(np.argmax(flat.max(axis=1)))
        y, x = divmod(int(np.argmax(flat[image])), acts.shape[2])
        projection = deconvnet.project(images[image : image + 1], "conv2", channel, (y, x))[0]
        np.testing.assert_allclose(second["aliasing_per_map"][str(channel)], explicit_aliasing(projection, 2), atol=1e-4)
        checked += 1
    assert checked >= 3
    assert report["b"]["first_layer"]["kernel"] == [5, 5] and report["b"]["second_layer"]["aliasing_share"] == 0.0  # stride 1
    # model A's filters drawn in a 2x2 grid (each scaled by its own largest |w|, 0 -> grey):
    # zero -> grey, all -1 -> black; checkerboard -> white/black cells; top-heavy -> 2 white rows, 1 black
    cells = [np.zeros((3, 3)), -np.ones((3, 3)), made["checkerboard"], top_heavy]
    expected_cells = [np.full((3, 3), 127)] + [np.where(w > 0, 255, 0) for w in cells[1:]]
    for name, crop_to_first_panel in (("a-conv1.png", False), ("filters.png", True)):
        check_filter_cells(out / name, expected_cells, crop_to_first_panel)
    assert (out / "b-conv1.png").stat().st_size > 1000


def check_filter_cells(path, expected_cells, crop_to_first_panel):
    """Sample the centre of each weight's cell in a PNG of a 2x2 grid of 3x3 filters (1 cell of
    white between and around them) and compare with ``expected_cells`` (grey levels 0-255).

    The grid is found from its grey tile (filter 0): rows and columns with >= 50 mid-grey pixels.
    """
    import tensorflow as tf

    png = tf.io.decode_png(tf.io.read_file(str(path))).numpy()[..., :3].astype(int)
    if crop_to_first_panel:  # filters.png: model A's filters are the top-left panel
        png = png[: png.shape[0] // 2, : png.shape[1] // 2]
    grey = (np.abs(png - 127) <= 2).all(-1)
    rows, cols = np.nonzero(grey.sum(1) >= 50)[0], np.nonzero(grey.sum(0) >= 50)[0]
    assert len(rows) > 60 and len(cols) > 60, f"{path}: no grey tile found"
    cell_y, cell_x = (rows[-1] - rows[0] + 1) / 3, (cols[-1] - cols[0] + 1) / 3
    top, left = rows[0] - cell_y, cols[0] - cell_x  # the grid's corner, one separator cell before
    for index, cells in enumerate(expected_cells):
        tile_row, tile_column = divmod(index, 2)
        for r in range(3):
            for c in range(3):
                y = int(top + (1 + 4 * tile_row + r + 0.5) * cell_y)
                x = int(left + (1 + 4 * tile_column + c + 0.5) * cell_x)
                np.testing.assert_allclose(png[y, x], cells[r, c], atol=3, err_msg=f"{path}: filter {index} cell ({r}, {c})")
    np.testing.assert_array_equal(png[int(top + 0.5 * cell_y), int(left + 4.5 * cell_x)], 255)  # separator


def test_filters_cli_rejects_three_models(tmp_path):
    result = CliRunner().invoke(filters, ["a.keras", "b.keras", "c.keras", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "one or two models" in result.output
