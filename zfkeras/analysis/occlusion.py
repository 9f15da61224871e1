"""Occlusion sensitivity (paper Sec. 4.2, Fig. 7): slide a grey square over an image and watch the model.

For every position of the square we record, from ONE forward pass of the occluded image:
    (b) the total activity of one top-layer feature map (sum over its spatial positions),
    (d) the probability of the correct class,
    (e) the most probable class;
and once, from the unoccluded image, (c) the deconvnet projection of that feature map.

Grid and border convention. ``patch`` ``P`` and ``stride`` ``S`` are in model-input pixels. Grid
cell ``(i, j)`` puts the square's centre on pixel ``(i*S, j*S)`` for ``i*S < H``, ``j*S < W``, so
the maps have ``ceil(H/S) x ceil(W/S)`` cells and every pixel, borders included, gets covered
the same way. The square covers rows ``y0 .. y0+P-1`` with ``y0 = i*S - P//2`` (likewise columns):
near the border it runs past the image and is clipped there, covering only its part inside.
``positions[i, j] = (y0, x0)``, the square's top-left corner (negative where it is clipped).

Fill. Images are raw pixels (0-255). The square is painted before the model's mean subtraction,
either with a constant raw value (``fill=128.0``) or, by default, with the model's training mean
image at those pixels -- which is exactly zero after the mean subtraction, i.e. "no signal".

Incremental evaluation. For a Keras model whose layers form a chain the evaluator does not run
occluded copies through the whole net: it keeps the unoccluded image's maps and, for each batch of
square positions, recomputes in every spatial layer only the output window the square can change
(read with its halo from the cached maps, see :class:`IncrementalForward`), pastes that into the
cached map and runs the fully connected layers in full. The results equal the full forward pass to
float rounding. Models it cannot handle (other layer types, branches) use the full pass.

Memory. Occluded copies are made per batch (``batch_size`` positions at a time, never all at once),
so memory is bounded by ``batch_size`` whatever the number of positions.
"""

import dataclasses
import math
import weakref

import numpy as np

from zfkeras.io.validation import positive_int as _check_positive
from zfkeras.nn.adjoint import crop_windows, forward, inside
from zfkeras.nn.fields import changed_start, changed_windows, layer_steps
from zfkeras.nn.graph import Graph
from zfkeras.nn.precision import compute_function
from zfkeras.nn.probe import KerasProbe


@dataclasses.dataclass
class OcclusionResult:
    """Occlusion maps of one image; every map is ``[rows, cols]`` on the grid of ``positions``.

    Attributes:
        image: ``[H, W, C]`` raw pixels, the unoccluded model input.
        positions: int ``[rows, cols, 2]``, (y, x) of the square's top-left corner (model-input pixels).
        feature_activity: ``[rows, cols]`` sum of feature map ``feature_map`` of ``layer`` (panel b).
        true_class_prob: ``[rows, cols]`` probability of class ``label`` (panel d).
        top_label: int ``[rows, cols]`` most probable class (panel e).
        projection: ``[H, W, C]`` projection of the map's strongest activation in the unoccluded
            image, in the model's mean-subtracted input space (panel c), by backward ``rule``.
        layer, feature_map: which feature map (b) and (c) show.
        label: the class whose probability (d) shows.
        patch, stride: square side and grid step in pixels.
        clean_activity: the map's total activity in the unoccluded image.
        clean_probs: ``[classes]`` probabilities of the unoccluded image.
        rule: the backward rule of ``projection`` ("deconvnet", "guided" or "gradient").
    """

    image: np.ndarray
    positions: np.ndarray
    feature_activity: np.ndarray
    true_class_prob: np.ndarray
    top_label: np.ndarray
    projection: np.ndarray
    layer: str
    feature_map: int
    label: int
    patch: int
    stride: int
    clean_activity: float
    clean_probs: np.ndarray
    rule: str = "deconvnet"


def default_patch(input_shape):
    """Square side used when none is given: a quarter of the input height (7 px at 28, 56 at 224)."""
    return max(1, int(input_shape[0]) // 4)


def default_stride(input_shape):
    """Grid step used when none is given: 1 px at 28x28, 8 px at 224x224 (a 28x28 grid)."""
    return max(1, int(input_shape[0]) // 28)


def occluder_grid(input_shape, patch, stride):
    """Top-left corners ``[rows, cols, 2]`` (int, may be negative) of the square (see module docs)."""
    height, width = int(input_shape[0]), int(input_shape[1])
    _check_positive("patch", patch)
    _check_positive("stride", stride)
    ys = np.arange(0, height, stride) - patch // 2
    xs = np.arange(0, width, stride) - patch // 2
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1)
    return grid.astype("int64")


def fill_values(probe, fill=None):
    """Raw pixel values ``[H, W, C]`` the square paints: the mean image (default) or a constant.

    ``fill`` may be None, a number, or one value per channel.
    """
    shape = tuple(probe.input_shape)
    if fill is None:
        mean = probe.mean_image
        return np.broadcast_to(np.zeros(shape, "float32") if mean is None else np.asarray(mean, "float32"), shape)
    fill = np.asarray(fill, dtype="float32")
    if fill.ndim > 1 or (fill.ndim == 1 and fill.shape[0] not in (1, shape[-1])) or not np.all(np.isfinite(fill)):
        raise ValueError(f"fill must be None (the mean image), a finite number or {shape[-1]} numbers (one per channel), got {fill.tolist()}")
    return np.broadcast_to(fill, shape)


def occlude(image, fill, corners, patch):
    """Copies of ``image`` ``[H, W, C]``, square ``patch`` x ``patch`` at each corner ``[B, 2]`` painted
    with ``fill`` ``[H, W, C]``; the part of the square outside the image is dropped. -> ``[B, H, W, C]``."""
    height, width = image.shape[:2]
    copies = np.repeat(np.asarray(image, "float32")[None], len(corners), axis=0)
    for copy, (y, x) in zip(copies, corners):
        y0, y1 = max(int(y), 0), min(int(y) + patch, height)
        x0, x1 = max(int(x), 0), min(int(x) + patch, width)
        copy[y0:y1, x0:x1] = fill[y0:y1, x0:x1]
    return copies


class OcclusionEvaluator:
    """Feature activity and class probabilities of occluded copies of one image.

    The unoccluded image is run once at construction (``clean_maps``, ``clean_probs``) and kept:
    the chosen feature map defaults to the one with the strongest activation there, and an
    incremental evaluator that recomputes only the region the square changes can start from it.
    :meth:`evaluate` is the one step :func:`occlusion_map` repeats; replace it to change how a
    batch of positions is evaluated.

    For a :class:`~zfkeras.nn.probe.KerasProbe`, one forward pass per batch gives both the layer's
    maps and the probabilities; other probes answer with ``features`` then ``predict``.

    Args:
        probe: a :class:`~zfkeras.nn.probe.Probe`.
        image: ``[H, W, C]`` raw pixels at ``probe.input_shape``.
        layer: a conv layer of ``probe.layer_names`` (default the top one).
        patch: side of the square in pixels.
        fill: see :func:`fill_values`.
        feature_map: index of the map whose total activity is recorded (default: strongest).
        incremental: recompute only what the square changes (module docs) where the model
            allows; False always runs the full forward pass. ``self.incremental`` says which runs.
        approximate: None (exact), or a fraction in (0, 1): APPROXIMATE results, Krypton's
            projective-field threshold (``keep`` of :class:`IncrementalForward`); needs a model
            the incremental path handles.
    """

    def __init__(self, probe, image, layer=None, patch=None, fill=None, feature_map=None, incremental=True, approximate=None):
        self.probe = probe
        self.image = probe.check_images(np.asarray(image)[None])[0]
        self.layer = probe.check_layers(layer if layer is not None else probe.layer_names[-1], probe.layer_names)[0]
        self.patch = default_patch(probe.input_shape) if patch is None else patch
        _check_positive("patch", self.patch)
        self.patch = int(self.patch)
        self.fill = fill_values(probe, fill)
        keep = 1.0 if approximate is None else approximate
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise ValueError(f"approximate must be None or a fraction in (0, 1], got {approximate!r}")
        use = incremental and isinstance(probe, KerasProbe)
        self.incremental = _incremental_forward(probe, self.layer, self.patch, keep) if use else None
        if approximate is not None and self.incremental is None:
            raise ValueError("approximate needs the incremental path: a Keras chain of conv/pool/LRN layers and incremental=True")
        # The incremental path is float32 (exact, and faster than full passes in bfloat16), so its
        # clean pass is too; full passes compute in the probe's precision.
        precision = "float32" if self.incremental is not None else probe.precision
        self._fused = _fused_function(probe, self.layer, precision) if isinstance(probe, KerasProbe) else None
        maps, probs = self._forward(self.image[None])
        self.clean_maps, self.clean_probs = maps[0], probs[0]
        depth = self.clean_maps.shape[-1]
        if feature_map is None:
            feature_map = int(np.argmax(self.clean_maps.reshape(-1, depth).max(axis=0)))
        if isinstance(feature_map, bool) or not isinstance(feature_map, (int, np.integer)) or not 0 <= feature_map < depth:
            raise ValueError(f"feature_map must be an int in [0, {depth}) for layer {self.layer!r}, got {feature_map!r}")
        self.feature_map = int(feature_map)
        self.clean_activity = float(self.clean_maps[..., self.feature_map].sum())
        if self.incremental is not None:
            self._clean_pass = self.incremental.clean_pass(self.image)

    def _forward(self, images):
        """(maps of ``layer`` ``[B, h, w, K]``, probabilities ``[B, classes]``)."""
        if self._fused is not None:
            maps, probs = self._fused(images)
            return maps.numpy(), probs.numpy()
        maps = self.probe.features(images, [self.layer], batch_size=len(images))[self.layer]
        return maps, self.probe.predict(images, batch_size=len(images))

    def evaluate(self, corners):
        """Occlude at ``corners`` ``[B, 2]`` (top-left, pixels) -> (activity ``[B]``, probabilities ``[B, classes]``)."""
        if self.incremental is not None:
            activity, probs = self.incremental(self._clean_pass, self.fill, corners)
            return (self.clean_activity + activity[:, self.feature_map].astype("float64")).astype("float32"), probs
        images = occlude(self.image, self.fill, corners, self.patch)
        maps, probs = self._forward(images)
        return maps[..., self.feature_map].sum(axis=(1, 2), dtype="float64").astype("float32"), probs


class IncrementalForward:
    """Exact forward pass of copies of one image, each with one square changed, from its clean pass.

    Layer by layer up to the first Flatten/Dense, only the output window the square can change is
    recomputed: its input window (the changed window below plus the kernel's halo) is cut from the
    cached clean input map, with the changed window from below laid over it and the layer's padding
    where it runs past the map; the layer then runs unpadded on it. Windows have one size per layer
    (the largest any square position needs, kept inside the map), so a batch of positions runs as
    one tensor. The last spatial map is pasted into the clean one and the rest runs in full.

    Handles chains of SubtractMean, ZeroPadding2D, Conv2D, max pools, LRN, ReLU/Activation and
    Dropout (then Flatten, Dense, Dropout); raises ValueError for anything else.

    Args:
        probe: a :class:`~zfkeras.nn.probe.KerasProbe`.
        layer: the conv layer whose map totals are reported. patch: side of the square in pixels.
        keep: 1 (exact), or in (0, 1) for the APPROXIMATE mode of Krypton (Nakandala et al. 2019):
            each layer recomputes only that fraction of its changed window (centred) and takes
            the clean values outside it, dropping the faint border of the square's influence.
    """

    def __init__(self, probe, layer, patch, keep=1.0):
        import keras
        import tensorflow as tf

        from zfkeras.nn.layers import LocalResponseNormalization, SubtractMean, SwitchMaxPool

        layers = Graph(probe.model).chain("incremental occlusion")
        spatial = (
            SubtractMean,
            keras.layers.ZeroPadding2D,
            SwitchMaxPool,
            keras.layers.MaxPooling2D,
            LocalResponseNormalization,
            keras.layers.ReLU,
            keras.layers.Activation,
            keras.layers.Dropout,
        )
        self.steps = layer_steps(layers, probe.input_shape[:2])
        for layer_, _ in self.steps:
            plain_conv = type(layer_) is keras.layers.Conv2D and layer_.groups == 1 and layer_.data_format == "channels_last"
            if not (plain_conv or isinstance(layer_, spatial)):
                raise ValueError(f"incremental occlusion does not handle layer {layer_.name!r} ({type(layer_).__name__})")
        self.tail = layers[len(self.steps) :]
        if not all(isinstance(t, (keras.layers.Flatten, keras.layers.Dense, keras.layers.Dropout)) for t in self.tail):
            raise ValueError("incremental occlusion needs Flatten/Dense/Dropout after the spatial layers")
        selected = probe.deconvnet.selection_layer(layer)
        self.selected = next(i for i, (layer_, _) in enumerate(self.steps) if layer_ is selected)
        self.patch = int(patch)
        self.keep = float(keep)
        self.windows = changed_windows(self.steps, (self.patch, self.patch), self.keep)
        self._pools = (SwitchMaxPool, keras.layers.MaxPooling2D)
        maps = [tf.TensorSpec((1, *step.input_size, None), tf.float32) for _, step in self.steps]
        maps.append(tf.TensorSpec((1, *self.steps[-1][1].output_size, None), tf.float32))
        spec = [
            maps,
            tf.TensorSpec(probe.input_shape, tf.float32),
            tf.TensorSpec((None, 2), tf.int32),
            [tf.TensorSpec((None, 2), tf.int32)] * len(self.steps),
        ]
        self._run = tf.function(self._run_batch, input_signature=spec)

    def clean_pass(self, image):
        """Every spatial layer's input map ``[1, h, w, c]`` for ``image`` ``[H, W, C]``, then the last one's output."""
        import tensorflow as tf

        x = tf.constant(np.asarray(image, "float32")[None])
        maps = []
        for layer, _ in self.steps:
            maps.append(x)
            x, _ = forward(layer, x, switches=False)
        return maps + [x]

    def _run_batch(self, clean, fill, corners, starts):
        import tensorflow as tf

        values, previous, size = crop_windows(fill, corners, (self.patch, self.patch)), corners, (self.patch,) * 2
        for index, ((layer, step), start, window) in enumerate(zip(self.steps, starts, self.windows)):
            begin = start * tf.constant(step.stride) - tf.constant(step.before)
            extent = tuple((w - 1) * s + k for w, s, k in zip(window, step.stride, step.kernel))
            pad = clean[index].dtype.min if isinstance(layer, self._pools) else 0.0
            # Clean input window (padding past the map), with the changed window from below on top.
            x = crop_windows(clean[index][0], begin, extent, pad)
            changed = inside(begin - previous, extent, size) & inside(begin, extent, step.input_size)
            x = tf.where(changed, crop_windows(values, begin - previous, extent), x)
            values, _ = forward(layer, x, begin, switches=False)
            previous, size = start, window
            if index == self.selected:
                before = crop_windows(clean[index + 1][0], start, window)
                activity = tf.reduce_sum(tf.cast(values - before, tf.float64), axis=(1, 2))
        top = clean[-1]
        x = tf.where(inside(-previous, top.shape[1:3], size), crop_windows(values, -previous, top.shape[1:3]), top)
        for layer in self.tail:
            x, _ = forward(layer, x)
        return activity, x

    def starts(self, corners):
        """Top-left of every layer's changed output window for squares at ``corners`` ``[B, 2]``."""
        starts, start, changed = [], np.asarray(corners, "int64"), (self.patch, self.patch)
        for (_, step), window in zip(self.steps, self.windows):
            start = changed_start(step, start, window, changed)
            starts.append(start.astype("int32"))
            changed = window
        return starts

    def __call__(self, clean, fill, corners):
        """Squares at ``corners`` int ``[B, 2]`` (top-left, may be negative) painted with ``fill``
        ``[H, W, C]`` on the image of ``clean`` (:meth:`clean_pass`) -> (change of every map's total
        activity of ``layer`` ``[B, K]`` float64, probabilities ``[B, classes]``)."""
        corners = np.asarray(corners, "int32").reshape(-1, 2)
        activity, probs = self._run(clean, np.asarray(fill, "float32"), corners, self.starts(corners))
        return activity.numpy(), probs.numpy()


_INCREMENTAL = weakref.WeakKeyDictionary()  # probe -> {(layer, patch, keep): IncrementalForward or None}


def _incremental_forward(probe, layer, patch, keep=1.0):
    """The probe's :class:`IncrementalForward` for ``layer``, ``patch`` and ``keep`` (one trace
    shared by all images), or None where the model needs the full pass."""
    cache = _INCREMENTAL.setdefault(probe, {})
    key = (layer, patch, float(keep))
    if key not in cache:
        try:
            cache[key] = IncrementalForward(probe, layer, patch, keep)
        except ValueError:
            cache[key] = None  # not a chain of layers it knows
    return cache[key]


def occlusion_map(
    probe,
    image,
    label=None,
    patch=None,
    stride=None,
    fill=None,
    layer=None,
    feature_map=None,
    batch_size=64,
    progress=None,
    evaluator=None,
    rule="deconvnet",
):
    """Occlusion sensitivity of ``probe`` on one image (Fig. 7 panels b-e).

    Args:
        probe: a :class:`~zfkeras.nn.probe.Probe`.
        image: ``[H, W, C]`` raw pixels (0-255) at ``probe.input_shape``.
        label: class for panel (d); default the top class of the unoccluded image.
        patch, stride: square side and grid step in pixels (defaults :func:`default_patch`,
            :func:`default_stride`); grid and border convention in the module docstring.
        fill: None (training mean image, zero after preprocessing), a raw value, or one per channel.
        layer: conv layer for panels (b), (c); default the top conv layer.
        feature_map: map of ``layer``; default the strongest in the unoccluded image.
        batch_size: occluded copies evaluated (and held in memory) at a time.
        progress: optional callable, called with the number of positions done after each batch.
        evaluator: optional :class:`OcclusionEvaluator` (or a subclass) already built for this
            image; ``image``, ``layer``, ``patch``, ``fill`` and ``feature_map`` are then its own.
        rule: the backward rule of panel (c)'s projection (:meth:`zfkeras.nn.probe.Probe.project`).

    Returns:
        :class:`OcclusionResult`.
    """
    _check_positive("batch_size", batch_size)
    if evaluator is None:
        evaluator = OcclusionEvaluator(probe, image, layer=layer, patch=patch, fill=fill, feature_map=feature_map)
    classes = len(evaluator.clean_probs)
    label = int(np.argmax(evaluator.clean_probs)) if label is None else label
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < classes:
        raise ValueError(f"label must be a class index in [0, {classes}), got {label!r}")
    label = int(label)
    stride = default_stride(probe.input_shape) if stride is None else stride
    _check_positive("stride", stride)
    stride = int(stride)
    positions = occluder_grid(probe.input_shape, evaluator.patch, stride)
    corners = positions.reshape(-1, 2)
    activity = np.zeros(len(corners), "float32")
    probs = np.zeros(len(corners), "float32")
    top = np.zeros(len(corners), "int64")
    for start in range(0, len(corners), batch_size):
        batch = corners[start : start + batch_size]
        batch_activity, batch_probs = evaluator.evaluate(batch)
        activity[start : start + len(batch)] = batch_activity
        probs[start : start + len(batch)] = batch_probs[:, label]
        top[start : start + len(batch)] = np.argmax(batch_probs, axis=1)
        if progress is not None:
            progress(len(batch))
    projection = probe.project(evaluator.image[None], evaluator.layer, evaluator.feature_map, "max", rule=rule)[0]
    grid = positions.shape[:2]
    return OcclusionResult(
        image=evaluator.image,
        positions=positions,
        feature_activity=activity.reshape(grid),
        true_class_prob=probs.reshape(grid),
        top_label=top.reshape(grid),
        projection=projection,
        layer=evaluator.layer,
        feature_map=evaluator.feature_map,
        label=label,
        patch=evaluator.patch,
        stride=stride,
        clean_activity=evaluator.clean_activity,
        clean_probs=evaluator.clean_probs,
        rule=rule,
    )


def num_positions(input_shape, stride):
    """Number of square positions on the grid for ``stride`` (for progress bars)."""
    return math.ceil(int(input_shape[0]) / stride) * math.ceil(int(input_shape[1]) / stride)


_FUSED = weakref.WeakKeyDictionary()  # probe -> {layer: traced function}, so images share one trace


def _fused_function(probe, layer, precision="float32"):
    """``tf.function(images) -> (maps of layer, probabilities)``: one forward pass of a Keras model
    computing in ``precision`` (results float32)."""
    import keras
    import tensorflow as tf

    cache = _FUSED.setdefault(probe, {})
    key = (layer, precision)
    if key in cache:
        return cache[key]
    model = probe.model
    fused = keras.Model(model.inputs, [probe.deconvnet.selection_layer(layer).output, model.outputs[0]])
    spec = tf.TensorSpec((None, *probe.input_shape), tf.float32)
    cache[key] = compute_function(model, lambda x: fused(x, training=False), precision, input_signature=[spec])
    return cache[key]


@dataclasses.dataclass
class BoxSensitivity:
    """Where occlusion hurts, against the object's box (Fig. 7 made quantitative).

    Attributes:
        object_drop: mean drop of p(label) (unoccluded minus occluded) over the square positions
            whose centre lies in the box.
        background_drop: the same over the positions whose square does not touch the box (NaN if none).
        share_inside: the share of the occlusion map's total drop (negative drops clipped to 0)
            at positions whose centre lies in the box (NaN if nothing dropped).
        box_share: the share of the grid positions whose centre lies in the box: what
            ``share_inside`` would be if the drop ignored the object.
    """

    object_drop: float
    background_drop: float
    share_inside: float
    box_share: float

    def to_dict(self):
        return {key: (None if value != value else float(value)) for key, value in dataclasses.asdict(self).items()}


def box_sensitivity(result, box):
    """:class:`BoxSensitivity` of an :class:`OcclusionResult` against ``box`` = ``(x0, y0, x1, y1)``
    (model-input pixels, end exclusive), e.g. an Emoji-64 object box."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"box must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1, got {box!r}")
    corners = result.positions.astype(np.int64)
    centre = corners + result.patch // 2
    inside = (centre[..., 0] >= y0) & (centre[..., 0] < y1) & (centre[..., 1] >= x0) & (centre[..., 1] < x1)
    apart = (corners[..., 0] >= y1) | (corners[..., 0] + result.patch <= y0) | (corners[..., 1] >= x1) | (corners[..., 1] + result.patch <= x0)
    drop = float(result.clean_probs[result.label]) - result.true_class_prob
    positive = np.clip(drop, 0, None)
    total = positive.sum()
    return BoxSensitivity(
        object_drop=float(drop[inside].mean()) if inside.any() else float("nan"),
        background_drop=float(drop[apart].mean()) if apart.any() else float("nan"),
        share_inside=float(positive[inside].sum() / total) if total > 0 else float("nan"),
        box_share=float(inside.mean()),
    )
