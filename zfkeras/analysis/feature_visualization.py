"""Feature visualization by optimization: the image that maximises a unit (Olah, Mordvintsev and
Schubert, "Feature Visualization", Distill 2017; the method of Lucid and OpenAI Microscope).

:func:`maximize_units` starts from noise and climbs the input gradient of one unit's objective, a
batch of units at once (each image of the batch serves its own unit). What makes the images
readable rather than adversarial noise, as in Lucid:

- **A decorrelated parameterisation.** The image is not optimised pixel by pixel. Each channel is
  an orthonormal inverse real FFT of free spectrum coefficients scaled by ``1 / frequency``
  (frequency in cycles per pixel, floored at one cycle per image), so a step of the same size
  moves low frequencies more than high ones, roughly whitening natural images' ``1/f`` spectrum.
  For 3-channel models the channels are then mixed by the square root of ImageNet's colour
  correlation (Lucid's measured matrix, columns scaled to norm at most 1), so the free parameters
  are decorrelated colours; 1-channel (grey) and other models skip the mixing. A sigmoid maps
  the result to raw pixels ``255 * sigmoid(x)`` (0-255, what every zfkeras model takes).
- **Transformation robustness.** Before each forward pass every image is moved by a random
  translation of up to ``jitter`` pixels, scaled by a factor from ``scales`` and rotated by an
  angle (degrees) from ``angles`` about its centre, in one bilinear resampling (borders filled by
  reflection); the unit must respond to the pattern wherever it lands, not to one pixel grid.
- **Silent units still start.** Where the unit is zero over the whole centre region of an image
  (often so on the grey starting image), the objective's gradient is zero and the image would
  never change; for that image the step climbs the centre mean of the unit's pre-activation (the
  input of the layer's ReLU) instead, until the unit fires: Lucid's "redirected ReLU" gradient,
  for the layer's own ReLU.
- **Fixed steps, seeded.** ``steps`` Adam steps. Each unit's starting spectrum and its
  transformations come from numpy generators seeded by ``(seed, unit)``, so the same seed gives
  the same images on CPU, and a unit's random choices do not depend on which other units share
  its batch. Its image does to float rounding: convolutions round differently at other batch
  sizes, and after a hundred steps or so Adam amplifies that to visibly different images of
  about the same objective.

Why Adam (learning rate 0.05, Lucid's and xplique's default) and not plain gradient ascent: one
batch holds units whose activations, and so gradients, differ by orders of magnitude; Adam's
per-coefficient step size (moments kept per image) gives each unit the same step length in
parameter space, so one learning rate suits every unit, layer and model. With Adam the step in
image space at frequency ``f`` is proportional to the ``1/f`` scale, the preconditioning the
parameterisation intends.

The objective of unit ``u`` is the mean of channel ``u`` of the layer's rectified map over the
map's centre region: rows ``h // 4 .. h - h // 4 - 1`` and columns ``w // 4 .. w - w // 4 - 1`` of
an ``h x w`` map (the middle half, rounded outwards: 5x5 of a 7x7 map, 7x7 of 13x13, all of a map
of 3 or less). The centre keeps the pattern in the middle of the image, where a data image's
receptive fields are whole; the mean over a region, rather than one position, asks for the
pattern at every position of it (Microscope's channel objective, on the centre).
"""

import keras
import numpy as np
import tensorflow as tf

from zfkeras.io.validation import check_positive, positive_int
from zfkeras.nn.adjoint import MAX_POOLS, activation_name, forward, is_relu_layer
from zfkeras.nn.deconv import Deconvnet

__all__ = ["COLOUR_CORRELATION", "DEFAULT_ANGLES", "DEFAULT_SCALES", "centre_objective", "maximize_units"]

# Square root of ImageNet's RGB colour covariance (Lucid, lucid/optvis/param/color.py): column j
# is the RGB direction of decorrelated colour j. Used scaled so its largest column has norm 1.
COLOUR_CORRELATION = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], "float32")
DEFAULT_SCALES = tuple(round(1 + (i - 5) / 50, 2) for i in range(11))  # 0.90, 0.92, ..., 1.10 (Lucid's)
DEFAULT_ANGLES = tuple(range(-10, 11))  # degrees (Lucid's)
INITIAL_SD = 0.01  # standard deviation of the starting spectrum coefficients (Lucid's)
ADAM = dict(beta1=0.9, beta2=0.999, epsilon=1e-8)


def centre_objective(maps):
    """Each unit's objective from maps ``[N, h, w, K]`` (numpy or tensor): the mean over the centre
    region (module docs), ``[N, K]``."""
    h, w = maps.shape[1], maps.shape[2]
    centre = maps[:, h // 4 : h - h // 4, w // 4 : w - w // 4, :]
    return centre.mean(axis=(1, 2)) if isinstance(centre, np.ndarray) else tf.reduce_mean(centre, axis=(1, 2))


def _spectrum_scale(height, width):
    """float32 ``[height, width // 2 + 1]``: the factor of each real-FFT coefficient, ``1 / f`` with
    ``f`` the frequency in cycles per pixel floored at one cycle per image, times ``sqrt(h * w)`` (so
    the inverse FFT is orthonormal) and 1/4 (Lucid's constant: starting images near grey)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    frequency = np.maximum(np.sqrt(fx**2 + fy**2), 1.0 / max(height, width))
    return (np.sqrt(height * width) / (4.0 * frequency)).astype("float32")


def _colour_matrix(channels, decorrelate):
    """``[C, C]`` mixing decorrelated colours into the model's channels (identity where not mixed)."""
    if decorrelate and channels == 3:
        return COLOUR_CORRELATION / np.linalg.norm(COLOUR_CORRELATION, axis=0).max()
    return np.eye(channels, dtype="float32")


def _affine(rng, steps, height, width, jitter, scales, angles):
    """float32 ``[steps, 8]``: per step the projective transform (``ImageProjectiveTransformV3``'s
    output -> input map) of a random translation, scale and rotation about the image centre."""
    shift = rng.integers(-jitter, jitter + 1, size=(steps, 2)) if jitter else np.zeros((steps, 2))
    scale = np.asarray(scales, "float64")[rng.integers(len(scales), size=steps)]
    theta = np.deg2rad(np.asarray(angles, "float64")[rng.integers(len(angles), size=steps)])
    # output = centre + scale * R(theta) (input - centre) + shift, so input = centre + A (output - centre - shift)
    cos, sin = np.cos(theta) / scale, np.sin(theta) / scale
    a = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)  # [steps, 2, 2] acting on (x, y)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    offset = centre - np.einsum("sij,sj->si", a, centre + shift[:, ::-1])  # shift is (dy, dx)
    zeros = np.zeros(steps)
    return np.stack([a[:, 0, 0], a[:, 0, 1], offset[:, 0], a[:, 1, 0], a[:, 1, 1], offset[:, 1], zeros, zeros], -1).astype("float32")


def _start(rng, channels, height, width):
    """float32 ``[C, height, width // 2 + 1, 2]``: a unit's starting spectrum (real, imaginary)."""
    return (rng.standard_normal((channels, height, width // 2 + 1, 2)) * INITIAL_SD).astype("float32")


def _image_size(deconv, size):
    """``(height, width)`` to optimise at: the model's input size, or ``size`` where the model takes it."""
    fixed = deconv.input_shape[:2]
    if size is None:
        if None in fixed:
            raise ValueError("size is needed: the model takes images of any size; give size=(height, width)")
        return tuple(int(v) for v in fixed)
    pair = (
        (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else tuple(size) if isinstance(size, (tuple, list)) else ()
    )
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    if any(f is not None and f != s for f, s in zip(fixed, pair)):
        raise ValueError(f"size {pair[0]}x{pair[1]} is not accepted: the model takes {fixed[0]}x{fixed[1]} images")
    return tuple(int(v) for v in pair)


def _check_units(units, layer, count):
    """``units`` as int32 ``[U]`` channel indices of a layer with ``count`` maps, or a ValueError."""
    values = [units] if isinstance(units, (int, np.integer)) else list(units) if np.ndim(units) == 1 else None
    if not values or not all(isinstance(u, (int, np.integer)) and not isinstance(u, bool) for u in values):
        raise ValueError(f"units must be a non-empty list of channel indices of layer {layer!r} (0..{count - 1}), got {units!r}")
    bad = [int(u) for u in values if not 0 <= u < count]
    if bad:
        raise ValueError(f"unit {bad[0]} out of range: layer {layer!r} has {count} units (0..{count - 1})")
    return np.asarray(values, "int32")


def _check_transforms(jitter, scales, angles, height, width):
    """The transformation settings, checked; ``jitter`` None becomes ~4% of the smaller side (8 px at 224, 1 px at 28)."""
    if jitter is None:
        jitter = max(1, round(min(height, width) / 28))
    if not isinstance(jitter, (int, np.integer)) or isinstance(jitter, bool) or jitter < 0:
        raise ValueError(f"jitter must be a non-negative int (pixels), got {jitter!r}")
    for name, values, positive in (("scales", scales, True), ("angles", angles, False)):
        ok = np.ndim(values) == 1 and len(values) > 0 and np.issubdtype(np.asarray(values).dtype, np.number)
        if not ok or (positive and min(values) <= 0):
            kind = "positive factors" if positive else "angles in degrees"
            raise ValueError(f"{name} must be a non-empty list of {kind}, got {values!r}")
    return int(jitter)


class _Optimiser:
    """The traced step of one model, layer, size and parameterisation: Adam on spectra ``[N, C, h, w', 2]``."""

    def __init__(self, deconv, layer, height, width, channels, decorrelate, learning_rate):
        self.deconv, self.layer, self.shape = deconv, layer, (height, width)
        graph = deconv.graph
        self.top = graph.producer[graph.key(deconv.selection_layer(layer))]
        self.below = graph.below(list(self.top.outputs))[:-1]
        self.scale = tf.constant(_spectrum_scale(height, width))
        self.colour = tf.constant(_colour_matrix(channels, decorrelate).T)
        self.learning_rate = learning_rate
        self.step = tf.function(self._step, reduce_retracing=True, autograph=False)

    def images(self, params):
        """Raw pixels ``[N, h, w, C]`` (0-255) of spectra ``params`` ``[N, C, h, w // 2 + 1, 2]``."""
        spectrum = tf.complex(params[..., 0], params[..., 1]) * tf.cast(self.scale, tf.complex64)
        x = tf.transpose(tf.signal.irfft2d(spectrum, fft_length=self.shape), (0, 2, 3, 1))
        return 255.0 * tf.sigmoid(tf.einsum("nhwc,cd->nhwd", x, self.colour))

    def maps(self, images):
        """The layer's rectified map and its pre-activation (the input of its ReLU), ``[N, h, w, K]`` each."""
        graph, top = self.deconv.graph, self.top
        values = {graph.input: images}
        for node in self.below:
            output = (
                forward(node.layer, values[node.inputs[0]], switches=False)[0] if isinstance(node.layer, MAX_POOLS) else graph.apply(node, values)
            )
            values.update(zip(node.outputs, output if isinstance(output, (list, tuple)) else [output]))
        x = values[top.inputs[0]]
        if is_relu_layer(top.layer):
            return top.layer(x), x
        if activation_name(top.layer) != "relu":  # a linear conv's map: nothing to take apart
            output = graph.apply(top, values)
            return output, output
        if isinstance(top.layer, keras.layers.DepthwiseConv2D):
            layer = top.layer
            pre = keras.ops.depthwise_conv(x, layer.kernel, layer.strides, layer.padding, layer.data_format, layer.dilation_rate)
        else:
            pre = top.layer.convolution_op(x, top.layer.kernel)
        pre = pre + top.layer.bias if top.layer.use_bias else pre
        return tf.nn.relu(pre), pre

    def objective(self, images, units):
        """Each image's own unit's objective ``[N]`` (module docs) and what the step climbs ``[N]``:
        the objective, or where the unit is silent over the whole centre region (its gradient would
        be zero), the centre mean of its pre-activation (Lucid's redirected ReLU gradient)."""
        rectified, pre = (tf.gather(m, units, axis=3, batch_dims=1)[..., None] for m in self.maps(images))
        value, below = centre_objective(rectified)[:, 0], centre_objective(pre)[:, 0]
        return value, tf.where(value > 0, value, below)

    def _step(self, params, m, v, t, units, transforms):
        """One Adam ascent step (``t``: its number from 1); returns the new (params, m, v)."""
        with tf.GradientTape() as tape:
            tape.watch(params)
            images = self.images(params)
            moved = tf.raw_ops.ImageProjectiveTransformV3(
                images=images, transforms=transforms, output_shape=self.shape, fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT"
            )
            _, climbed = self.objective(moved, units)
            total = tf.reduce_sum(climbed)  # each image's spectrum only reaches its own unit's term
        gradient = tape.gradient(total, params)
        m = ADAM["beta1"] * m + (1 - ADAM["beta1"]) * gradient
        v = ADAM["beta2"] * v + (1 - ADAM["beta2"]) * tf.square(gradient)
        m_hat, v_hat = m / (1 - ADAM["beta1"] ** t), v / (1 - ADAM["beta2"] ** t)
        return params + self.learning_rate * m_hat / (tf.sqrt(v_hat) + ADAM["epsilon"]), m, v


def maximize_units(
    model,
    layer,
    units,
    size=None,
    steps=256,
    seed=0,
    batch_size=32,
    learning_rate=0.05,
    jitter=None,
    scales=DEFAULT_SCALES,
    angles=DEFAULT_ANGLES,
    decorrelate=True,
    progress=None,
):
    """The image that maximises each of ``units`` of ``layer`` (module docs: parameterisation,
    transformations, objective).

    Args:
        model: a Keras convnet taking raw pixels 0-255 (a zfkeras ZFNet-family model or a
            ``keras:NAME`` application; :class:`zfkeras.nn.deconv.Deconvnet` must accept it).
        layer: a name from ``Deconvnet(model).layer_names`` (e.g. "conv5").
        units: channel indices of that layer's map (an int or a list; repeats allowed).
        size: ``(height, width)`` or an int; default the model's input size. Another size only
            where the model takes it (an input of unspecified height and width).
        steps: Adam steps per unit.
        seed: seeds each unit's start and transformations together with the unit index.
        batch_size: units optimised together in one forward/backward pass.
        learning_rate: Adam's step size on the spectrum coefficients.
        jitter: largest random translation in pixels per step (each axis); None: about 4% of the
            smaller side (1 px at 28, 8 px at 224).
        scales: random scale factors, one drawn per step and image (default 0.90 .. 1.10).
        angles: random rotations in degrees, one drawn per step and image (default -10 .. 10).
        decorrelate: mix 3-channel images from ImageNet-decorrelated colours.
        progress: called as ``progress(done, total)`` after every step, counting steps over all
            batches (``total = steps * number of batches``).

    Returns:
        float32 ``[len(units), height, width, C]``: raw pixels in (0, 255), the images as the
        model sees them (no transformation applied).

    Raises:
        ValueError: an unknown layer (naming the projectable ones), a unit out of range (naming
        the layer's number of units), or a bad setting (naming it and what is accepted).
    """
    deconv = Deconvnet(model)
    if not isinstance(layer, str) or layer not in deconv.layer_names:  # maps only: the class scores have no centre to climb
        raise ValueError(f"unknown layer {layer!r}; projectable layers: {', '.join(deconv.layer_names) or 'none'}")
    deconv.selection_layer(layer)  # checks every layer below it
    height, width = _image_size(deconv, size)
    channels = int(deconv.input_shape[2])
    steps, batch_size = positive_int("steps", steps), positive_int("batch_size", batch_size)
    learning_rate = check_positive(learning_rate, "learning_rate")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    jitter = _check_transforms(jitter, scales, angles, height, width)
    optimiser = _Optimiser(deconv, layer, height, width, channels, bool(decorrelate), learning_rate)
    units = _check_units(units, layer, int(optimiser.maps(tf.zeros((1, height, width, channels)))[0].shape[-1]))
    batches = [units[i : i + batch_size] for i in range(0, len(units), batch_size)]
    results, done = [], 0
    for batch in batches:
        rngs = [np.random.default_rng([seed, int(unit)]) for unit in batch]
        params = tf.constant(np.stack([_start(rng, channels, height, width) for rng in rngs]))
        transforms = np.stack([_affine(rng, steps, height, width, jitter, scales, angles) for rng in rngs], axis=1)
        m, v = tf.zeros_like(params), tf.zeros_like(params)
        for step in range(steps):
            params, m, v = optimiser.step(params, m, v, tf.constant(step + 1, tf.float32), tf.constant(batch), tf.constant(transforms[step]))
            done += 1
            if progress is not None:
                progress(done, steps * len(batches))
        results.append(optimiser.images(params).numpy())
    return np.concatenate(results).astype("float32")
