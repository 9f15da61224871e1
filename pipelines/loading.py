"""What commands read: MODEL opened once as a Probe, data sources with one-line errors, images
fitted to a model, evaluation batches, and the folds of the transfer experiments."""

import contextlib
import dataclasses
import json
import os

import click
import numpy as np

from pipelines import options
from pipelines.options import BUILTIN_PHOTOS, PARTS_FORMAT
from pipelines.output import progressbar
from pipelines.runtime import quiet_libjpeg


def open_model(path, option="MODEL"):
    """The :class:`~zfkeras.nn.probe.Probe` of MODEL ``path``, opened once
    (:func:`zfkeras.export.open_model`: an export, a ``.keras`` file, a run directory, or
    ``keras:NAME`` with the command's ``--weights``, random ones with ``--weights none`` seeded by its
    ``--seed``), computing in the command's ``--precision`` (:func:`pipelines.options.precision_option`;
    float32 without one); one-line errors naming ``option``."""
    from zfkeras.export import open_model as open_probe

    context = click.get_current_context(silent=True)
    weights = context.meta.get("zfkeras.weights") if context else None
    precision = context.meta.get(options.PRECISION, "float32") if context else "float32"
    seed = context.meta.get(options.SEED) if context else None
    try:
        return open_probe(path, weights, precision, seed)
    except ValueError as error:
        raise click.BadParameter(str(error).strip().splitlines()[0], param_hint=option) from None


def check_rule(probe, rule):
    """A one-line error naming --rule when MODEL cannot project under ``rule`` (an export written
    before the guided and gradient rules has the deconvnet's endpoints only)."""
    if rule not in probe.rules:
        raise click.BadParameter(
            f"{probe.path}: this export has {', '.join(probe.rules)} projections only, no {rule} ones (exported before the rules or without them); "
            f"re-export it with `zf export {probe.path}/model.keras --out DIR`, or give its model.keras as MODEL",
            param_hint="--rule",
        )
    return rule


def with_all_rules(probe, option="MODEL"):
    """``probe`` if it projects under every rule and the class scores, else (an export written
    before the rules) a Keras probe of its ``model.keras``, with its class names."""
    from zfkeras.nn.probe import KerasProbe

    if set(options.RULES) <= set(probe.rules) and probe.class_layer is not None:
        return probe
    return KerasProbe(keras_model(probe, option), class_names=probe.class_names, path=probe.path, record=probe.record)


def labelled_images(data_spec, split, input_shape, count, skip_corrupt=False, data_dir=None):
    """``(images float32 [N, S, S, C], labels int64 [N], source)``: the first ``count`` images of
    the ``split`` of ``--data`` at a model's input shape, in memory."""
    batches = image_batches(data_spec, split, input_shape, 256, count=count, skip_corrupt=skip_corrupt, data_dir=data_dir)
    images, labels = [], []
    for batch, batch_labels in batches.dataset().as_numpy_iterator():
        images.append(batch)
        labels.append(batch_labels)
    if not images:
        raise click.BadParameter(f"the {split} split of {data_spec} has no images", param_hint="--data")
    return np.concatenate(images), np.concatenate(labels), batches.source


RANDOM_ARCHITECTURES = ("zfnet", "alexnet", "zfnet_small")


def open_model_or_random(model, seed):
    """``(probe, title)`` for MODEL: a model (:func:`open_model`), or ``random:ARCH`` for a new ARCH
    (:data:`RANDOM_ARCHITECTURES`) with the paper's random initial weights, seeded by ``seed``."""
    if not model.startswith("random:"):
        return open_model(model), os.path.basename(os.path.normpath(model))
    arch = model[len("random:") :]
    if arch not in RANDOM_ARCHITECTURES:
        raise click.BadParameter(f"{model}: use random:ARCH with ARCH one of {', '.join(RANDOM_ARCHITECTURES)}", param_hint="MODEL")
    import zfkeras.nn.models
    from zfkeras.nn.probe import KerasProbe

    title = f"{arch} with random paper-init weights (seed {seed}): structure comes from the image, not training"
    return KerasProbe(getattr(zfkeras.nn.models, arch)(seed=seed)), title


def distribution(name, option="--strategy"):
    """The ``tf.distribute`` strategy named ``name`` (:func:`zfkeras.training.make_strategy`), a
    one-line error naming ``option``. Call it before TensorFlow runs anything (``cpu:N``, ``multiworker``)."""
    from zfkeras.training import make_strategy

    try:
        return make_strategy(name)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


def keras_model(probe, option="MODEL"):
    """``probe.keras_model`` (an export's ``model.keras``, loaded on first use), a one-line error if it cannot be."""
    try:
        return probe.keras_model
    except ValueError as error:
        raise click.BadParameter(str(error).strip().splitlines()[0], param_hint=option) from None


def model_fields(probe):
    """``probe.fields`` (``{layer: Field}``), a one-line error naming MODEL where there are none."""
    try:
        return probe.fields
    except ValueError as error:
        raise click.UsageError(f"{probe.path}: {error}") from None


def read_photo(name_or_path):
    """uint8 ``[H, W, C]`` from an image file, or from a built-in photo name (:data:`BUILTIN_PHOTOS`).
    A file is read as a browser shows it (:func:`zfkeras.data.read_image`): refused from its header
    above ``--max-pixels``, then decoded and turned as its EXIF orientation says."""
    if name_or_path in BUILTIN_PHOTOS:
        import skimage.data

        return np.asarray(getattr(skimage.data, name_or_path)())
    if not os.path.exists(name_or_path):
        raise click.BadParameter(f"{name_or_path}: no such file, nor a built-in photo ({', '.join(BUILTIN_PHOTOS)})", param_hint="IMAGE")
    from zfkeras.data import read_image

    try:
        with quiet_libjpeg():
            return read_image(name_or_path, max_pixels=options.max_pixels())
    except ValueError as error:
        if getattr(error, "reason", ""):  # above --max-pixels: the line names the size and the limit
            raise click.BadParameter(str(error).splitlines()[0], param_hint="IMAGE") from None
        raise click.BadParameter(
            f"{name_or_path}: not a readable image (JPEG, PNG, BMP or GIF) nor a built-in photo ({', '.join(BUILTIN_PHOTOS)})", param_hint="IMAGE"
        ) from None


def open_source(spec, split, option="--data", *, data_dir=None, manual_dir=None, skip_corrupt=False, optional=False):
    """:func:`zfkeras.data.load_source` for a command: errors as one line naming ``option``;
    a held-out test split reported on stderr, and the corrupt files skipped while the command read
    the source (count and names) when the command ends.

    ``optional=True``: a source without this split gives None (the reason said on stderr); a
    corrupt file is still an error."""
    from zfkeras import data

    # Folder sources read image headers; other sources may show download progress on stderr.
    quiet = quiet_libjpeg() if isinstance(spec, str) and spec.strip().startswith("folder:") else contextlib.nullcontext()
    try:
        with quiet:
            source = data.load_source(
                spec, split, data_dir=data_dir, manual_dir=manual_dir, skip_corrupt=skip_corrupt, max_pixels=options.max_pixels()
            )
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
        note = f"{source.name}: {data.describe_holdout(source.holdout)}"
        said = context.meta.setdefault("zfkeras.notes", set()) if context is not None else set()
        if note not in said:  # once per command, though it opens the train and the test split
            said.add(note)
            click.echo(note, err=True)
    return source


def report_skipped(source):
    """Say on stderr which unreadable (or too large) images of ``source`` were skipped
    (``--skip-corrupt``), if any, and why where a reason is known (tfrecord shards, the pixel limit)."""
    if source.skipped:
        click.echo(f"skipped {source.skipped} unreadable image(s) of the {source.split} split of {source.name}:", err=True)
        for name in source.skipped_files:
            click.echo(f"  {name}", err=True)


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


def choose_layers(given, probe, option="--layers", names=None, what="valid layers"):
    """``given`` layer names (a name, a list, or None for all of ``names``: the probe's projectable
    maps, ``probe.layer_names``, by default) as a list of those names, each alias the probe accepts
    (``probe.layer_aliases``, e.g. ResNet's ``..._relu`` for its ``..._conv`` map) replaced by the
    name it stands for; else a one-line error naming ``option`` and listing ``what`` is valid."""
    from zfkeras.io.validation import layer_names

    valid = probe.layer_names if names is None else names
    try:
        return layer_names(given, valid, what, aliases=probe.layer_aliases)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


def load_images(paths, input_shape):
    """``[(name, raw pixels at input_shape)]`` for image files or built-in photos. Each name names
    output files: the file's stem, or ``folder-stem`` where stems repeat (a class folder tree's
    ``cat/001.png`` and ``dog/001.png``); names that still repeat are refused."""
    from zfkeras.data.transforms import fit_image

    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    images, seen = [], {}
    for path, stem in zip(paths, stems):
        name = stem if stems.count(stem) == 1 else f"{os.path.basename(os.path.dirname(os.path.abspath(path)))}-{stem}"
        if name in seen:
            raise click.BadParameter(f"{seen[name]} and {path} would both write {name}.*; rename one", param_hint="IMAGE")
        seen[name] = path
        images.append((name, fit_image(read_photo(path), input_shape).pixels))
    return images


def draw_folds(labels, per_class, folds, test_per_class, seed, class_names):
    """``{N: [Fold, ...]}`` for every N of ``per_class``, with one-line errors naming --per-class."""
    from zfkeras.experiments.folds import class_folds

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
    from zfkeras.experiments.transfer import feature_layers
    from zfkeras.io.validation import layer_names

    try:
        return layer_names(names, feature_layers(model), "layers with features")
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


def image_batches(data_spec, split, input_shape, batch_size, count=None, start=0, skip_corrupt=False, data_dir=None):
    """:class:`zfkeras.data.ImageBatches` of the ``split`` of ``--data`` at a model's input shape
    (images ``start`` .. ``start + count - 1``), with one-line errors."""
    from zfkeras.data import ImageBatches

    source = open_source(data_spec, split, "--data", data_dir=data_dir, skip_corrupt=skip_corrupt)
    height, width, _ = input_shape
    if height != width:
        raise click.UsageError(f"the data pipeline makes square crops; the model's input is {height}x{width}")
    total = source.num_examples
    if total is not None and start >= total:
        raise click.BadParameter(f"the {split} split of {data_spec} has {total} images; nothing from image {start} on", param_hint="--images/--shard")
    return ImageBatches(source, input_shape, batch_size, count=count, start=start)


def labelled_examples(source, input_shape, batch_size=64):
    """``(image [S, S, C] float32 raw pixels, label)`` of every example of an opened source, in
    order, at a model's input shape (the evaluation view, :class:`zfkeras.data.ImageBatches`)."""
    from zfkeras.data import ImageBatches

    for images, labels in ImageBatches(source, input_shape, batch_size).dataset().as_numpy_iterator():
        yield from zip(images, labels)


def map_counts(probe, layers):
    """``{layer: number of maps}`` from one forward pass of a blank image."""
    features = probe.features(np.zeros((1, *probe.input_shape), "float32"), layers=layers)
    return {layer: int(features[layer].shape[-1]) for layer in layers}


def find_checkpoints(path):
    """``[(epoch, file)]`` sorted by epoch, from a run dir or export (its ``checkpoints/``, or those
    beside its ``.keras`` file) or a directory holding the ``epoch-XXX.keras`` files itself."""
    from zfkeras.training import RunDir

    if os.path.isfile(path) and path.endswith(".keras"):
        path = os.path.dirname(os.path.abspath(path))  # run/model.keras: the run's checkpoints
    if not os.path.isdir(path):
        raise click.BadParameter(
            f"{path}: not a directory; give a training run dir, an export with checkpoints/, or a dir of epoch-XXX.keras files", param_hint="MODEL"
        )
    run = RunDir(path)
    if os.path.isdir(run.checkpoints_dir):
        found = run.checkpoints()
    else:  # a directory of checkpoints itself
        found = sorted((epoch, os.path.join(path, name)) for name in os.listdir(path) if (epoch := RunDir.checkpoint_epoch(name)) is not None)
    if not found:
        raise click.BadParameter(f"{path}: no epoch-XXX.keras checkpoints in it or in its checkpoints/ folder", param_hint="MODEL")
    return found


def load_checkpoint(file):
    """The Keras model of one checkpoint file, a one-line error naming it if it cannot be loaded."""
    from zfkeras.export import load_keras

    try:
        return load_keras(file)[1]
    except ValueError as error:
        raise click.UsageError(f"cannot load checkpoint {file}: {str(error).splitlines()[0]}") from None


def read_parts(path):
    """``(image paths, paths as written in the file, {part: [N, 4] boxes}, object boxes [N, 4] or None)``
    from a parts JSON file."""

    def bad(message):
        return click.BadParameter(f"{path}: {message}. Expected {PARTS_FORMAT}", param_hint="--parts")

    try:
        with open(path) as handle:
            spec = json.load(handle)
    except (OSError, ValueError) as error:
        raise bad(f"cannot read JSON ({str(error).splitlines()[0]})") from None
    entries = spec.get("images") if isinstance(spec, dict) else None
    if not isinstance(entries, list) or len(entries) < 2:
        raise bad('needs an "images" list of at least 2 entries')
    files, given_files, parts, objects = [], [], {}, []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not isinstance(entry.get("parts"), dict):
            raise bad(f'images[{index}] needs "file" (a string) and "parts" (an object)')
        names = list(entry["parts"])
        if index and names != list(parts):
            raise bad(f"images[{index}] has parts {names}, images[0] has {list(parts)}; every image needs the same parts")
        for name, box in entry["parts"].items():
            if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) for v in box)):
                raise bad(f"images[{index}].parts.{name} = {box!r} is not 4 integers [y0, x0, y1, x1]")
            parts.setdefault(name, []).append(box)
        objects.append(entry.get("object"))
        file = entry["file"] if os.path.isabs(entry["file"]) else os.path.join(os.path.dirname(os.path.abspath(path)), entry["file"])
        if not os.path.isfile(file):
            raise bad(f"images[{index}].file {entry['file']!r} does not exist")
        files.append(file)
        given_files.append(entry["file"])
    given = [o is not None for o in objects]
    if any(given) and not all(given):
        raise bad('give an "object" box for every image or for none')
    return (files, given_files, {name: np.asarray(boxes) for name, boxes in parts.items()}, (np.asarray(objects) if all(given) else None))


def train_config(recipe, train_source, **fields):
    """The :class:`zfkeras.training.TrainConfig` of a command's training options (:func:`pipelines.options.recipe`)
    for ``train_source`` (its classes; its channels unless ``--channels``), plus ``fields``; a one-line error."""
    from zfkeras.nn.models import ARCHITECTURES
    from zfkeras.training import TrainConfig

    values = dict(recipe)
    size = values.pop("input_size") or ARCHITECTURES[values["arch"]]().input_shape[0]
    channels = int(values.pop("channels") or train_source.channels)
    values.update(
        input_shape=(size, size, channels),
        num_classes=len(train_source.class_names),
        without=options.int_list(values["without"], "--without"),
        filter_radius=values["filter_radius"] or None,
    )
    try:
        return TrainConfig(**{**values, **fields})
    except ValueError as error:
        raise click.UsageError(str(error).splitlines()[0]) from None


def read_atlas(directory, option="--atlas"):
    """The ``atlas.json`` of a ``zf atlas`` output directory, or a one-line error naming ``option``."""
    path = os.path.join(directory, "atlas.json")
    try:
        with open(path) as handle:
            data = json.load(handle)
        data["layers"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not the atlas.json of zf atlas"
        raise click.BadParameter(f"{path}: {reason}", param_hint=option) from None
    return data
