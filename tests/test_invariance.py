"""Transforms move synthetic images as documented; invariance curves against a direct computation; CLI."""

import csv
import json
import os

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from zfkeras.analysis.invariance import default_amounts, invariance_curves, transform_image
from zfkeras.nn.models import ConvSpec, ModelSpec, PoolSpec, build_model
from zfkeras.nn.probe import KerasProbe


def tiny_model(input_shape=(16, 16, 1), classes=3, seed=0):
    spec = ModelSpec(
        name="tiny",
        input_shape=input_shape,
        num_classes=classes,
        convs=(ConvSpec(6, 3, 1, "same", pool=PoolSpec(3, 2, "same")), ConvSpec(8, 3, 1, "same")),
        fc=(12, 10),
        kernel_init="he_normal",
        filter_radius=None,
    )
    model = build_model(spec, seed=seed)
    model.get_layer("subtract_mean").set_mean(np.random.default_rng(seed).uniform(30, 90, input_shape))
    kernel = model.get_layer("predictions").kernel
    kernel.assign(kernel.numpy() * 0.05)  # unsaturated probabilities, so transforms move them
    return model


@pytest.fixture(scope="module")
def probe():
    return KerasProbe(tiny_model())


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    images = np.zeros((2, 16, 16, 1), "float32")
    images[:, 4:12, 5:11] = rng.uniform(100, 255, (2, 8, 6, 1))  # an object on a dark background
    return images


# ---- the transforms on synthetic images -----------------------------------------------------


def dot(shape, y, x):
    image = np.zeros(shape, "float32")
    image[y, x] = 200.0
    return image


@pytest.mark.parametrize("transform, amount", [("translation", 0), ("scale", 1), ("rotation", 0), ("rotation", 360)])
def test_identity_transforms_return_the_image(rng, transform, amount):
    image = rng.uniform(0, 255, (9, 11, 3)).astype("float32")
    np.testing.assert_allclose(transform_image(image, transform, amount, 0.0), image, atol=1e-3)


def test_translation_moves_content_down_and_fills_the_top():
    moved = transform_image(dot((9, 9, 1), 2, 3), "translation", 3, fill=7.0)
    assert np.argwhere(moved[..., 0] == 200.0).tolist() == [[5, 3]]
    assert (moved[:3] == 7.0).all() and (moved[3:] != 7.0).any()
    up = transform_image(dot((9, 9, 1), 2, 3), "translation", -2, fill=0.0)
    assert np.argwhere(up[..., 0] > 0).tolist() == [[0, 3]]


def test_background_fill_is_the_median_of_the_border_ring():
    image = np.full((6, 7, 2), 200.0, "float32")
    image[0, :, 0], image[:, 0, 1] = 10.0, 30.0  # ring of 22 pixels: channel 0 has 7 tens, channel 1 has 6 thirties
    image[2:4, 2:5] = 90.0
    moved = transform_image(image, "translation", 2)  # fill="background" by default
    np.testing.assert_array_equal(moved[:2], np.broadcast_to([200.0, 200.0], (2, 7, 2)))
    image[1:5, 1:6] = 255.0
    image[[0, -1]] = [3.0, 4.0]  # now 14 of the 22 ring pixels are (3, 4)
    np.testing.assert_array_equal(transform_image(image, "translation", -2)[4:], np.broadcast_to([3.0, 4.0], (2, 7, 2)))


def test_edge_fill_continues_the_border():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (8, 6, 2)).astype("float32")
    moved = transform_image(image, "translation", 3, fill="edge")
    np.testing.assert_array_equal(moved[:3], np.broadcast_to(image[0], (3, 6, 2)))
    np.testing.assert_array_equal(moved[3:], image[:5])
    shrunk = transform_image(image, "scale", 0.5, fill="edge")
    np.testing.assert_array_equal(shrunk[0, 0], image[0, 0])  # the corner reads the corner


def test_quarter_turns_move_a_dot_counter_clockwise():
    image = dot((9, 9, 1), 4, 7)  # 3 px right of the centre (4, 4)
    assert np.argwhere(transform_image(image, "rotation", 90, 0.0)[..., 0] > 1e-3).tolist() == [[1, 4]]  # above
    assert np.argwhere(transform_image(image, "rotation", 180, 0.0)[..., 0] > 1e-3).tolist() == [[4, 1]]  # left
    assert np.argwhere(transform_image(image, "rotation", 270, 0.0)[..., 0] > 1e-3).tolist() == [[7, 4]]  # below


def test_rotation_turns_a_ramp_by_the_angle():
    """Content x - cx (bright to the right) turned 30 degrees counter-clockwise has its gradient
    pointing 30 degrees above the x axis: cos30 (x - cx) + sin30 (cy - y)."""
    height = width = 15
    c = (height - 1) / 2
    rows, cols = np.mgrid[0:height, 0:width].astype("float64")
    image = (100 + (cols - c))[..., None]
    turned = transform_image(image, "rotation", 30, fill=-1.0)[..., 0]
    expected = 100 + np.cos(np.pi / 6) * (cols - c) + np.sin(np.pi / 6) * (c - rows)
    middle = (rows - c) ** 2 + (cols - c) ** 2 <= (c - 1) ** 2  # points whose source is inside
    np.testing.assert_allclose(turned[middle], expected[middle], atol=1e-4)
    assert (turned[0, 0] == -1.0) and (turned[~middle] != expected[~middle]).any()


def test_scale_magnifies_about_the_centre():
    """A ramp y - cy magnified by s has slope 1/s; a centred square of side 4 becomes side 8."""
    rows = np.mgrid[0:17, 0:17][0].astype("float64")
    image = (50 + (rows - 8))[..., None]
    scaled = transform_image(image, "scale", 2.0, fill=0.0)[..., 0]
    np.testing.assert_allclose(scaled, 50 + (rows - 8) / 2, atol=1e-4)
    square = np.zeros((16, 16, 1), "float32")
    square[6:10, 6:10] = 100.0  # centre 7.5, pixel centres 6..9
    big = transform_image(square, "scale", 2.0, fill=0.0)[..., 0]
    assert (big[5:11, 5:11] == 100.0).all() and (big[:3] == 0).all() and (big[:, 13:] == 0).all()
    assert np.argwhere(big > 0).min(0).tolist() == [3, 3] and np.argwhere(big > 0).max(0).tolist() == [12, 12]
    small = transform_image(square, "scale", 0.5, fill=9.0)[..., 0]
    assert (small[:4] == 9.0).all() and (small[12:] == 9.0).all()  # uncovered border takes the fill


# ---- the curves ---------------------------------------------------------------------------


def test_curves_match_direct_computation_and_are_zero_at_identity(probe, images):
    amounts = {"translation": [-3, 0, 2], "scale": [0.7, 1.0, 1.3], "rotation": [0, 45, 360]}
    curves = invariance_curves(probe, images, labels=[2, 0], amounts=amounts, layers=["conv1", "fc7"], fill="mean")
    assert list(curves) == ["translation", "scale", "rotation"]
    model = probe.model
    extract = keras.Model(model.inputs, [model.get_layer("conv1").output, model.get_layer("fc7").output, model.output])
    for kind, values in amounts.items():
        c = curves[kind]
        assert c.labels.tolist() == [2, 0]
        for i, image in enumerate(images):
            base = [np.asarray(a)[0] for a in extract([image[None]], training=False)]
            for t, amount in enumerate(values):
                moved = transform_image(image, kind, amount, probe.mean_image)
                feats = [np.asarray(a)[0] for a in extract([moved[None]], training=False)]
                for layer, f, b in (("conv1", feats[0], base[0]), ("fc7", feats[1], base[1])):
                    expected = np.sqrt(np.sum((f - b) ** 2)) / np.sqrt(np.sum(b**2))
                    np.testing.assert_allclose(c.distances[layer][i, t], expected, rtol=1e-4, atol=1e-6)
                np.testing.assert_allclose(c.true_class_prob[i, t], feats[2][[2, 0][i]], rtol=1e-5, atol=1e-6)
        identity = [t for t, a in enumerate(values) if a in (0, 1.0, 360)]
        for layer in ("conv1", "fc7"):
            assert np.all(np.abs(c.distances[layer][:, identity]) < 1e-5)
            others = [t for t in range(len(values)) if t not in identity]
            assert np.all(c.distances[layer][:, others] > 1e-3)  # non-identity transforms do move features


def test_default_labels_layers_amounts_and_edge_fill(probe, images):
    curves = invariance_curves(probe, images, amounts={"rotation": [0, 90]})
    moved = np.stack([transform_image(image, "rotation", 90, 0.0) for image in images])  # black border: background 0
    expected = probe.predict(moved)[np.arange(2), np.argmax(probe.predict(images), axis=1)]
    np.testing.assert_allclose(curves["rotation"].true_class_prob[:, 1], expected, rtol=1e-5)
    assert list(curves["rotation"].distances) == ["conv1", "fc7"]
    assert curves["rotation"].labels.tolist() == np.argmax(probe.predict(images), axis=1).tolist()
    amounts = default_amounts((28, 28, 1))
    assert amounts["translation"].tolist() == list(range(-7, 8))
    assert 1.0 in amounts["scale"].tolist() and amounts["rotation"][[0, -1]].tolist() == [0, 360]
    assert default_amounts((224, 224, 3))["translation"].tolist() == list(range(-56, 57, 8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"amounts": {"shear": [1]}}, "unknown transform 'shear'"),
        ({"amounts": {"scale": [0.0]}}, "scale must be > 0"),
        ({"layers": ["fc9"]}, "unknown layer 'fc9'"),
        ({"labels": [0, 3]}, r"labels must be 2 class indices in \[0, 3\)"),
        ({"fill": [1, 2, 3]}, "fill must be None"),
        ({"fill": "wrap"}, "fill must be 'background', 'edge', 'mean'"),
    ],
)
def test_bad_arguments_raise_clear_errors(probe, images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        invariance_curves(probe, images, **kwargs)


# ---- the command ---------------------------------------------------------------------------


def _save_png(path, array):
    import tensorflow as tf

    tf.io.write_file(str(path), tf.io.encode_png(np.asarray(array, "uint8")))


def test_command_writes_curves_and_figures(tmp_path, images):
    from pipelines.cli import main
    from pipelines.loading import open_model as load_probe
    from pipelines.loading import read_photo
    from zfkeras.data.transforms import fit_image

    path = tmp_path / "m.keras"
    tiny_model().save(path)
    _save_png(tmp_path / "one.png", images[0])
    _save_png(tmp_path / "two.png", np.repeat(images[1], 3, axis=-1))  # colour file into a grey model
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "invariance",
            str(path),
            str(tmp_path / "one.png"),
            str(tmp_path / "two.png"),
            "--label",
            "1",
            "--label",
            "2",
            "--shifts",
            "-2,0,2",
            "--scales",
            "0.8,1",
            "--angles",
            "0,90,180",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ["invariance.csv", "invariance.json", "invariance.png", "transforms.png"]
    saved = json.loads((out / "invariance.json").read_text())
    assert saved["images"] == ["one", "two"] and saved["labels"] == ["1", "2"] and saved["layers"] == ["conv1", "fc7"]
    assert saved["fill"] == "background"
    probe = load_probe(str(path))
    stack = np.stack([fit_image(read_photo(str(tmp_path / f"{n}.png")), (16, 16, 1)).pixels for n in ("one", "two")])
    expected = invariance_curves(probe, stack, labels=[1, 2], amounts={"rotation": [0, 90, 180]})["rotation"]
    got = saved["transforms"]["rotation"]
    np.testing.assert_allclose(got["distance"]["fc7"], expected.distances["fc7"], rtol=1e-5)
    np.testing.assert_allclose(got["true_class_prob"], expected.true_class_prob, rtol=1e-5)
    rows = list(csv.DictReader(open(out / "invariance.csv")))
    assert len(rows) == 2 * (3 + 2 + 3)
    row = [r for r in rows if r["image"] == "two" and r["transform"] == "rotation" and r["amount"] == "90"][0]
    assert float(row["distance_fc7"]) == pytest.approx(expected.distances["fc7"][1, 1], rel=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scales", "0,1"], "> 0"),
        (["--fill", "grey"], "'grey' is not 'background', 'edge', 'mean' or a pixel value"),
        (["--angles", "a,b"], "'a' in 'a,b': expected a comma-separated list of finite numbers"),
        (["--layers", "conv1,fc9"], "fc9"),
    ],
)
def test_command_rejects_bad_options(tmp_path, args, message):
    from pipelines.cli import main

    path = tmp_path / "m.keras"
    tiny_model().save(path)
    _save_png(tmp_path / "a.png", np.zeros((16, 16, 1)))
    result = CliRunner().invoke(main, ["invariance", str(path), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")] + args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_command_runs_on_full_224_zfnet(tmp_path):
    """The real ZFNet (random weights) on a colour photo: two amounts per transform."""
    from pipelines.cli import main
    from zfkeras.nn.models import zfnet

    keras.utils.set_random_seed(0)
    zfnet(num_classes=4).save(tmp_path / "zfnet.keras")
    _save_png(tmp_path / "photo.png", np.random.default_rng(0).integers(0, 255, (240, 300, 3)))
    result = CliRunner().invoke(
        main,
        [
            "invariance",
            str(tmp_path / "zfnet.keras"),
            str(tmp_path / "photo.png"),
            "--shifts",
            "0,16",
            "--scales",
            "1,1.2",
            "--angles",
            "0,30",
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "out" / "invariance.json").read_text())
    assert saved["layers"] == ["conv1", "fc7"]
    assert saved["transforms"]["rotation"]["distance"]["conv1"][0][0] == pytest.approx(0.0, abs=1e-6)
    assert saved["transforms"]["rotation"]["distance"]["conv1"][0][1] > 0.01


def test_command_on_an_export_directory_matches_the_keras_file(tmp_path, images):
    from pipelines.cli import main
    from zfkeras.export import export_model

    model = tiny_model()
    model.save(tmp_path / "m.keras")
    (tmp_path / "zfkeras.json").write_text(json.dumps({"class_names": ["a", "b", "c"]}))
    export_model(model, tmp_path / "export", class_names=["a", "b", "c"])
    _save_png(tmp_path / "one.png", images[0])
    for source, out in ((str(tmp_path / "m.keras"), "k"), (str(tmp_path / "export"), "e")):
        result = CliRunner().invoke(
            main,
            [
                "invariance",
                source,
                str(tmp_path / "one.png"),
                "--shifts",
                "-3,0,3",
                "--scales",
                "1,1.4",
                "--angles",
                "0,45",
                "--out",
                str(tmp_path / out),
            ],
        )
        assert result.exit_code == 0, result.output
    k, e = (json.loads((tmp_path / out / "invariance.json").read_text()) for out in ("k", "e"))
    assert e["labels"] == k["labels"]
    for kind in ("translation", "scale", "rotation"):
        np.testing.assert_allclose(e["transforms"][kind]["distance"]["fc7"], k["transforms"][kind]["distance"]["fc7"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(e["transforms"][kind]["true_class_prob"], k["transforms"][kind]["true_class_prob"], rtol=1e-5, atol=1e-6)
