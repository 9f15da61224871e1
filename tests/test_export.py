"""SavedModel export: endpoints in a process without zfkeras match the Keras model and its deconvnet;
the Probe over an export; atomic writes; clear errors; ``zf export``."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import zfkeras.export.savedmodel
from zfkeras.export import export_model, load_exported, read_metadata
from zfkeras.nn.deconv import Deconvnet
from zfkeras.nn.models import build_model, zfnet_small_spec
from zfkeras.nn.probe import KerasProbe

CLASSES = [f"class {i}" for i in range(10)]
LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5"]

# Runs in a fresh interpreter: only TensorFlow and NumPy, never zfkeras.
PLAIN_LOADER = r"""
import sys
import numpy as np
import tensorflow as tf

path, inputs, outputs = sys.argv[1:]
given = np.load(inputs)
loaded = tf.saved_model.load(path)
images = tf.constant(given["images"])
results = {"probs": loaded.serve(images).numpy()}
for name, value in loaded.features(images).items():
    results["features/" + name] = value.numpy()
for layer in ["conv1", "conv2", "conv3", "conv4", "conv5"]:
    project = getattr(loaded, "project_" + layer)
    results["max/" + layer] = project(images, tf.constant(given["channel"]), tf.constant(given["max"])).numpy()
    results["at/" + layer] = project(images, tf.constant(given["channel"]), tf.constant(given["at_" + layer])).numpy()
    results["map/" + layer] = getattr(loaded, "project_map_" + layer)(images, tf.constant(given["channel"])).numpy()
assert not any(name == "zfkeras" or name.startswith("zfkeras.") for name in sys.modules), "zfkeras was imported"
np.savez(outputs, **results)
"""


@pytest.fixture(scope="module")
def model():
    spec = zfnet_small_spec().with_units(conv1=8, conv2=8, conv3=8, conv4=8, conv5=6, fc6=16, fc7=16)
    model = build_model(spec.replace(kernel_init="he_normal"), seed=4)  # he_normal: deep maps are not all zero
    rng = np.random.default_rng(1)
    model.get_layer("subtract_mean").set_mean(rng.uniform(60, 120, (28, 28, 1)).astype("float32"))
    return model


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("exports") / "tiny"
    export_model(
        model,
        path,
        class_names=CLASSES,
        config={"config": {"lr": 0.01}},
        metrics={"test_top1_error": np.float32(0.25)},
        command="zf train --epochs 1",
    )
    return path


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(2).uniform(0, 255, (3, 28, 28, 1)).astype("float32")


def test_plain_tensorflow_process_matches_keras(model, exported, images, tmp_path):
    deconvnet = Deconvnet(model)
    probe = KerasProbe(model, CLASSES)
    channel = np.array([0, 3, 5], np.int32)
    given = {"images": images, "channel": channel, "max": np.full((3, 2), -1, np.int32)}
    for layer in LAYERS:  # one given position per image, and one (-1, -1) mixed in
        h, w = deconvnet.activations(images, [layer])[layer].shape[1:3]
        given[f"at_{layer}"] = np.array([[0, 0], [h // 2, w - 1], [-1, -1]], np.int32)
    np.savez(tmp_path / "in.npz", **given)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_LOADER, str(exported), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = np.load(tmp_path / "out.npz")

    np.testing.assert_allclose(out["probs"], model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)
    features = probe.features(images)
    assert sorted(k[9:] for k in out.files if k.startswith("features/")) == sorted(LAYERS + ["fc6", "fc7"])
    for name, value in features.items():
        np.testing.assert_allclose(out[f"features/{name}"], value, rtol=1e-5, atol=1e-5 * np.abs(value).max())
    for layer in LAYERS:
        for key, position in (("max", "max"), ("at", given[f"at_{layer}"]), ("map", "map")):
            reference = deconvnet.project(images, layer, channel, position)
            assert np.abs(reference).max() > 0 or key == "at", f"{layer} {key}: a zero projection tests nothing"
            np.testing.assert_allclose(out[f"{key}/{layer}"], reference, rtol=1e-5, atol=1e-5 * max(np.abs(reference).max(), 1e-3))


NATIVE_LOADER = r"""
import sys
import numpy as np
import tensorflow as tf

path, inputs, outputs = sys.argv[1:]
given = np.load(inputs)
loaded = tf.saved_model.load(path)
results = {name: loaded.serve(tf.constant(given[name])).numpy() for name in given.files}
results.update({"pre/" + name: loaded.preprocess(tf.constant(given[name])).numpy() for name in given.files})
assert not any(name == "zfkeras" or name.startswith("zfkeras.") for name in sys.modules), "zfkeras was imported"
np.savez(outputs, **results)
"""


def test_serve_takes_native_images_of_any_size(model, exported, images, tmp_path):
    """Plain TF: ``serve`` on native images applies the evaluation view itself; a native 28x28 image
    of a small model goes in unchanged, and other sizes are resized (smaller side) and centre-cropped."""
    rng = np.random.default_rng(5)
    given = {
        "native": images,
        "wide": rng.uniform(0, 255, (2, 40, 56, 1)).astype("float32"),
        "tall": rng.uniform(0, 255, (2, 61, 28, 1)).astype("float32"),
    }
    np.savez(tmp_path / "native.npz", **given)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", NATIVE_LOADER, str(exported), str(tmp_path / "native.npz"), str(tmp_path / "served.npz")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = np.load(tmp_path / "served.npz")
    np.testing.assert_array_equal(out["pre/native"], images)
    np.testing.assert_allclose(out["native"], model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)
    import tensorflow as tf

    # the reference view, by hand: 40x56 -> 28x39 (smaller side 28, round(56 * 28 / 40) = 39), centre 28 columns
    wide = tf.image.resize(given["wide"], (28, 39), method="bilinear", antialias=True).numpy()[:, :, 5:33]
    tall = tf.image.resize(given["tall"], (61, 28), method="bilinear", antialias=True).numpy()[:, 16:44]
    for name, view in (("wide", wide), ("tall", tall)):
        np.testing.assert_allclose(out[f"pre/{name}"], view, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(out[name], model.predict(view, verbose=0), rtol=1e-4, atol=1e-5)


def test_older_export_without_feature_shapes_is_one_clear_error(exported, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(exported, old)
    meta = json.loads((old / "zfkeras.json").read_text())
    del meta["feature_shapes"]
    (old / "zfkeras.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"missing feature_shapes .*re-export its model.keras with `zf export`"):
        load_exported(old)


def test_metadata_and_files(model, exported):
    assert sorted(os.listdir(exported)) == sorted(
        ["assets", "fingerprint.pb", "mean.npy", "model.keras", "saved_model.pb", "variables", "zfkeras.json"]
    )
    meta = read_metadata(exported)
    assert meta["input_shape"] == [28, 28, 1] and meta["class_names"] == CLASSES and meta["layer_names"] == LAYERS
    assert meta["feature_names"] == LAYERS + ["fc6", "fc7"]
    assert meta["feature_shapes"]["conv2"] == [14, 14, 8] and meta["feature_shapes"]["fc7"] == [16]
    assert meta["input"]["serve"] == {"dtype": "float32", "shape": [None, None, None, 1], "range": [0, 255], "what": meta["input"]["serve"]["what"]}
    assert meta["input"]["model"]["shape"] == [None, 28, 28, 1]
    assert meta["preprocessing"].startswith("none for native 28x28 images")
    assert meta["training"] == {"command": "zf train --epochs 1", "config": {"config": {"lr": 0.01}}}
    assert meta["metrics"] == {"test_top1_error": pytest.approx(0.25)} and meta["zfkeras_version"] == zfkeras.__version__
    np.testing.assert_array_equal(np.load(exported / "mean.npy"), model.get_layer("subtract_mean").mean.numpy())
    reloaded = keras.saving.load_model(exported / "model.keras")
    for a, b in zip(reloaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_exported_probe_equals_keras_probe(model, exported, images):
    probe, reference = load_exported(exported), KerasProbe(model, CLASSES)
    assert probe.input_shape == (28, 28, 1) and probe.class_names == CLASSES and probe.layer_names == LAYERS
    np.testing.assert_allclose(probe.predict(images, batch_size=2), reference.predict(images), rtol=1e-5, atol=1e-6)
    got = probe.features(images, ["conv3", "fc6"])
    assert sorted(got) == ["conv3", "fc6"]
    np.testing.assert_allclose(got["conv3"], reference.features(images, ["conv3"])["conv3"], rtol=1e-5, atol=1e-4)
    tensors = probe.feature_tensors(tf.constant(np.asarray(images, "float32")), ["conv3", "fc6"])  # the endpoint's tensors
    assert sorted(tensors) == ["conv3", "fc6"] and np.array_equal(tensors["conv3"].numpy(), got["conv3"])
    for position in ("max", "map", (3, 4)):
        np.testing.assert_allclose(
            probe.project(images, "conv2", 1, position, batch_size=2), reference.project(images, "conv2", 1, position), rtol=1e-5, atol=1e-3
        )
    np.testing.assert_array_equal(probe.mean_image, reference.mean_image)
    with pytest.raises(ValueError, match="channel must be in"):
        probe.project(images, "conv2", 8)
    with pytest.raises(ValueError, match="unknown layer 'fc6'"):
        probe.project(images, "fc6", 0)
    with pytest.raises(ValueError, match=r"images must have shape \[N, 28, 28, 1\]"):
        probe.predict(images[..., 0])


def test_rule_endpoints_equal_the_keras_probe(model, exported, images):
    """Every rule's endpoints (given position, strongest unit, whole map, class scores) are listed
    in zfkeras.json and give what the Keras probe gives."""
    probe, reference = load_exported(exported), KerasProbe(model, CLASSES)
    meta = read_metadata(exported)
    assert meta["rules"] == ["deconvnet", "guided", "gradient"] and meta["class_layer"] == "predictions"
    assert {"project_conv3", "project_map_conv3", "project_conv3_guided", "project_map_conv3_gradient", "project_predictions_guided"} <= set(
        meta["endpoints"]
    )
    assert probe.class_layer == "predictions" and probe.projectable() == LAYERS + ["predictions"]
    for rule in ("deconvnet", "guided", "gradient"):
        for layer, position in (("conv2", "max"), ("conv3", (3, 4)), ("conv4", "map"), ("predictions", "max")):
            want = reference.project(images, layer, [1, 2, 0], position, rule=rule)
            assert np.abs(want).max() > 0, (rule, layer)
            got = probe.project(images, layer, [1, 2, 0], position, batch_size=2, rule=rule)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    guided, gradient = (reference.project(images, "conv4", 1, rule=rule) for rule in ("guided", "gradient"))
    assert np.abs(guided - gradient).max() > 1e-3 * np.abs(gradient).max()  # the endpoints above are not one rule thrice


def test_an_export_of_fewer_rules_says_so(model, tmp_path, images):
    export_model(model, tmp_path / "lean", class_names=CLASSES, rules=["gradient", "deconvnet"])
    probe = load_exported(tmp_path / "lean")
    assert probe.rules == ["deconvnet", "gradient"] and not any(name.endswith("_guided") for name in probe.metadata["endpoints"])
    np.testing.assert_allclose(
        probe.project(images, "conv3", 1, rule="gradient"), KerasProbe(model).project(images, "conv3", 1, rule="gradient"), rtol=1e-5, atol=1e-4
    )
    with pytest.raises(ValueError, match="has deconvnet, gradient projections only, no 'guided' ones"):
        probe.project(images, "conv3", 1, rule="guided")
    with pytest.raises(ValueError, match="rules must include deconvnet"):
        export_model(model, tmp_path / "none", class_names=CLASSES, rules=["guided"])
    with pytest.raises(ValueError, match="rule must be one of"):
        export_model(model, tmp_path / "bad", class_names=CLASSES, rules=["lrp"])


def test_export_written_before_the_rules_loads_and_says_what_it_lacks():
    """The shipped export predates the rules: deconvnet projections as before, one clear line otherwise."""
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "saved_models", "zfnet-fashion-mnist")
    probe = load_exported(shipped)
    assert probe.rules == ["deconvnet"] and probe.class_layer is None
    images = np.random.default_rng(0).uniform(0, 255, (2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(
        probe.project(images, "conv2", 3), KerasProbe(probe.keras_model, probe.class_names).project(images, "conv2", 3), rtol=1e-5, atol=1e-4
    )
    with pytest.raises(ValueError) as error:
        probe.project(images, "conv2", 3, rule="guided")
    message = str(error.value)
    assert "\n" not in message and "deconvnet projections only, no 'guided' ones" in message and "zf export" in message
    with pytest.raises(ValueError, match="unknown layer 'predictions'"):
        probe.project(images, "predictions", 3)


def test_failed_export_leaves_nothing_and_keeps_the_old_one(model, exported, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(zfkeras.export.savedmodel.np, "save", broken)  # fails after the SavedModel and model.keras are written
    with pytest.raises(OSError, match="disk full"):
        export_model(model, tmp_path / "new", class_names=CLASSES, rules=["deconvnet"])  # one rule: a third of the tracing
    assert os.listdir(tmp_path) == []  # no directory, no temporary left behind

    before = {name: os.path.getmtime(exported / name) for name in os.listdir(exported)}
    with pytest.raises(OSError, match="disk full"):
        export_model(model, exported, class_names=CLASSES, rules=["deconvnet"])
    assert {name: os.path.getmtime(exported / name) for name in os.listdir(exported)} == before
    assert [name for name in os.listdir(exported.parent) if name.startswith(".")] == []


def test_not_an_export_is_a_clear_error(model, tmp_path):
    with pytest.raises(ValueError, match="no such directory"):
        load_exported(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a SavedModel"):
        load_exported(tmp_path)
    model.export(str(tmp_path / "plain"), format="tf_saved_model", verbose=False)  # a SavedModel, not ours
    with pytest.raises(ValueError, match="not a zfkeras export"):
        load_exported(tmp_path / "plain")
    (tmp_path / "plain" / "zfkeras.json").write_text("{}")
    with pytest.raises(ValueError, match="not zfkeras export metadata"):
        load_exported(tmp_path / "plain")


def test_zf_export_command(model, tmp_path):
    from pipelines.commands.export import export as command

    run_dir = tmp_path / "run"
    os.makedirs(run_dir / "checkpoints")
    model.save(run_dir / "checkpoints" / "epoch-002.keras")
    (run_dir / "config.json").write_text(json.dumps({"command": "zf train --epochs 3", "class_names": CLASSES, "config": {}}))
    (run_dir / "history.json").write_text(json.dumps({"epoch": [1, 2, 3], "loss": [3.0, 2.0, 1.0]}))
    result = CliRunner().invoke(command, [str(run_dir / "checkpoints" / "epoch-002.keras"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    meta = read_metadata(tmp_path / "out")
    assert meta["training"]["command"] == "zf train --epochs 3" and meta["class_names"] == CLASSES
    assert meta["metrics"] == {"loss": 2.0, "epochs": 2}  # the checkpoint's epoch, not the last one
    bad = CliRunner().invoke(command, [str(run_dir / "config.json"), "--out", str(tmp_path / "out2")])
    assert bad.exit_code == 2 and "MODEL must be a SavedModel directory" in bad.output
