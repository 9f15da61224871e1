"""The deconvnet on DAG models against autodiff with overridden ReLU gradients (issue 12).

Reference (tests/deconv_reference.py): Keras runs the model's own layers with every ReLU's
backward pass replaced by a ReLU of the incoming signal and GradientTape goes down. It shares
nothing with zfkeras' graph walk. Random weights, relative error <= 1e-5 per projection, at
layers inside residual blocks, after concatenations and at the last conv, for a hand-made DAG
(Add, Concatenate, BatchNormalization, a shared tensor, depthwise and average pools), a model
whose projected layer sits above Flatten/Dense/Reshape and global pools (whole-image path), and
VGG16, ResNet50 and DenseNet121 from keras.applications (with their preprocessing inside).
"""

import keras
import numpy as np
import pytest
from deconv_reference import assert_close, reference_projection

from zfkeras import Deconvnet
from zfkeras.nn.applications import build


def randomize_statistics(model, seed):
    """Random batch-norm statistics and biases: the identity BN of a fresh model would test little."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.5, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            if layer.beta is not None:
                layer.beta.assign(rng.normal(0.1, 0.2, channels))
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias.assign(rng.normal(0.05, 0.05, bias.shape))


def hand_dag():
    """40x56 input; a shared tensor read by two branches and the Add; Concatenate after a pool."""
    inputs = keras.Input((40, 56, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    shared = keras.layers.ReLU(name="r1")(x)
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c2a")(shared)
    b = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(shared)
    b = keras.layers.Activation("relu", name="r2b")(b)
    x = keras.layers.Add(name="add")([a, b, shared])
    x = keras.layers.Activation("relu", name="block")(x)
    x = keras.layers.ZeroPadding2D(((1, 0), (0, 1)), name="pad")(x)
    pooled = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool")(x)
    averaged = keras.layers.AveragePooling2D(3, 1, padding="same", name="avg")(pooled)
    squeezed = keras.layers.Conv2D(4, 1, name="c3")(pooled)
    x = keras.layers.Concatenate(name="cat")([pooled, averaged, squeezed])
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, name="c4")(x)
    x = keras.layers.ReLU(name="r4")(x)
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    randomize_statistics(model, 0)
    return model


def head_to_map():
    """The projected conv reads a map rebuilt from Dense layers and broadcast global poolings."""
    inputs = keras.Input((12, 16, 2))
    a = keras.layers.Conv2D(4, 3, activation="relu", name="a")(inputs)
    pooled = keras.layers.MaxPooling2D(2, name="p")(a)  # 5x7x4
    dense = keras.layers.Dense(5 * 7 * 3, activation="relu", name="fc")(keras.layers.Flatten()(pooled))
    grid = keras.layers.Reshape((5, 7, 3))(dense)
    peak = keras.layers.GlobalMaxPooling2D()(keras.layers.Conv2D(3, 1, name="lin")(pooled))  # linear maps: no ties
    peak = keras.layers.Reshape((1, 1, 3))(keras.layers.Dense(3, name="g")(peak))
    mean = keras.layers.GlobalAveragePooling2D(keepdims=True)(pooled)
    mean = keras.layers.Dense(3, name="h")(mean)  # a Dense on a [N, 1, 1, 4] map
    x = keras.layers.Add(name="sum")([grid, peak, mean])
    top = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="top")(x)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(top))
    model = keras.Model(inputs, outputs)
    randomize_statistics(model, 1)
    return model


def check(model, deconv, images, layer, windowed):
    """Strongest-unit, given-position (corners) and whole-map projections against the reference."""
    assert deconv.windowed(layer) == windowed
    output_layer = deconv.selection_layer(layer).name
    acts = deconv.activations(images, [layer])[layer]
    n, height, width, _ = acts.shape
    channels = np.array([int(np.argmax(acts[i].max(axis=(0, 1)))) for i in range(n)], "int32")
    corners = [(0, 0), (height - 1, width - 1), (height // 2, 0), (0, width // 2)][:n]
    mixed = np.array([(-1, -1) if i % 2 else corners[i] for i in range(n)], "int32")
    wanted = ["max" if i % 2 else corners[i] for i in range(n)]
    assert_close(deconv.project(images, layer, channels, mixed), reference_projection(model, images, output_layer, channels, wanted))
    assert_close(deconv.project(images, layer, channels, "max"), reference_projection(model, images, output_layer, channels, ["max"] * n))
    return channels


@pytest.fixture(scope="module")
def dag():
    model = hand_dag()
    return model, Deconvnet(model), np.random.default_rng(0).uniform(0, 255, (4, 40, 56, 3)).astype("float32")


def test_hand_made_dag_layer_names(dag):
    _, deconv, _ = dag
    # c1 is rectified by r1 through bn1; dw by r2b; the Add's ReLU under its own name; c3 is linear.
    assert deconv.layer_names == ["c1", "c2a", "dw", "block", "c3", "c4"]
    assert [deconv.selection_layer(name).name for name in deconv.layer_names] == ["r1", "c2a", "r2b", "block", "c3", "r4"]


@pytest.mark.parametrize("layer", ["c1", "block", "c3", "c4"])
def test_hand_made_dag_matches_reference(dag, layer):
    model, deconv, images = dag
    channels = check(model, deconv, images, layer, windowed=True)
    output_layer = deconv.selection_layer(layer).name
    if layer == "block":  # the whole map, through the shared tensor's three readers
        assert_close(deconv.project(images, layer, channels, "map"), reference_projection(model, images, output_layer, channels, ["map"] * 4))


def test_layers_above_dense_and_global_pools_use_whole_images():
    model = head_to_map()
    deconv = Deconvnet(model)
    images = np.random.default_rng(1).uniform(0, 255, (3, 12, 16, 2)).astype("float32")
    check(model, deconv, images, "top", windowed=False)


APPLICATIONS = {
    # name: (input size, layers: inside residual blocks / after concatenations / the last conv)
    "vgg16": (48, ["block1_conv2", "block3_conv3", "block5_conv3"]),
    "resnet50": (64, ["conv2_block1_2_conv", "conv3_block2_out", "conv4_block1_out", "conv5_block3_out"]),
    "densenet121": (64, ["conv2_block3_0_relu", "conv3_block4_1_conv", "relu"]),
}


@pytest.fixture(scope="module", params=list(APPLICATIONS))
def application(request):
    size, layers = APPLICATIONS[request.param]
    keras.utils.set_random_seed(0)
    model = build(request.param, weights=None, input_shape=(size, size, 3))
    randomize_statistics(model, 2)
    images = np.random.default_rng(2).uniform(0, 255, (2, size, size, 3)).astype("float32")
    return model, Deconvnet(model), images, layers


def test_keras_applications_match_reference(application):
    model, deconv, images, layers = application
    assert model.layers[1].name == "preprocess"
    for layer in layers:
        assert layer in deconv.layer_names
        check(model, deconv, images, layer, windowed=deconv.windowed(layer))
    # the deepest layers of these small images fall back to whole images, shallow ones use windows
    assert deconv.windowed(layers[0]) and not deconv.windowed(layers[-1])
