"""Evaluation: top-k counting, single vs 10-crop, ensembles, ``zf evaluate``, and the shipped model."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from train_helpers import write_small_idx

from zfkeras import data
from zfkeras.analysis.evaluate import evaluate, top_k_correct
from zfkeras.data.sources.idx import DEBIAN_FASHION_MNIST_DIR
from zfkeras.nn.models import build_model, zfnet_small_spec
from zfkeras.nn.probe import KerasProbe, Probe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "saved_models", "zfnet-fashion-mnist")


class TableProbe(Probe):
    """A fake model: the probabilities of an image are looked up by its first pixel value."""

    input_shape = (2, 2, 1)
    class_names = [str(i) for i in range(6)]

    def __init__(self, table):
        self.table = np.asarray(table, np.float32)

    def predict(self, images, batch_size=256):
        return self.table[self.check_images(images)[:, 0, 0, 0].astype(int)]


def test_top_k_correct_brute_force(rng):
    probs = rng.random((200, 7))
    probs[:20, 3] = probs[:20, 2]  # ties
    labels = rng.integers(0, 7, 200)
    for k in (1, 3, 5, 9):
        expected = 0
        for p, y in zip(probs, labels):
            better = sum(1 for j in range(7) if p[j] > p[y] or (p[j] == p[y] and j < y))
            expected += better < k
        assert top_k_correct(probs, labels, k) == expected


def test_single_crop_ten_crop_and_ensemble_by_hand():
    # Two images x 10 views; a view's first pixel picks a row of the model's table.
    a = TableProbe(
        [
            [0.1, 0.6, 0.1, 0.1, 0.05, 0.05],  # row 0: class 1 wins
            [0.3, 0.1, 0.2, 0.2, 0.1, 0.1],  # row 1: class 0 wins
            [0.0, 0.1, 0.1, 0.1, 0.1, 0.6],
        ]
    )  # row 2: class 5 wins, class 0 last
    b = TableProbe([[0.6, 0.1, 0.1, 0.1, 0.05, 0.05], [0.05, 0.9, 0.01, 0.01, 0.01, 0.02], [0.6, 0.0, 0.0, 0.1, 0.1, 0.2]])
    views = np.zeros((2, 10, 2, 2, 1), np.float32)
    views[0, :, 0, 0, 0] = [1, 1, 1, 1, 0, 1, 1, 1, 1, 1]  # image 0: centre view (4) is row 0, others row 1
    views[1, :, 0, 0, 0] = [2, 2, 2, 2, 1, 2, 2, 2, 2, 2]  # image 1: centre row 1, others row 2
    labels = np.array([0, 0])
    result = evaluate({"a": a, "b": b}, [(views, labels)])
    assert result["num_images"] == 2
    # Model a: centre crops predict 1 (wrong) and 0 (right) -> top-1 error 1/2; top-5 both right.
    # 10-crop means: image 0 = 0.1*row0 + 0.9*row1 -> class 0 (0.28, right);
    # image 1 = 0.1*row1 + 0.9*row2 -> class 5 (wrong), class 0 (0.03) ranks 6th of 6 -> top-5 wrong.
    assert result["models"]["a"] == pytest.approx({"top1_error": 0.5, "top5_error": 0.0, "ten_crop_top1_error": 0.5, "ten_crop_top5_error": 0.5})
    # Model b: centre -> 0 (right), 1 (wrong). 10-crop: image 0 -> class 1 wins (0.1*0.6 + 0.9*0.05 = 0.105 for
    # class 0 vs 0.82 for class 1); image 1 -> class 0 (0.545).
    assert result["models"]["b"] == pytest.approx({"top1_error": 0.5, "top5_error": 0.0, "ten_crop_top1_error": 0.5, "ten_crop_top5_error": 0.0})
    # Ensemble of the centre crops: image 0 (0.35 for 0, 0.35 for 1: tie -> lower index 0 wins: right),
    # image 1 (0.175 vs 0.5 for class 1: wrong).
    assert result["ensemble"]["top1_error"] == pytest.approx(0.5)
    ten_a = views_mean(a, views)
    ten_b = views_mean(b, views)
    expected = (ten_a + ten_b) / 2
    assert result["ensemble"]["ten_crop_top1_error"] == pytest.approx(1 - np.mean(expected.argmax(1) == labels))

    centre_only = evaluate({"a": a}, [(views[:, 4], labels)])
    assert centre_only["ensemble"] is None and set(centre_only["models"]["a"]) == {"top1_error", "top5_error"}


def views_mean(probe, views):
    return probe.predict(views.reshape(-1, 2, 2, 1)).reshape(2, 10, -1).mean(axis=1)


def test_models_must_agree():
    class Other(TableProbe):
        input_shape = (3, 3, 1)

    with pytest.raises(ValueError, match="take different inputs"):
        evaluate({"a": TableProbe(np.eye(6)), "b": Other(np.eye(6))}, [])


def test_labels_must_be_the_models_classes():
    from types import SimpleNamespace

    from zfkeras.analysis.evaluate import check_labels

    probe = SimpleNamespace(class_names=("cat", "dog", "fox"))
    folder = lambda *names: SimpleNamespace(class_names=list(names), name="folder:pets")  # noqa: E731
    check_labels({"m": probe}, folder("cat", "dog", "fox"))
    check_labels({"m": probe}, folder("n021", "n022", "n023"))  # other naming scheme: cannot compare
    check_labels({"m": probe}, folder("a", "b"))  # fewer classes, other names: cannot compare either
    with pytest.raises(ValueError, match="model m has 3 classes but folder:pets has 4"):
        check_labels({"m": probe}, folder("a", "b", "c", "d"))  # labels beyond the model's outputs
    check_labels({"m": SimpleNamespace(class_names=())}, folder("a", "b"))
    with pytest.raises(ValueError, match=r"^folder:pets's label 1 is 'fox' but model m's class 1 is 'dog'"):
        check_labels({"m": probe}, folder("cat", "fox", "dog"))
    with pytest.raises(ValueError, match="model m has 3 classes but folder:pets has 2"):
        check_labels({"m": probe}, folder("cat", "dog"))
    # evaluate_source checks before it reads a single image
    from zfkeras.analysis.evaluate import evaluate_source
    from zfkeras.data.source import in_memory_source

    images = np.zeros((6, 2, 2, 1), np.uint8)
    swapped = in_memory_source(images, np.arange(6), ["1", "0", "2", "3", "4", "5"], "mem", "test")
    with pytest.raises(ValueError, match="mem's label 0 is '1' but model t's class 0 is '0'"):
        evaluate_source({"t": TableProbe(np.eye(6))}, swapped, crops="single")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    paths = []
    spec = zfnet_small_spec().with_units(conv1=6, conv2=6, conv3=6, conv4=6, conv5=6, fc6=16, fc7=16).replace(kernel_init="he_normal")
    for seed in (1, 2):
        model = build_model(spec, seed=seed)
        model.get_layer("subtract_mean").set_mean(np.full((28, 28, 1), 70.0, np.float32))
        path = base / f"m{seed}.keras"
        model.save(path)
        paths.append(path)
    return paths


def test_zf_evaluate_command(two_models, tmp_path):
    import keras

    from pipelines.commands.evaluate import evaluate as command

    idx = write_small_idx(str(tmp_path / "idx"), n_train=10, n_test=30)
    out = tmp_path / "evaluated" / "results.json"
    result = CliRunner().invoke(command, [*map(str, two_models), "--data", f"idx:{idx}", "--batch-size", "7", "--out", str(out.parent)])
    assert result.exit_code == 0, result.output
    assert "average of 2 models" in result.output and "top-1 (10 crops)" in result.output
    saved = json.loads(out.read_text())
    # what a consumer passes, for each .keras model: its input at the model's size
    assert saved["inputs"]["m1.keras"]["model"] == {
        "dtype": "float32",
        "shape": [None, 28, 28, 1],
        "range": [0, 255],
        "what": "raw pixel values at the model's input size; the mean is subtracted inside",
    }
    assert "m1.keras input: float32 [N, 28, 28, 1] raw 0-255" in result.output
    # Independent reference: crop by hand from the native images zero-padded by 2 (the views training
    # saw; the centre view is the native image), average in numpy.
    source = data.load_source(f"idx:{idx}", "test")
    native = np.stack([x for x, _ in source.dataset.as_numpy_iterator()]).astype(np.float32)
    resized = np.pad(native, ((0, 0), (2, 2), (2, 2), (0, 0)))
    labels = np.array([y for _, y in source.dataset.as_numpy_iterator()])
    crops = [resized[:, :28, :28], resized[:, :28, 4:], resized[:, 4:, :28], resized[:, 4:, 4:], resized[:, 2:30, 2:30]]
    crops += [c[:, :, ::-1] for c in (resized[:, :28, 4:], resized[:, :28, :28], resized[:, 4:, 4:], resized[:, 4:, :28], resized[:, 2:30, 2:30])]
    probs = []
    for path in two_models:
        probe = KerasProbe(keras.saving.load_model(path))
        probs.append(np.stack([probe.predict(c) for c in crops], axis=1))  # [N, 10, classes]
    for name, p in zip(("m1.keras", "m2.keras"), probs):
        errors = saved["models"][name]
        assert errors["top1_error"] == pytest.approx(1 - np.mean(p[:, 4].argmax(1) == labels))
        assert errors["ten_crop_top1_error"] == pytest.approx(1 - np.mean(p.mean(1).argmax(1) == labels))
    ensemble = (probs[0] + probs[1]) / 2
    assert saved["ensemble"]["ten_crop_top1_error"] == pytest.approx(1 - np.mean(ensemble.mean(1).argmax(1) == labels))
    assert saved["ensemble"]["top5_error"] == pytest.approx(1 - top_k_correct(ensemble[:, 4], labels, 5) / 30)
    assert saved["num_images"] == 30 and saved["split"] == "test"

    bad = CliRunner().invoke(command, [str(tmp_path / "nothing"), "--data", f"idx:{idx}"])
    assert bad.exit_code == 2 and "MODEL must be a SavedModel directory" in bad.output


# Runs in a fresh interpreter: what a consumer with plain TensorFlow does, no zfkeras import. It reads
# the native Fashion-MNIST test images from Debian's IDX files by hand (header 16 / 8 bytes).
PLAIN_CONSUMER = r"""
import gzip, sys
import numpy as np
import tensorflow as tf

model_dir, directory = sys.argv[1:]
images = np.frombuffer(gzip.open(directory + "/t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
labels = np.frombuffer(gzip.open(directory + "/t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
images = images.reshape(-1, 28, 28, 1).astype(np.float32)  # raw 0-255, native 28x28
loaded = tf.saved_model.load(model_dir)  # keep the object: its variables live as long as it does
serve = loaded.serve
predicted = np.concatenate([np.argmax(serve(tf.constant(images[i:i + 1000])).numpy(), 1) for i in range(0, len(images), 1000)])
assert not any(name == "zfkeras" or name.startswith("zfkeras.") for name in sys.modules), "zfkeras was imported"
print(len(images), float(np.mean(predicted == labels)))
"""


@pytest.mark.skipif(
    not os.path.exists(os.path.join(DEBIAN_FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz")), reason="needs the Fashion-MNIST test images (make data)"
)
def test_shipped_model_reaches_92_percent_on_native_images():
    """The shipped model as a consumer uses it: plain ``tf.saved_model.load(...).serve`` on the 10,000
    native 28x28 test images (raw 0-255 floats, no preprocessing, no zfkeras), and ``model.keras``
    on the same images. Both give the accuracy the export records, and at least 92%."""
    import subprocess
    import sys

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_CONSUMER, SHIPPED, DEBIAN_FASHION_MNIST_DIR], env=env, capture_output=True, text=True, timeout=300, cwd="/"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    count, accuracy = done.stdout.split()
    assert int(count) == 10_000
    assert float(accuracy) >= 0.92
    meta = json.load(open(os.path.join(SHIPPED, "zfkeras.json")))
    assert meta["training"]["command"].startswith("zf train ")
    assert meta["metrics"]["test_top1_error"] == pytest.approx(1 - float(accuracy), abs=1e-4)  # what the export recorded

    import keras

    model = keras.saving.load_model(os.path.join(SHIPPED, "model.keras"))
    source = data.load_source("fashion_mnist", "test")
    images, labels = next(source.dataset.batch(10_000).as_numpy_iterator())
    keras_accuracy = np.mean(model.predict(images.astype(np.float32), batch_size=1000, verbose=0).argmax(1) == labels)
    assert keras_accuracy == pytest.approx(float(accuracy), abs=2e-4)
