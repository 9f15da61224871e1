"""Deletion and insertion curves (Petsiuk et al. 2018) against curves written down by hand, on a
linear score and on a tiny Keras model whose unit is linear in the pixels."""

import types

import keras
import numpy as np
import pytest

from zfkeras.analysis import faithfulness as faith
from zfkeras.nn.probe import KerasProbe


def test_hand_computed_curves_of_a_linear_score():
    """Image [[1, 2], [3, 4]], weights [[1, -1], [2, 0.5]]: contributions [1, -2, 6, 2], so the
    order is pixels 2, 3, 0, 1; deleting one more pixel per step leaves 7, 1, -1, -2, 0 and
    inserting gives 0, 6, 8, 9, 7 (baseline 0)."""
    image = np.array([[1.0, 2.0], [3.0, 4.0]], "float32").reshape(1, 2, 2, 1)
    weights = np.array([[1.0, -1.0], [2.0, 0.5]]).reshape(1, 2, 2, 1)
    order = faith.pixel_order((image * weights)[..., 0])
    np.testing.assert_array_equal(order, [[2, 3, 0, 1]])
    found = faith.curves(lambda batch, owners: (batch * weights).sum(axis=(1, 2, 3)), image, order, 0.0, steps=4, batch_size=3)
    np.testing.assert_allclose(found["deletion"], [[7, 1, -1, -2, 0]])
    np.testing.assert_allclose(found["insertion"], [[0, 6, 8, 9, 7]])
    assert faith.auc(found["deletion"]) == pytest.approx([(4 + 0 - 1.5 - 1) / 4])  # trapezoids of 7,1 | 1,-1 | -1,-2 | -2,0
    assert faith.auc(found["insertion"]) == pytest.approx([(3 + 7 + 8.5 + 8) / 4])


def test_steps_ties_and_baseline():
    np.testing.assert_array_equal(faith.step_counts(10, 4), [0, 2, 5, 8, 10])  # round half to even: 2.5 -> 2, 7.5 -> 8
    np.testing.assert_array_equal(faith.pixel_order(np.array([[[1.0, 3.0], [3.0, 1.0]]])), [[1, 2, 0, 3]])  # ties: row-major
    image = np.arange(6, dtype="float32").reshape(1, 2, 3, 1) + 1
    baseline = np.full((2, 3, 1), 100.0, "float32")
    seen = []
    faith.curves(
        lambda batch, owners: seen.append(batch.copy()) or np.zeros(len(batch)), image, [[5, 4, 3, 2, 1, 0]], baseline, steps=3, batch_size=100
    )
    batch = seen[0]  # deletion steps 0..3, then insertion steps 0..3
    np.testing.assert_array_equal(batch[1].ravel(), [1, 2, 3, 4, 100, 100])
    np.testing.assert_array_equal(batch[3].ravel(), [100] * 6)
    np.testing.assert_array_equal(batch[5].ravel(), [100, 100, 100, 100, 5, 6])
    np.testing.assert_array_equal(batch[7].ravel(), [1, 2, 3, 4, 5, 6])


def test_random_orders_are_seeded_permutations():
    first, again = faith.random_orders(3, 50, 7), faith.random_orders(3, 50, 7)
    np.testing.assert_array_equal(first, again)
    assert all(sorted(row) == list(range(50)) for row in first)
    assert not np.array_equal(first, faith.random_orders(3, 50, 8))


def test_occlusion_relevance_by_hand():
    """A 3x3 image, 3x3 squares at corners (-1,-1), (-1,1), (1,-1), (1,1): pixel (0,0) is covered
    by the first square only, (1,1) by all four, (0,1) by the first two."""
    result = types.SimpleNamespace(
        image=np.zeros((3, 3, 1)),
        positions=np.array([[[-1, -1], [-1, 1]], [[1, -1], [1, 1]]]),
        patch=3,
        true_class_prob=np.array([[0.5, 0.9], [0.8, 1.0]]),
        clean_probs=np.array([0.0, 1.0]),
        label=1,
    )
    drops = {"a": 0.5, "b": 0.1, "c": 0.2, "d": 0.0}
    found = faith.occlusion_relevance(result)
    assert found[0, 0] == pytest.approx(drops["a"])
    assert found[1, 1] == pytest.approx(sum(drops.values()) / 4)
    assert found[0, 1] == pytest.approx((drops["a"] + drops["b"]) / 2)
    assert found[2, 2] == pytest.approx(drops["d"])


def linear_model():
    """4x5x1 input; a linear 4x5 conv "c" (one unit, linear in the pixels), then a 3-class softmax."""
    inputs = keras.Input((4, 5, 1))
    unit = keras.layers.Conv2D(1, (4, 5), name="c")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(keras.layers.Flatten()(unit))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    model.get_layer("c").set_weights([rng.normal(size=(4, 5, 1, 1)).astype("float32"), np.array([0.3], "float32")])
    model.get_layer("predictions").set_weights([rng.normal(size=(1, 3)).astype("float32"), rng.normal(size=3).astype("float32")])
    return model


def test_tiny_model_unit_and_class_curves_written_down():
    model = linear_model()
    probe = KerasProbe(model)
    images = np.random.default_rng(1).uniform(0, 255, (3, 4, 5, 1)).astype("float32")
    result = faith.faithfulness(probe, images, labels=[0, 1, 2], occlusion=False, steps=5, batch_size=7)
    w, b = model.get_layer("c").get_weights()
    dense_w, dense_b = model.get_layer("predictions").get_weights()
    weights = w[..., 0, 0].ravel()
    for n, image in enumerate(images):
        contributions = image.ravel() * weights
        order = np.argsort(-np.abs(weights), kind="stable")  # every rule: |activation * w| ranks by |w| (one linear unit)
        counts = np.rint(np.arange(6) * 20 / 5).astype(int)
        kept = [np.setdiff1d(np.arange(20), order[:c]) for c in counts]
        deletion = np.array([b[0] + contributions[k].sum() for k in kept])
        insertion = np.array([b[0] + contributions[order[:c]].sum() for c in counts])
        for rule in ("deconvnet", "guided", "gradient"):
            np.testing.assert_allclose(result.curves["unit"][rule]["deletion"][n], deletion, rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(result.curves["unit"][rule]["insertion"][n], insertion, rtol=1e-4, atol=1e-3)
        logits = deletion[:, None] * dense_w[0][None] + dense_b[None]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = (p / p.sum(axis=1, keepdims=True))[:, n]
        class_order = np.argsort(-np.abs(weights * dense_w[0, n]), kind="stable")  # the class score's gradient: w * dense_w[n]
        np.testing.assert_array_equal(class_order, order)
        np.testing.assert_allclose(result.curves["class"]["gradient"]["deletion"][n], p, rtol=1e-4, atol=1e-6)
    assert result.unit == {"layer": "c", "channels": [0, 0, 0], "positions": [[0, 0]] * 3}
    table = result.to_dict()
    assert set(table["targets"]["class"]) == {"deconvnet", "guided", "gradient", "random"}
    assert table["targets"]["unit"]["gradient"]["deletion"]["auc_mean"] == pytest.approx(
        faith.auc(result.curves["unit"]["gradient"]["deletion"]).mean()
    )


def test_batched_equals_one_image_per_forward_pass_and_occlusion_runs():
    model = linear_model()
    probe = KerasProbe(model)
    images = np.random.default_rng(2).uniform(0, 255, (2, 4, 5, 1)).astype("float32")
    orders = faith.random_orders(2, 20, 0)
    score = faith.class_score(probe, np.array([1, 2]))
    batched = faith.curves(score, images, orders, 0.0, steps=4, batch_size=64)
    one_by_one = faith.curves(score, images, orders, 0.0, steps=4, batch_size=1)
    for kind in faith.KINDS:
        np.testing.assert_allclose(batched[kind], one_by_one[kind], rtol=1e-6)
    result = faith.faithfulness(probe, images, rules=["gradient"], steps=4)
    assert set(result.curves["class"]) == {"gradient", "occlusion", "random"} and set(result.curves["unit"]) == {"gradient", "random"}
    np.testing.assert_allclose(result.clean["class"], probe.predict(images).max(axis=1), rtol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"orders must be \[1, 4\]"):
        faith.curves(lambda b, o: np.zeros(len(b)), np.zeros((1, 2, 2, 1)), [[0, 1]], 0.0)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        faith.curves(lambda b, o: np.zeros(len(b)), np.zeros((1, 2, 2, 1)), [[0, 1, 2, 3]], 0.0, steps=0)


def test_zf_faithfulness_on_data_and_on_image_files(tmp_path):
    import json

    from click.testing import CliRunner
    from train_helpers import write_small_idx

    from pipelines.cli import main
    from zfkeras.nn.models import build_model, zfnet_small_spec

    spec = zfnet_small_spec().with_units(conv1=4, conv2=4, conv3=4, conv4=4, conv5=4, fc6=8, fc7=8)
    build_model(spec.replace(kernel_init="he_normal"), seed=0).save(tmp_path / "model.keras")
    data = write_small_idx(str(tmp_path / "data"), n_train=8, n_test=6)
    model = str(tmp_path / "model.keras")
    result = CliRunner().invoke(main, ["faithfulness", model, "--data", f"idx:{data}", "--images", "3", "--steps", "4", "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "a" / "results.json").read_text())
    assert written["images"] == 3 and written["steps"] == 4 and written["unit"]["layer"] == "conv5"
    assert set(written["targets"]["class"]) == {"deconvnet", "guided", "gradient", "occlusion", "random"}
    aucs = np.load(tmp_path / "a" / "aucs.npz")
    assert aucs["class/occlusion/deletion"].shape == (3,)
    assert written["targets"]["class"]["occlusion"]["deletion"]["auc_mean"] == pytest.approx(float(aucs["class/occlusion/deletion"].mean()))
    assert "deletion AUC" in (tmp_path / "a" / "table.txt").read_text()
    result = CliRunner().invoke(
        main, ["faithfulness", model, "chelsea", "--label", "3", "--no-occlusion", "--steps", "4", "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "b" / "results.json").read_text())
    assert written["labels"] == [3] and "occlusion" not in written["targets"]["class"]
    bad = CliRunner().invoke(main, ["faithfulness", model, "--data", f"idx:{data}", "--label", "3", "--out", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "--label goes with IMAGE arguments" in bad.output
