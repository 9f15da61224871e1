"""``zf emoji``: build Emoji-64, the many-class colour analogue of ImageNet (:mod:`zfkeras.data.emoji`).

The drawings come from three npm packages (fetched with ``npm pack`` into ``--packages`` unless
already there), the background photos from Python packages: scikit-image's, scikit-learn's and
matplotlib's sample photos, and the 20 ImageNet photos inside foolbox's wheel (downloaded with
``pip download``, read from the zip, never installed). The test split's backgrounds are photos no
training image uses.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import click
import numpy as np

from pipelines import options, output

FOOLBOX = ("foolbox", "3.3.4")
TEST_PHOTOS = ("coffee", "rocket", "gravel", "china", "imagenet_14", "imagenet_15", "imagenet_16", "imagenet_17", "imagenet_18", "imagenet_19")
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "brick", "grass", "gravel")


def fetch_package(cache, package, version):
    """The npm tarball of ``package@version`` in ``cache``, fetched with ``npm pack`` when missing."""
    path = os.path.join(cache, package.lstrip("@").replace("/", "-") + f"-{version}.tgz")
    if os.path.exists(path):
        return path
    if shutil.which("npm") is None:
        raise click.UsageError(f"{path} is missing and npm is not installed to fetch it (apt-get install npm), or put the file there")
    os.makedirs(cache, exist_ok=True)
    click.echo(f"fetching {package}@{version} with npm pack", err=True)
    done = subprocess.run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=cache, capture_output=True, text=True)
    if done.returncode != 0 or not os.path.exists(path):
        raise click.UsageError(f"npm pack {package}@{version} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return path


def foolbox_photos(cache):
    """``{imagenet_NN: JPEG bytes}``: the 20 ImageNet photos inside foolbox's wheel."""
    wheel = os.path.join(cache, f"{FOOLBOX[0]}-{FOOLBOX[1]}-py3-none-any.whl")
    if not os.path.exists(wheel):
        click.echo(f"fetching {FOOLBOX[0]}=={FOOLBOX[1]} (its wheel's ImageNet photos)", err=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", cache, f"{FOOLBOX[0]}=={FOOLBOX[1]}"]
        if subprocess.run(command).returncode != 0 or not os.path.exists(wheel):
            raise click.UsageError(f"pip download {FOOLBOX[0]}=={FOOLBOX[1]} failed; put {os.path.basename(wheel)} in {cache}")
    with zipfile.ZipFile(wheel) as archive:
        return {
            "_".join(os.path.basename(name).split("_")[:2]): archive.read(name)
            for name in sorted(archive.namelist())
            if os.path.basename(name).startswith("imagenet_") and name.endswith(".jpg")
        }


def background_photos(cache):
    """``{name: uint8 [H, W, 3]}``: every background photo, grey ones repeated to RGB."""
    import matplotlib
    import skimage.data
    from PIL import Image

    photos = {name: getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS}
    photos["motorcycle_left"], photos["motorcycle_right"], _ = skimage.data.stereo_motorcycle()
    images = os.path.join(os.path.dirname(skimage.__file__), "..", "sklearn", "datasets", "images")
    for name in ("china", "flower"):
        photos[name] = np.asarray(Image.open(os.path.join(images, f"{name}.jpg")).convert("RGB"))
    photos["grace_hopper"] = np.asarray(Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB"))
    for name, data in foolbox_photos(cache).items():
        photos[name] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    rgb = {}
    for name, pixels in photos.items():
        pixels = np.asarray(pixels)
        rgb[name] = np.ascontiguousarray(np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 2 else pixels[..., :3]).astype(np.uint8)
    return rgb


def face_parts_file(boxes):
    """``zf correspondence --parts`` input: the first test image of every face class whose eyes and
    mouth were found, boxes as ``[y0, x0, y1, x1]`` (end exclusive), paths relative to the file."""

    def yx(box):
        x0, y0, x1, y1 = box
        return [y0, x0, y1, x1]

    chosen = [name for name, record in sorted(boxes.items()) if name.startswith("test/") and name.endswith("-000.png") and "parts" in record]
    entries = [
        {
            "file": name,
            "parts": {part: yx(boxes[name]["parts"][part]) for part in ("left_eye", "right_eye", "mouth")},
            "object": yx(boxes[name]["object"]),
        }
        for name in chosen
    ]
    return {"images": entries}


@click.command()
@options.out_option(results="emoji.json", help="Output folder (a folder: source with train/ and test/), built beside it and swapped in whole.")
@click.option(
    "--packages",
    default="out/emoji-packages",
    show_default=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Where the npm tarballs and foolbox's wheel are kept (fetched when missing).",
)
@click.option(
    "--classes",
    type=click.IntRange(2),
    metavar="N",
    help="A seeded random N of the classes (default: all, about 1,560); each keeps exactly the images the full set has.",
)
@click.option("--train-per-drawing", default=24, show_default=True, type=click.IntRange(1), help="Training images per class and training artist.")
@click.option("--test-per-drawing", default=8, show_default=True, type=click.IntRange(1), help="Test images per class (of the held-out artist).")
@click.option(
    "--test-artist",
    default="twitter",
    show_default=True,
    type=click.Choice(["google", "twitter", "fluent3d"]),
    help="The artist held out whole as the test split.",
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="Random seed (same seed, same bytes).")
def emoji(out, packages, classes, train_per_drawing, test_per_drawing, test_artist, seed):
    """Build Emoji-64: every base emoji drawn by three artists, composited at a random scale, position
    and rotation onto crops of real photos, 64x64 colour; two artists train, the third is the test split.

    Writes OUT/train/<class>/<artist>-NNN.png, OUT/test/<class>/<artist>-NNN.png, OUT/boxes.json (each
    image's object box and, for faces, eye and mouth boxes), OUT/parts.json (the held-out artist's
    faces in zf correspondence's --parts format) and OUT/emoji.json (classes, artists and their
    licences, photos, counts). Read it with --data folder:OUT.
    """
    from zfkeras.data import emoji as builder
    from zfkeras.io.atomic import atomic_output, write_json

    started = time.monotonic()
    tarballs = {artist: fetch_package(packages, spec.package, spec.version) for artist, spec in builder.ARTISTS.items()}
    available = {artist: builder.tarball_members(path) for artist, path in tarballs.items()}
    chosen = builder.choose_classes(builder.read_catalogue(tarballs["google"]), available, limit=classes, seed=seed)
    drawings = {artist: builder.read_drawings(path, artist, chosen) for artist, path in tarballs.items()}
    photos = background_photos(packages)
    names = {"train": [n for n in sorted(photos) if n not in TEST_PHOTOS], "test": [n for n in sorted(photos) if n in TEST_PHOTOS]}
    with atomic_output(out, directory=True) as temp:
        boxes = {}
        for split, per in (("train", train_per_drawing), ("test", test_per_drawing)):
            artists = [a for a in builder.ARTISTS if (a == test_artist) == (split == "test")]
            with output.progressbar(length=len(chosen) * len(artists) * per, label=f"{split} ({', '.join(artists)})") as bar:
                split_drawings, split_photos = {a: drawings[a] for a in artists}, [photos[n] for n in names[split]]
                boxes.update(builder.write_split(temp, split, chosen, split_drawings, split_photos, per, seed, progress=bar.update))
        write_json(os.path.join(temp, "boxes.json"), boxes, text=json.dumps(boxes, separators=(",", ":"), sort_keys=True))
        write_json(os.path.join(temp, "parts.json"), face_parts_file(boxes))
        counts = {"train": len(chosen) * (len(builder.ARTISTS) - 1) * train_per_drawing, "test": len(chosen) * test_per_drawing}
        artists = {a: {**vars(s), "split": "test" if a == test_artist else "train"} for a, s in builder.ARTISTS.items()}
        record = {"classes": [vars(c) for c in chosen], "artists": artists, "photos": names, "seed": seed, "counts": counts}
        write_json(os.path.join(temp, "emoji.json"), record)
    faces = sum(1 for record in boxes.values() if "parts" in record)
    click.echo(
        f"wrote {out}: {len(chosen)} classes, {counts['train']} training and {counts['test']} test images ({faces} with face parts) in {time.monotonic() - started:.0f} s"
    )
