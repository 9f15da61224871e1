"""Sec. 5 experiments: per-class folds, the Caltech metric, linear heads against scikit-learn,
cached features against the model, the assembled model against its cached-feature head, and
`zf transfer` / `zf layers` end to end (on the shipped model with real digits, and on a 224 ZFNet
reading a generated image folder)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from train_helpers import tiny_config

from zfkeras import data
from zfkeras.experiments import transfer
from zfkeras.experiments.folds import class_folds, mean_class_accuracy, summarize
from zfkeras.experiments.linear import fit_linear
from zfkeras.nn.models import build_model, zfnet_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "saved_models", "zfnet-fashion-mnist")


# ---- folds and the metric -----------------------------------------------------------------------


def test_class_folds_draw_exactly_n_per_class_disjoint_and_nested():
    labels = np.repeat(np.arange(4), [12, 9, 20, 7])[::-1]  # class-sorted on disk, in reverse
    for n in (1, 3, 6):
        folds = class_folds(labels, n, folds=3, test_per_class=4, seed=7)
        assert len(folds) == 3
        for fold in folds:
            assert np.bincount(labels[fold.train], minlength=4).tolist() == [n] * 4
            assert np.bincount(labels[fold.test], minlength=4).tolist() == [min(4, c - n) for c in (12, 9, 20, 7)]
            assert not set(fold.train) & set(fold.test)
    small, large = class_folds(labels, 2, 3, 4, seed=7), class_folds(labels, 6, 3, 4, seed=7)
    for a, b in zip(small, large):  # a fold's smaller training set is part of its larger one
        assert set(a.train) <= set(b.train)
    assert [f.train.tolist() for f in small] == [f.train.tolist() for f in class_folds(labels, 2, 3, 4, seed=7)]
    assert small[0].train.tolist() != small[1].train.tolist()


def test_class_folds_name_a_class_with_too_few_images():
    labels = np.asarray([0] * 10 + [1] * 3)
    with pytest.raises(ValueError, match=r"class 'cat' has 3 images; 3 per class .* at least 4"):
        class_folds(labels, 3, class_names=["dog", "cat"])


def test_mean_class_accuracy_by_hand():
    labels = np.asarray([0, 0, 0, 0, 1, 1, 2])
    predicted = np.asarray([0, 0, 0, 1, 1, 0, 0])
    # class 0: 3/4, class 1: 1/2, class 2: 0/1 -> (0.75 + 0.5 + 0) / 3
    assert mean_class_accuracy(labels, predicted) == pytest.approx(1.25 / 3)
    rows = summarize([{"m": "a", "mean_class_accuracy": v} for v in (0.5, 0.7)], ("m",))
    assert rows == [{"m": "a", "mean": pytest.approx(0.6), "std": pytest.approx(0.1), "folds": 2}]


# ---- linear heads against scikit-learn ---------------------------------------------------------


def blobs(n, dim, classes, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dim))
    labels = np.arange(n) % classes
    return (centres[labels] + rng.normal(0, 1.5, (n, dim))).astype("float32"), labels


@pytest.mark.parametrize("dim", [20, 400])  # fewer and more features than images
def test_softmax_and_svm_equal_scikit_learn(dim):
    x, y = blobs(150, dim, 5, seed=dim)
    test_x, _ = blobs(300, dim, 5, seed=dim + 1)
    scaler = StandardScaler().fit(x)
    references = {
        "softmax": LogisticRegression(C=0.5, tol=1e-10, max_iter=10000).fit(scaler.transform(x), y),
        # liblinear penalises its bias; a large intercept_scaling makes that penalty vanish, as ours.
        "svm": LinearSVC(C=0.5, tol=1e-7, max_iter=50000, intercept_scaling=100).fit(scaler.transform(x), y),
    }
    for kind, reference in references.items():
        ours = fit_linear(x, y, 5, kind=kind, C=0.5)
        assert ours.converged
        scale = np.abs(reference.coef_).max()
        np.testing.assert_allclose(ours.weights, reference.coef_.T, atol=2e-3 * scale)
        np.testing.assert_array_equal(ours.predict(test_x), reference.predict(scaler.transform(test_x)))
        weights, bias = ours.folded()
        np.testing.assert_allclose(test_x @ weights + bias, ours.scores(test_x), rtol=1e-4, atol=1e-4)


def test_fit_linear_errors_name_the_argument():
    x, y = blobs(20, 3, 2, seed=0)
    with pytest.raises(ValueError, match="kind must be one of softmax, svm"):
        fit_linear(x, y, 2, kind="tree")
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1"):
        fit_linear(x, y + 1, 2)


# ---- features and heads on a model -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    model = build_model(tiny_config().model_spec(), seed=4)
    model.get_layer("subtract_mean").set_mean(np.full((28, 28, 1), 30.0, "float32"))
    return model


@pytest.fixture(scope="module")
def digits():
    """200 generated 20x20 'digits' (class = position of a bright bar), as an in-memory CSV source."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    images = rng.integers(0, 60, (200, 20, 20, 1))
    for i, label in enumerate(labels):
        images[i, 2 + 4 * label : 5 + 4 * label, 3:17] += 180
    return data.in_memory_source(images.astype(np.uint8), labels, [str(i) for i in range(4)], "digits", "train")


def test_frozen_features_are_the_block_outputs_of_fitted_images(tiny_model, digits):
    features = transfer.FrozenFeatures(tiny_model, digits, ["conv1", "conv5", "fc7"], max_features=200)
    indices = np.asarray([3, 150, 7, 42])
    features.compute(indices[:2])
    features.compute(indices)  # only the missing ones are computed
    fitted = np.stack(
        [data.resize_and_center_crop(image, 28) for image, _ in data.subset(digits, indices).dataset.as_numpy_iterator()]
    )  # the 20x20 digits resized to the 28x28 input (no further zoom for small inputs)
    fitted = np.round(fitted)  # resized_dataset keeps uint8 images
    order = np.argsort(indices)
    for layer, tensor_name in (("conv1", "norm1"), ("conv5", "pool5"), ("fc7", "fc7")):
        output = tiny_model.get_layer(tensor_name).output
        reference = keras.Model(tiny_model.inputs[0], output[0] if isinstance(output, (list, tuple)) else output)
        expected = np.asarray(reference(fitted.astype("float32"), training=False))
        if layer == "conv1":  # 14x14x4 = 784 values > 200: max over 2x2 cells -> 7x7x4
            expected = tf.nn.max_pool2d(expected, 2, 2, "SAME").numpy()
            assert transfer.feature_layout(tiny_model, "conv1", 200) == ((14, 14, 4), (2, 2), 196)
        got = features.get(layer, indices[order])
        np.testing.assert_allclose(got, expected.reshape(len(indices), -1), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="features of image 5 were not computed"):
        features.get("fc7", [5])


def test_assembled_model_predicts_as_the_cached_feature_head(tiny_model, digits):
    labels = data.source_labels(digits)
    fold = class_folds(labels, 10, folds=1, test_per_class=20, seed=1)[0]
    features = transfer.FrozenFeatures(tiny_model, digits, ["fc7"])
    features.compute(np.concatenate([fold.train, fold.test]))
    run, classifier = transfer.pretrained_run(features, "fc7", labels, fold, 4)
    assembled = transfer.with_linear_head(tiny_model, "fc7", classifier)
    truth, predicted = transfer.predict_classes(assembled, digits, fold.test)
    np.testing.assert_array_equal(truth, labels[fold.test])
    np.testing.assert_array_equal(predicted, classifier.predict(features.get("fc7", fold.test)))
    assert run.mean_class_accuracy == pytest.approx(mean_class_accuracy(truth, predicted))
    assert [layer.name for layer in assembled.layers if layer.trainable] == ["predictions"]


def test_scratch_model_is_the_architecture_with_fresh_weights_and_new_head(tiny_model):
    pretrained = keras.models.clone_model(tiny_model)  # stands for a trained model: weights moved off their init
    pretrained.set_weights([w + 0.5 for w in tiny_model.get_weights()])
    fresh = transfer.scratch_model(pretrained, 7, seed=0)
    assert fresh.output.shape[-1] == 7
    assert [type(a) for a in fresh.layers[:-1]] == [type(b) for b in tiny_model.layers[:-1]]
    # The model's own (seeded) initializers again, not the trained weights.
    initial = build_model(tiny_config().model_spec(), seed=4).get_layer("conv2").kernel.numpy()
    np.testing.assert_array_equal(fresh.get_layer("conv2").kernel.numpy(), initial)
    tuned = transfer.with_new_head(tiny_model, 7)
    assert tuned.get_layer("conv2") is tiny_model.get_layer("conv2")  # shared: fine-tuning starts from it


def test_csv_source_and_subset(tmp_path):
    rows = np.hstack([np.arange(5 * 16).reshape(5, 16) % 256, np.asarray([[2], [0], [1], [2], [0]])])
    path = tmp_path / "tiny.csv"
    np.savetxt(path, rows, fmt="%d", delimiter=",")
    source = data.load_source(f"csv:{path}")
    assert source.channels == 1 and source.num_examples == 5 and source.class_names == ["0", "1", "2"]
    picked = list(data.subset(source, [4, 1]).dataset.as_numpy_iterator())  # ascending index order
    np.testing.assert_array_equal(picked[0][0][..., 0], rows[1, :16].reshape(4, 4))
    assert [label for _, label in picked] == [0, 0]
    with pytest.raises(ValueError, match="one split, 'train'"):
        data.load_source(f"csv:{path}", "test")
    bad = tmp_path / "bad.csv"
    np.savetxt(bad, np.ones((2, 6)), fmt="%d", delimiter=",")
    with pytest.raises(ValueError, match="rows hold 5 pixel values"):
        data.load_source(f"csv:{bad}")


def test_mnist_5k_is_real_digits_sorted_by_class():
    source = data.load_source("mnist_5k")
    labels = data.source_labels(source)
    assert source.num_examples == 5000 and np.bincount(labels).tolist() == [500] * 10
    assert labels[0] == 0 and labels[-1] == 9  # sorted on disk: folds must not depend on order


# ---- the commands -------------------------------------------------------------------------------


def test_zf_transfer_on_the_shipped_model_agrees_with_an_outside_recomputation(tmp_path):
    from pipelines.commands.transfer import transfer as command

    out = tmp_path / "transfer"
    result = CliRunner().invoke(
        command, [SHIPPED, "--per-class", "3,8", "--folds", "2", "--test-per-class", "20", "--scratch-epochs", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert {(r["method"], r["n_per_class"]) for r in results["runs"]} == {(m, n) for m in ("pretrained", "scratch") for n in (3, 8)}
    labels = data.source_labels(data.load_source("mnist_5k"))
    for run in results["runs"]:
        assert np.bincount(labels[run["train"]], minlength=10).tolist() == [run["n_per_class"]] * 10
        assert not set(run["train"]) & set(run["test"])
    assert sorted(os.listdir(out)) == ["figure.png", "results.csv", "results.json", "table.txt"]
    assert "Pretrained convnet" in (out / "table.txt").read_text()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no work folders left behind
    script = os.path.join(ROOT, "docs", "examples", "recompute_transfer_fold.py")
    for n, fold in ((8, 1), (3, 0)):
        check = subprocess.run(
            [sys.executable, script, str(out), SHIPPED, "--n-per-class", str(n), "--fold", str(fold)],
            capture_output=True,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        assert check.returncode == 0, check.stdout + check.stderr


def test_zf_transfer_errors_are_one_line(tmp_path):
    from pipelines.commands.transfer import transfer as command

    result = CliRunner().invoke(command, [SHIPPED, "--layer", "fc9", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown layer 'fc9'; layers with features: conv1" in result.output
    result = CliRunner().invoke(command, [SHIPPED, "--per-class", "5,x", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "'x' in '5,x'" in result.output
    result = CliRunner().invoke(command, [SHIPPED, "--per-class", "500", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "class '0' has 500 images" in result.output
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def zfnet_224(tmp_path_factory):
    """A tiny-width 224x224 colour ZFNet (.keras) and a generated class folder of JPEGs (4 classes)."""
    root = tmp_path_factory.mktemp("zf224")
    spec = zfnet_spec(num_classes=5).with_units(conv1=4, conv2=6, conv3=6, conv4=6, conv5=4, fc6=16, fc7=16)
    model = build_model(spec, seed=0)
    model.save(root / "zfnet.keras")
    rng = np.random.default_rng(0)
    for label, name in enumerate(["ant", "bee", "cat", "dog"]):
        os.makedirs(root / "folder" / name)
        for i in range(6):
            image = rng.integers(0, 80, (150 + 10 * i, 200, 3), dtype=np.uint8)
            image[:, :, label % 3] += 120
            tf.io.write_file(str(root / "folder" / name / f"{i}.jpg"), tf.io.encode_jpeg(image))
    return root


def test_zf_transfer_and_layers_run_on_zfnet_224_and_a_folder(zfnet_224, tmp_path):
    from pipelines.commands.layer_probes import layers
    from pipelines.commands.transfer import transfer as command

    args = [str(zfnet_224 / "zfnet.keras"), "--data", f"folder:{zfnet_224 / 'folder'}", "--per-class", "2", "--folds", "2", "--test-per-class", "2"]
    result = CliRunner().invoke(command, args + ["--scratch-epochs", "1", "--finetune", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    methods = {r["method"] for r in json.loads((tmp_path / "t" / "results.json").read_text())["runs"]}
    assert methods == {"pretrained", "scratch", "finetune"}
    result = CliRunner().invoke(layers, args + ["--split", "all", "--max-features", "3000", "--out", str(tmp_path / "l")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "l" / "results.json").read_text())
    assert results["split"] == "all" and max(i for f in results["fold_indices"] for i in f["train"] + f["test"]) < 24
    assert results["features"]["conv1"] == {"block_output": [55, 55, 4], "extra_max_pool": [3, 3], "values": 19 * 19 * 4}
    table = (tmp_path / "l" / "table.txt").read_text().splitlines()
    assert [line.split()[0] for line in table[1:]] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    assert len(results["runs"]) == 7 * 2 * 2  # layers x classifiers x folds


def test_frozen_features_refuse_a_fold_with_unreadable_images(tiny_model, tmp_path):
    """A skip_corrupt folder leaves an unreadable file out when it is read: the features must not
    shift onto the wrong images, so computing them fails, naming how many could not be read."""
    for label in (0, 1):
        os.makedirs(tmp_path / "f" / str(label))
        for j in range(2):
            tf.io.write_file(str(tmp_path / "f" / str(label) / f"{j}.png"), tf.io.encode_png(np.full((20, 20, 1), 40 * j + 60 * label, np.uint8)))
    (tmp_path / "f" / "1" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    source = data.load_source(f"folder:{tmp_path / 'f'}", "all", skip_corrupt=True)
    features = transfer.FrozenFeatures(tiny_model, source, ["fc7"])
    with pytest.raises(ValueError, match="1 of the 4 images asked for could not be read"):
        features.compute([0, 1, 2, 3])
    features.compute([0, 1])  # the readable ones still work
    assert features.get("fc7", [0, 1]).shape[0] == 2
