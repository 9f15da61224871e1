"""Sort Debian's Tux Paint photo stamps into an image folder with one sub-folder per class.

Real colour photographs available offline: ``apt-get install tuxpaint-stamps-default`` puts RGBA
PNG cut-outs under ``/usr/share/tuxpaint/stamps/<category>/...``. This script takes the photo
categories below (hand-drawn ``cartoon`` sub-folders left out), composites each stamp on a flat
background (its transparent parts become that colour), and writes it as a JPEG to
``OUT/<class>/<name>.jpg``, ready for ``zf train --data folder:OUT`` (a seeded 20% of each class
is then held out as the test split). Usage::

    python docs/examples/tuxpaint_folder.py --out data/tuxpaint

Prints one line per class (its image count) and the total.
"""

import argparse
import os
import sys

from PIL import Image

STAMPS = "/usr/share/tuxpaint/stamps"
# class name -> folder under STAMPS (with its sub-folders, except hand-drawn "cartoon" ones)
CLASSES = {
    "birds": "animals/birds",
    "fish": "animals/fish",
    "flowers": "plants/flowers",
    "fruit": "food/fruit",
    "insects": "animals/insects",
    "mammals": "animals/mammals",
    "vegetables": "food/vegetables",
}
SKIPPED_PARTS = ("cartoon", "plastic")  # drawings and plastic flowers are not photographs


def stamp_files(folder):
    """PNG files under ``folder``, sorted, none from a cartoon/plastic sub-folder."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_PARTS)
        found.extend(os.path.join(root, f) for f in sorted(files) if f.lower().endswith(".png"))
    return found


def flatten(path, background):
    """The stamp at ``path`` as an RGB image over a flat ``background`` colour (alpha composited)."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, background + (255,))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="Output image folder (one sub-folder per class).")
    parser.add_argument("--stamps", default=STAMPS, help="Tux Paint stamps directory.")
    parser.add_argument("--background", default="128,128,128", help="R,G,B of the background behind transparent parts.")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.stamps):
        sys.exit(f"{args.stamps} not found: apt-get install tuxpaint-stamps-default")
    background = tuple(int(v) for v in args.background.split(","))
    total = 0
    for name, folder in CLASSES.items():
        os.makedirs(os.path.join(args.out, name), exist_ok=True)
        files = stamp_files(os.path.join(args.stamps, folder))
        for path in files:
            stem = os.path.splitext(os.path.relpath(path, os.path.join(args.stamps, folder)))[0].replace(os.sep, "-")
            flatten(path, background).save(os.path.join(args.out, name, stem + ".jpg"), quality=92)
        print(f"{name}: {len(files)} images")
        total += len(files)
    print(f"{total} images in {len(CLASSES)} classes -> {args.out}")


if __name__ == "__main__":
    main()
