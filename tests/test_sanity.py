"""Sanity checks (Adebayo et al. 2018): the similarity measures against scipy / scikit-image, and the
randomisation tests on a small model where the outcome is known by construction."""

import numpy as np
import pytest
import scipy.stats
from skimage.feature import hog
from skimage.metrics import structural_similarity

from zfkeras.analysis import sanity
from zfkeras.nn.models import build_model, zfnet_small_spec
from zfkeras.nn.probe import KerasProbe


def test_average_ranks_and_spearman_equal_scipy(rng):
    values = rng.integers(0, 6, (5, 40)).astype("float64")  # many ties
    np.testing.assert_array_equal(sanity.average_ranks(values), np.stack([scipy.stats.rankdata(row) for row in values]))
    a = rng.normal(size=(4, 9, 13, 3))
    b = a + rng.normal(scale=0.7, size=a.shape)
    b[0, :3] = 0.0  # ties in the grey map
    want = [scipy.stats.spearmanr(np.abs(x).sum(-1).ravel(), np.abs(y).sum(-1).ravel())[0] for x, y in zip(a, b)]
    np.testing.assert_allclose(sanity.spearman(a, b), want, rtol=1e-12)


def test_ssim_equals_scikit_image_on_non_square_maps(rng):
    a = rng.uniform(size=(3, 20, 33))
    b = np.clip(a + rng.normal(scale=0.2, size=a.shape), 0, 1)
    b[2] = a[2]
    want = [structural_similarity(x, y, data_range=1.0) for x, y in zip(a, b)]
    np.testing.assert_allclose(sanity.ssim(a, b), want, rtol=1e-10)
    assert sanity.ssim(a, b)[2] == pytest.approx(1.0)


def test_hog_correlation_and_normalisation(rng):
    maps = rng.normal(size=(3, 28, 28, 1))
    other = maps + rng.normal(scale=1.0, size=maps.shape)
    first, second = sanity.normalised(sanity.grey(maps)), sanity.normalised(sanity.grey(other))
    assert first.max() == 1.0 and first.min() >= 0 and np.mean(first == 1.0) == pytest.approx(0.01, abs=0.005)  # above the 99th percentile
    np.testing.assert_allclose(first[0], np.clip(np.abs(maps[0, ..., 0]) / np.percentile(np.abs(maps[0]), 99), 0, 1))
    want = [scipy.stats.pearsonr(hog(x, 9, (3, 3), (2, 2)), hog(y, 9, (3, 3), (2, 2)))[0] for x, y in zip(first, second)]
    found = sanity.similarities(maps, other)
    np.testing.assert_allclose(found["hog"], want, rtol=1e-10)
    same = sanity.similarities(maps, maps.copy())
    for metric in sanity.METRICS:
        np.testing.assert_allclose(same[metric], 1.0, rtol=1e-12)
    silenced = maps.copy()
    silenced[1] = 0
    found = sanity.similarities(maps, silenced)
    assert found["spearman"][1] == 0 and found["hog"][1] == 0 and found["ssim"][1] < 0.1
    assert sanity.silent(silenced) == 1
    assert np.isnan(sanity.similarities(silenced, silenced)["spearman"][1])


def small_model(seed):
    spec = zfnet_small_spec().with_units(conv1=6, conv2=8, conv3=8, conv4=8, conv5=8, fc6=24, fc7=24)
    return build_model(spec.replace(kernel_init="he_normal"), seed=seed)


@pytest.fixture(scope="module")
def tested():
    model = small_model(1)
    images = np.random.default_rng(4).uniform(0, 255, (6, 28, 28, 1)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    result = sanity.sanity_check(
        model, images, layers=["predictions", "conv2", "conv1"], unit_layer="conv1", random_labels_model=small_model(2), shown=2, seed=3
    )
    return model, before, images, result


def test_randomising_the_top_changes_class_maps_not_a_first_layer_projection(tested):
    """By construction: a conv1 unit's projection reads only conv1's weights, so re-initialising
    the output layer and conv2 cannot change it (similarity exactly 1); the class score's gradient
    reads the output layer's weights, so re-initialising that changes it; once conv1 itself is
    re-initialised the unit's projection changes too."""
    _, _, _, result = tested
    assert result.layers == ["predictions", "conv2", "conv1"] and result.targets == ("class", "unit")
    for mode in (result.cascading, result.independent):
        for rule in result.rules:
            unit = mode[rule]["unit"]
            for metric in sanity.METRICS:
                np.testing.assert_allclose(unit[metric][0], 1.0, rtol=1e-9)  # predictions re-initialised
                np.testing.assert_allclose(unit[metric][1], 1.0, rtol=1e-9)  # conv2 (above conv1)
                assert np.all(unit[metric][2] < 0.999), (rule, metric)  # conv1 re-initialised
            assert mode[rule]["class"]["spearman"][0].max() < 0.99, rule
    gradient = result.cascading["gradient"]["class"]
    assert np.nanmean(gradient["spearman"][2]) < np.nanmean(gradient["spearman"][0]) + 0.05  # no recovery as layers go


def test_weights_restored_grid_and_data_test(tested):
    model, before, images, result = tested
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    probe = KerasProbe(model)
    for rule in result.rules:
        grid = result.grid[rule]["class"]
        assert grid.shape == (4, 2, 28, 28, 1)
        np.testing.assert_allclose(grid[0], probe.project(images[:2], "predictions", result.unit.labels[:2], rule=rule), rtol=1e-5, atol=1e-6)
        assert result.data[rule]["class"]["spearman"].shape == (1, 6)
        assert np.all(result.data[rule]["class"]["spearman"] < 0.999)
        assert set(result.data[rule]) == {"class"}  # units of a model trained apart do not correspond
    table = result.to_dict()
    assert table["cascading"]["guided"]["unit"]["ssim"]["mean"][0] == pytest.approx(1.0)
    assert table["data"]["gradient"]["class"]["spearman"]["n"] == [6]
    assert table["unit"]["layer"] == "conv1" and len(table["labels"]) == 6


def test_reinitialize_draws_from_the_layers_own_initializer():
    model = build_model(zfnet_small_spec(), seed=0)  # paper init: N(0, 0.01) kernels, zero biases
    layer = model.get_layer("conv3")
    layer.kernel.assign(np.ones(layer.kernel.shape, "float32"))
    layer.bias.assign(np.ones(layer.bias.shape, "float32"))
    sanity.reinitialize(layer, seed=5)
    kernel = layer.kernel.numpy()
    assert abs(kernel.std() - 0.01) < 0.001 and abs(kernel.mean()) < 0.001
    assert not layer.bias.numpy().any()
    again = build_model(zfnet_small_spec(), seed=0).get_layer("conv3")
    sanity.reinitialize(again, seed=5)
    np.testing.assert_array_equal(again.kernel.numpy(), kernel)  # same seed, same weights


def test_bad_arguments(tested):
    model, _, images, _ = tested
    with pytest.raises(ValueError, match="unknown layer 'pool1'; layers with weights: conv1"):
        sanity.sanity_check(model, images, layers=["pool1"])
    with pytest.raises(ValueError, match="rule must be one of"):
        sanity.sanity_check(model, images, rules=["lrp"])
    with pytest.raises(ValueError, match="labels must be 6 class indices in"):
        sanity.sanity_check(model, images, labels=[0, 1])


def test_zf_sanity_writes_the_librarys_numbers(tmp_path):
    """The command on a small model and real Fashion-MNIST images: the table, figures and JSON, the
    same numbers as the library with the same seed, and one-line errors."""
    import json

    from click.testing import CliRunner
    from train_helpers import write_small_idx

    from pipelines.cli import main

    model = small_model(1)
    model.save(tmp_path / "model.keras")
    shuffled = small_model(2)
    shuffled.save(tmp_path / "shuffled.keras")
    data = write_small_idx(str(tmp_path / "data"), n_train=8, n_test=8)
    args = ["sanity", str(tmp_path / "model.keras"), "--data", f"idx:{data}", "--images", "5", "--layers", "predictions,conv1"]
    result = CliRunner().invoke(
        main, args + ["--random-labels-model", str(tmp_path / "shuffled.keras"), "--seed", "3", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert {"results.json", "table.txt", "figure.png", "grid-0.png", "grid-1.png", "results.csv"} <= set(p.name for p in out.iterdir())
    written = json.loads((out / "results.json").read_text())
    assert written["layers"] == ["predictions", "conv1"] and written["images"] == 5 and written["data"] is not None
    from zfkeras.data import load_source

    images, labels = next(load_source(f"idx:{data}", "test").dataset.batch(5).as_numpy_iterator())
    again = sanity.sanity_check(model, images.astype("float32"), labels=labels, layers=["predictions", "conv1"], seed=3).to_dict()
    for rule in ("deconvnet", "guided", "gradient"):
        for metric in sanity.METRICS:
            assert written["cascading"][rule]["class"][metric]["mean"] == pytest.approx(again["cascading"][rule]["class"][metric]["mean"], abs=1e-6)
    assert "Cascading" in result.output and "..predictions" in (out / "table.txt").read_text()
    bad = CliRunner().invoke(main, args[:-1] + ["pool1", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "unknown layer 'pool1'; layers with weights: conv1" in bad.output and not (tmp_path / "bad").exists()
