"""Plumbing every pipeline shares: loading models and images, seeding, atomic output, errors."""

import contextlib
import dataclasses
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


def weights_option(function):
    """``--weights FILE|none`` for MODEL ``keras:NAME``; kept on the click context, where
    :func:`load_probe` and :func:`load_model` read it (commands need no extra parameter)."""

    def remember(ctx, param, value):
        ctx.meta["zfkeras.weights"] = value
        return value

    return click.option(
        "--weights", metavar="FILE|none", expose_value=False, callback=remember,
        help="Weights for MODEL keras:NAME: a .h5/.weights.h5 file, or none for random ones "
             "(default: ImageNet weights from Keras' cache).",
    )(function)


def keras_application(path):
    """``(model, class_names)`` for MODEL ``keras:NAME[@HxW]`` (:mod:`zfkeras.applications`),
    with the command's ``--weights``; one-line errors."""
    from zfkeras.applications import load

    context = click.get_current_context(silent=True)
    weights = (context.meta.get("zfkeras.weights") if context else None) or "imagenet"
    try:
        return load(path, weights)
    except ValueError as error:
        raise click.BadParameter(str(error).strip().splitlines()[0], param_hint="MODEL") from None


def load_probe(path):
    """A :class:`zfkeras.probe.Probe` for MODEL: a SavedModel directory, a ``.keras`` file or
    ``keras:NAME`` (a Keras application, :func:`keras_application`)."""
    if path.startswith("keras:"):
        from zfkeras.probe import KerasProbe

        model, class_names = keras_application(path)
        return KerasProbe(model, class_names=class_names)
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


# ---- the CLI convention: shared parameter types, options and loaders -------------------------

DEFAULT_SOURCE = "fashion_mnist"  # zfkeras.data.DEFAULT_SOURCE, spelled here so --help needs no TF import
SOURCE_FORMS = "fashion_mnist, mnist_5k, idx:PATH, csv:PATH, folder:PATH or tfds:NAME"


class CommaList(click.ParamType):
    """A comma-separated list, each item converted by ``item`` (a callable raising ValueError);
    a bad item is named in the error together with ``what`` the items should be."""

    name = "list"

    def __init__(self, item=str, what="comma-separated values", minimum=None):
        self.item, self.what, self.minimum = item, what, minimum

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return list(value)
        items = [part.strip() for part in str(value).split(",") if part.strip()]
        if not items:
            self.fail(f"{value!r}: expected {self.what}", param, ctx)
        converted = []
        for part in items:
            try:
                result = self.item(part)
            except ValueError:
                self.fail(f"{part!r} in {value!r}: expected {self.what}", param, ctx)
            if self.minimum is not None and result < self.minimum:
                self.fail(f"{part!r} in {value!r}: each must be >= {self.minimum}", param, ctx)
            converted.append(result)
        return converted


def data_options(function=None, *, default=DEFAULT_SOURCE):
    """``--data SOURCE``, ``--data-dir`` (a prepared TFDS copy) and ``--skip-corrupt``, for every
    command that reads data; ``@data_options`` or ``@data_options(default="mnist_5k")``."""

    def decorate(function):
        function = skip_corrupt_option(function)
        function = click.option("--data-dir", type=click.Path(file_okay=False),
                                help="TFDS data directory holding a prepared copy (tfds: sources).")(function)
        return click.option("--data", "data_spec", default=default, show_default=True,
                            help=f"Data source: {SOURCE_FORMS}.")(function)

    return decorate(function) if function is not None else decorate


def out_option(function):
    """``--out DIR``: the output directory, checked before any work and replaced whole when the
    command succeeds (:func:`write_results`)."""
    return click.option("--out", required=True, type=click.Path(file_okay=False),
                        callback=lambda ctx, param, value: check_output(value, results="results.json"),
                        help="Output directory (built beside it, then swapped in whole).")(function)


@dataclasses.dataclass
class LoadedModel:
    """A Keras model read from MODEL, with what its directory says about it.

    Attributes: ``model`` (keras.Model), ``path`` (the ``.keras`` file read), ``class_names``
    (list or None), ``record`` (the training run's config.json contents, or None).
    """

    model: object
    path: str
    class_names: list = None
    record: dict = None


def model_file(path):
    """The ``.keras`` file of MODEL: the file itself, or the ``model.keras`` of an export or run directory."""
    if os.path.isdir(path):
        meta = os.path.join(path, "zfkeras.json")
        name = "model.keras"
        if os.path.exists(meta):
            with open(meta) as handle:
                name = json.load(handle).get("keras_model", name)
        path = os.path.join(path, name)
    if not (os.path.isfile(path) and path.endswith(".keras")):
        raise click.BadParameter(
            f"{path}: MODEL must be a .keras file, an export directory or a run directory holding model.keras",
            param_hint="MODEL")
    return path


def load_model(path):
    """:class:`LoadedModel` for MODEL (a SavedModel export directory, a run directory, a ``.keras``
    file or ``keras:NAME``), with one-line errors naming the path."""
    import keras

    import zfkeras  # noqa: F401  (registers custom layers)

    if path.startswith("keras:"):
        model, class_names = keras_application(path)
        return LoadedModel(model=model, path=path, class_names=class_names)
    file = model_file(path)
    try:
        model = keras.saving.load_model(file, compile=False)
    except Exception as error:  # corrupt or foreign file: one line, name the file
        raise click.UsageError(f"cannot load Keras model {file}: {str(error).strip().splitlines()[0]}") from None
    here = os.path.dirname(os.path.abspath(file))
    class_names, record = None, None
    for directory in (here, os.path.dirname(here)):
        for name in ("zfkeras.json", "config.json"):
            meta = os.path.join(directory, name)
            if record is None and os.path.exists(meta):
                with open(meta) as handle:
                    found = json.load(handle)
                class_names = found.get("class_names")
                # An export keeps the run's config.json under training.config.
                record = found.get("training", {}).get("config") if name == "zfkeras.json" else found
    return LoadedModel(model=model, path=file, class_names=class_names, record=record)


def progressbar(*args, **kwargs):
    """click.progressbar on stderr, so stdout stays clean for scripts."""
    import sys

    return click.progressbar(*args, file=sys.stderr, **kwargs)


def json_text(value, indent=0):
    """JSON indented like ``json.dumps(indent=2)``, but a list of plain values (numbers, strings)
    stays on one line, so image-index lists stay readable and small."""
    pad = " " * (indent + 2)
    if isinstance(value, dict) and value:
        items = (f"{pad}{json.dumps(str(key))}: {json_text(item, indent + 2)}" for key, item in value.items())
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, (list, tuple)) and value and any(isinstance(item, (dict, list, tuple)) for item in value):
        return "[\n" + ",\n".join(pad + json_text(item, indent + 2) for item in value) + "\n" + " " * indent + "]"
    return json.dumps(value)


def write_results(out, results, table, csv_rows, figure=None, files=None):
    """Write a command's standard outputs to the directory ``out`` at once: ``results.json``,
    ``results.csv`` (``csv_rows``: a header row then rows), ``table.txt`` and ``figure.png``
    (a matplotlib figure, or None), plus ``files`` ``{name: bytes}``. The directory is built
    beside ``out`` and swapped in whole, ``results.json`` written last; an old ``out`` is replaced."""
    import csv
    import io

    import matplotlib.pyplot as plt

    with output_directory(out) as temp:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(csv_rows)
        with open(os.path.join(temp, "results.csv"), "w") as handle:
            handle.write(buffer.getvalue())
        with open(os.path.join(temp, "table.txt"), "w") as handle:
            handle.write(table.rstrip("\n") + "\n")
        for name, content in (files or {}).items():
            with open(os.path.join(temp, name), "wb") as handle:
                handle.write(content)
        if figure is not None:
            figure.savefig(os.path.join(temp, "figure.png"), dpi=100, bbox_inches="tight")
            plt.close(figure)
        with open(os.path.join(temp, "results.json"), "w") as handle:
            handle.write(json_text(results) + "\n")


def fold_options(default_per_class):
    """``--per-class``, ``--split``, ``--folds`` and ``--test-per-class``: the Caltech protocol's draws
    (:func:`zfkeras.folds.class_folds`), shared by ``zf transfer`` and ``zf layers``."""

    def decorate(function):
        function = click.option("--test-per-class", default=50, show_default=True, type=click.IntRange(1),
                                help="Test images per class and fold, at most (drawn from the rest).")(function)
        function = click.option("--folds", default=5, show_default=True, type=click.IntRange(1),
                                help="Random train/test draws; results are mean +- std over them.")(function)
        function = click.option("--split", default="train", show_default=True,
                                help="Split the folds are drawn from ('all' for every image of a folder source "
                                     "without train/ and test/, whose 'train' split leaves out a held-out 20%).")(function)
        return click.option("--per-class", default=default_per_class, show_default=True,
                            type=CommaList(int, "training images per class, like 1,5,10", minimum=1),
                            help="Training images per class, one experiment each.")(function)

    return decorate


def draw_folds(labels, per_class, folds, test_per_class, seed, class_names):
    """``{N: [Fold, ...]}`` for every N of ``per_class``, with one-line errors naming --per-class."""
    from zfkeras.folds import class_folds

    try:
        return {n: class_folds(labels, n, folds, test_per_class, seed, class_names) for n in per_class}
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--per-class") from None


def compute_features(features, folds_by_n):
    """Compute ``features`` (a :class:`zfkeras.transfer.FrozenFeatures`) once for every image any
    fold uses, with a progress bar."""
    import numpy as np

    indices = np.unique(np.concatenate([np.concatenate([f.train, f.test]) for folds in folds_by_n.values() for f in folds]))
    with progressbar(length=len(indices), label=f"features of {len(indices)} images") as bar:
        features.compute(indices, on_batch=bar.update)


def check_feature_layer(model, names, option):
    """``names`` if every one is a layer with features (conv or hidden Dense), else a one-line
    error naming ``option`` and listing the valid layers."""
    from zfkeras.transfer import feature_layers

    valid = feature_layers(model)
    for name in names:
        if name not in valid:
            raise click.BadParameter(f"{name!r} is not a layer of this model with features; valid: {', '.join(valid)}",
                                     param_hint=option)
    return names


def percent(mean, std):
    """``"86.5 ± 0.5"`` from fractions."""
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def figure_bytes(figure, dpi=100):
    """A matplotlib figure as PNG bytes (for ``write_results(files=...)``), the figure closed."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
