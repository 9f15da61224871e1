"""Emoji-64: a many-class colour analogue of ImageNet, built from three artists' emoji drawings.

Each class is one emoji (its Unicode code point). Three artists drew every class: Google's Noto
Emoji, Twitter's Twemoji and Microsoft's Fluent Emoji 3D. Every image is one drawing composited
at a random scale, position and rotation onto a crop of a real photograph. Two artists make the
training split and the third is held out whole as the test split, so test accuracy measures
generalisation to drawings the model never saw, as ImageNet's validation photos are new photos.

Everything is seeded per image (seed, split, class, artist, index), so the same seed gives the
same bytes whatever the order or the number of threads, and a subset of classes holds exactly
the images the whole set holds for those classes.
"""

import dataclasses
import io
import json
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

__all__ = ["ARTISTS", "Artist", "EmojiClass", "Placement", "choose_classes", "composite", "read_catalogue", "read_drawings", "write_split"]


@dataclasses.dataclass(frozen=True)
class Artist:
    """One artist's drawings: the npm ``package``, the tarball ``member`` pattern of one drawing
    (``{image}``: emoji.json's file name, ``{unified}``: the lower-case code points), the licence
    of the drawings and the credit to print."""

    package: str
    version: str
    member: str
    licence: str
    credit: str


ARTISTS = {
    "google": Artist(
        "emoji-datasource-google", "16.0.0", "package/img/google/64/{image}", "Apache-2.0", "Noto Emoji by Google (github.com/googlefonts/noto-emoji)"
    ),
    "twitter": Artist(
        "emoji-datasource-twitter",
        "16.0.0",
        "package/img/twitter/64/{image}",
        "CC-BY-4.0",
        "Twemoji by Twitter, Inc and other contributors (twemoji.twitter.com)",
    ),
    "fluent3d": Artist(
        "@lobehub/fluent-emoji-3d",
        "1.1.0",
        "package/assets/{unified}.webp",
        "MIT",
        "Fluent Emoji 3D by Microsoft (github.com/microsoft/fluentui-emoji)",
    ),
}

# Classes a horizontal flip (a training augmentation) would turn into another class, or whose
# meaning is a direction: any short name with one of these words is left out.
DIRECTION_WORDS = {"left", "right", "leftwards", "rightwards", "forward", "backward", "rewind", "clockwise", "counterclockwise"}
EXCLUDED_CATEGORIES = {"Flags", "Component"}
SPLIT_CODES = {"train": 0, "test": 1}


@dataclasses.dataclass(frozen=True)
class EmojiClass:
    """One class: its folder ``name`` (a short name safe in paths), emoji.json's ``unified`` code
    points, ``image`` file name, ``category``, ``subcategory`` and ``sort_order`` (the stable number
    every image's seed uses)."""

    name: str
    unified: str
    image: str
    category: str
    subcategory: str
    sort_order: int


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a drawing went: scaled to ``side`` pixels, rotated by ``angle`` degrees (counter-
    clockwise, canvas expanded), cropped at ``crop`` (x, y: the top-left of the drawing's tight
    box in the rotated canvas) and pasted with that box's top-left at ``offset`` (x, y)."""

    side: int
    angle: float
    crop: tuple
    offset: tuple


def read_catalogue(tarball):
    """emoji.json of an emoji-datasource tarball: a list of dicts, one per base emoji."""
    with tarfile.open(tarball) as archive:
        return json.load(archive.extractfile("package/emoji.json"))


def _folder_name(entry):
    names = [entry["short_name"], *entry.get("short_names", [])]
    safe = [n for n in names if n and all(c.isalnum() or c in "_-" for c in n)]
    name = safe[0] if safe else "".join(c if c.isalnum() or c in "_-" else "_" for c in entry["short_name"])
    return name.lower()


def choose_classes(catalogue, available, limit=None, seed=0):
    """The classes: base emoji drawn by every artist (``available``: artist -> set of tarball
    members), not flags or skin-tone swatches, and no name with a direction word.

    Args:
        catalogue: emoji.json entries (:func:`read_catalogue`).
        available: ``{artist: set of member names}``.
        limit: keep a seeded random ``limit`` of them (None: all).
        seed: the subset's seed.

    Returns:
        list of :class:`EmojiClass`, sorted by folder name.
    """
    classes, seen = [], set()
    for entry in catalogue:
        if entry["category"] in EXCLUDED_CATEGORIES:
            continue
        name = _folder_name(entry)
        if DIRECTION_WORDS & set(name.replace("-", "_").split("_")) or name in seen:
            continue
        item = EmojiClass(name, entry["unified"], entry["image"], entry["category"], entry["subcategory"], int(entry["sort_order"]))
        if all(_member(artist, item) in members for artist, members in available.items()):
            classes.append(item)
            seen.add(name)
    classes.sort(key=lambda c: c.name)
    if limit is not None and limit < len(classes):
        keep = np.random.default_rng(seed).choice(len(classes), size=limit, replace=False)
        classes = [classes[i] for i in sorted(keep)]
    return classes


def _member(artist, item):
    return ARTISTS[artist].member.format(image=item.image, unified=item.unified.lower())


def tarball_members(tarball):
    """The set of member names of a tarball."""
    with tarfile.open(tarball) as archive:
        return set(archive.getnames())


def read_drawings(tarball, artist, classes):
    """One artist's drawing of each class: ``{class name: uint8 [H, W, 4] RGBA}``."""
    wanted = {_member(artist, item): item.name for item in classes}
    drawings = {}
    with tarfile.open(tarball) as archive:
        for member in archive:
            if member.name in wanted:
                with Image.open(io.BytesIO(archive.extractfile(member).read())) as image:
                    drawings[wanted[member.name]] = np.asarray(image.convert("RGBA"))
    missing = sorted(set(wanted.values()) - set(drawings))
    if missing:
        raise ValueError(f"{tarball}: no {artist} drawing of {', '.join(missing[:5])}")
    return drawings


def _tight_box(alpha, threshold):
    rows, cols = np.nonzero(alpha > threshold)
    if rows.size == 0:
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def _render(layer, mode, side, angle):
    """Scale a drawing (or a mask of it) to ``side`` pixels and rotate it, canvas expanded."""
    resample = Image.LANCZOS if mode == "RGBa" else Image.BILINEAR
    scaled = layer.resize((side, side), resample)
    return scaled.rotate(angle, resample=Image.BICUBIC, expand=True)


def composite(drawing, photo, rng, size=64, scale=(0.4, 0.9), max_angle=30.0):
    """One image: ``drawing`` at a random scale, position and rotation on a random crop of ``photo``.

    Args:
        drawing: uint8 [h, w, 4] RGBA, square.
        photo: uint8 [H, W, 3] RGB, at least ``size`` pixels a side.
        rng: a numpy Generator (the only source of randomness).
        size: side of the image in pixels.
        scale: the drawing's side is ``size`` times a uniform draw from this range (the
            drawing's whole frame, margins included; it shrinks if its rotated tight box would not fit).
        max_angle: rotation drawn uniformly from [-max_angle, max_angle] degrees.

    Returns:
        (uint8 [size, size, 3] RGB image, object box (x0, y0, x1, y1) in pixels, end exclusive,
        of the drawing's at-least-half-opaque pixels, :class:`Placement`).
    """
    height, width = photo.shape[:2]
    side = int(round(min(height, width) * rng.uniform(0.2, 1.0)))
    side = max(side, min(size, height, width))
    y, x = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    background = Image.fromarray(photo).resize((size, size), Image.BICUBIC, box=(x, y, x + side, y + side), reducing_gap=2.0)
    if rng.random() < 0.5:
        background = background.transpose(Image.FLIP_LEFT_RIGHT)
    object_side = int(round(size * rng.uniform(*scale)))
    angle = float(rng.uniform(-max_angle, max_angle))
    source = Image.fromarray(drawing, "RGBA").convert("RGBa")
    while True:
        rotated = _render(source, "RGBa", object_side, angle).convert("RGBA")
        box = _tight_box(np.asarray(rotated)[..., 3], 0)
        if box[2] - box[0] <= size and box[3] - box[1] <= size:
            break
        object_side -= 1
    piece = rotated.crop(box)
    offset = (int(rng.integers(0, size - piece.width + 1)), int(rng.integers(0, size - piece.height + 1)))
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(piece, offset)
    image = Image.alpha_composite(background.convert("RGBA"), canvas).convert("RGB")
    object_box = _tight_box(np.asarray(canvas)[..., 3], 127)
    return np.asarray(image), object_box, Placement(object_side, angle, box[:2], offset)


def place_box(box, drawing_shape, placement, size, alpha=None):
    """Where a box of the drawing (x0, y0, x1, y1, drawing pixels) lands in the image: the tight box
    of the at-least-half-covered pixels of that region (times the drawing's alpha, when given)
    after the same scaling, rotation and paste; None if nothing of it stays visible."""
    height, width = drawing_shape
    mask = np.zeros((height, width), np.float32)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    mask[y0:y1, x0:x1] = 255.0
    if alpha is not None:
        mask *= alpha.astype(np.float32) / 255.0
    layer = _render(Image.fromarray(mask.astype(np.uint8), "L"), "L", placement.side, placement.angle)
    canvas = np.zeros((size, size), np.uint8)
    moved = np.asarray(layer)[placement.crop[1] :, placement.crop[0] :]
    x, y = placement.offset
    fit = moved[: size - y, : size - x]
    canvas[y : y + fit.shape[0], x : x + fit.shape[1]] = fit
    return _tight_box(canvas, 127)


def image_rng(seed, split, item, artist_index, index):
    """The generator of one image: a function of its seed, split, class, artist and index only."""
    return np.random.default_rng([seed, SPLIT_CODES[split], item.sort_order, artist_index, index])


def write_split(out_dir, split, classes, drawings, photos, per_drawing, seed, size=64, threads=2, progress=None):
    """Write ``out_dir/split/<class>/<artist>-<k>.png`` for every class, artist and k < ``per_drawing``.

    Args:
        drawings: ``{artist: {class name: RGBA array}}``, the artists of this split.
        photos: list of uint8 [H, W, 3] background photos of this split.
        progress: called with the number of images written after each class (or None).

    Returns:
        ``{relative path: {"object": box, "parts": {part: box}, "placement": [...], "artist": name,
        "photo": index}}`` (paths relative to ``out_dir``; boxes ``(x0, y0, x1, y1)`` in pixels, end
        exclusive; ``parts`` only for face drawings whose eyes and mouth :func:`face_parts` found).
    """
    artists = sorted(drawings)
    parts = {
        (artist, item.name): face_parts(drawings[artist][item.name]) for artist in artists for item in classes if item.subcategory.startswith("face-")
    }

    def one_class(item):
        folder = os.path.join(out_dir, split, item.name)
        os.makedirs(folder, exist_ok=True)
        records = {}
        for artist in artists:
            for k in range(per_drawing):
                rng = image_rng(seed, split, item, list(ARTISTS).index(artist), k)
                photo = int(rng.integers(len(photos)))
                pixels, box, placement = composite(drawings[artist][item.name], photos[photo], rng, size)
                name = f"{artist}-{k:03d}.png"
                Image.fromarray(pixels).save(os.path.join(folder, name), optimize=False)
                record = {
                    "artist": artist,
                    "photo": photo,
                    "object": list(box),
                    "placement": [placement.side, round(placement.angle, 6), list(placement.crop), list(placement.offset)],
                }
                drawn = parts.get((artist, item.name))
                if drawn:
                    shape = drawings[artist][item.name].shape[:2]
                    placed = {part: place_box(part_box, shape, placement, size) for part, part_box in drawn.items()}
                    if all(placed.values()):
                        record["parts"] = {part: list(part_box) for part, part_box in placed.items()}
                records[f"{split}/{item.name}/{name}"] = record
        return records

    boxes = {}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for records in pool.map(one_class, classes):
            boxes.update(records)
            if progress is not None:
                progress(len(records))
    return boxes


def face_parts(drawing, darkness=0.55, min_area=0.002):
    """The eyes and mouth of a face drawing, found as its dark features: ``{"left_eye", "right_eye",
    "mouth"}`` boxes ``(x0, y0, x1, y1)`` in drawing pixels (end exclusive; left is the viewer's
    left), or None when they are not two eyes side by side above one mouth.

    A feature is a connected region of opaque pixels darker than ``darkness`` times the drawing's
    median luminance (the face's colour) and at least ``min_area`` of the drawing's opaque area.
    The eyes are the two largest features above the middle of the opaque area, one on each side of
    its centre and at about the same height; the mouth is the largest one below the middle, near
    the centre line.
    """
    from scipy import ndimage

    pixels = np.asarray(drawing, np.float32)
    opaque = pixels[..., 3] > 128
    if opaque.sum() < 16:
        return None
    luminance = pixels[..., :3] @ np.asarray([0.299, 0.587, 0.114], np.float32)
    labels, count = ndimage.label(opaque & (luminance < darkness * np.median(luminance[opaque])))
    rows, cols = np.nonzero(opaque)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    middle_y, middle_x, height, width = (top + bottom) / 2, (left + right) / 2, bottom - top, right - left
    features = []
    for index, found in enumerate(ndimage.find_objects(labels), 1):
        area = int((labels[found] == index).sum())
        if area >= min_area * opaque.sum():
            y = (found[0].start + found[0].stop) / 2
            x = (found[1].start + found[1].stop) / 2
            features.append((area, y, x, (found[1].start, found[0].start, found[1].stop, found[0].stop)))
    upper = sorted((f for f in features if f[1] < middle_y), reverse=True)[:2]
    lower = sorted((f for f in features if f[1] > middle_y + 0.05 * height), reverse=True)[:1]
    if len(upper) < 2 or not lower:
        return None
    eyes = sorted(upper, key=lambda f: f[2])
    mouth = lower[0]
    side_by_side = eyes[0][2] < middle_x < eyes[1][2] and abs(eyes[0][1] - eyes[1][1]) < 0.15 * height
    centred = abs(mouth[2] - middle_x) < 0.2 * width and mouth[1] > max(eyes[0][1], eyes[1][1])
    if not (side_by_side and centred):
        return None
    return {"left_eye": eyes[0][3], "right_eye": eyes[1][3], "mouth": mouth[3]}
