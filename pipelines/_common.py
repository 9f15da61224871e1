"""Plumbing every pipeline shares: loading models and images, seeding, atomic output, errors."""

import contextlib
import json
import os
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
            message = str(error).splitlines()[0]
            raise click.BadParameter(message if message.startswith(path) else f"{path}: {message}", param_hint="MODEL") from None
    if os.path.isfile(path) and path.endswith(".keras"):
        import zipfile

        import keras

        import zfkeras  # noqa: F401  (registers custom layers)
        from zfkeras.probe import KerasProbe

        if not zipfile.is_zipfile(path):
            raise click.BadParameter(f"{path}: not a Keras model file (a .keras file is a zip archive)", param_hint="MODEL")
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
    if not os.path.exists(name_or_path):
        raise click.BadParameter(f"{name_or_path}: no such file, nor a built-in photo ({', '.join(BUILTIN_PHOTOS)})", param_hint="IMAGE")
    import tensorflow as tf

    try:
        with _quiet_libjpeg():
            return tf.io.decode_image(tf.io.read_file(name_or_path), expand_animations=False).numpy()
    except Exception:
        raise click.BadParameter(
            f"{name_or_path}: not a readable image (JPEG, PNG, BMP or GIF) nor a built-in photo ({', '.join(BUILTIN_PHOTOS)})",
            param_hint="IMAGE",
        ) from None


def fit_image(image, input_shape):
    """Raw pixels float32 at ``input_shape`` (H, W, C): channels converted, smaller side resized
    to the data pipeline's load size, then centre-cropped (the same as evaluation)."""
    from zfkeras import data

    height, width, channels = input_shape
    image = data.to_channels(np.asarray(image), channels)
    image = data.resize_and_center_crop(image, data.load_size(height))
    return np.asarray(data.center_crop(image, height), dtype="float32")


def atomic_path(*paths):
    """Temporary file path(s) beside ``paths`` (files in one folder), moved into place together
    only if the block succeeds (:func:`zfkeras.atomic.atomic_output`), so a crash never leaves a
    half-written output."""
    from zfkeras.atomic import atomic_output

    return atomic_output(*paths)


def output_directory(path):
    """An empty temporary directory beside ``path``; it replaces ``path`` whole if the block
    succeeds, else it is removed. Leftovers of killed runs (``.NAME.partial-*``) are cleaned first.
    Write the results JSON last."""
    from zfkeras.atomic import atomic_output

    return atomic_output(path, directory=True)


def check_output(path, option="--out", *, directory=True, results=None, written=()):
    """Fail now, before any work, with one line naming ``option`` if ``path`` could not be written
    at the end: a part of it is a file, its folder is not writable, or (``directory=True``) it is
    an existing directory that is not a previous output. ``results``: the file name that marks a
    previous output of the command; ``written``: file endings of an older output without it (an
    existing non-empty directory with neither is left alone). Leftovers of killed runs writing
    ``path`` are removed."""
    target = os.path.abspath(path)

    def fail(reason):
        raise click.BadParameter(f"cannot write {path}: {reason}", param_hint=option)

    existing = target
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if existing == target:
        if directory and not os.path.isdir(target):
            fail("it exists and is not a directory")
        if not directory and os.path.isdir(target):
            fail("it is a directory; give a file name")
        entries = os.listdir(target) if directory else []
        earlier = not entries or results in entries or (written and all(e.endswith(tuple(written)) for e in entries))
        if directory and results and not earlier:
            fail(f"it is a non-empty directory that is not an earlier output (no {results}); choose another path or remove it")
        existing = os.path.dirname(target)
    elif not os.path.isdir(existing):
        fail(f"{existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"no permission to write in {existing}")
    from zfkeras.atomic import clean_stale

    clean_stale(target)
    return path


def skip_corrupt_option(function):
    return click.option(
        "--skip-corrupt", is_flag=True, help="Skip unreadable images of folder: sources (count and names reported on stderr)."
    )(function)


class PixelValue(click.FloatRange):
    """A raw pixel value 0-255 (NaN refused, which FloatRange lets through)."""

    def __init__(self):
        super().__init__(0, 255)

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a pixel value in the range 0<=x<=255.", param, ctx)
        return number


def _jpeg_noise(line):
    """The JPEG decoder's own complaints ("Corrupt JPEG data: ...", "Improper call to JPEG library
    ...", TF's "E0000 ... jpeg_mem.cc:331] Premature end of JPEG data") and absl's one-off notice
    before its first log line."""
    return "JPEG" in line or "absl::InitializeLog()" in line


@contextlib.contextmanager
def _quiet_libjpeg():
    """Drop the decoder's own lines about corrupt JPEGs (:func:`_jpeg_noise`), which are written
    straight to file descriptor 2 while files are decoded; other stderr output passes through."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = [line for line in lines if not _jpeg_noise(line)]
            if kept:
                os.write(2, "".join(kept).encode())


def open_source(spec, split, option="--data", *, data_dir=None, manual_dir=None, skip_corrupt=False, optional=False):
    """:func:`zfkeras.data.load_source` for a command: errors as one line naming ``option``;
    skipped corrupt files (count and names) and a held-out test split reported on stderr.

    ``optional=True``: a source without this split gives None (the reason said on stderr); a
    corrupt file is still an error."""
    from zfkeras import data

    # Folder sources decode every file up front; other sources may show download progress on stderr.
    quiet = _quiet_libjpeg() if isinstance(spec, str) and spec.strip().startswith("folder:") else contextlib.nullcontext()
    try:
        with quiet:
            source = data.load_source(spec, split, data_dir=data_dir, manual_dir=manual_dir, skip_corrupt=skip_corrupt)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as error:
        message = str(error).strip().splitlines()
        message = message[0] if message else type(error).__name__
        if optional and not isinstance(error, data.CorruptImageError):
            click.echo(f"no {split} split in {spec}: {message}", err=True)
            return None
        raise click.BadParameter(message, param_hint=option) from None
    if source.skipped:
        click.echo(f"skipped {source.skipped} unreadable image(s) of the {split} split of {source.name}:", err=True)
        for name in source.skipped_files:
            click.echo(f"  {name}", err=True)
    if source.holdout:
        click.echo(f"{source.name}: {data.describe_holdout(source.holdout)}", err=True)
    return source


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
