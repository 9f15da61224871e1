"""Plumbing every pipeline shares: loading models and images, seeding, atomic output, errors."""

import contextlib
import dataclasses
import json
import os
import re
import tempfile
import zlib

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
        "--weights",
        metavar="FILE|none",
        expose_value=False,
        callback=remember,
        help="Weights for MODEL keras:NAME: a .h5/.weights.h5 file, or none for random ones (default: ImageNet weights from Keras' cache).",
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
    """A :class:`zfkeras.probe.Probe` for MODEL (:data:`MODEL_FORMS`): an export's SavedModel, else
    a :class:`~zfkeras.probe.KerasProbe` of :func:`load_model`'s Keras model."""
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb")):
        from zfkeras.export import load_exported

        try:
            return load_exported(path)
        except ValueError as error:  # not a zfkeras export, or inconsistent metadata
            message = str(error).splitlines()[0]
            raise click.BadParameter(message if message.startswith(path) else f"{path}: {message}", param_hint="MODEL") from None
    from zfkeras.probe import KerasProbe

    loaded = load_model(path)
    try:
        return KerasProbe(loaded.model, class_names=loaded.class_names)
    except ValueError as error:
        raise click.BadParameter(f"{path}: {str(error).splitlines()[0]}", param_hint="MODEL") from None


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
            f"{name_or_path}: not a readable image (JPEG, PNG, BMP or GIF) nor a built-in photo ({', '.join(BUILTIN_PHOTOS)})", param_hint="IMAGE"
        ) from None


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
    return click.option("--skip-corrupt", is_flag=True, help="Skip unreadable images of folder: sources (count and names reported on stderr).")(
        function
    )


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


def tensorflow_noise(line):
    """TensorFlow's start-up lines that TF_CPP_MIN_LOG_LEVEL does not hide (measured, TF 2.21):
    absl's "All log messages before absl::InitializeLog() ..." and info/warning lines such as
    "I0000 ... port.cc:153] oneDNN custom operations are on ..."; errors (E...) pass."""
    return "absl::InitializeLog()" in line or re.match(r"[IW]\d{4} [\d:. ]+\d+ \S+:\d+\] ", line) is not None


@contextlib.contextmanager
def quiet_stderr(noise):
    """Drop the lines ``noise(line)`` picks from what C++ libraries write straight to file
    descriptor 2 while the block runs; other stderr output passes through (at the end)."""
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
            kept = [line for line in lines if not noise(line)]
            if kept:
                os.write(2, "".join(kept).encode())


def import_tensorflow_quietly():
    """``import tensorflow`` without its start-up chatter (:func:`tensorflow_noise`)."""
    import sys

    if "tensorflow" not in sys.modules:
        with quiet_stderr(tensorflow_noise):
            import tensorflow  # noqa: F401


def _quiet_libjpeg():
    """Drop the decoder's own lines about corrupt JPEGs (:func:`_jpeg_noise`) while files are decoded."""
    return quiet_stderr(_jpeg_noise)


def open_source(spec, split, option="--data", *, data_dir=None, manual_dir=None, skip_corrupt=False, optional=False):
    """:func:`zfkeras.data.load_source` for a command: errors as one line naming ``option``;
    a held-out test split reported on stderr, and the corrupt files skipped while the command read
    the source (count and names) when the command ends.

    ``optional=True``: a source without this split gives None (the reason said on stderr); a
    corrupt file is still an error."""
    from zfkeras import data

    # Folder sources read image headers; other sources may show download progress on stderr.
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
    # Folder sources find corrupt files as they are read: report them when the command ends.
    context = click.get_current_context(silent=True)
    if context is not None:
        context.call_on_close(lambda: report_skipped(source))
    else:
        report_skipped(source)
    if source.holdout:
        click.echo(f"{source.name}: {data.describe_holdout(source.holdout)}", err=True)
    return source


def report_skipped(source):
    """Say on stderr which unreadable images of ``source`` were skipped (``--skip-corrupt``), if any."""
    if source.skipped:
        click.echo(f"skipped {source.skipped} unreadable image(s) of the {source.split} split of {source.name}:", err=True)
        for name in source.skipped_files:
            click.echo(f"  {name}", err=True)


def corrupt_data_error(error, option="--data"):
    """A one-line click error naming the corrupt image file a data read failed on (a TF error
    raised mid-command by a folder source without ``--skip-corrupt``), or None for other errors."""
    import sys

    if "zfkeras.data" not in sys.modules:
        return None
    from zfkeras import data

    path = getattr(error, "path", None) if isinstance(error, data.CorruptImageError) else data.corrupt_file_in(error)
    if path is None:
        return None
    return click.BadParameter(f"corrupt or unreadable image file {path}; skip such files with --skip-corrupt", param_hint=option)


def write_json(path, obj):
    """``obj`` as JSON in ``path``, written atomically (:func:`zfkeras.atomic.write_json`), lists
    of plain values on one line (:func:`json_text`)."""
    from zfkeras.atomic import write_json as write

    write(path, obj, text=json_text(obj))


def save_figure(figure, path, dpi=100):
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    from zfkeras.atomic import atomic_output

    with atomic_output(path) as temp:
        figure.savefig(temp, dpi=dpi, format=os.path.splitext(path)[1][1:] or "png", bbox_inches="tight")
    plt.close(figure)


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (no screen here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---- the CLI convention: shared parameter types, options and loaders -------------------------
# Every command is built from these, so MODEL, --data, --images, --layers, --maps and --out mean
# the same thing everywhere (README, "CLI convention").

DEFAULT_SOURCE = "fashion_mnist"  # zfkeras.data.DEFAULT_SOURCE, spelled here so --help needs no TF import
SOURCE_FORMS = "fashion_mnist, mnist_5k, idx:PATH, csv:PATH, folder:PATH, tfrecord:DIR or tfds:NAME"
MODEL_FORMS = (
    "a SavedModel directory (a zfkeras export), a .keras file, a run directory holding model.keras, "
    "or keras:NAME (a Keras application, with --weights)"
)


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


def model_argument(function=None, *, many=False, metavar=None):
    """The positional ``MODEL`` (:data:`MODEL_FORMS`) and ``--weights`` for ``keras:NAME``; ``many=True``:
    one or more (``MODEL...``)."""

    def decorate(function):
        function = weights_option(function)  # for MODEL keras:NAME
        return click.argument(
            "models" if many else "model",
            nargs=-1 if many else 1,
            required=True,
            type=click.Path(),
            metavar=metavar or ("MODEL..." if many else "MODEL"),
        )(function)

    return decorate(function) if function is not None else decorate


def images_argument(function):
    """The positional ``IMAGE...``: image files or built-in photo names (:data:`BUILTIN_PHOTOS`)."""
    return click.argument("images", nargs=-1, required=True, metavar="IMAGE...")(function)


def images_option(function=None, *, help="Use only the first N images of the split (default: all)."):
    """``--images N``: how many images of the data are used (``None``: all)."""

    def decorate(function):
        return click.option("--images", type=click.IntRange(1), metavar="N", help=help)(function)

    return decorate(function) if function is not None else decorate


def data_options(function=None, *, default=DEFAULT_SOURCE, images="Use only the first N images of the split (default: all)."):
    """``--data SOURCE``, ``--data-dir`` (a prepared TFDS copy), ``--skip-corrupt`` and ``--images N``
    (help text ``images``), for every command that reads data; ``@data_options`` or
    ``@data_options(default="mnist_5k")``."""

    def decorate(function):
        function = images_option(function, help=images)
        function = skip_corrupt_option(function)
        function = click.option(
            "--data-dir", type=click.Path(file_okay=False), metavar="DIR", help="TFDS data directory holding a prepared copy (tfds: sources)."
        )(function)
        return click.option("--data", "data_spec", default=default, show_default=True, metavar="SOURCE", help=f"Data source: {SOURCE_FORMS}.")(
            function
        )

    return decorate(function) if function is not None else decorate


def limit_images(source, images):
    """``source`` cut to its first ``images`` examples (``--images``; None: all of them)."""
    total = source.num_examples
    if images is None or (total is not None and images >= total):
        return source
    return dataclasses.replace(
        source,
        dataset=source.dataset.take(images),
        num_examples=images if total is not None else None,
        labels=None if source.labels is None else source.labels[:images],
        name=f"{source.name} (first {images})",
    )


def layers_option(function=None, *, help="Comma-separated layers (default: every conv layer)."):
    """``--layers conv1,conv5`` as a list of names (checked against the model by :func:`choose_layers`)."""

    def decorate(function):
        return click.option("--layers", "layers", type=CommaList(str, "layer names like conv1,conv5"), metavar="LIST", help=help)(function)

    return decorate(function) if function is not None else decorate


def choose_layers(given, valid, option="--layers", what="valid layers"):
    """``given`` layer names (a name, a list, or None for all of ``valid``) as a list, each one of
    ``valid``; else a one-line error naming ``option`` (:func:`zfkeras.validation.layer_names`)."""
    from zfkeras.validation import layer_names

    try:
        return layer_names(given, valid, what)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


class MapSelection(click.ParamType):
    """``--maps``: ``all``, a list of map indices like ``0,3,7``, or ``random:N`` (N maps per layer,
    seeded); converted to a function ``(counts {layer: maps}, seed) -> {layer: sorted indices}``."""

    name = "all|LIST|random:N"
    forms = "use 'all', a list like '0,3,7', or 'random:N' with N >= 1"

    def convert(self, value, param, ctx):
        if callable(value):
            return value
        text = str(value).strip()
        if text == "all":
            return lambda counts, seed: {layer: list(range(count)) for layer, count in counts.items()}
        if re.fullmatch(r"random:\d+", text) and int(text[7:]) > 0:
            return lambda counts, seed: {layer: random_maps(count, int(text[7:]), seed, layer) for layer, count in counts.items()}
        if not re.fullmatch(r"\d+(,\d+)*", text):
            self.fail(f"{text!r}: {self.forms}", param, ctx)
        chosen = sorted({int(c) for c in text.split(",")})

        def pick(counts, seed):
            for layer, count in counts.items():
                if chosen[-1] >= count:
                    raise click.BadParameter(f"map {chosen[-1]} does not exist in {layer}, which has maps 0-{count - 1}", param_hint="--maps")
            return {layer: list(chosen) for layer in counts}

        return pick


def random_maps(count, number, seed, layer):
    """``number`` sorted map indices of ``count`` (all if fewer), drawn from a generator seeded by
    ``seed`` and the layer name, so the choice is the same whichever other layers are asked for."""
    rng = np.random.default_rng([seed, zlib.crc32(layer.encode())])
    return sorted(int(c) for c in rng.choice(count, min(number, count), replace=False))


def maps_option(default, help="Maps per layer"):
    """``--maps`` (:class:`MapSelection`) with ``default``, e.g. ``"random:16"``."""

    def decorate(function):
        return click.option(
            "--maps",
            default=default,
            show_default=True,
            type=MapSelection(),
            metavar="SELECTION",
            help=f"{help}: all, a list like 0,3,7, or random:N (seeded by --seed).",
        )(function)

    return decorate


def batch_size_option(default=64, help="Images per forward pass."):
    """``--batch-size N`` (>= 1): how many images go through the model at once (bounds memory)."""
    return click.option("--batch-size", default=default, show_default=True, type=click.IntRange(1), metavar="N", help=help)


def split_option(default="test", help="Split to scan."):
    """``--split test|train``: which split of --data is read."""
    return click.option("--split", type=click.Choice(["test", "train"]), default=default, show_default=True, help=help)


def out_option(
    function=None, *, results="results.json", written=(), required=True, help="Output directory (built beside it, then swapped in whole)."
):
    """``--out DIR``: the output directory, checked before any work (:func:`check_output`; ``results``
    marks an earlier output of the command, which is replaced whole when the command succeeds)."""

    def check(ctx, param, value):
        return None if value is None else check_output(value, results=results, written=written)

    def decorate(function):
        return click.option("--out", required=required, type=click.Path(file_okay=False), callback=check, metavar="DIR", help=help)(function)

    return decorate(function) if function is not None else decorate


def label_option(function):
    """``--label`` (repeatable): the true class of the images, by index or name (:func:`parse_labels`)."""
    return click.option(
        "--label",
        multiple=True,
        help="True class (index or name): once for all images or once per image. Default: the top class of each unaltered image.",
    )(function)


def parse_labels(values, class_names, count, option="--label"):
    """Class indices from ``--label`` values (index or class name): none (-> None each), one for
    all images, or one per image."""
    if not values:
        return [None] * count
    if len(values) not in (1, count):
        raise click.BadParameter(f"give one {option} for all images or one per image ({count}), got {len(values)}", param_hint=option)
    labels = []
    for value in values:
        if value in class_names:
            labels.append(list(class_names).index(value))
        elif value.isdigit() and int(value) < len(class_names):
            labels.append(int(value))
        else:
            raise click.BadParameter(
                f"{value!r} is not a class: use an index 0-{len(class_names) - 1} or a name ({', '.join(class_names)})", param_hint=option
            )
    return labels * count if len(labels) == 1 else labels


def load_images(paths, input_shape):
    """``[(name, raw pixels at input_shape)]`` for image files or built-in photos; names must differ
    (each names its output files)."""
    from zfkeras.model_input import fit_image

    images, seen = [], {}
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        if name in seen:
            raise click.BadParameter(f"{seen[name]} and {path} would both write {name}.*; rename one", param_hint="IMAGE")
        seen[name] = path
        images.append((name, fit_image(read_photo(path), input_shape).pixels))
    return images


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
    """The ``.keras`` file of MODEL: the file itself, or the ``model.keras`` of an export or run directory
    (``keras:NAME`` is returned as it is: the model is built, not read)."""
    if path.startswith("keras:"):
        return path
    if os.path.isdir(path):
        meta = os.path.join(path, "zfkeras.json")
        name = "model.keras"
        if os.path.exists(meta):
            with open(meta) as handle:
                name = json.load(handle).get("keras_model", name)
        path = os.path.join(path, name)
    if not (os.path.isfile(path) and path.endswith(".keras")):
        raise click.BadParameter(f"{path}: MODEL must be {MODEL_FORMS}", param_hint="MODEL")
    return path


def load_model(path):
    """:class:`LoadedModel` for MODEL (:data:`MODEL_FORMS`), with one-line errors naming the path."""
    import zipfile

    import keras

    import zfkeras  # noqa: F401  (registers custom layers)

    if path.startswith("keras:"):
        model, class_names = keras_application(path)
        return LoadedModel(model=model, path=path, class_names=class_names)
    file = model_file(path)
    if not zipfile.is_zipfile(file):
        raise click.BadParameter(f"{file}: not a Keras model file (a .keras file is a zip archive)", param_hint="MODEL")
    try:
        model = keras.saving.load_model(file, compile=False)
    except Exception as error:  # corrupt or foreign file: one line, name the file
        raise click.UsageError(f"cannot load Keras model {file}: {str(error).strip().splitlines()[0]}") from None
    # What the file's folder says about it: an export's zfkeras.json or a run's config.json (for a
    # checkpoint, those of the run or export above its checkpoints/ folder).
    here = os.path.dirname(os.path.abspath(file))
    folders = (here, os.path.dirname(here)) if os.path.basename(here) == "checkpoints" else (here,)
    class_names, record = None, None
    for directory in folders:
        for name in ("zfkeras.json", "config.json"):
            meta = os.path.join(directory, name)
            if os.path.exists(meta):
                with open(meta) as handle:
                    found = json.load(handle)
                class_names = class_names or found.get("class_names")
                # An export keeps the run's config.json under training.config.
                record = record or (found.get("training", {}).get("config") if name == "zfkeras.json" else found)
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

    from zfkeras.atomic import atomic_output

    with atomic_output(out, directory=True) as temp:
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


def penalty_option(help):
    """``--C``: the linear heads' weight of the data term against the L2 penalty
    (:func:`zfkeras.linear.fit_linear`), shared by ``zf transfer`` and ``zf layers``."""
    return click.option("--C", "C", default=1.0, show_default=True, type=click.FloatRange(0, min_open=True), help=help)


def fold_options(default_per_class):
    """``--per-class``, ``--split``, ``--folds`` and ``--test-per-class``: the Caltech protocol's draws
    (:func:`zfkeras.folds.class_folds`), shared by ``zf transfer`` and ``zf layers``."""

    def decorate(function):
        function = click.option(
            "--test-per-class",
            default=50,
            show_default=True,
            type=click.IntRange(1),
            help="Test images per class and fold, at most (drawn from the rest).",
        )(function)
        function = click.option(
            "--folds", default=5, show_default=True, type=click.IntRange(1), help="Random train/test draws; results are mean +- std over them."
        )(function)
        function = click.option(
            "--split",
            default="train",
            show_default=True,
            help="Split the folds are drawn from ('all' for every image of a folder source "
            "without train/ and test/, whose 'train' split leaves out a held-out 20%).",
        )(function)
        return click.option(
            "--per-class",
            default=default_per_class,
            show_default=True,
            type=CommaList(int, "training images per class, like 1,5,10", minimum=1),
            help="Training images per class, one experiment each.",
        )(function)

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

    return choose_layers(names, feature_layers(model), option, what="layers with features")


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
