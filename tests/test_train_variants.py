"""Table 3 variants and given models go through the same training loop as the base spec:
a spec with removed layers trains, checkpoints, resumes and exports; frozen layers stay bitwise fixed."""

import json

import keras
import numpy as np
import pytest
from train_helpers import TINY_UNITS, tiny_config, write_small_idx

from zfkeras import data
from zfkeras.export import load_exported
from zfkeras.nn.models import build_model
from zfkeras.training import TrainConfig, train


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_small_idx(str(tmp_path_factory.mktemp("idx")), n_train=128, n_test=32)


class Interrupt(keras.callbacks.Callback):
    """Stops the process's training after ``epoch`` (0-based) like a crash would: by raising."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def weights_of(model):
    return np.concatenate([w.ravel() for w in model.get_weights()])


def test_spec_without_layers_trains_checkpoints_resumes_and_exports(idx_dir, tmp_path):
    source = data.load_source(f"idx:{idx_dir}", "train")
    units = {name: value for name, value in TINY_UNITS.items() if name not in ("conv3", "conv4", "fc6")}
    config = tiny_config(units=units, without=(3, 4, 6), epochs=3, checkpoint_epochs=(1, 3), dropout=0.0)
    names = [layer.name for layer in build_model(config.model_spec()).layers]
    assert "conv3" not in names and "conv4" not in names and "fc6" not in names and "fc7" in names

    straight, _ = train(config, source, None, str(tmp_path / "straight"))
    with pytest.raises(KeyboardInterrupt):
        train(config, source, None, str(tmp_path / "resumed"), callbacks=[Interrupt(1)])
    resumed, history = train(config, source, None, str(tmp_path / "resumed"))
    assert history["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(weights_of(resumed), weights_of(straight), rtol=1e-5, atol=1e-7)

    # The run's config.json alone rebuilds the architecture: the checkpoint's weights load into it.
    record = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert record["config"]["without"] == [3, 4, 6]
    rebuilt = build_model(TrainConfig.from_dict(record["config"]).model_spec())
    checkpoint = keras.saving.load_model(tmp_path / "resumed" / "checkpoints" / "epoch-003.keras")
    rebuilt.set_weights(checkpoint.get_weights())
    images = np.random.default_rng(1).uniform(0, 255, (5, 28, 28, 1)).astype("float32")
    expected = resumed.predict(images, verbose=0)
    np.testing.assert_allclose(rebuilt.predict(images, verbose=0), expected, atol=1e-6)

    from zfkeras.export import export_model

    export_model(resumed, tmp_path / "export", class_names=source.class_names, config=record)
    probe = load_exported(tmp_path / "export")
    assert probe.layer_names == ["conv1", "conv2", "conv5"] and probe.feature_names[-1] == "fc7"
    np.testing.assert_allclose(probe.predict(images), expected, atol=1e-6)


def test_given_model_with_frozen_layers_leaves_them_bitwise_unchanged(idx_dir, tmp_path):
    source = data.load_source(f"idx:{idx_dir}", "train")
    pretrained = build_model(tiny_config().model_spec(), seed=11)
    pretrained.get_layer("subtract_mean").set_mean(np.full((28, 28, 1), 40.0, "float32"))
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in pretrained.layers}
    frozen = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6")
    config = tiny_config(frozen=frozen, epochs=2, val_split=0.0, lr=0.05)
    model, _ = train(config, source, None, str(tmp_path / "run"), model=pretrained)

    for name in frozen + ("subtract_mean",):  # frozen weights, and the pretrained mean kept
        for new, old in zip(model.get_layer(name).get_weights(), before[name]):
            assert np.array_equal(new, old), name
    for name in ("fc7", "predictions"):  # the trainable layers did learn
        assert not np.array_equal(model.get_layer(name).get_weights()[0], before[name][0]), name
    for layer in pretrained.layers:  # the model passed in is not touched
        for new, old in zip(layer.get_weights(), before[layer.name]):
            assert np.array_equal(new, old), layer.name


def test_given_model_must_match_the_config(idx_dir, tmp_path):
    source = data.load_source(f"idx:{idx_dir}", "train")
    model = build_model(tiny_config(num_classes=10).model_spec())
    with pytest.raises(ValueError, match="frozen layer 'conv9' is not in model"):
        train(tiny_config(frozen=("conv9",)), source, None, str(tmp_path / "a"), model=model)
    wide = build_model(tiny_config(input_shape=(32, 32, 1)).model_spec())
    with pytest.raises(ValueError, match=r"takes inputs \(32, 32, 1\)"):
        train(tiny_config(), source, None, str(tmp_path / "b"), model=wide)
