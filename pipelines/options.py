"""Every shared Click option and parameter type of the ``zf`` commands (the CLI convention).

Every command is built from these, so MODEL, --data, --images, --layers, --maps, --out and the
training options mean the same thing everywhere (docs/cli.md; ``tests/test_cli_convention.py``
checks every command). Nothing here imports TensorFlow, so a bad option is refused at once.
"""

import math
import re
import zlib

import click
import numpy as np

from pipelines.output import check_output

BUILTIN_PHOTOS = {
    "chelsea": "skimage.data.chelsea (a cat, 300x451, scikit-image)",
    "astronaut": "skimage.data.astronaut (512x512, scikit-image)",
    "coffee": "skimage.data.coffee (400x600, scikit-image)",
    "rocket": "skimage.data.rocket (427x640, scikit-image)",
}


SEED_RANGE = click.IntRange(0, 2**32 - 1)  # what numpy, Python and TF seeds accept


SEED = "zfkeras.seed"


def remember_seed(ctx, param, value):
    ctx.meta[SEED] = value  # pipelines.loading.open_model seeds --weights none with it
    return value


def seed_option(function, help="Random seed 0..2**32-1 (same seed, same numbers on CPU).", expose_value=True):
    return click.option("--seed", default=0, show_default=True, type=SEED_RANGE, expose_value=expose_value, callback=remember_seed, help=help)(
        function
    )


def weights_seed_option(function):
    """``--seed`` of a command whose only randomness is MODEL ``keras:NAME --weights none``: kept
    on the click context, where :func:`pipelines.loading.open_model` reads it (no extra parameter)."""
    help = "Seed 0..2**32-1 of the random weights of MODEL keras:NAME --weights none (nothing else here is random)."
    return seed_option(function, help, expose_value=False)


def weights_option(function):
    """``--weights FILE|none`` for MODEL ``keras:NAME``; kept on the click context, where
    :func:`pipelines.loading.open_model` reads it (commands need no extra parameter)."""

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


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # zfkeras.nn.precision.PRECISIONS (tested equal)
PRECISION = "zfkeras.precision"


def precision_option(function):
    """``--precision`` of the scans (forward passes over many images): what the model's forward
    passes compute in, float32 (exact) by default; kept on the click context, where
    :func:`pipelines.loading.open_model` reads it (commands need no extra parameter)."""

    def remember(ctx, param, value):
        ctx.meta[PRECISION] = value
        return value

    return click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default="float32",
        show_default=True,
        expose_value=False,
        callback=remember,
        help="What the forward passes compute in: float32 (exact), or mixed_bfloat16 / mixed_float16 (faster on hardware with "
        "16-bit units; maps and probabilities to ~1e-2 relative, docs/benchmarks.md). Deconvnet projections are always float32.",
    )(function)


def skip_corrupt_option(function):
    return click.option(
        "--skip-corrupt",
        is_flag=True,
        help="Skip unreadable or too large images of folder: sources and bad records of tfrecord: ones (count and names reported on stderr).",
    )(function)


MAX_PIXELS = 100_000_000  # zfkeras.data.MAX_PIXELS, spelled here so --help needs no TF import (tested equal)
MAX_PIXELS_KEY = "zfkeras.max_pixels"


def max_pixels_option(function):
    """``--max-pixels N``: an image file larger than N pixels (width x height, read from its header)
    is refused before it is decoded. Kept on the click context, where :func:`max_pixels` reads it
    for :func:`pipelines.loading.open_source` and :func:`~pipelines.loading.read_photo` (commands
    need no extra parameter)."""

    def remember(ctx, param, value):
        ctx.meta[MAX_PIXELS_KEY] = value
        return value

    return click.option(
        "--max-pixels",
        default=MAX_PIXELS,
        show_default=True,
        type=click.IntRange(1),
        metavar="N",
        expose_value=False,
        callback=remember,
        help="Refuse images larger than N pixels (width x height, from the file's header, before decoding): IMAGE files, folder: and tfrecord: data.",
    )(function)


def max_pixels():
    """The running command's ``--max-pixels`` (:data:`MAX_PIXELS` outside a command)."""
    context = click.get_current_context(silent=True)
    return (context.meta.get(MAX_PIXELS_KEY) if context is not None else None) or MAX_PIXELS


class Number(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinities (which FloatRange lets through:
    ``--lr nan`` would train a whole epoch before diverging). Every float option uses it."""

    what = "a finite number"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not {self.what}.", param, ctx)
        return number


class PixelValue(Number):
    """A raw pixel value 0-255."""

    what = "a pixel value in the range 0<=x<=255"

    def __init__(self):
        super().__init__(0, 255)


def finite_float(text):
    """``float(text)`` if finite, else a ValueError (for :class:`CommaList` items)."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    return number


class IntList(click.ParamType):
    """Comma-separated ints in ``minimum..maximum`` (e.g. epochs ``1,2,5``); the text is kept as
    given once checked (it is recorded in the training command), ``""`` allowed when ``empty``."""

    name = "LIST"

    def __init__(self, minimum, maximum=None, example="1,2,5", empty=True):
        self.minimum, self.maximum, self.example, self.empty = minimum, maximum, example, empty

    def convert(self, value, param, ctx):
        text = str(value)
        if not text.strip() and self.empty:
            return text
        bound = f"{self.minimum}..{self.maximum}" if self.maximum is not None else f">= {self.minimum}"
        for item in (part.strip() for part in text.split(",")):
            if not re.fullmatch(r"-?\d+", item):
                self.fail(f"{item!r} in {text!r}: expected comma-separated ints like {self.example}", param, ctx)
            if int(item) < self.minimum or (self.maximum is not None and int(item) > self.maximum):
                self.fail(f"{item!r} in {text!r}: each must be {bound}", param, ctx)
        return text


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
    """The positional ``IMAGE...``: image files or built-in photo names (:data:`BUILTIN_PHOTOS`),
    and ``--max-pixels`` (:func:`max_pixels_option`)."""
    return click.argument("images", nargs=-1, required=True, metavar="IMAGE...")(max_pixels_option(function))


def images_option(function=None, *, help="Use only the first N images of the split (default: all)."):
    """``--images N``: how many images of the data are used (``None``: all)."""

    def decorate(function):
        return click.option("--images", type=click.IntRange(1), metavar="N", help=help)(function)

    return decorate(function) if function is not None else decorate


def data_options(function=None, *, default=DEFAULT_SOURCE, images="Use only the first N images of the split (default: all)."):
    """``--data SOURCE``, ``--data-dir`` (a prepared TFDS copy), ``--skip-corrupt``, ``--max-pixels``
    and ``--images N`` (help text ``images``), for every command that reads data; ``@data_options`` or
    ``@data_options(default="mnist_5k")``."""

    def decorate(function):
        function = images_option(function, help=images)
        function = max_pixels_option(function)
        function = skip_corrupt_option(function)
        function = click.option(
            "--data-dir", type=click.Path(file_okay=False), metavar="DIR", help="TFDS data directory holding a prepared copy (tfds: sources)."
        )(function)
        return click.option("--data", "data_spec", default=default, show_default=True, metavar="SOURCE", help=f"Data source: {SOURCE_FORMS}.")(
            function
        )

    return decorate(function) if function is not None else decorate


def layers_option(function=None, *, help="Comma-separated layers (default: every conv layer)."):
    """``--layers conv1,conv5`` as a list of names (checked against the model by :func:`choose_layers`)."""

    def decorate(function):
        return click.option("--layers", "layers", type=CommaList(str, "layer names like conv1,conv5"), metavar="LIST", help=help)(function)

    return decorate(function) if function is not None else decorate


class MapSelection(click.ParamType):
    """``--maps``: ``all``, a list of map indices like ``0,3,7``, or ``random:N`` (N maps per layer,
    seeded); converted to a function ``(counts {layer: maps}, seed) -> {layer: sorted indices}``."""

    name = "all|LIST|random:N"
    forms = "use 'all', a list like '0,3,7', or 'random:N' with N >= 1"

    def convert(self, value, param, ctx):
        if callable(value):
            return value
        text = str(value).strip()
        selection = self.selection(text, param, ctx)
        selection.text = text  # what was asked for, for the command line a command records
        return selection

    def selection(self, text, param, ctx):
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


RULES = ("deconvnet", "guided", "gradient")  # zfkeras.nn.adjoint.RULES (tested equal), spelled here so --help needs no TF import


def rule_option(function=None, *, help="Backward rule of the projections"):
    """``--rule deconvnet|guided|gradient``: how projections go down through ReLUs (the paper's
    deconvnet, guided backpropagation, or the plain input gradient; docs/trust.md)."""

    def decorate(function):
        return click.option(
            "--rule",
            type=click.Choice(RULES),
            default="deconvnet",
            show_default=True,
            help=f"{help}: deconvnet (the paper's: ReLU of the signal), guided (guided backprop: also only where the unit fired) "
            "or gradient (the input gradient).",
        )(function)

    return decorate(function) if function is not None else decorate


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


def penalty_option(help):
    """``--C``: the linear heads' weight of the data term against the L2 penalty
    (:func:`zfkeras.linear.fit_linear`), shared by ``zf transfer`` and ``zf layers``."""
    return click.option("--C", "C", default=1.0, show_default=True, type=Number(0, min_open=True), help=help)


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


# The --parts file of zf correspondence (and zf report).
PARTS_FORMAT = (
    '{"images": [{"file": "a.png", "parts": {"collar": [y0, x0, y1, x1], ...}, "object": [y0, x0, y1, x1]}, ...]} '
    "with the same part names for every image; boxes in model-input pixels, end exclusive; "
    '"object" (optional) bounds the random masks; files relative to the JSON file'
)


# ---- the training recipe (zf train, zf ablate) --------------------------------------------------

ARCHITECTURES = ("zfnet_small", "zfnet", "alexnet", "zfnet64", "alexnet64")  # zfkeras.nn.models.ARCHITECTURES (tested equal)
WIDTH_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")  # every architecture's (--units keys; --without 1-7)
PAPER = "paper: "
RECIPE = "zfkeras.recipe"


class KeyValues(click.ParamType):
    """``conv3=512,fc6=2048`` -> ``{"conv3": 512, "fc6": 2048}`` (positive int values), the bad item named."""

    name = "LAYER=UNITS,..."

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        from zfkeras.io.validation import parse_pairs

        try:
            pairs = parse_pairs(value, "=", "LAYER=UNITS, e.g. conv3=512,fc6=2048") if str(value).strip() else []
        except ValueError as error:
            self.fail(str(error), param, ctx)
        for key, number in pairs:
            if key not in WIDTH_LAYERS:
                self.fail(f"{key}={number}: {key!r} is not a layer with a width; use {', '.join(WIDTH_LAYERS)}", param, ctx)
            if not number.isdigit() or int(number) < 1:
                self.fail(f"{key}={number!r}: expected LAYER=UNITS with a positive int, e.g. conv3=512,fc6=2048", param, ctx)
        return {key: int(number) for key, number in pairs}


def int_list(text, name):
    """``"1,2,5"`` -> ``(1, 2, 5)``; a one-line error naming option ``name`` otherwise."""
    try:
        return tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated numbers like 1,2,5,10", param_hint=name) from None


def recipe():
    """The training options of the running command (:func:`training_options`) as one dict."""
    return dict(click.get_current_context().meta.get(RECIPE, {}))


TRAINING_PRECISION_HELP = (
    "What the training step computes in; weights, checkpoints, validation and exports stay float32. auto: the precision "
    "an unfinished run in --out began with, else mixed_bfloat16 on CPUs with AVX-512 BF16 or AMX and on GPUs of compute "
    "capability 8+, mixed_float16 (with loss scaling) on GPUs 7.x, float32 elsewhere."
)
KERNEL_INITS = ("normal", "he_normal", "glorot_uniform")


def training_options(epochs=70, epochs_help=PAPER + "stopped after 70."):
    """The paper's training recipe (Sec. 3) as options, the same on ``zf train`` and ``zf ablate``:
    architecture and input, widths and removed layers, epochs, SGD, annealing, dropout, init and
    the filter-RMS cap, and the validation split. Their values are collected into one dict,
    :func:`recipe` (the command's signature does not list them)."""

    def remember(ctx, param, value):
        ctx.meta.setdefault(RECIPE, {})[param.name] = value
        return value

    specs = recipe_specs(epochs, epochs_help)

    def decorate(function):
        for name, spec in reversed(specs):
            function = click.option(name, show_default="default" in spec and spec["default"] != "", expose_value=False, callback=remember, **spec)(
                function
            )
        return function

    return decorate


def recipe_specs(epochs, epochs_help):
    """``[(option name, click.option keywords)]`` of :func:`training_options`, in --help order."""
    return [
        (
            "--arch",
            dict(
                type=click.Choice(ARCHITECTURES),
                default="zfnet_small",
                help="Architecture: zfnet (paper, 224x224), alexnet, zfnet64 / alexnet64 (64x64 colour), or zfnet_small (ZF-shaped, 28x28).",
            ),
        ),
        ("--input-size", dict(type=click.IntRange(8, 1024), help="Model input side S (default: the architecture's, 28, 64 or 224).")),
        ("--channels", dict(type=click.Choice(["1", "3"]), help="Model input channels (default: the data's).")),
        ("--units", dict(type=KeyValues(), default="", help="Layer widths, e.g. conv3=512,fc6=2048 (Table 3 variants).")),
        (
            "--without",
            dict(default="", type=IntList(1, 7, "3,4"), help="Layers removed, e.g. 3,4 (conv3, conv4) or 6,7 (fc6, fc7) (Table 3 variants)."),
        ),
        ("--epochs", dict(default=epochs, type=click.IntRange(1), help=epochs_help)),
        ("--batch-size", dict(default=128, type=click.IntRange(1), help="Global batch, split across replicas.")),
        ("--lr", dict(default=1e-2, type=Number(0, min_open=True), help="SGD learning rate.")),
        ("--momentum", dict(default=0.9, type=Number(0, 1, max_open=True), help="SGD momentum.")),
        (
            "--patience",
            dict(default=3, type=click.IntRange(1), help="Epochs without validation-loss improvement before lr is multiplied by --anneal-factor."),
        ),
        (
            "--anneal-factor",
            dict(
                default=0.1,
                type=Number(0, 1, min_open=True, max_open=True),
                help="Learning-rate factor when validation loss stops improving (paper: 1/10).",
            ),
        ),
        ("--min-delta", dict(default=1e-4, type=Number(0), help="Smallest loss drop that counts.")),
        ("--min-lr", dict(default=1e-6, type=Number(0, min_open=True), help="Annealing never takes the learning rate below this.")),
        ("--dropout", dict(default=0.5, type=Number(0, 1, max_open=True), help="On fc6 and fc7.")),
        ("--precision", dict(type=click.Choice(("auto", *PRECISIONS)), default="auto", help=TRAINING_PRECISION_HELP)),
        ("--kernel-init", dict(type=click.Choice(KERNEL_INITS), default="normal", help="normal = N(0, --init-std) (paper); biases are 0.")),
        ("--init-std", dict(default=1e-2, type=Number(0, min_open=True), help="Standard deviation of --kernel-init normal (paper: 1e-2).")),
        ("--filter-radius", dict(default=0.1, type=Number(0), help="Cap on each conv filter's RMS (0 = off).")),
        (
            "--val-split",
            dict(
                default=0.1,
                type=Number(0, 1, max_open=True),
                help="Fraction of the training data held out for validation when no --val-data (0 = none).",
            ),
        ),
        (
            "--flip/--no-flip",
            dict(default=True, help="Random horizontal flips of training crops (paper: on; off for data a mirror changes, e.g. digits)."),
        ),
    ]
