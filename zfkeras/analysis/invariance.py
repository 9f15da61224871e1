"""Feature invariance to vertical translation, scale and rotation (paper Sec. 4, Fig. 5).

Each image is transformed by a range of amounts; for each amount we record, per chosen layer, how
far the feature vector moved and the probability of the true class.

Transforms (of a model-size image ``[H, W, C]``, about its centre ``c = ((H-1)/2, (W-1)/2)`` in
(row, column) pixel coordinates; rows grow downwards):
    ``translation`` by ``t`` pixels: content moves DOWN by ``t`` (negative: up);
        output pixel ``p`` shows input point ``p - (t, 0)``.
    ``scale`` by ``s``: content is magnified ``s`` times about the centre (``s < 1`` shrinks);
        output pixel ``p`` shows input point ``c + (p - c) / s``.
    ``rotation`` by ``a`` degrees: content turns COUNTER-CLOCKWISE as displayed; a point right
        of the centre at 90 degrees ends up above it. Output ``p`` shows input point
        ``c + R(a)^T (p - c)``.
Input points are read by bilinear interpolation (exact for integer shifts and quarter turns). An
output pixel whose input point falls outside the image shows the fill: by default
(``"background"``) the image's background colour, taken as the per-channel median of its
outermost ring of pixels (black for Fashion-MNIST: the object moves on its own background); or
``"edge"``, the nearest border pixel (streaks where the object touches the border); or ``"mean"``,
the model's training mean image at that pixel (zero after mean subtraction); or a constant raw
value.

Normalisation. The distance at layer ``l`` is relative to the untransformed feature vector,
``||x_l(T(image)) - x_l(image)||_2 / ||x_l(image)||_2`` (features flattened), so layers with very
different sizes and scales share one axis: 0 is "unchanged", 1 is "moved by as much as the whole
feature vector". It is NaN when the original feature vector is all zeros.
"""

import dataclasses

import numpy as np

TRANSFORMS = ("translation", "scale", "rotation")
UNITS = {"translation": "pixels (down)", "scale": "factor", "rotation": "degrees (counter-clockwise)"}
IDENTITY = {"translation": 0.0, "scale": 1.0, "rotation": 0.0}


@dataclasses.dataclass
class InvarianceCurves:
    """One transform applied to ``N`` images over ``T`` amounts.

    Attributes:
        transform: one of :data:`TRANSFORMS`.
        amounts: ``[T]`` in the units of :data:`UNITS`.
        distances: ``{layer: [N, T]}`` relative feature distances (see module docstring).
        true_class_prob: ``[N, T]`` probability of each image's label.
        labels: ``[N]`` the class of each image whose probability is recorded.
    """

    transform: str
    amounts: np.ndarray
    distances: dict
    true_class_prob: np.ndarray
    labels: np.ndarray


def default_amounts(input_shape):
    """``{transform: amounts}``: shifts of whole pixels up to a quarter of the height each way
    (15 steps), scales 0.6-1.6 by 0.1, rotations 0-360 degrees by 15."""
    reach = int(input_shape[0]) / 4
    return {
        "translation": np.unique(np.round(np.linspace(-reach, reach, 15))),
        "scale": np.round(np.linspace(0.6, 1.6, 11), 6),
        "rotation": np.arange(0.0, 361.0, 15.0),
    }


def default_layers(probe):
    """Layer 1 and layer 7 of the paper: the first conv layer and ``fc7`` (else the last feature)."""
    names = list(probe.feature_names)
    return [names[0], "fc7" if "fc7" in names else names[-1]]


def source_points(shape, transform, amount):
    """Input (row, column) read by each output pixel: float ``[H, W, 2]`` (see module docstring)."""
    height, width = int(shape[0]), int(shape[1])
    rows, cols = np.meshgrid(np.arange(height, dtype="float64"), np.arange(width, dtype="float64"), indexing="ij")
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    amount = float(amount)
    if transform == "translation":
        return np.stack([rows - amount, cols], axis=-1)
    if transform == "scale":
        if not amount > 0:
            raise ValueError(f"scale must be > 0, got {amount}")
        return np.stack([cy + (rows - cy) / amount, cx + (cols - cx) / amount], axis=-1)
    if transform == "rotation":
        angle = np.deg2rad(amount)
        cos, sin = np.cos(angle), np.sin(angle)
        dy, dx = rows - cy, cols - cx
        return np.stack([cy + sin * dx + cos * dy, cx + cos * dx - sin * dy], axis=-1)
    raise ValueError(f"unknown transform {transform!r}; use one of {', '.join(TRANSFORMS)}")


FILLS = ("background", "edge", "mean")


def background(image):
    """Per-channel median of the outermost ring of pixels of ``image`` ``[H, W, C]`` -> ``[C]``."""
    image = np.asarray(image)
    ring = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return np.median(ring, axis=0)


def transform_image(image, transform, amount, fill="background"):
    """``image`` ``[H, W, C]`` transformed by ``amount`` (module docstring). Uncovered pixels take
    ``fill``: ``"background"`` (:func:`background`), ``"edge"`` (the nearest border pixel),
    ``[H, W, C]`` raw pixels at the output location, or a number. Float32."""
    image = np.asarray(image, dtype="float64")
    height, width = image.shape[:2]
    points = source_points(image.shape, transform, amount)
    sy, sx = points[..., 0], points[..., 1]
    tolerance = 1e-6  # cos(90 degrees) is 6e-17, not 0: keep exact edge points inside
    inside = (sy >= -tolerance) & (sy <= height - 1 + tolerance) & (sx >= -tolerance) & (sx <= width - 1 + tolerance)
    sy, sx = np.clip(sy, 0, height - 1), np.clip(sx, 0, width - 1)
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    top = image[y0, x0] * (1 - wx) + image[y0, x1] * wx
    bottom = image[y1, x0] * (1 - wx) + image[y1, x1] * wx
    sampled = top * (1 - wy) + bottom * wy
    if isinstance(fill, str):
        if fill == "edge":
            return sampled.astype("float32")  # clipped points read the border
        if fill != "background":
            raise ValueError(f"fill must be 'background', 'edge', raw pixels or a number, got {fill!r}")
        fill = background(image)
    fill = np.broadcast_to(np.asarray(fill, dtype="float64"), image.shape)
    return np.where(inside[..., None], sampled, fill).astype("float32")


def resolve_fill(probe, fill):
    """``fill`` as :func:`transform_image` takes it: ``"background"``/``"edge"`` as they are, raw
    pixels ``[H, W, C]`` for ``"mean"`` (``probe.mean_image``), a number, or one number per channel."""
    from zfkeras.analysis.occlusion import fill_values

    accepted = "'background', 'edge', 'mean', a number or one number per channel"
    if isinstance(fill, str):
        if fill not in FILLS:
            raise ValueError(f"fill must be {accepted}, got {fill!r}")
        return fill_values(probe, None) if fill == "mean" else fill
    if fill is None:
        raise ValueError(f"fill must be {accepted}, got None")
    return fill_values(probe, fill)


def relative_distances(features, original):
    """``||features[t] - original|| / ||original||`` per row: ``[T, ...]``, ``[...]`` -> ``[T]``."""
    features = np.asarray(features, dtype="float64").reshape(len(features), -1)
    original = np.asarray(original, dtype="float64").reshape(-1)
    norm = np.linalg.norm(original)
    distance = np.linalg.norm(features - original, axis=1)
    return distance / norm if norm > 0 else np.full(len(features), np.nan)


def invariance_curves(probe, images, labels=None, amounts=None, layers=None, fill="background", batch_size=64):
    """Fig. 5 curves for ``images`` under each transform.

    Args:
        probe: a :class:`~zfkeras.nn.probe.Probe`.
        images: ``[N, H, W, C]`` raw pixels (0-255) at ``probe.input_shape``.
        labels: ``[N]`` true classes; default each image's top class untransformed.
        amounts: ``{transform: [T] amounts}``, any subset of :data:`TRANSFORMS` (default
            :func:`default_amounts`).
        layers: names from ``probe.feature_names`` (default :func:`default_layers`).
        fill: what a transform uncovers: ``"background"`` (each image's border median),
            ``"edge"`` (the nearest border pixel), ``"mean"`` (the training mean image), a raw
            value, or one value per channel.
        batch_size: images per forward pass.

    Returns:
        ``{transform: InvarianceCurves}`` in the order of ``amounts``.
    """
    images = probe.check_images(images)
    layers = probe.check_layers(default_layers(probe) if layers is None else layers)
    amounts = default_amounts(probe.input_shape) if amounts is None else amounts
    unknown = [name for name in amounts if name not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown transform {unknown[0]!r}; use one of {', '.join(TRANSFORMS)}")
    fill = resolve_fill(probe, fill)
    original = probe.features(images, layers, batch_size=batch_size)
    if labels is None:
        labels = np.argmax(probe.predict(images, batch_size=batch_size), axis=1)
    labels = np.asarray(labels)
    classes = len(probe.class_names)
    valid = labels.shape == (len(images),) and np.issubdtype(labels.dtype, np.integer)
    if not valid or (len(labels) and (labels.min() < 0 or labels.max() >= classes)):
        raise ValueError(f"labels must be {len(images)} class indices in [0, {classes}), got {labels.tolist()}")
    curves = {}
    for transform, values in amounts.items():
        values = np.asarray(values, dtype="float64").reshape(-1)
        distances = {layer: np.zeros((len(images), len(values))) for layer in layers}
        probs = np.zeros((len(images), len(values)))
        for index, image in enumerate(images):
            moved = np.stack([transform_image(image, transform, amount, fill) for amount in values])
            features = probe.features(moved, layers, batch_size=batch_size)
            for layer in layers:
                distances[layer][index] = relative_distances(features[layer], original[layer][index])
            probs[index] = probe.predict(moved, batch_size=batch_size)[:, labels[index]]
        curves[transform] = InvarianceCurves(transform, values, distances, probs, labels.astype("int64"))
    return curves
