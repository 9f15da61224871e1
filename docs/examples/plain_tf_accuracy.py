"""Top-1 and top-5 error of a zfkeras export as a consumer gets them: ``tf.saved_model.load(path).serve``
on the native images of a folder (one sub-folder per class, named as the export's classes), one
view and 10 crops, with TensorFlow and numpy only: zfkeras is never imported.

    python docs/examples/plain_tf_accuracy.py saved_models/emoji64-zfnet64 out/emoji64/test [--out results.json]

The 10 crops follow the export's ``zfkeras.json`` ``ten_crop`` entry: resize the smaller side to
``resize_to`` (native images: not resized), keep the centre square, zero-pad it by ``pad``, then the
4 corner and the centre ``crop`` x ``crop`` crops and their mirror images; their probabilities are
averaged.
"""

import argparse
import json
import os
import sys

import numpy as np
import tensorflow as tf


def read_folder(folder, class_names, channels):
    """``[(file, label)]`` of every image under ``folder/<class>/``, classes named as the export's."""
    index = {name: i for i, name in enumerate(class_names)}
    files = []
    for name in sorted(os.listdir(folder)):
        if not os.path.isdir(os.path.join(folder, name)):
            continue
        if name not in index:
            sys.exit(f"{folder}/{name}: not one of the export's classes")
        files += [(os.path.join(folder, name, f), index[name]) for f in sorted(os.listdir(os.path.join(folder, name)))]
    return files


def load(file, channels):
    return tf.cast(tf.io.decode_image(tf.io.read_file(file), channels=channels, expand_animations=False), tf.float32)


def ten_views(image, view):
    """The 10 crops of one native image ``[H, W, C]`` as ``[10, crop, crop, C]``."""
    h, w = image.shape[:2]
    if min(h, w) != view["resize_to"]:
        scale = view["resize_to"] / min(h, w)
        image = tf.image.resize(image, (round(h * scale), round(w * scale)), antialias=True)
    h, w = image.shape[:2]
    side = view["resize_to"]
    image = image[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    pad, crop = view["pad"], view["crop"]
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    far, centre = side + 2 * pad - crop, (side + 2 * pad - crop) // 2
    crops = [image[y : y + crop, x : x + crop] for y, x in ((0, 0), (0, far), (far, 0), (far, far), (centre, centre))]
    crops = tf.stack(crops)
    return tf.concat([crops, crops[:, :, ::-1]], 0)


def errors(probabilities, labels):
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    return float(np.mean(top5[:, 0] != labels)), float(np.mean(~(top5 == labels[:, None]).any(axis=1)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export")
    parser.add_argument("folder")
    parser.add_argument("--out", help="Write the numbers to this JSON file too.")
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args()
    with open(os.path.join(args.export, "zfkeras.json")) as handle:
        meta = json.load(handle)
    loaded = tf.saved_model.load(args.export)  # keep the object: its variables live as long as it does
    serve = loaded.serve
    channels = meta["input"]["serve"]["shape"][-1]
    files = read_folder(args.folder, meta["class_names"], channels)
    single, ten, labels = [], [], np.array([label for _, label in files])
    for start in range(0, len(files), args.batch_size):
        images = [load(file, channels) for file, _ in files[start : start + args.batch_size]]
        single.append(
            np.concatenate([serve(image[None]).numpy() for image in images])
            if len({i.shape for i in images}) > 1
            else serve(tf.stack(images)).numpy()
        )
        views = tf.concat([ten_views(image, meta["ten_crop"]) for image in images], 0)
        ten.append(serve(views).numpy().reshape(len(images), 10, -1).mean(axis=1))
    single, ten = np.concatenate(single), np.concatenate(ten)
    result = dict(zip(("top1_error", "top5_error"), errors(single, labels)))
    result |= dict(zip(("ten_crop_top1_error", "ten_crop_top5_error"), errors(ten, labels)))
    result |= {"images": len(files), "export": args.export, "folder": args.folder, "zfkeras_imported": "zfkeras" in sys.modules}
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out + ".tmp", "w") as handle:
            json.dump(result, handle, indent=1)
        os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
