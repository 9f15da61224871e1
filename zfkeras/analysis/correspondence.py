"""Correspondence analysis (paper Sec. 4.3, Table 1, Fig. 8): does masking the same part of
different objects change their features in the same way?

For images ``i = 1..N`` with the same part masked, ``eps_i = x_i - x~_i`` is the change of the
feature vector at one layer (``x_i`` original, ``x~_i`` masked; features flattened). For every
pair, ``H(sign eps_i, sign eps_j)`` is the Hamming distance between the two sign vectors
(entries in {-1, 0, +1}) divided by the feature length, i.e. the fraction of features whose
change differs in sign. Then

    Delta = sum over i != j of H(sign eps_i, sign eps_j)   (ordered pairs, so N (N-1) terms),

and Table 1's "mean feature sign change" is the mean of H over the N (N-1) / 2 pairs (H is
symmetric), reported with its standard deviation over the pairs. Lower means more consistent
changes: tighter correspondence.

Control: random masks of the same size as each part, placed independently per image uniformly at
random inside the image's object box (or anywhere in the image when none is given), redrawn
``draws`` times. Their pair values (all parts' sizes, all draws) make the "random" row.

Boxes are ``(y0, x0, y1, x1)`` in model-input pixels, rows ``y0 .. y1-1`` and columns
``x0 .. x1-1`` (end exclusive), inside the image. Masks paint raw pixels before the model's mean
subtraction: by default the training mean image (zero after mean subtraction), or a constant.
"""

import dataclasses

import numpy as np

from zfkeras.io.validation import positive_int

RANDOM = "random"


@dataclasses.dataclass
class PartScore:
    """Correspondence of one part (or the random control) at one layer.

    Attributes:
        pairs: ``[P]`` normalised Hamming distances of all unordered image pairs (for the random
            control: of every draw and every part size).
        mean, std: mean and population standard deviation of ``pairs`` (Table 1).
        delta: ``Delta`` (sum over ordered pairs); for the random control, its mean over draws
            and part sizes, with ``delta_std`` their standard deviation (0 for a real part).
    """

    pairs: np.ndarray
    mean: float
    std: float
    delta: float
    delta_std: float = 0.0


@dataclasses.dataclass
class CorrespondenceResult:
    """``scores[part][layer]`` -> :class:`PartScore`, parts in the given order then ``"random"``.

    ``random_boxes`` is int ``[draws, parts, N, 4]``: the random masks used, per draw and part size.
    """

    scores: dict
    layers: list
    parts: list
    random_boxes: np.ndarray


def sign_hamming(a, b):
    """Fraction of entries where ``sign(a)`` and ``sign(b)`` differ (arrays of the same size)."""
    a, b = np.sign(np.ravel(a)), np.sign(np.ravel(b))
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"feature vectors must be non-empty and equally long, got {a.size} and {b.size}")
    return float(np.mean(a != b))


def pairwise_sign_hamming(differences):
    """``[N, N]`` matrix of :func:`sign_hamming` between rows of ``differences`` ``[N, ...]``."""
    signs = np.sign(np.asarray(differences, dtype="float64").reshape(len(differences), -1))
    if signs.shape[1] == 0:
        raise ValueError("feature vectors must be non-empty")
    return (signs[:, None, :] != signs[None, :, :]).mean(axis=-1)


def delta(differences):
    """``Delta = sum_{i != j} H(sign eps_i, sign eps_j)`` for ``differences`` ``eps`` ``[N, ...]``."""
    return float(pairwise_sign_hamming(differences).sum())  # the diagonal is zero


def unordered_pairs(matrix):
    """Upper-triangle values of a square matrix: one per unordered pair ``i < j``."""
    return matrix[np.triu_indices(len(matrix), k=1)]


def check_boxes(boxes, input_shape, what="boxes"):
    """``boxes`` as int ``[N, 4]`` ``(y0, x0, y1, x1)``, or a ValueError naming the bad one."""
    boxes = np.asarray(boxes)
    height, width = int(input_shape[0]), int(input_shape[1])
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not (np.issubdtype(boxes.dtype, np.integer) or boxes.size == 0):
        raise ValueError(f"{what} must be integer (y0, x0, y1, x1) boxes, shape [N, 4], got {boxes.tolist()}")
    for index, (y0, x0, y1, x1) in enumerate(boxes.tolist()):
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise ValueError(
                f"{what}[{index}] = {[y0, x0, y1, x1]} is not a box inside the {height}x{width} input "
                "(need 0 <= y0 < y1 <= height, 0 <= x0 < x1 <= width; end exclusive)"
            )
    return boxes.astype("int64")


def mask_images(images, boxes, fill):
    """Copies of ``images`` ``[N, H, W, C]`` with box ``i`` of ``boxes`` ``[N, 4]`` painted with ``fill``
    (``[H, W, C]`` raw pixels at the same place, or a number)."""
    masked = np.array(images, dtype="float32", copy=True)
    fill = np.broadcast_to(np.asarray(fill, "float32"), masked.shape[1:])
    for image, (y0, x0, y1, x1) in zip(masked, boxes):
        image[y0:y1, x0:x1] = fill[y0:y1, x0:x1]
    return masked


def random_boxes(rng, sizes, regions, input_shape):
    """Boxes of ``sizes`` ``[N, 2]`` (h, w) at uniformly random places inside ``regions`` ``[N, 4]``.

    Where a region is smaller than the box, the box is centred on the region (kept in the image).
    """
    height, width = int(input_shape[0]), int(input_shape[1])
    boxes = []
    for (h, w), (ry0, rx0, ry1, rx1) in zip(sizes, regions):
        corner = []
        for low, high, side, limit in ((ry0, ry1, h, height), (rx0, rx1, w, width)):
            if high - low >= side:
                corner.append(int(rng.integers(low, high - side + 1)))
            else:
                corner.append(int(np.clip((low + high - side) // 2, 0, limit - side)))
        boxes.append([corner[0], corner[1], corner[0] + h, corner[1] + w])
    return np.asarray(boxes, dtype="int64")


def _score(pair_values, deltas):
    pair_values = np.concatenate(pair_values)
    deltas = np.asarray(deltas, dtype="float64")
    return PartScore(pair_values, float(pair_values.mean()), float(pair_values.std()), float(deltas.mean()), float(deltas.std()))


def correspondence(probe, images, parts, layers=None, objects=None, draws=10, seed=0, fill=None, batch_size=64):
    """Table 1: consistency of the feature change when the same part is masked in every image.

    Args:
        probe: a :class:`~zfkeras.nn.probe.Probe`.
        images: ``[N, H, W, C]`` raw pixels (0-255) at ``probe.input_shape``, ``N >= 2``.
        parts: ``{part name: boxes [N, 4]}``, one box per image (module docstring).
        layers: names from ``probe.feature_names``; default the top conv layer and ``fc7``.
        objects: optional ``[N, 4]`` object boxes that random masks stay inside.
        draws: number of random-mask draws (>= 1).
        seed: seed of the random masks.
        fill: None (training mean image), a raw value, or one value per channel.
        batch_size: images per forward pass.

    Returns:
        :class:`CorrespondenceResult`.
    """
    from zfkeras.analysis.occlusion import fill_values

    images = probe.check_images(images)
    count = len(images)
    if count < 2:
        raise ValueError(f"correspondence needs at least 2 images, got {count}")
    if not parts:
        raise ValueError("parts must name at least one part with one box per image")
    if RANDOM in parts:
        raise ValueError(f"{RANDOM!r} is reserved for the random-mask control; rename that part")
    positive_int("draws", draws)
    if layers is None:
        names = list(probe.feature_names)
        layers = [probe.layer_names[-1], "fc7" if "fc7" in names else names[-1]]
    layers = probe.check_layers(layers)
    boxes = {name: check_boxes(value, probe.input_shape, f"parts[{name!r}]") for name, value in parts.items()}
    for name, value in boxes.items():
        if len(value) != count:
            raise ValueError(f"parts[{name!r}] has {len(value)} boxes for {count} images; give one per image")
    height, width = probe.input_shape[:2]
    regions = np.tile([0, 0, height, width], (count, 1)) if objects is None else check_boxes(objects, probe.input_shape, "objects")
    if len(regions) != count:
        raise ValueError(f"objects has {len(regions)} boxes for {count} images; give one per image")
    fill = fill_values(probe, fill)
    original = probe.features(images, layers, batch_size=batch_size)

    def pairs_and_delta(masks):
        masked = probe.features(mask_images(images, masks, fill), layers, batch_size=batch_size)
        result = {}
        for layer in layers:
            matrix = pairwise_sign_hamming(original[layer] - masked[layer])
            result[layer] = (unordered_pairs(matrix), float(matrix.sum()))
        return result

    scores = {}
    for name, masks in boxes.items():
        measured = pairs_and_delta(masks)
        scores[name] = {layer: _score([measured[layer][0]], [measured[layer][1]]) for layer in layers}
    rng = np.random.default_rng(seed)
    chosen = np.zeros((draws, len(boxes), count, 4), dtype="int64")
    collected = {layer: ([], []) for layer in layers}
    for draw in range(draws):
        for index, masks in enumerate(boxes.values()):
            chosen[draw, index] = random_boxes(rng, masks[:, 2:] - masks[:, :2], regions, probe.input_shape)
            measured = pairs_and_delta(chosen[draw, index])
            for layer in layers:
                collected[layer][0].append(measured[layer][0])
                collected[layer][1].append(measured[layer][1])
    scores[RANDOM] = {layer: _score(*collected[layer]) for layer in layers}
    return CorrespondenceResult(scores=scores, layers=list(layers), parts=list(boxes), random_boxes=chosen)
