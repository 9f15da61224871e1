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

Single activations run on their receptive field only. One unit of a layer depends on a window of
each layer's input below it (:func:`zfkeras.receptive_field.unit_windows`, aligned to the strides).
:meth:`Deconvnet.project` with positions cuts the image to the unit's field, runs every layer
unpadded on its window (with the layer's own padding filled in where the window runs past the map:
zeros, or nothing that can win a max pool), goes down on the same windows and pastes the result
into a zero image. That costs a fraction of one whole-image pass and equals the whole-image
projection to float rounding (tested at borders, corners and centre). With ``position="max"`` a
whole-image forward pass finds the strongest unit first and the way down reads its windows from it.
"""

import keras
import numpy as np
import tensorflow as tf

from zfkeras.layers import LocalResponseNormalization, SubtractMean, SwitchMaxPool, unpool
from zfkeras.receptive_field import layer_steps, unit_windows
from zfkeras.validation import layer_names
from zfkeras.validation import positions as _as_positions

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


def _up(layer, x, window=None, switches=True):
    """Forward through one layer at inference; returns (output, switches or None).

    With ``window`` (int32 ``[N, 2]``, where ``x``'s top-left element sits in the layer's input
    map), ``x`` is a window of that map whose padding the caller has already filled in (see
    :func:`window_inputs`): convs and pools then run unpadded and a ZeroPadding2D changes nothing.
    Without ``switches``, max pools skip the argmax (about 10x cheaper on CPU) and return None.
    """
    padding = "VALID" if window is not None else getattr(layer, "padding", None)
    if isinstance(layer, (SwitchMaxPool, keras.layers.MaxPooling2D)):
        shape = dict(ksize=(1, *layer.pool_size, 1), strides=(1, *layer.strides, 1), padding=padding.upper())
        if not switches:
            return tf.nn.max_pool2d(x, **shape), None
        return tf.nn.max_pool_with_argmax(x, **shape, include_batch_in_index=True)
    if isinstance(layer, keras.layers.Dropout):
        return x, None
    if window is None:
        return layer(x), None
    if isinstance(layer, keras.layers.ZeroPadding2D):
        return x, None
    if isinstance(layer, SubtractMean):
        return x - crop_windows(layer.mean, window, x.shape[1:3]), None
    if isinstance(layer, keras.layers.Conv2D):
        y = tf.nn.convolution(x, layer.kernel, strides=layer.strides, padding="VALID", dilations=layer.dilation_rate)
        return layer.activation(y + layer.bias if layer.use_bias else y), None
    return layer(x), None  # spatially pointwise layers (LRN, ReLU, Activation)


def _down(layer, signal, x, switches, window=False):
    """Deconvnet step through ``layer``: ``signal`` at its output -> signal at its input ``x``.

    With ``window``, ``x`` is a padded window as in :func:`_up`, the step is unpadded, and a max
    pool's ``switches`` are replaced by its pooled output (see :func:`_unpool_window`).
    """
    if isinstance(layer, (SwitchMaxPool, keras.layers.MaxPooling2D)):
        if window:
            return _unpool_window(layer, signal, x, switches)
        return unpool(signal, switches, x.shape[1:])
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, keras.layers.Activation, keras.layers.ReLU)):
        if _activation_name(layer) == "relu":
            signal = tf.nn.relu(signal)
    if isinstance(layer, keras.layers.Conv2D) and window and tuple(layer.strides) == (1, 1):
        # Same sums as conv2d_transpose, but the forward convolution with the flipped, transposed
        # kernel on the fully padded signal runs 2-4x faster on CPU for these small windows.
        kernel = tf.transpose(layer.kernel[::-1, ::-1], (0, 1, 3, 2))
        rows, cols = ((k - 1) * d for k, d in zip(layer.kernel.shape[:2], layer.dilation_rate))
        padded = tf.pad(signal, [[0, 0], [rows, rows], [cols, cols], [0, 0]])
        return tf.nn.convolution(padded, kernel, padding="VALID", dilations=layer.dilation_rate)
    if isinstance(layer, keras.layers.Conv2D):
        return tf.nn.conv2d_transpose(
            signal, layer.kernel, output_shape=tf.shape(x), strides=(1, *layer.strides, 1),
            padding="VALID" if window else layer.padding.upper(), dilations=(1, *layer.dilation_rate, 1),
        )
    if isinstance(layer, keras.layers.Dense):
        return tf.matmul(signal, layer.kernel, transpose_b=True)
    if isinstance(layer, keras.layers.Flatten):
        return tf.reshape(signal, tf.shape(x))
    if isinstance(layer, keras.layers.ZeroPadding2D) and not window:
        (top, _), (left, _) = layer.padding
        return signal[:, top : top + x.shape[1], left : left + x.shape[2], :]
    return signal  # SubtractMean, LRN, Dropout, linear activations; ZeroPadding2D on windows


def _unpool_window(layer, signal, x, pooled):
    """:func:`unpool` on windows, by max pooling's gradient kernel: ``signal`` goes to the element
    that won each pooling region of ``x`` (``pooled`` is the pool's output). The kernel picks the
    same winner as the switches, ties included, and sums collisions alike; it needs no switches,
    whose argmax pooling costs about 10x a plain max pool on CPU."""
    return tf.raw_ops.MaxPoolGrad(
        orig_input=x, orig_output=pooled, grad=signal, ksize=(1, *layer.pool_size, 1),
        strides=(1, *layer.strides, 1), padding="VALID",
    )


def crop_windows(maps, starts, size, fill=0.0):
    """One window per example: ``[N, size[0], size[1], C]`` cut from ``maps`` at ``starts``.

    Args:
        maps: ``[N, H, W, C]``, or ``[H, W, C]`` shared by all examples.
        starts: int32 ``[N, 2]``, (row, column) of each window's top-left in ``maps`` (may be
            negative or run past the far border).
        size: static (rows, columns) of the windows.
        fill: value where a window runs past ``maps``.
    """
    starts = tf.cast(starts, tf.int32)
    rows = starts[:, :1] + tf.range(size[0])
    cols = starts[:, 1:] + tf.range(size[1])
    height, width = tf.shape(maps)[-3], tf.shape(maps)[-2]
    cut = tf.gather(maps, tf.clip_by_value(rows, 0, height - 1), axis=maps.shape.rank - 3, batch_dims=maps.shape.rank - 3)
    cut = tf.gather(cut, tf.clip_by_value(cols, 0, width - 1), axis=2, batch_dims=1)
    return tf.where(_inside(starts, size, (height, width)), cut, tf.cast(fill, cut.dtype))


def _inside(starts, size, extent):
    """Bool ``[N, rows, cols, 1]``: which elements of windows at ``starts`` lie in a map of ``extent``."""
    rows = starts[:, :1] + tf.range(size[0])
    cols = starts[:, 1:] + tf.range(size[1])
    rows = (rows >= 0) & (rows < extent[0])
    cols = (cols >= 0) & (cols < extent[1])
    return (rows[:, :, None] & cols[:, None, :])[..., None]


def window_inputs(layer, step, x, start):
    """Fill the part of window ``x`` (at ``start`` of ``layer``'s input map) that lies past the map
    with what ``layer`` pads with: nothing wins a max pool there, everything else sees zeros."""
    if step.kernel == (1, 1) and step.before == (0, 0) and not isinstance(layer, keras.layers.ZeroPadding2D):
        return x  # spatially pointwise: its out-of-map elements are never used
    fill = x.dtype.min if isinstance(layer, (SwitchMaxPool, keras.layers.MaxPooling2D)) else 0.0
    return tf.where(_inside(start, x.shape[1:3], step.input_size), x, tf.cast(fill, x.dtype))


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
        layer_names(layer, self._selected, "projectable layers")
        index = self._selected[layer]
        for below in self._layers[: index + 1]:
            _check_supported(below)
        return index

    def _forward(self, images, top, switches=True):
        """Run layers 0..top; return (output of ``top``, inputs of each layer, switches of each
        (None for all without ``switches``))."""
        inputs, switches_ = [], []
        x = images
        for layer in self._layers[: top + 1]:
            inputs.append(x)
            x, sw = _up(layer, x, switches=switches)
            switches_.append(sw)
        return x, inputs, switches_

    def _backward(self, signal, inputs, switches, top):
        for index in range(top, -1, -1):
            signal = _down(self._layers[index], signal, inputs[index], switches[index])
        return signal

    def _geometry(self, top):
        """For one unit of layer ``top``: ``[(layer, Step)]`` of layers 0..top and, per layer, the
        ``(size, jump, offset)`` of the window of its input that the unit depends on."""
        key = ("geometry", top)
        if key not in self._functions:
            steps = layer_steps(self._layers[: top + 1], self.input_shape[:2])
            self._functions[key] = (steps, unit_windows(steps))
        return self._functions[key]

    def _window_starts(self, position, top):
        """Per layer 0..top, int32 ``[N, 2]``: where unit ``position`` ``[N, 2]``'s window starts in its input."""
        return [offset + position * jump for _, jump, offset in self._geometry(top)[1]]

    def _window_forward(self, images, position, top):
        """:meth:`_forward` on the windows one unit per image (``position`` int32 ``[N, 2]``) depends on.

        Returns (activations ``[N, 1, 1, K]`` of that unit, input window of each layer, and for
        each max pool its pooled window (None for other layers): what the way down needs).
        """
        steps, windows = self._geometry(top)
        starts = self._window_starts(position, top)
        x = crop_windows(images, starts[0], windows[0][0])
        inputs, pooled = [], []
        for (layer, step), start in zip(steps, starts):
            x = window_inputs(layer, step, x, start)
            inputs.append(x)
            x, _ = _up(layer, x, start, switches=False)
            pooled.append(x if isinstance(layer, (SwitchMaxPool, keras.layers.MaxPooling2D)) else None)
        return x, inputs, pooled

    def _window_backward(self, signal, inputs, pooled, position, top):
        """:meth:`_backward` from ``signal`` ``[N, 1, 1, K]`` at unit ``position`` of ``top`` through
        the windows of :meth:`_window_forward`; returns the reconstruction pasted into zero images."""
        steps, windows = self._geometry(top)
        starts = self._window_starts(position, top)
        for index in range(top, -1, -1):
            layer, step = steps[index]
            signal = _down(layer, signal, inputs[index], pooled[index], window=True)
            # What lands on the layer's padding is dropped, as the full-size step crops it off.
            signal = tf.where(_inside(starts[index], windows[index][0], step.input_size), signal, 0.0)
        return crop_windows(signal, -starts[0], self.input_shape[:2])

    def _project_given(self, images, channel, position, top):
        """Single-activation projections, forward and way down on the unit's receptive-field windows."""
        acts, inputs, pooled = self._window_forward(images, position, top)
        seed = acts * tf.one_hot(channel, tf.shape(acts)[-1], dtype=acts.dtype)[:, None, None, :]
        return self._window_backward(seed, inputs, pooled, position, top)

    def _project_strongest(self, images, channel, position, top):
        """As :meth:`_project_given`, but each (-1, -1) in ``position`` is first replaced by its
        map's strongest unit, found by a full forward pass to ``top`` (no switches); the way down
        then reads its windows from that pass's maps instead of recomputing them."""
        acts, inputs, _ = self._forward(images, top, switches=False)
        position = strongest_positions(acts, channel, position)
        steps, windows = self._geometry(top)
        starts = self._window_starts(position, top)
        window_inputs_, pooled = [], []
        for index, (layer, _) in enumerate(steps):
            is_pool = isinstance(layer, (SwitchMaxPool, keras.layers.MaxPooling2D))
            fill = inputs[index].dtype.min if is_pool else 0.0
            needed = is_pool or isinstance(layer, keras.layers.Conv2D)  # others' way down ignores the input
            window_inputs_.append(crop_windows(inputs[index], starts[index], windows[index][0], fill) if needed else None)
            pooled.append(crop_windows(inputs[index + 1], starts[index + 1], windows[index + 1][0]) if is_pool else None)
        seed = select_activations(crop_windows(acts, position, (1, 1)), channel, tf.zeros_like(position))
        return self._window_backward(seed, window_inputs_, pooled, position, top)

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
                _, inputs, _ = self._forward(x, top, switches=False)
                outputs = inputs[1:] + [_up(self._layers[top], inputs[top], switches=False)[0]]
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
                if not whole_map:
                    return tf.cond(
                        tf.reduce_any(position[:, 0] < 0),
                        lambda: self._project_strongest(images, channel, position, top),
                        lambda: self._project_given(images, channel, position, top),
                    )
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
                array ``[N, 2]`` of (y, x) with (-1, -1) meaning max. Single activations run on
                their receptive-field windows (module docs); each (image, map, position) triple is
                one row of the batch.
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
    position = strongest_positions(acts, channel, position)
    index = position[:, 0] * shape[2] + position[:, 1]
    spot = tf.reshape(tf.one_hot(index, shape[1] * shape[2], dtype=acts.dtype), (shape[0], shape[1], shape[2], 1))
    return in_channel * spot


def strongest_positions(acts, channel, position):
    """``position`` int32 ``[N, 2]`` with each (-1, -1) replaced by the (y, x) of the strongest
    activation of map ``channel[n]`` in ``acts[n]`` ``[N, h, w, K]`` (first in row-major order on ties)."""
    shape = tf.shape(acts)
    chosen = tf.gather(acts, channel, axis=3, batch_dims=1)
    strongest = tf.argmax(tf.reshape(chosen, (shape[0], -1)), axis=1, output_type=tf.int32)
    found = tf.stack([strongest // shape[2], strongest % shape[2]], axis=1)
    return tf.where(position[:, :1] < 0, found, position)


def _as_channels(channel, n, maps):
    """``channel`` (an int or one per image) as int32 ``[n]``, each in ``[0, maps)``."""
    channel = np.broadcast_to(np.asarray(channel), (n,)) if np.ndim(channel) == 0 else np.asarray(channel)
    if channel.shape != (n,) or not np.issubdtype(channel.dtype, np.integer):
        raise ValueError(f"channel must be an int or {n} ints (one per image), got {channel!r}")
    if n and (channel.min() < 0 or channel.max() >= maps):
        raise ValueError(f"channel must be in [0, {maps}) for this layer, got {channel.tolist()}")
    return channel.astype("int32")


