"""``zf evaluate``: top-1/top-5 error of models and of their average (paper Table 2), 1 and 10 crops."""

import os
import sys

import click

from pipelines import _common

COLUMNS = (
    ("top1_error", "top-1"),
    ("top5_error", "top-5"),
    ("ten_crop_top1_error", "top-1 (10 crops)"),
    ("ten_crop_top5_error", "top-5 (10 crops)"),
)


def evaluate_on_source(probes, source, crops="ten", batch_size=100, limit=None):
    """:func:`zfkeras.evaluate.evaluate` of ``probes`` on a data Source, with a progress bar.

    Images are resized (smaller side to ``load_size(S)``) and centre-cropped to ``S x S`` (single
    crop), or cut into the paper's 10 crops, exactly as :func:`zfkeras.data.eval_dataset` does.
    """
    from zfkeras import data
    from zfkeras.evaluate import check_compatible, evaluate

    check_compatible(probes)
    size, _, channels = next(iter(probes.values())).input_shape
    dataset = data.eval_dataset(source, size, channels, batch_size, crops="ten" if crops == "ten" else "center")
    total = source.num_examples
    if limit:
        dataset = dataset.unbatch().take(limit).batch(batch_size)
        total = min(limit, total or limit)
    with click.progressbar(length=total or 0, label="evaluating", file=sys.stderr) as bar:
        return evaluate(probes, dataset.as_numpy_iterator(), on_batch=bar.update)


def format_table(result):
    """The printed table: one row per model (+ the ensemble), errors in percent."""
    rows = list(result["models"].items())
    if result.get("ensemble"):
        rows.append((f"average of {len(result['models'])} models", result["ensemble"]))
    columns = [(key, title) for key, title in COLUMNS if key in rows[0][1]]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'model':<{width}}  " + "  ".join(f"{title:>16}" for _, title in columns)]
    for name, errors in rows:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{100 * errors[key]:15.2f}%" for key, _ in columns))
    return "\n".join(lines)


@click.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--data", "data_spec", default="fashion_mnist", show_default=True,
              help="Source: fashion_mnist, idx:PATH, folder:PATH or tfds:NAME.")
@click.option("--split", default="test", show_default=True, help="Split of the source to evaluate on.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="TFDS data directory (tfds: sources).")
@click.option("--crops", type=click.Choice(["ten", "single"]), default="ten", show_default=True,
              help="ten: single centre crop AND 10-crop numbers; single: centre crop only (10x faster).")
@click.option("--limit", type=click.IntRange(1), help="Evaluate only the first N images.")
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1))
@click.option("--out", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@_common.skip_corrupt_option
@_common.seed_option
@_common.weights_option
def evaluate(models, data_spec, split, data_dir, crops, limit, batch_size, out, skip_corrupt, seed):
    """Top-1 and top-5 error of each MODEL (SavedModel directory or .keras file) and of their average.

    With several MODELS their class probabilities are averaged (the paper's Table 2 ensembles).
    Single-crop numbers use the centre crop; 10-crop numbers average the probabilities of the
    4 corner + centre crops and their mirror images.
    """
    if out:
        _common.check_output(out, directory=False)
    _common.seed_everything(seed)

    names = _unique_names(models)
    probes = {}
    for name, path in zip(names, models):
        try:
            probes[name] = _common.load_probe(path)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="MODEL") from None
    source = _common.open_source(data_spec, split, "--data", data_dir=data_dir, skip_corrupt=skip_corrupt)
    try:
        result = evaluate_on_source(probes, source, crops, batch_size, limit)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        raise click.UsageError(str(error)) from None
    click.echo(f"{source.name} ({split}), {result['num_images']} images")
    click.echo(format_table(result))
    if out:
        result.update(data=source.name, split=split, crops=crops, paths=dict(zip(names, models)))
        if source.holdout:
            result["holdout"] = source.holdout
        if source.skipped:
            result["skipped_files"] = list(source.skipped_files)
        _common.write_json(out, result)
        click.echo(f"wrote {out}")


def _unique_names(paths):
    """Short row names for the table: the model's directory/file name, numbered if repeated."""
    names = []
    for path in paths:
        base = os.path.basename(os.path.normpath(path))
        if base == "model.keras":
            base = os.path.basename(os.path.dirname(os.path.abspath(path)))
        name, count = base, 2
        while name in names:
            name, count = f"{base} ({count})", count + 1
        names.append(name)
    return names
