"""Mixed precision and the compiled training step: which layers stay float32, forward passes within
each precision's tolerance of float32 (and not equal to it, so the 16-bit path really ran), the
defaults by hardware, SwitchMaxPool's pooled maps, switches and gradient against numpy, bf16 and
float16 training that keeps every saved number float32, the XLA step against the plain one, and a
bf16-trained export served by plain TensorFlow."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from train_helpers import TINY_UNITS, tiny_config, write_small_idx

from zfkeras import data
from zfkeras.export import export_model
from zfkeras.nn.layers import SwitchMaxPool
from zfkeras.nn.models import build_model, zfnet_small_spec
from zfkeras.nn.precision import check_precision, computing_in, default_precision, float32_layers
from zfkeras.nn.probe import KerasProbe
from zfkeras.training import RunDir, TrainConfig, train
from zfkeras.training.steps import compilable_forward, resolve_jit

# Largest relative difference from float32 of any conv or fc map (max |a - b| / max |a|), and
# largest absolute difference of a probability, that docs/benchmarks.md states: bfloat16 keeps 8
# bits of mantissa, float16 11 (measured on this random tiny net: maps 1.4e-2 and 1.2e-3,
# probabilities 2.3e-2 and 3.0e-3).
TOLERANCE = {"mixed_bfloat16": 2e-2, "mixed_float16": 3e-3}
PROBABILITY_TOLERANCE = {"mixed_bfloat16": 5e-2, "mixed_float16": 1e-2}


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_small_idx(str(tmp_path_factory.mktemp("idx")), n_train=192, n_test=40)


@pytest.fixture(scope="module")
def model():
    spec = zfnet_small_spec().with_units(**TINY_UNITS).replace(kernel_init="he_normal")
    built = build_model(spec, seed=1)
    built.get_layer("subtract_mean").set_mean(np.full((28, 28, 1), 60.0, "float32"))
    return built


def images(count=8, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, 28, 28, 1)).astype("float32")


def test_mean_lrn_and_softmax_stay_float32_and_policies_come_back(model):
    assert [layer.name for layer in float32_layers(model)] == ["images", "subtract_mean", "norm1", "norm2", "predictions"]
    with computing_in(model, "mixed_bfloat16"):
        conv = model.get_layer("conv1")
        assert (conv.compute_dtype, conv.variable_dtype) == ("bfloat16", "float32")
        assert model.get_layer("norm1").compute_dtype == "float32" and model.get_layer("fc6").compute_dtype == "bfloat16"
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    with pytest.raises(ValueError, match="precision must be one of float32, mixed_bfloat16, mixed_float16, got 'bf16'"):
        check_precision("bf16")


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_sixteen_bit_forward_passes_are_within_tolerance_of_float32(model, precision):
    exact, fast = KerasProbe(model), KerasProbe(model, precision=precision)
    x = images()
    want, got = exact.features(x), fast.features(x)
    for name in want:
        assert got[name].dtype == np.float32
        error = np.abs(got[name] - want[name]).max() / np.abs(want[name]).max()
        # Above float32 rounding (the 16-bit path ran) and within the stated tolerance.
        assert 1e-5 < error < TOLERANCE[precision], (name, error)
    probs = fast.predict(x)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert np.abs(probs - exact.predict(x)).max() < PROBABILITY_TOLERANCE[precision]
    assert np.array_equal(fast.project(x[:2], "conv2", [0, 1]), exact.project(x[:2], "conv2", [0, 1]))  # projections: float32
    # feature_tensors (the atlas scan's graph) in a tf.function: the same 16-bit maps as features, float32 out.
    traced = tf.function(lambda batch: fast.feature_tensors(batch, ["conv2", "fc6"]))(tf.constant(x))
    for name, value in traced.items():
        assert value.dtype == tf.float32
        np.testing.assert_allclose(value.numpy(), got[name], rtol=1e-6, atol=1e-6 * np.abs(got[name]).max())
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}  # and the model is left float32


def test_default_precision_by_hardware(tmp_path):
    with_bf16, without = tmp_path / "bf16", tmp_path / "plain"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert default_precision(gpus=[], cpuinfo=str(with_bf16)) == "mixed_bfloat16"
    assert default_precision(gpus=[], cpuinfo=str(without)) == "float32"
    assert default_precision(gpus=[], cpuinfo=str(tmp_path / "missing")) == "float32"
    assert default_precision(gpus=[(8, 0), (9, 0)], cpuinfo=str(without)) == "mixed_bfloat16"
    assert default_precision(gpus=[(8, 6), (7, 5)], cpuinfo=str(with_bf16)) == "mixed_float16"  # the oldest GPU decides
    assert default_precision(gpus=[(6, 1)], cpuinfo=str(with_bf16)) == "float32"


def numpy_max_pool(x, size, stride):
    """Brute-force VALID max pooling: pooled, flat argmax ((b*H + y)*W + x)*C + c, and the input gradient of sum(pooled * w)."""
    n, h, w, c = x.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    pooled, switches = np.zeros((n, oh, ow, c), x.dtype), np.zeros((n, oh, ow, c), np.int64)
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for k in range(c):
                    window = x[b, i * stride : i * stride + size, j * stride : j * stride + size, k]
                    y, z = np.unravel_index(np.argmax(window), window.shape)
                    pooled[b, i, j, k] = window[y, z]
                    switches[b, i, j, k] = ((b * h + i * stride + y) * w + j * stride + z) * c + k
    return pooled, switches


def test_switch_max_pool_matches_numpy_values_switches_and_gradient():
    x = np.random.default_rng(3).normal(size=(2, 9, 7, 3)).astype("float32")  # no ties
    upstream = np.random.default_rng(4).normal(size=(2, 4, 3, 3)).astype("float32")
    pooled_want, switches_want = numpy_max_pool(x, 3, 2)
    gradient_want = np.zeros(x.size, "float32")
    np.add.at(gradient_want, switches_want.ravel(), upstream.ravel())  # overlapping windows sum
    layer = SwitchMaxPool(3, 2, "valid")
    tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        pooled, switches = layer(tensor)
        target = tf.reduce_sum(pooled * upstream)
    np.testing.assert_array_equal(pooled.numpy(), pooled_want)
    np.testing.assert_array_equal(switches.numpy(), switches_want)
    np.testing.assert_allclose(tape.gradient(target, tensor).numpy().ravel(), gradient_want, rtol=0, atol=1e-6)


def trained(idx_dir, run_dir, **changes):
    return train(tiny_config(**changes), data.load_source(f"idx:{idx_dir}", "train"), None, str(run_dir), histograms=False)


def test_bf16_training_is_deterministic_and_saves_float32(idx_dir, tmp_path):
    first, history = trained(idx_dir, tmp_path / "a", precision="mixed_bfloat16", epochs=2, checkpoint_epochs=(1,))
    second, _ = trained(idx_dir, tmp_path / "b", precision="mixed_bfloat16", epochs=2, checkpoint_epochs=(1,))
    exact, exact_history = trained(idx_dir, tmp_path / "c", precision="float32", epochs=2, checkpoint_epochs=(1,))
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)  # same seed, same numbers
    assert not all(np.array_equal(a, b) for a, b in zip(first.get_weights(), exact.get_weights()))  # bf16 really ran
    assert abs(history["loss"][-1] - exact_history["loss"][-1]) < 0.1
    run = RunDir(tmp_path / "a")
    assert run.read_config()["config"]["precision"] == "mixed_bfloat16"
    for file in (run.model_file, run.checkpoint(1)):
        loaded = keras.saving.load_model(file, compile=False)
        assert {layer.dtype_policy.name for layer in loaded.layers} == {"float32"}
        assert {w.dtype for w in loaded.get_weights()} == {np.dtype("float32")}
    assert {layer.dtype_policy.name for layer in first.layers} == {"float32"}


def test_float16_training_scales_the_loss(idx_dir, tmp_path):
    model, history = trained(idx_dir, tmp_path / "run", precision="mixed_float16", epochs=1)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["val_loss"][0])
    assert 0 < float(model.optimizer.dynamic_scale.numpy()) <= 2.0**15


def test_auto_precision_resumes_as_recorded(tmp_path):
    run = RunDir(tmp_path / "run")
    os.makedirs(run.backup_dir)
    assert TrainConfig(precision="auto").resolved(str(tmp_path / "none")).precision == default_precision()
    with open(run.config_file, "w") as handle:
        json.dump({"config": TrainConfig(precision="mixed_float16").to_dict()}, handle)
    assert TrainConfig(precision="auto").resolved(run.path).precision == "mixed_float16"
    with open(run.config_file, "w") as handle:
        json.dump({"config": {"arch": "zfnet_small"}}, handle)  # a run from before precisions were recorded
    assert TrainConfig(precision="auto").resolved(run.path).precision == "float32"
    assert TrainConfig(precision="mixed_bfloat16").resolved(run.path).precision == "mixed_bfloat16"


@pytest.fixture
def no_op_determinism():
    """TensorFlow's op determinism off for one test (zf commands run in-process by other tests turn
    it on; XLA has no deterministic max-pool gradient), restored afterwards."""
    from tensorflow.python.framework import config

    was = config.is_op_determinism_enabled()
    config.disable_op_determinism()
    yield
    if was:
        config.enable_op_determinism()


def test_xla_is_refused_under_op_determinism(model):
    from tensorflow.python.framework import config

    was = config.is_op_determinism_enabled()
    config.enable_op_determinism()
    try:
        assert resolve_jit("auto", tf.distribute.get_strategy(), model) is False
        with pytest.raises(ValueError, match="XLA: XLA has no deterministic max-pool gradient"):
            resolve_jit("on", tf.distribute.get_strategy(), model)
    finally:
        if not was:
            config.disable_op_determinism()


def test_compiled_forward_and_xla_step_match_the_plain_ones(model, idx_dir, tmp_path, no_op_determinism):
    x = tf.constant(images())
    np.testing.assert_allclose(compilable_forward(model)(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-6, atol=1e-7)
    strategy = tf.distribute.get_strategy()
    assert resolve_jit("auto", strategy, model) is False  # a CPU: XLA measured slower
    assert resolve_jit("on", strategy, model) is True and resolve_jit("off", strategy, model) is False
    inputs = keras.Input((4,))
    branch = keras.Model(inputs, keras.layers.Add()([keras.layers.Dense(4)(inputs), inputs]))
    with pytest.raises(ValueError, match="XLA: an XLA-compiled training step needs a chain of layers"):
        resolve_jit("on", strategy, branch)
    source = data.load_source(f"idx:{idx_dir}", "train")
    plain, plain_history = train(tiny_config(epochs=1, dropout=0.0), source, None, str(tmp_path / "plain"), histograms=False, jit_compile="off")
    xla, xla_history = train(tiny_config(epochs=1, dropout=0.0), source, None, str(tmp_path / "xla"), histograms=False, jit_compile="on")
    assert xla_history["loss"][0] == pytest.approx(plain_history["loss"][0], rel=1e-4)
    for a, b in zip(plain.get_weights(), xla.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)


def test_bf16_trained_export_serves_float32_like_the_keras_model(idx_dir, tmp_path):
    model, _ = trained(idx_dir, tmp_path / "run", precision="mixed_bfloat16", epochs=1)
    export_model(model, str(tmp_path / "export"), class_names=[str(i) for i in range(10)])
    served = tf.saved_model.load(str(tmp_path / "export"))
    (spec,) = served.serve.concrete_functions[0].structured_input_signature[0]
    assert spec.dtype == tf.float32
    x = images(16, seed=5)
    probs = served.serve(tf.constant(x))
    assert probs.dtype == tf.float32
    np.testing.assert_allclose(probs.numpy(), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
