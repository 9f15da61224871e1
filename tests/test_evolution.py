"""Feature evolution: stable epochs, ``zf evolution`` on generated checkpoints, ProjectionLogger.

References: the top-1 image of every map at every epoch is recomputed by brute force (all
activations of all images from a plain Keras sub-model of each checkpoint, numpy argmax), and the
stable epoch by a loop written here.
"""

import glob
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from tensorflow.core.util import event_pb2
from test_visualize import blobby_images, small_spec, write_idx

from pipelines.commands.evolution import evolution
from zfkeras.analysis.evolution import layer_stability, stable_epoch
from zfkeras.analysis.top_activations import TopK
from zfkeras.io.display import display_tiles, mosaic
from zfkeras.nn.deconv import Deconvnet
from zfkeras.nn.fields import receptive_fields
from zfkeras.nn.models import build_model
from zfkeras.training.callbacks import ProjectionLogger


def test_stable_epoch_by_hand():
    assert stable_epoch([1, 2, 5, 10], [7, 3, 3, 3]) == 2
    assert stable_epoch([1, 2, 5, 10], [3, 3, 3, 3]) == 1
    assert stable_epoch([1, 2, 5, 10], [3, 3, 3, 4]) == 10
    assert stable_epoch([1, 2, 5, 10], [3, 4, 3, 3]) == 5  # back to an earlier image still counts as a change
    assert stable_epoch([4], [9]) == 4
    with pytest.raises(ValueError, match="one image per epoch"):
        stable_epoch([1, 2], [3])
    with pytest.raises(ValueError, match="increase"):
        stable_epoch([2, 1], [3, 3])


def top1_by_hand(per_map):
    """A k=1 TopK of layer "conv2" from ``{map: (image, value)}`` written here (y, x = map, 2 * map)."""
    data = {"conv2": {str(c): [{"image": i, "y": c, "x": 2 * c, "value": v}] for c, (i, v) in per_map.items()}}
    return TopK.from_dict(data, k=1, images_seen=10)


def test_layer_stability_rules_by_hand():
    epochs = [1, 3, 6]
    # map 0: image 5 throughout -> stable from 1
    # map 7: silent at epoch 1 (a zero top-1 on image 4), then image 4 -> the wake-up is a change: 3
    # map 4: image 1, then silent at epoch 6 (zero top-1 still on image 1) -> 6, but it is silent
    #        at the end, so the layer ignores it: the layer is stable from max(1, 3) = 3
    tops = [
        top1_by_hand({0: (5, 2.0), 4: (1, 1.5), 7: (4, 0.0)}),
        top1_by_hand({0: (5, 2.5), 4: (1, 0.5), 7: (4, 3.0)}),
        top1_by_hand({0: (5, 2.2), 4: (1, 0.0), 7: (4, 3.5)}),
    ]
    result = layer_stability(epochs, tops, "conv2")
    assert [m.channel for m in result.maps] == [0, 4, 7]
    assert [m.stable_epoch for m in result.maps] == [1, 6, 3]
    assert [m.silent_epochs for m in result.maps] == [[], [6], [1]]
    assert [m.silent_at_end for m in result.maps] == [False, True, False]
    assert result.stable_epoch == 3 and result.epochs == epochs
    assert result.maps[2].top1[1] == {"epoch": 3, "image": 4, "y": 7, "x": 14, "value": 3.0}
    layout = result.to_dict()
    assert layout["stable_epoch"] == 3 and list(layout["maps"]) == ["0", "4", "7"]
    assert layout["maps"]["4"] == {"stable_epoch": 6, "silent_epochs": [6], "top1": result.maps[1].top1}
    # every map silent at the end: the layer takes the latest over all maps (map 0 changed at 6)
    quiet = [top1_by_hand({0: (2, 1.0), 4: (3, 1.0)}), top1_by_hand({0: (2, 0.0), 4: (3, 0.0)})]
    assert [m.stable_epoch for m in layer_stability([2, 6], quiet, "conv2").maps] == [6, 6]
    assert layer_stability([2, 6], quiet, "conv2").stable_epoch == 6
    moved = [top1_by_hand({0: (2, 1.0), 4: (3, 1.0)}), top1_by_hand({0: (8, 1.0), 4: (3, 0.0)})]
    assert layer_stability([2, 6], moved, "conv2").stable_epoch == 6  # map 4 is ignored, map 0 moved at 6
    steady = [top1_by_hand({0: (2, 1.0), 4: (3, 1.0)}), top1_by_hand({0: (2, 1.0), 4: (9, 0.0)})]
    assert layer_stability([2, 6], steady, "conv2").stable_epoch == 2  # only map 0 counts, and it kept image 2
    with pytest.raises(ValueError, match="one top-k result per epoch"):
        layer_stability([1, 2], tops, "conv2")
    with pytest.raises(ValueError, match="different maps"):
        layer_stability([1, 2], [tops[0], top1_by_hand({0: (5, 1.0)})], "conv2")


def conv_maps(model, raw):
    """{conv layer: rectified maps of all (native 28x28) images}, from one plain Keras sub-model."""
    names = [layer.name for layer in model.layers if layer.name.startswith("conv")]
    outputs = keras.Model(model.input, [model.get_layer(name).output for name in names])(raw[..., None].astype("float32"))
    return {name: np.asarray(value) for name, value in zip(names, outputs)}


def brute_top1(maps, channel):
    """(image, value) of the strongest activation of one map over all images, lowest image on ties."""
    best = maps[..., channel].reshape(len(maps), -1).max(axis=1)
    image = int(np.argmax(best))  # first maximum: the lowest image index
    return image, float(best[image])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Checkpoints of epochs 1, 2, 4: epoch 2 = epoch 1; epoch 4 re-draws conv3-conv5 weights."""
    root = tmp_path_factory.mktemp("evolution")
    rng = np.random.default_rng(0)
    raw = blobby_images(rng, 24)[:, 2:30, 2:30]  # native 28x28: the model sees each image as it is
    write_idx(root / "data", raw, rng.integers(0, 10, 24), split="train")
    write_idx(root / "data", raw[:4], [0, 1, 2, 3], split="t10k")
    model = build_model(small_spec(), seed=0)
    (root / "run" / "checkpoints").mkdir(parents=True)
    model.save(root / "run" / "checkpoints" / "epoch-001.keras")
    model.save(root / "run" / "checkpoints" / "epoch-002.keras")
    other = build_model(small_spec(), seed=5)
    for name in ("conv3", "conv4", "conv5"):
        model.get_layer(name).set_weights(other.get_layer(name).get_weights())
    model.save(root / "run" / "checkpoints" / "epoch-004.keras")
    return root, raw


def test_evolution_cli_matches_brute_force(run_dir):
    root, raw = run_dir
    out = root / "out"
    result = CliRunner().invoke(
        evolution,
        [str(root / "run"), "--data", f"idx:{root / 'data'}", "--maps", "0,1,3", "--batch-size", "5", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.load(open(out / "evolution.json"))
    assert report["epochs"] == [1, 2, 4] and report["images"] == 24
    checkpoints = [conv_maps(keras.saving.load_model(root / "run" / "checkpoints" / f"epoch-{e:03d}.keras"), raw) for e in (1, 2, 4)]
    for layer, entry in report["layers"].items():
        active_stable = []
        for channel, per_map in entry["maps"].items():
            images = []
            for maps, record in zip(checkpoints, per_map["top1"]):
                image, value = brute_top1(maps[layer], int(channel))
                np.testing.assert_allclose(record["value"], value, rtol=1e-4, atol=1e-6)
                if value > 0:
                    assert record["image"] == image
                images.append(image if value > 0 else -1)
            # the stable epoch by hand: walk back from the end while the image stays the same
            first = len(images) - 1
            while first > 0 and images[first - 1] == images[-1]:
                first -= 1
            assert per_map["stable_epoch"] == [1, 2, 4][first]
            if images[-1] != -1:
                active_stable.append(per_map["stable_epoch"])
        assert entry["stable_epoch"] == max(active_stable or [m["stable_epoch"] for m in entry["maps"].values()])
    # conv1 and conv2 never changed: stable from the first epoch; conv3's top images moved at epoch 4
    assert report["layers"]["conv1"]["stable_epoch"] == 1 and report["layers"]["conv2"]["stable_epoch"] == 1
    assert report["layers"]["conv3"]["stable_epoch"] == 4
    assert all((out / f"{name}.png").exists() for name in ("conv1", "conv5", "evolution"))


def test_evolution_accepts_dir_of_checkpoints_and_names_errors(run_dir, tmp_path):
    root, _ = run_dir
    result = CliRunner().invoke(
        evolution,
        [
            str(root / "run" / "checkpoints"),
            "--data",
            f"idx:{root / 'data'}",
            "--layers",
            "conv2",
            "--maps",
            "random:2",
            "--images",
            "6",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.load(open(tmp_path / "o" / "evolution.json"))["images"] == 6
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(evolution, [str(tmp_path / "empty"), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "no epoch-XXX.keras checkpoints" in result.output


def logged_images(log_dir):
    """{(tag, step): uint8 image} from the TensorBoard event files under ``log_dir``."""
    found = {}
    for path in glob.glob(str(log_dir / "events*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    found[(value.tag, event.step)] = tf.io.decode_png(value.tensor.string_val[2]).numpy()
    return found


def test_projection_logger_writes_projections_each_epoch(tmp_path):
    rng = np.random.default_rng(1)
    images = blobby_images(rng, 12)[:, 2:30, 2:30, None].astype("float32")
    model = build_model(small_spec(), seed=3)
    model.compile(keras.optimizers.SGD(1e-3), "sparse_categorical_crossentropy")
    maps = {"conv1": [0, 4], "conv3": [1, 2, 5]}
    logger = ProjectionLogger(images[:8], maps, str(tmp_path / "tb"), percentile=99.0, batch_size=3)
    model.fit(images, rng.integers(0, 10, 12), epochs=2, batch_size=4, verbose=0, callbacks=[logger])
    logged = logged_images(tmp_path / "tb")
    assert set(logged) == {(f"projections/{layer}", step) for layer in maps for step in (1, 2)}
    # reference for the last epoch: brute-force top-1, the deconvnet, a numpy crop of the field
    deconvnet, fields = Deconvnet(model), receptive_fields(model)
    for layer, channels in maps.items():
        acts = deconvnet.activations(images[:8], [layer])[layer]
        tiles = []
        for channel in channels:
            flat = acts[..., channel].reshape(8, -1)
            image = int(np.argmax(flat.max(axis=1)))
            y, x = divmod(int(np.argmax(flat[image])), acts.shape[2])
            projection = deconvnet.project(images[image : image + 1], layer, channel, (y, x))[0]
            top, bottom, left, right = fields[layer].box(y, x)
            padded = np.pad(projection, ((64, 64), (64, 64), (0, 0)), constant_values=np.nan)
            tiles.append(padded[top + 64 : bottom + 64, left + 64 : right + 64])
        expected = np.round(mosaic(display_tiles(np.stack(tiles), 99.0), columns=len(channels)) * 255)
        np.testing.assert_allclose(logged[(f"projections/{layer}", 2)], expected, atol=1)


def test_correlations_with_last_and_settle_epoch_against_numpy():
    from zfkeras.analysis.evolution import correlations_with_last, settle_epoch

    rng = np.random.default_rng(3)
    final = rng.normal(size=(20, 4))
    responses = [{"conv1": final + noise * rng.normal(size=(20, 4))} for noise in (3.0, 1.0, 0.1)] + [{"conv1": final}]
    responses[0]["conv1"][:, 2] = 0.0  # silent at the first epoch: no correlation
    found = correlations_with_last(responses)["conv1"]
    for t, response in enumerate(responses):
        for unit in range(4):
            expected = np.nan if t == 0 and unit == 2 else np.corrcoef(response["conv1"][:, unit], final[:, unit])[0, 1]
            np.testing.assert_allclose(found[t, unit], expected, atol=1e-12)
    assert np.allclose(found[-1], 1.0)
    assert settle_epoch([1, 2, 5, 10], [0.2, 0.95, 0.8, 1.0]) == 10
    assert settle_epoch([1, 2, 5, 10], [0.2, 0.91, 0.93, 1.0]) == 2
    assert settle_epoch([1, 2, 5, 10], [0.95, 0.95, np.nan, 1.0]) == 10
    assert settle_epoch([1, 2, 5, 10], [0.95, 0.95, 0.95, 0.5]) is None
