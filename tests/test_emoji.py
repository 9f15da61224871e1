"""Emoji-64's builder on a few generated classes: the same seed gives the same bytes, boxes lie on
the object, face parts on the features, and no drawing of the held-out artist reaches training.

The three "artists" are fake npm tarballs laid out like the real ones, each drawing every class in
its own pure colour (red, green, blue), so where a drawing landed can be told pixel by pixel.
"""

import io
import json
import os
import tarfile
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from pipelines.cli import main
from zfkeras.data import emoji

COLOURS = {"google": (255, 0, 0), "twitter": (0, 255, 0), "fluent3d": (0, 0, 255)}
CATALOGUE = [  # (short name, category, subcategory, sort order)
    ("cat", "Animals & Nature", "animal-mammal", 5),
    ("grinning", "Smileys & Emotion", "face-smiling", 1),
    ("point_left", "People & Body", "hand-single-finger", 7),  # a direction word: left out
    ("flag-fr", "Flags", "country-flag", 9),  # a flag: left out
    ("rocket", "Travel & Places", "transport-air", 3),
]


def drawing(artist, name, size):
    """A disc in the artist's colour; the face has two dark eyes and a dark mouth."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    margin = size // 10
    draw.ellipse([margin, margin, size - margin, size - margin], fill=COLOURS[artist] + (255,))
    if name == "grinning":
        s = size / 64
        for x in (22, 38):
            draw.rectangle([x * s, 20 * s, (x + 5) * s, 28 * s], fill=(10, 10, 10, 255))
        draw.rectangle([22 * s, 40 * s, 43 * s, 46 * s], fill=(10, 10, 10, 255))
    return image


def tarball(path, members):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def encoded(image, fmt):
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Fake npm tarballs of the three artists and a fake foolbox wheel of 20 'ImageNet photos'."""
    root = tmp_path_factory.mktemp("packages")
    entries = [
        {"short_name": n, "short_names": [n], "unified": f"1F{o:03X}", "image": f"1f{o:03x}.png", "category": c, "subcategory": s, "sort_order": o}
        for n, c, s, o in CATALOGUE
    ]
    for artist, spec in emoji.ARTISTS.items():
        members = {"package/emoji.json": json.dumps(entries).encode()} if artist == "google" else {}
        for entry in entries:
            member = spec.member.format(image=entry["image"], unified=entry["unified"].lower())
            size = 256 if artist == "fluent3d" else 64
            members[member] = encoded(drawing(artist, entry["short_name"], size), "WEBP" if member.endswith(".webp") else "PNG")
        tarball(root / (spec.package.lstrip("@").replace("/", "-") + f"-{spec.version}.tgz"), members)
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(root / "foolbox-3.3.4-py3-none-any.whl", "w") as wheel:
        for index in range(20):  # grey noise: no pure colour of any artist
            grey = np.repeat(rng.integers(60, 200, (96, 128, 1), dtype=np.uint8), 3, axis=-1)
            wheel.writestr(f"foolbox/data/imagenet_{index:02d}_{index}.jpg", encoded(Image.fromarray(grey), "JPEG"))
    return root


def build(packages, out, *extra):
    result = CliRunner().invoke(
        main, ["emoji", "--out", str(out), "--packages", str(packages), "--train-per-drawing", "3", "--test-per-drawing", "2", *extra]
    )
    assert result.exit_code == 0, result.output
    return out


def library_build(packages, out, seed=0):
    """The builder's library steps on the fake packages, over grey-noise photos (no photo pixel is
    close to an artist's colour, so the drawing's pixels can be told apart)."""
    tarballs = {a: str(packages / (s.package.lstrip("@").replace("/", "-") + f"-{s.version}.tgz")) for a, s in emoji.ARTISTS.items()}
    available = {artist: emoji.tarball_members(path) for artist, path in tarballs.items()}
    classes = emoji.choose_classes(emoji.read_catalogue(tarballs["google"]), available)
    rng = np.random.default_rng(1)
    photos = [np.repeat(rng.integers(60, 200, (80, 120, 1), dtype=np.uint8), 3, axis=-1) for _ in range(3)]
    boxes = {}
    for split, artists in (("train", ("google", "fluent3d")), ("test", ("twitter",))):
        drawings = {artist: emoji.read_drawings(tarballs[artist], artist, classes) for artist in artists}
        boxes.update(emoji.write_split(str(out), split, classes, drawings, photos, 3, seed))
    return boxes


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def artist_mask(image, artist):
    """Pixels close to the artist's pure colour (the drawing itself, not a blend with the photo)."""
    return np.abs(image - np.asarray(COLOURS[artist])).max(axis=-1) < 40


def test_same_seed_same_bytes_and_another_seed_other_images(packages, tmp_path):
    first, second = build(packages, tmp_path / "a"), build(packages, tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    other = build(packages, tmp_path / "c", "--seed", "1")
    assert (other / "train/cat/google-000.png").read_bytes() != (first / "train/cat/google-000.png").read_bytes()


def test_classes_artists_and_splits(packages, tmp_path):
    out = build(packages, tmp_path / "e")
    assert sorted(os.listdir(out / "train")) == ["cat", "grinning", "rocket"]  # no flag, no direction word
    record = json.load(open(out / "emoji.json"))
    assert record["counts"] == {"train": 3 * 2 * 3, "test": 3 * 2}
    assert {a: v["split"] for a, v in record["artists"].items()} == {"google": "train", "twitter": "test", "fluent3d": "train"}
    assert sorted(os.listdir(out / "test" / "cat")) == ["twitter-000.png", "twitter-001.png"]
    assert sorted(os.listdir(out / "train" / "cat")) == [f"{a}-{k:03d}.png" for a in ("fluent3d", "google") for k in range(3)]
    assert set(record["photos"]["test"]).isdisjoint(record["photos"]["train"])


def test_no_test_artist_drawing_reaches_training(packages, tmp_path):
    out = tmp_path / "t"
    library_build(packages, out)
    for path in (out / "train").rglob("*.png"):
        image = pixels(path)
        assert not artist_mask(image, "twitter").any(), path
        assert artist_mask(image, path.name.split("-")[0]).sum() > 50, path
    for path in (out / "test").rglob("*.png"):
        image = pixels(path)
        assert not (artist_mask(image, "google").any() or artist_mask(image, "fluent3d").any()), path


def test_boxes_lie_on_the_object_and_face_parts_on_the_features(packages, tmp_path):
    out = tmp_path / "x"
    boxes = library_build(packages, out)
    assert len(boxes) == 3 * 2 * 3 + 3 * 3
    assert json.load(open(build(packages, tmp_path / "cli") / "boxes.json")).keys() >= {
        "train/grinning/google-000.png",
        "test/rocket/twitter-001.png",
    }
    for name, record in boxes.items():
        image = pixels(out / name)
        drawn = artist_mask(image, record["artist"])  # the disc (its dark features aside)
        x0, y0, x1, y1 = record["object"]
        inside = np.zeros(drawn.shape, bool)
        inside[y0:y1, x0:x1] = True
        assert drawn[inside].mean() > 0.45, name  # the disc fills most of its box
        assert not (drawn & ~inside).any(), name  # nothing of it outside
        # tight: the drawing reaches each edge (within 2 px: the edge pixels are blended with the photo)
        assert (
            drawn[y0:y1, x0 : x0 + 2].any()
            and drawn[y0:y1, x1 - 2 : x1].any()
            and drawn[y0 : y0 + 2, x0:x1].any()
            and drawn[y1 - 2 : y1, x0:x1].any()
        ), name
        if "/grinning/" in name:
            assert set(record["parts"]) == {"left_eye", "right_eye", "mouth"}, name
            dark = image.max(axis=-1) < 60
            for part, (px0, py0, px1, py1) in record["parts"].items():
                assert dark[py0:py1, px0:px1].mean() > 0.3, (name, part)  # the box is on the dark feature
            left, right, mouth = (record["parts"][p] for p in ("left_eye", "right_eye", "mouth"))
            assert (left[0] + left[2]) < (right[0] + right[2]) or record["placement"][1] > 90  # viewer's left first
        else:
            assert "parts" not in record, name


def test_face_parts_of_a_drawing_and_none_for_a_blank_one():
    face = np.asarray(drawing("google", "grinning", 64))
    parts = emoji.face_parts(face)
    assert parts["left_eye"] == (22, 20, 28, 29) and parts["right_eye"] == (38, 20, 44, 29) and parts["mouth"] == (22, 40, 44, 47)
    assert emoji.face_parts(np.asarray(drawing("google", "cat", 64))) is None
    assert emoji.face_parts(np.zeros((64, 64, 4), np.uint8)) is None


def test_missing_package_without_npm_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on the PATH
    result = CliRunner().invoke(main, ["emoji", "--out", str(tmp_path / "o"), "--packages", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "npm is not installed" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
