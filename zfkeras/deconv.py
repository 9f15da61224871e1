"""Deconvnet (paper Sec. 2.1): project feature activity of a convnet back to pixel space.

The deconvnet is not a second model with copied weights: it walks the convnet's own layers, so
changing the convnet's weights (training, ``set_weights``) changes the projections at once.

Going up, it runs the convnet on the images and records every max pool's switches (argmax per
pooling region, for THIS image). Going down from one layer it applies, layer by layer:
    max pool        -> unpool with the recorded switches (summing where overlapping pools agree)
    ReLU            -> ReLU of the signal coming down (rectify)
    conv            -> convolution with the transposed filters (``conv2d_transpose``), no bias
    LRN, dropout    -> passed through unchanged (LRN only rescales the maps; dropout is off
                       at inference), as in the paper's deconvnet, which has no such layers
    zero padding    -> cropped off;  subtract_mean -> passed through (a constant shift)
    flatten, dense  -> reshaped back / multiplied by the transposed weights
Without LRN this equals the input gradient of the chosen activations (seeded by their values)
with every ReLU's backward pass replaced by a ReLU of the incoming signal (tested).
"""

import keras
import numpy as np
import tensorflow as tf

from zfkeras.layers import LocalResponseNormalization, SubtractMean, SwitchMaxPool, unpool

SUPPORTED_LAYERS = (
    "InputLayer, SubtractMean, ZeroPadding2D, Conv2D (relu or linear), ReLU, Activation('relu'|'linear'), "
    "MaxPooling2D, SwitchMaxPool, LocalResponseNormalization, Dropout, Flatten, Dense (relu or linear)"
)


def _activation_name(layer):
    """'relu' / 'linear' for the activations the deconvnet can invert, else the name found."""
    if isinstance(layer, keras.layers.ReLU):
        plain = layer.max_value is None and not layer.negative_slope and not layer.threshold
        return "relu" if plain else "relu(with arguments)"
    return getattr(layer.activation, "__name__", str(layer.activation))


def _check_supported(layer):
    """Raise one clear error if the deconvnet cannot pass ``layer`` on the way down."""
    ok = isinstance(
        layer,
        (SubtractMean, keras.layers.ZeroPadding2D, keras.layers.MaxPooling2D, SwitchMaxPool,
         LocalResponseNormalization, keras.layers.Dropout, keras.layers.Flatten),
    )
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, keras.layers.Activation, keras.layers.ReLU)):
        ok = _activation_name(layer) in ("relu", "linear")
        if isinstance(layer, keras.layers.Conv2D):
            ok = ok and type(layer) is keras.layers.Conv2D and layer.groups == 1
            ok = ok and layer.data_format == "channels_last"
    if not ok:
        raise ValueError(
            f"Deconvnet cannot project through layer {layer.name!r} ({type(layer).__name__}); "
            f"supported: {SUPPORTED_LAYERS}"
        )


def _linear_chain(model):
    """The model's layers (without InputLayer) in order; they must form a single chain."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if isinstance(model, keras.Sequential):
        return layers
    if len(model.inputs) != 1:
        raise ValueError(f"Deconvnet needs a model with one image input; {model.name!r} has {len(model.inputs)}")
    previous = model.inputs[0]
    for layer in layers:
        if layer.input is not previous:
            raise ValueError(
                f"Deconvnet needs a chain of layers; layer {layer.name!r} does not take the output of the layer before it"
            )
        output = layer.output
        previous = output[0] if isinstance(output, (list, tuple)) else output
    return layers


def _up(layer, x):
    """Forward through one layer at inference; returns (output, switches or None)."""
    if isinstance(layer, (SwitchMaxPool, keras.layers.MaxPooling2D)):
        pooled, switches = tf.nn.max_pool_with_argmax(
            x, ksize=(1, *layer.pool_size, 1), strides=(1, *layer.strides, 1),
            padding=layer.padding.upper(), include_batch_in_index=True,
        )
        return pooled, switches
    if isinstance(layer, keras.layers.Dropout):
        return x, None
    return layer(x), None


def _down(layer, signal, x, switches):
    """Deconvnet step through ``layer``: ``signal`` at its output -> signal at its input ``x``."""
    if isinstance(layer, (SwitchMaxPool, keras.layers.MaxPooling2D)):
        return unpool(signal, switches, x.shape[1:])
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, keras.layers.Activation, keras.layers.ReLU)):
        if _activation_name(layer) == "relu":
            signal = tf.nn.relu(signal)
    if isinstance(layer, keras.layers.Conv2D):
        return tf.nn.conv2d_transpose(
            signal, layer.kernel, output_shape=tf.shape(x), strides=(1, *layer.strides, 1),
            padding=layer.padding.upper(), dilations=(1, *layer.dilation_rate, 1),
        )
    if isinstance(layer, keras.layers.Dense):
        return tf.matmul(signal, layer.kernel, transpose_b=True)
    if isinstance(layer, keras.layers.Flatten):
        return tf.reshape(signal, tf.shape(x))
    if isinstance(layer, keras.layers.ZeroPadding2D):
        (top, _), (left, _) = layer.padding
        return signal[:, top : top + x.shape[1], left : left + x.shape[2], :]
    return signal  # SubtractMean, LRN, Dropout, linear activations


class Deconvnet:
    """A deconvnet attached to every conv layer of ``model``, sharing its weights.

    Args:
        model: a Keras Sequential or Functional convnet whose layers form one chain (see
            ``SUPPORTED_LAYERS``; other layer types are fine above the projected layer).

    Attributes:
        layer_names: the projectable (Conv2D) layers, input to output. For a conv with built-in
            ReLU, its output is used; for a linear conv followed by a ReLU/Activation layer, that
            ReLU's output. Either way: the rectified, pre-pool feature map.
    """

    def __init__(self, model):
        self.model = model
        self._layers = _linear_chain(model)
        self.input_shape = tuple(model.inputs[0].shape[1:])
        self._selected = {}  # conv name -> index in self._layers of the selection point
        for index, layer in enumerate(self._layers):
            if isinstance(layer, keras.layers.Conv2D):
                follows = self._layers[index + 1] if index + 1 < len(self._layers) else None
                linear = _activation_name(layer) == "linear"
                relu_next = isinstance(follows, (keras.layers.ReLU, keras.layers.Activation)) and _activation_name(follows) == "relu"
                self._selected[layer.name] = index + 1 if linear and relu_next else index
        self.layer_names = list(self._selected)
        self._functions = {}

    def selection_layer(self, layer):
        """The Keras layer whose output is ``layer``'s rectified feature map."""
        return self._layers[self._index(layer)]

    def _index(self, layer):
        if layer not in self._selected:
            raise ValueError(f"unknown layer {layer!r}; projectable layers: {', '.join(self.layer_names) or 'none'}")
        index = self._selected[layer]
        for below in self._layers[: index + 1]:
            _check_supported(below)
        return index

    def _forward(self, images, top):
        """Run layers 0..top; return (output of ``top``, inputs of each layer, switches of each)."""
        inputs, switches = [], []
        x = images
        for layer in self._layers[: top + 1]:
            inputs.append(x)
            x, sw = _up(layer, x)
            switches.append(sw)
        return x, inputs, switches

    def _backward(self, signal, inputs, switches, top):
        for index in range(top, -1, -1):
            signal = _down(self._layers[index], signal, inputs[index], switches[index])
        return signal

    def _function(self, key, build):
        if key not in self._functions:
            self._functions[key] = build()
        return self._functions[key]

    def _images(self, images):
        images = np.asarray(images, dtype="float32")
        if images.ndim == 3:
            raise ValueError(f"images must be a batch [N, {', '.join(map(str, self.input_shape))}]; got one image of shape {images.shape}")
        if images.shape[1:] != self.input_shape:
            raise ValueError(f"images must have shape [N, {', '.join(map(str, self.input_shape))}], got {images.shape}")
        return images

    def activations(self, images, layers=None):
        """Rectified outputs of conv layers: ``{name: array [N, h, w, maps]}`` (default all)."""
        images = self._images(images)
        names = list(self.layer_names) if layers is None else list(layers)
        indices = [self._index(name) for name in names]
        top = max(indices)

        def build():
            @tf.function(input_signature=[tf.TensorSpec((None, *self.input_shape), tf.float32)])
            def run(x):
                _, inputs, _ = self._forward(x, top)
                outputs = inputs[1:] + [_up(self._layers[top], inputs[top])[0]]
                return [outputs[i] for i in indices]

            return run

        results = self._function(("activations", tuple(names)), build)(images)
        return {name: value.numpy() for name, value in zip(names, results)}

    def projection_function(self, layer, whole_map=False):
        """A traceable ``tf.function(images, channel, position) -> reconstructions``.

        ``images`` float32 ``[N, H, W, C]`` raw pixels; ``channel`` int32 ``[N]``; ``position``
        int32 ``[N, 2]`` as (y, x), with (-1, -1) meaning the strongest activation of that map in
        that image. With ``whole_map`` the whole map is projected and ``position`` is ignored.
        Used by :meth:`project` and by SavedModel export.
        """
        top = self._index(layer)

        def build():
            spec = [
                tf.TensorSpec((None, *self.input_shape), tf.float32),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((None, 2), tf.int32),
            ]

            @tf.function(input_signature=spec)
            def project(images, channel, position):
                acts, inputs, switches = self._forward(images, top)
                seed = select_activations(acts, channel, position, whole_map)
                return self._backward(seed, inputs, switches, top)

            return project

        return self._function(("project", layer, whole_map), build)

    def project(self, images, layer, channel, position="max", batch_size=None):
        """Project activations of ``layer`` down to pixel space.

        Args:
            images: ``[N, H, W, C]`` raw pixels (0-255) at the model's input size.
            layer: a name from :attr:`layer_names`.
            channel: feature map index, an int or one per image (``[N]``).
            position: ``"max"`` (the strongest activation of that map in each image; all other
                activations set to zero), ``"map"`` (the whole feature map), ``(y, x)``, or an int
                array ``[N, 2]`` of (y, x) with (-1, -1) meaning max.
            batch_size: images per forward/backward pass (bounds memory); default all at once.

        Returns:
            float32 array shaped like ``images``: the reconstruction in the model's input space.
        """
        images = self._images(images)
        n = len(images)
        top = self._index(layer)
        channel = _as_channels(channel, n, int(self._layers[top].output.shape[-1]))
        whole_map = isinstance(position, str) and position == "map"
        position = _as_positions(position, n, tuple(self._layers[top].output.shape[1:3]))
        function = self.projection_function(layer, whole_map)
        step = batch_size or max(n, 1)
        parts = [
            function(images[i : i + step], channel[i : i + step], position[i : i + step]).numpy()
            for i in range(0, n, step)
        ]
        return np.concatenate(parts) if parts else np.zeros_like(images)

    def backproject(self, images, layer, seed):
        """Project an arbitrary ``seed`` (shaped like ``layer``'s activations for ``images``) down."""
        images = self._images(images)
        top = self._index(layer)

        def build():
            @tf.function
            def run(x, s):
                _, inputs, switches = self._forward(x, top)
                return self._backward(s, inputs, switches, top)

            return run

        return self._function(("backproject", layer), build)(images, tf.constant(seed, tf.float32)).numpy()


def select_activations(acts, channel, position, whole_map=False):
    """Zero all activations but the chosen ones: the deconvnet's starting signal.

    Args:
        acts: ``[N, h, w, K]`` activations. channel: int32 ``[N]``.
        position: int32 ``[N, 2]`` (y, x); (-1, -1) picks each image's strongest activation of
            its channel (first in row-major order on ties).
        whole_map: keep the whole chosen map instead of one position.
    """
    depth = tf.shape(acts)[-1]
    in_channel = acts * tf.one_hot(channel, depth, dtype=acts.dtype)[:, None, None, :]
    if whole_map:
        return in_channel
    shape = tf.shape(acts)
    flat = tf.reshape(tf.reduce_sum(in_channel, axis=-1), (shape[0], -1))
    strongest = tf.argmax(flat, axis=1, output_type=tf.int32)
    given = position[:, 0] * shape[2] + position[:, 1]
    index = tf.where(position[:, 0] < 0, strongest, given)
    spot = tf.reshape(tf.one_hot(index, shape[1] * shape[2], dtype=acts.dtype), (shape[0], shape[1], shape[2], 1))
    return in_channel * spot


def _as_channels(channel, n, maps):
    """``channel`` (an int or one per image) as int32 ``[n]``, each in ``[0, maps)``."""
    channel = np.broadcast_to(np.asarray(channel), (n,)) if np.ndim(channel) == 0 else np.asarray(channel)
    if channel.shape != (n,) or not np.issubdtype(channel.dtype, np.integer):
        raise ValueError(f"channel must be an int or {n} ints (one per image), got {channel!r}")
    if n and (channel.min() < 0 or channel.max() >= maps):
        raise ValueError(f"channel must be in [0, {maps}) for this layer, got {channel.tolist()}")
    return channel.astype("int32")


def _as_positions(position, n, size):
    if isinstance(position, str):
        if position not in ("max", "map"):
            raise ValueError(f"position must be 'max', 'map', (y, x) or an [N, 2] array, got {position!r}")
        return np.full((n, 2), -1, dtype="int32")
    position = np.asarray(position)
    if position.shape == (2,):
        position = np.broadcast_to(position, (n, 2))
    if position.shape != (n, 2) or not np.issubdtype(position.dtype, np.integer):
        raise ValueError(f"position must be 'max', 'map', (y, x) or an int array [{n}, 2], got shape {position.shape}")
    points = position[position[:, 0] >= 0]
    if len(points) and (points.min() < 0 or points[:, 0].max() >= size[0] or points[:, 1].max() >= size[1]):
        raise ValueError(f"position out of range: the layer's maps are {size[0]}x{size[1]} (y, x from 0)")
    return position.astype("int32")
