"""Plumbing every pipeline shares: loading models and images, seeding, atomic output, errors."""

import contextlib
import json
import os
import shutil
import tempfile

import click
import numpy as np

BUILTIN_PHOTOS = {
    "chelsea": "skimage.data.chelsea (a cat, 300x451, scikit-image)",
    "astronaut": "skimage.data.astronaut (512x512, scikit-image)",
    "coffee": "skimage.data.coffee (400x600, scikit-image)",
    "rocket": "skimage.data.rocket (427x640, scikit-image)",
}


def seed_everything(seed):
    """Seed Python, NumPy, TF and Keras, and make TF ops deterministic on CPU."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def seed_option(function):
    return click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same numbers on CPU).")(function)


def load_probe(path):
    """A :class:`zfkeras.probe.Probe` for MODEL: a SavedModel directory or a ``.keras`` file."""
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb")):
        from zfkeras.export import load_exported

        try:
            return load_exported(path)
        except ValueError as error:  # not a zfkeras export, or inconsistent metadata
            raise click.BadParameter(f"{path}: {str(error).splitlines()[0]}", param_hint="MODEL") from None
    if os.path.isfile(path) and path.endswith(".keras"):
        import keras

        import zfkeras  # noqa: F401  (registers custom layers)
        from zfkeras.probe import KerasProbe

        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as error:  # corrupt or foreign file: one line, name the file
            raise click.UsageError(f"cannot load Keras model {path}: {str(error).splitlines()[0]}") from None
        # Class names from an export's zfkeras.json or a run directory's config.json beside the file.
        class_names = None
        for name in ("zfkeras.json", "config.json"):
            meta = os.path.join(os.path.dirname(path), name)
            if class_names is None and os.path.exists(meta):
                with open(meta) as handle:
                    class_names = json.load(handle).get("class_names")
        try:
            return KerasProbe(model, class_names=class_names)
        except ValueError as error:
            raise click.BadParameter(f"{path}: {str(error).splitlines()[0]}", param_hint="MODEL") from None
    raise click.BadParameter(
        f"{path}: MODEL must be a SavedModel directory (with saved_model.pb) or a .keras file", param_hint="MODEL"
    )


def read_photo(name_or_path):
    """uint8 ``[H, W, C]`` from an image file, or from a built-in photo name (:data:`BUILTIN_PHOTOS`)."""
    if name_or_path in BUILTIN_PHOTOS:
        import skimage.data

        return np.asarray(getattr(skimage.data, name_or_path)())
    import tensorflow as tf

    try:
        data = tf.io.read_file(name_or_path)
        return tf.io.decode_image(data, expand_animations=False).numpy()
    except Exception:
        raise click.BadParameter(
            f"{name_or_path}: not a readable image (JPEG, PNG, BMP or GIF) nor a built-in photo ({', '.join(BUILTIN_PHOTOS)})"
        ) from None


def fit_image(image, input_shape):
    """Raw pixels float32 at ``input_shape`` (H, W, C): channels converted, smaller side resized
    to the data pipeline's load size, then centre-cropped (the same as evaluation)."""
    from zfkeras import data

    height, width, channels = input_shape
    image = data.to_channels(np.asarray(image), channels)
    image = data.resize_and_center_crop(image, data.load_size(height))
    return np.asarray(data.center_crop(image, height), dtype="float32")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    Works for files and directories, so a crash never leaves a half-written output.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    temp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", dir=parent)
    target = os.path.join(temp, os.path.basename(path))
    try:
        yield target
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_json(path, obj):
    with atomic_path(path) as temp:
        with open(temp, "w") as handle:
            json.dump(obj, handle, indent=2, sort_keys=False)
            handle.write("\n")


def save_figure(figure, path, dpi=100):
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as temp:
        figure.savefig(temp, dpi=dpi, format=os.path.splitext(path)[1][1:] or "png", bbox_inches="tight")
    plt.close(figure)


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (no screen here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
