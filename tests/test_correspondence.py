"""Sign-change measure against hand-computed values; correspondence against a direct computation; CLI."""

import json
import os

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from zfkeras.analysis.correspondence import correspondence, delta, mask_images, pairwise_sign_hamming, random_boxes, sign_hamming
from zfkeras.nn.models import ConvSpec, ModelSpec, PoolSpec, build_model
from zfkeras.nn.probe import KerasProbe


def tiny_model(input_shape=(16, 16, 1), seed=0):
    spec = ModelSpec(
        name="tiny",
        input_shape=input_shape,
        num_classes=3,
        convs=(ConvSpec(6, 3, 1, "same", pool=PoolSpec(3, 2, "same")), ConvSpec(8, 3, 1, "same")),
        fc=(12, 10),
        kernel_init="he_normal",
        filter_radius=None,
    )
    model = build_model(spec, seed=seed)
    model.get_layer("subtract_mean").set_mean(np.random.default_rng(seed).uniform(30, 90, input_shape))
    return model


@pytest.fixture(scope="module")
def probe():
    return KerasProbe(tiny_model())


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).uniform(0, 255, (3, 16, 16, 1)).astype("float32")


# ---- the measure on hand-made vectors -------------------------------------------------------


def test_delta_equals_hand_computed_value():
    eps = np.array([[1.0, -2.0, 0.0, 3.0], [2.0, 1.0, 0.0, -1.0], [-1.0, -1.0, 0.0, 2.0]])
    # signs: [+ - 0 +], [+ + 0 -], [- - 0 +]: pairs differ in 2, 1 and 3 of 4 entries
    assert sign_hamming(eps[0], eps[1]) == 0.5
    assert sign_hamming(eps[0], eps[2]) == 0.25
    assert sign_hamming(eps[1], eps[2]) == 0.75
    np.testing.assert_array_equal(pairwise_sign_hamming(eps), [[0, 0.5, 0.25], [0.5, 0, 0.75], [0.25, 0.75, 0]])
    assert delta(eps) == 2 * (0.5 + 0.25 + 0.75)  # ordered pairs i != j
    assert sign_hamming([0.0, 0.0], [0.0, 5.0]) == 0.5  # "no change" differs from "up"
    assert delta(eps[:, None, :2] * [[1.0], [2.0]]) == pytest.approx(2 * (0.5 + 0.5 + 1.0) / 1)  # any shape, flattened


def test_identical_images_masked_at_identical_places_give_zero(probe, images):
    same = np.repeat(images[:1], 4, axis=0)
    box = [[3, 4, 9, 12]] * 4
    result = correspondence(probe, same, {"part": box}, layers=["conv2", "fc7"], draws=3, seed=1)
    for layer in ("conv2", "fc7"):
        score = result.scores["part"][layer]
        assert score.delta == 0.0 and score.mean == 0.0 and score.std == 0.0 and len(score.pairs) == 6
        # random masks differ between the copies, so the control is not zero: the test can fail
        assert result.scores["random"][layer].mean > 0.01


def test_scores_match_direct_computation(probe, images):
    parts = {"left": [[2, 1, 7, 6], [3, 2, 8, 7], [2, 2, 7, 7]], "right": [[8, 9, 14, 15], [9, 8, 15, 14], [8, 8, 14, 14]]}
    result = correspondence(probe, images, parts, layers=["conv2", "fc6"], draws=4, seed=5)
    assert list(result.scores) == ["left", "right", "random"] and result.random_boxes.shape == (4, 2, 3, 4)
    model = probe.model
    extract = keras.Model(model.inputs, [model.get_layer("conv2").output, model.get_layer("fc6").output])
    mean = probe.mean_image

    def masked_features(boxes):
        copies = images.copy()
        for copy, (y0, x0, y1, x1) in zip(copies, boxes):
            for y in range(y0, y1):
                for x in range(x0, x1):
                    copy[y, x] = mean[y, x]
        return [np.asarray(f).reshape(3, -1) for f in extract([copies], training=False)]

    def direct(boxes):
        base = [np.asarray(f).reshape(3, -1) for f in extract([images], training=False)]
        values = []
        for b, m in zip(base, masked_features(boxes)):
            eps = b - m
            pairs = [np.count_nonzero(np.sign(eps[i]) != np.sign(eps[j])) / eps.shape[1] for i in range(3) for j in range(3) if i < j]
            values.append(pairs)
        return values

    for name, boxes in parts.items():
        for layer, pairs in zip(("conv2", "fc6"), direct(boxes)):
            score = result.scores[name][layer]
            np.testing.assert_allclose(np.sort(score.pairs), np.sort(pairs), atol=1e-12)
            assert score.delta == pytest.approx(2 * sum(pairs)) and score.mean == pytest.approx(np.mean(pairs))
            assert score.std == pytest.approx(np.std(pairs))
    random_pairs = {"conv2": [], "fc6": []}
    random_deltas = {"conv2": [], "fc6": []}
    for draw in result.random_boxes:
        for boxes in draw:
            for layer, pairs in zip(("conv2", "fc6"), direct(boxes)):
                random_pairs[layer] += pairs
                random_deltas[layer].append(2 * sum(pairs))
    for layer in ("conv2", "fc6"):
        score = result.scores["random"][layer]
        assert score.mean == pytest.approx(np.mean(random_pairs[layer])) and score.std == pytest.approx(np.std(random_pairs[layer]))
        assert score.delta == pytest.approx(np.mean(random_deltas[layer]))
        assert score.delta_std == pytest.approx(np.std(random_deltas[layer]))


def test_random_masks_have_the_part_size_stay_inside_the_object_and_follow_the_seed(probe, images):
    parts = {"p": [[0, 0, 3, 5], [4, 4, 8, 6], [10, 10, 16, 16]]}
    objects = [[2, 3, 12, 14], [0, 0, 16, 16], [5, 5, 11, 11]]
    result = correspondence(probe, images, parts, objects=objects, draws=20, seed=3)
    boxes = result.random_boxes[:, 0]  # [draws, N, 4]
    sizes = boxes[..., 2:] - boxes[..., :2]
    np.testing.assert_array_equal(sizes, np.broadcast_to([[3, 5], [4, 2], [6, 6]], sizes.shape))
    objects = np.array(objects)
    assert (boxes[..., :2] >= objects[:, :2]).all() and (boxes[..., 2:] <= objects[:, 2:]).all()
    assert len({tuple(b) for b in boxes[:, 0].tolist()}) > 5  # they do move around
    again = correspondence(probe, images, parts, objects=objects, draws=20, seed=3)
    np.testing.assert_array_equal(again.random_boxes, result.random_boxes)
    other = correspondence(probe, images, parts, objects=objects, draws=20, seed=4)
    assert not np.array_equal(other.random_boxes, result.random_boxes)


def test_random_box_larger_than_its_region_is_centred_on_it():
    boxes = random_boxes(np.random.default_rng(0), [[6, 4]], [[5, 5, 9, 9]], (12, 12, 1))
    assert boxes.tolist() == [[4, 5, 10, 9]]


def test_mask_images_paints_exactly_the_box():
    images = np.zeros((2, 5, 6, 2), "float32")
    fill = np.arange(60, dtype="float32").reshape(5, 6, 2) + 1
    masked = mask_images(images, [[1, 2, 3, 5], [0, 0, 5, 1]], fill)
    expected = np.zeros_like(images)
    expected[0, 1:3, 2:5] = fill[1:3, 2:5]
    expected[1, :, :1] = fill[:, :1]
    np.testing.assert_array_equal(masked, expected)
    assert (images == 0).all()  # the originals are untouched


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"parts": {"p": [[0, 0, 17, 4]] * 3}}, r"parts\['p'\]\[0\] = \[0, 0, 17, 4\] is not a box inside the 16x16 input"),
        ({"parts": {"p": [[0, 0, 4, 4]] * 2}}, "has 2 boxes for 3 images"),
        ({"parts": {"random": [[0, 0, 4, 4]] * 3}}, "reserved"),
        ({"parts": {"p": [[0, 0, 4, 4]] * 3}, "layers": ["conv7"]}, "unknown layer 'conv7'"),
        ({"parts": {"p": [[0, 0, 4, 4]] * 3}, "draws": 0}, "draws must be a positive int"),
        ({"parts": {"p": [[0.5, 0, 4, 4]] * 3}}, "must be integer"),
    ],
)
def test_bad_arguments_raise_clear_errors(probe, images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        correspondence(probe, images, **kwargs)


# ---- the command ---------------------------------------------------------------------------


def _save_png(path, array):
    import tensorflow as tf

    tf.io.write_file(str(path), tf.io.encode_png(np.asarray(array, "uint8")))


def _parts_file(tmp_path, images, extra=None):
    entries = []
    for i, image in enumerate(images):
        _save_png(tmp_path / f"img{i}.png", image)
        entries.append({"file": f"img{i}.png", "parts": {"top": [1, 2, 6, 10], "bottom": [9, 3 + i, 14, 9 + i]}, "object": [0, 0, 16, 16]})
    spec = {"images": entries}
    if extra:
        extra(spec)
    (tmp_path / "parts.json").write_text(json.dumps(spec))
    return str(tmp_path / "parts.json")


def test_command_writes_table_json_and_masks(tmp_path, images):
    from pipelines.cli import main
    from pipelines.loading import open_model as load_probe
    from pipelines.loading import read_photo
    from zfkeras.data.transforms import fit_image

    tiny_model().save(tmp_path / "m.keras")
    parts = _parts_file(tmp_path, images)
    out = tmp_path / "out"
    args = ["correspondence", str(tmp_path / "m.keras"), "--parts", parts, "--draws", "3", "--seed", "2", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ["correspondence.json", "correspondence.txt", "masks.png"]
    saved = json.loads((out / "correspondence.json").read_text())
    assert saved["layers"] == ["conv2", "fc7"] and saved["files"] == ["img0.png", "img1.png", "img2.png"]
    probe = load_probe(str(tmp_path / "m.keras"))
    stack = np.stack([fit_image(read_photo(str(tmp_path / f"img{i}.png")), (16, 16, 1)).pixels for i in range(3)])
    boxes = {"top": [[1, 2, 6, 10]] * 3, "bottom": [[9, 3 + i, 14, 9 + i] for i in range(3)]}
    expected = correspondence(probe, stack, boxes, objects=[[0, 0, 16, 16]] * 3, draws=3, seed=2)
    for part in ("top", "bottom", "random"):
        for layer in ("conv2", "fc7"):
            assert saved["scores"][part][layer]["mean"] == pytest.approx(expected.scores[part][layer].mean)
            assert saved["scores"][part][layer]["delta"] == pytest.approx(expected.scores[part][layer].delta)
    table = (out / "correspondence.txt").read_text()
    assert f"{expected.scores['top']['fc7'].mean:.3f} +- {expected.scores['top']['fc7'].std:.3f}" in table
    assert table in result.output


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["images"][1]["parts"].pop("top"), "every image needs the same parts"),
        (lambda s: s["images"][0].update(file="missing.png"), "'missing.png' does not exist"),
        (lambda s: s["images"][2]["parts"].update(top=[1, 2, 3]), "is not 4 integers"),
        (lambda s: s["images"][0]["parts"].update(top=[1, 2, 30, 10]), "not a box inside the 16x16 input"),
        (lambda s: s["images"][1].pop("object"), "for every image or for none"),
        (lambda s: s.update(images=s["images"][:1]), "at least 2"),
    ],
)
def test_command_rejects_bad_parts_files(tmp_path, images, edit, message):
    from pipelines.cli import main

    tiny_model().save(tmp_path / "m.keras")
    parts = _parts_file(tmp_path, images, edit)
    result = CliRunner().invoke(main, ["correspondence", str(tmp_path / "m.keras"), "--parts", parts, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_command_runs_on_full_224_zfnet(tmp_path):
    """The real ZFNet (random weights): two colour photos of other sizes, one part, one draw."""
    from pipelines.cli import main
    from zfkeras.nn.models import zfnet

    keras.utils.set_random_seed(0)
    zfnet(num_classes=4).save(tmp_path / "zfnet.keras")
    rng = np.random.default_rng(0)
    entries = []
    for i, shape in enumerate([(240, 300, 3), (300, 224, 3)]):
        _save_png(tmp_path / f"p{i}.png", rng.integers(0, 255, shape))
        entries.append({"file": f"p{i}.png", "parts": {"face": [60, 80, 120, 140]}})
    (tmp_path / "parts.json").write_text(json.dumps({"images": entries}))
    result = CliRunner().invoke(
        main,
        [
            "correspondence",
            str(tmp_path / "zfnet.keras"),
            "--parts",
            str(tmp_path / "parts.json"),
            "--draws",
            "1",
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "out" / "correspondence.json").read_text())
    assert saved["layers"] == ["conv5", "fc7"]
    assert 0.0 <= saved["scores"]["face"]["conv5"]["mean"] <= 1.0


def test_command_on_an_export_directory_matches_the_keras_file(tmp_path, images):
    from pipelines.cli import main
    from zfkeras.export import export_model

    model = tiny_model()
    model.save(tmp_path / "m.keras")
    export_model(model, tmp_path / "export", class_names=["a", "b", "c"])
    parts = _parts_file(tmp_path, images)
    for source, out in ((str(tmp_path / "m.keras"), "k"), (str(tmp_path / "export"), "e")):
        result = CliRunner().invoke(main, ["correspondence", source, "--parts", parts, "--draws", "2", "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    k, e = (json.loads((tmp_path / out / "correspondence.json").read_text()) for out in ("k", "e"))
    assert e["random_boxes"] == k["random_boxes"]
    for part in ("top", "bottom", "random"):
        for layer in ("conv2", "fc7"):
            assert e["scores"][part][layer]["mean"] == pytest.approx(k["scores"][part][layer]["mean"], rel=1e-9)


def test_files_of_a_class_folder_tree_get_names_by_their_folder(tmp_path):
    import click
    from PIL import Image

    from pipelines.loading import load_images

    paths = []
    for relative in ("cat/001.png", "dog/001.png", "dog/002.png", "x/cat/001.png"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), len(paths) * 40, np.uint8)).save(path)
        paths.append(str(path))
    named = load_images(paths[:3], (8, 8, 1))
    assert [name for name, _ in named] == ["cat-001", "dog-001", "002"]
    assert [float(pixels[0, 0, 0]) for _, pixels in named] == [0.0, 40.0, 80.0]
    with pytest.raises(click.BadParameter, match="would both write cat-001"):
        load_images([paths[0], paths[1], paths[3]], (8, 8, 1))


def test_masks_figure_draws_the_first_twelve_images():
    from types import SimpleNamespace

    from pipelines.figures import MASKED_ROWS, masks_figure

    count = MASKED_ROWS + 3
    named = [(f"img{i}", np.full((16, 16, 1), 10.0 * i, np.float32)) for i in range(count)]
    parts = {"top": np.array([[1, 2, 6, 10]] * count)}
    result = SimpleNamespace(random_boxes=np.tile(np.array([4, 4, 9, 12]), (2, 1, count, 1)))
    figure = masks_figure(named, parts, result, fill=np.zeros((16, 16, 1), np.float32))
    rows = {round(axis.get_position().y0, 4) for axis in figure.axes}
    assert len(figure.axes) == MASKED_ROWS * 4 and len(rows) == MASKED_ROWS
    assert [t.get_text() for t in figure.axes[0].texts] == ["img0"]
