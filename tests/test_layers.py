"""Custom layers against numpy references and autodiff; construction errors; .keras round trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zfkeras.nn.layers import FilterRMSNorm, LocalResponseNormalization, SubtractMean, SwitchMaxPool, Unpool, unpool


def numpy_max_pool(x, size, stride, padding):
    """Reference max pool with flat (batch-included) argmax, first max in row-major order wins."""
    n, h, w, c = x.shape
    if padding == "same":
        oh, ow = -(-h // stride), -(-w // stride)
        pad_h = max((oh - 1) * stride + size - h, 0)
        pad_w = max((ow - 1) * stride + size - w, 0)
        top, left = pad_h // 2, pad_w // 2
    else:
        oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
        top = left = 0
    pooled = np.zeros((n, oh, ow, c), x.dtype)
    switches = np.zeros((n, oh, ow, c), np.int64)
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    best, where = -np.inf, None
                    for dy in range(size):
                        for dx in range(size):
                            y, xx = i * stride - top + dy, j * stride - left + dx
                            if 0 <= y < h and 0 <= xx < w and x[b, y, xx, ch] > best:
                                best, where = x[b, y, xx, ch], ((b * h + y) * w + xx) * c + ch
                    pooled[b, i, j, ch], switches[b, i, j, ch] = best, where
    return pooled, switches


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_switch_max_pool_matches_numpy(rng, padding):
    x = rng.normal(size=(2, 9, 8, 3)).astype("float32")
    pooled, switches = SwitchMaxPool(3, 2, padding)(x)
    ref_pooled, ref_switches = numpy_max_pool(x, 3, 2, padding)
    np.testing.assert_array_equal(pooled.numpy(), ref_pooled)
    np.testing.assert_array_equal(switches.numpy(), ref_switches)
    assert switches.dtype == tf.int64


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("shape", [(3, 13, 13, 4), (2, 26, 26, 5), (4, 7, 10, 2)])
def test_unpool_is_exactly_the_max_pool_gradient(rng, padding, shape, ties):
    # With ties (values 0, 1, 2 as after a ReLU) a window has several maxima: both must pick the same.
    values = rng.integers(0, 3, size=shape) if ties else rng.normal(size=shape)
    x = tf.constant(values.astype("float32"))
    pooled, switches = SwitchMaxPool(3, 2, padding)(x)
    upstream = tf.constant(rng.normal(size=pooled.shape).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.nn.max_pool2d(x, 3, 2, padding.upper())
    gradient = tape.gradient(y, x, output_gradients=upstream)
    unpooled = Unpool(output_shape=shape[1:])([upstream, switches])
    assert np.max(np.abs(unpooled.numpy() - gradient.numpy())) == 0.0
    # Overlapping windows really did pick the same input sometimes (the summing case is exercised).
    flat = switches.numpy().ravel()
    assert len(flat) > len(np.unique(flat))


def test_unpool_function_sums_collisions():
    values = tf.constant([[[[1.0], [2.0]]]])  # [1, 1, 2, 1]
    switches = tf.constant([[[[3], [3]]]], dtype=tf.int64)
    out = unpool(values, switches, (2, 2, 1)).numpy()
    np.testing.assert_array_equal(out.ravel(), [0, 0, 0, 3])


def numpy_lrn(x, size, k, alpha, beta):
    half = size // 2
    c = x.shape[-1]
    out = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - half), min(c, ch + half + 1)
        out[..., ch] = x[..., ch] / (k + alpha * np.sum(x[..., lo:hi] ** 2, axis=-1)) ** beta
    return out


def test_lrn_matches_alexnet_formula(rng):
    x = rng.normal(scale=30.0, size=(2, 4, 4, 11)).astype("float32")
    layer = LocalResponseNormalization()
    assert (layer.size, layer.k, layer.alpha, layer.beta) == (5, 2.0, 1e-4, 0.75)
    np.testing.assert_allclose(layer(x).numpy(), numpy_lrn(x, 5, 2.0, 1e-4, 0.75), rtol=1e-5)
    other = LocalResponseNormalization(size=3, k=1.0, alpha=1e-3, beta=0.5)
    np.testing.assert_allclose(other(x).numpy(), numpy_lrn(x, 3, 1.0, 1e-3, 0.5), rtol=1e-5)


def test_filter_rms_norm_caps_only_large_filters():
    # kernel [kh=2, kw=1, in=2, filters=4]: each filter's RMS over its 4 weights, worked out by hand
    w = np.zeros((2, 1, 2, 4), "float32")
    w[..., 0] = 0.5  # RMS 0.5 -> scaled by 0.1 / 0.5: every weight 0.1
    w[:, 0, :, 1] = [[0.3, -0.4], [0.0, 0.0]]  # RMS sqrt(0.25 / 4) = 0.25 -> x 0.4: 0.12, -0.16
    w[..., 2] = 0.05  # RMS 0.05 <= 0.1: untouched
    w[:, 0, :, 3] = [[0.1, -0.1], [0.1, 0.1]]  # RMS exactly 0.1: untouched
    out = FilterRMSNorm(0.1)(tf.constant(w)).numpy()
    expected = np.zeros_like(w)
    expected[..., 0] = 0.1
    expected[:, 0, :, 1] = [[0.12, -0.16], [0.0, 0.0]]
    expected[..., 2] = 0.05
    expected[:, 0, :, 3] = [[0.1, -0.1], [0.1, 0.1]]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(out[..., 2], w[..., 2])
    half = FilterRMSNorm(0.125)(tf.constant(w)).numpy()  # another radius: filter 1 x 0.5
    np.testing.assert_allclose(half[:, 0, :, 1], [[0.15, -0.2], [0.0, 0.0]], rtol=1e-6)


def test_filter_rms_norm_applies_during_training(rng):
    conv = keras.layers.Conv2D(2, 3, kernel_constraint=FilterRMSNorm(0.1), kernel_initializer=keras.initializers.RandomNormal(stddev=1.0))
    model = keras.Sequential([keras.Input((6, 6, 1)), conv, keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(rng.normal(size=(8, 6, 6, 1)), rng.normal(size=(8, 1)), epochs=1, verbose=0)
    rms = np.sqrt(np.mean(conv.kernel.numpy() ** 2, axis=(0, 1, 2)))
    assert np.all(rms <= 0.1 + 1e-6)


def test_subtract_mean(rng):
    layer = SubtractMean()
    x = rng.uniform(0, 255, size=(2, 4, 4, 3)).astype("float32")
    layer(x)
    mean = rng.uniform(0, 255, size=(4, 4, 3)).astype("float32")
    layer.set_mean(mean)
    np.testing.assert_allclose(layer(x).numpy(), x - mean, rtol=1e-6)
    with pytest.raises(ValueError, match=r"mean must have shape \(4, 4, 3\)"):
        layer.set_mean(np.zeros((3, 3, 3)))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SwitchMaxPool(0, 2), "pool_size"),
        (lambda: SwitchMaxPool(3, "two"), "strides"),
        (lambda: SwitchMaxPool(3, 2, "full"), "padding"),
        (lambda: LocalResponseNormalization(size=4), "size must be odd"),
        (lambda: LocalResponseNormalization(alpha=-1), "alpha"),
        (lambda: FilterRMSNorm(0), "radius"),
        (lambda: Unpool(output_shape=(3, 3)), "output_shape"),
    ],
)
def test_bad_arguments_name_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_every_custom_layer_round_trips_through_keras_file(tmp_path, rng):
    inputs = keras.Input((9, 9, 3))
    centred = SubtractMean(name="mean")(inputs)
    conv = keras.layers.Conv2D(4, 3, padding="same", kernel_constraint=FilterRMSNorm(0.2))(centred)
    pooled, switches = SwitchMaxPool(3, 2, "same")(conv)
    normed = LocalResponseNormalization(size=3, k=1.5)(pooled)
    back = Unpool(output_shape=(9, 9, 4))([normed, switches])
    model = keras.Model(inputs, [back, switches])
    model.get_layer("mean").set_mean(rng.uniform(0, 255, size=(9, 9, 3)))
    x = rng.uniform(0, 255, size=(3, 9, 9, 3)).astype("float32")
    path = tmp_path / "layers.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for before, after in zip(model(x), loaded(x)):
        np.testing.assert_array_equal(before.numpy(), after.numpy())
    conv_loaded = [layer for layer in loaded.layers if isinstance(layer, keras.layers.Conv2D)][0]
    assert isinstance(conv_loaded.kernel_constraint, FilterRMSNorm) and conv_loaded.kernel_constraint.radius == 0.2
    assert loaded.layers[-1].get_config()["output_shape"] == (9, 9, 4)
