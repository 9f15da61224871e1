"""``zf evaluate``: top-1/top-5 error of models and of their average (paper Table 2), 1 and 10 crops."""

import os

import click

from pipelines import loading, options, output


def model_input(probe):
    """What a consumer passes to the model: an export's ``zfkeras.json`` ``input`` entry (``serve``
    takes native images of any size), else the Keras model's input at its size."""
    metadata = getattr(probe, "metadata", None)
    if metadata and isinstance(metadata.get("input"), dict):
        return metadata["input"]
    height, width, channels = probe.input_shape
    return {
        "model": {
            "dtype": "float32",
            "shape": [None, height, width, channels],
            "range": [0, 255],
            "what": "raw pixel values at the model's input size; the mean is subtracted inside",
        }
    }


def describe_input(described):
    """One line for the terminal: ``input: float32 [N, 28, 28, 1] raw 0-255 (serve: any H x W)``."""
    model = described.get("model", {})
    shape = ", ".join("N" if v is None else str(v) for v in model.get("shape", []))
    line = f"input: {model.get('dtype', 'float32')} [{shape}] raw {model.get('range', [0, 255])[0]}-{model.get('range', [0, 255])[1]}"
    return line + (" (serve: native images of any H x W)" if "serve" in described else "")


def format_table(result):
    """The printed table: one row per model (+ the ensemble), errors in percent."""
    rows = list(result["models"].items())
    if result.get("ensemble"):
        rows.append((f"average of {len(result['models'])} models", result["ensemble"]))
    columns = [(key, title) for key, title in output.ERROR_COLUMNS if key in rows[0][1]]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'model':<{width}}  " + "  ".join(f"{title:>16}" for _, title in columns)]
    for name, errors in rows:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{100 * errors[key]:15.2f}%" for key, _ in columns))
    return "\n".join(lines)


@click.command()
@options.model_argument(many=True)
@options.weights_seed_option
@options.data_options(images="Evaluate only the first N images of the split (default: all).")
@click.option("--split", default="test", show_default=True, help="Split of the source to evaluate on.")
@click.option(
    "--crops",
    type=click.Choice(["ten", "single"]),
    default="ten",
    show_default=True,
    help="ten: single centre crop AND 10-crop numbers; single: centre crop only (10x faster).",
)
@options.batch_size_option(100)
@options.precision_option
@options.out_option(required=False, help="Output directory: results.json (default: only print the table).")
def evaluate(models, data_spec, data_dir, skip_corrupt, images, split, crops, batch_size, out):
    """Top-1 and top-5 error of each MODEL and of their average.

    With several MODELs their class probabilities are averaged (the paper's Table 2 ensembles).
    Single-crop numbers use the centre crop; 10-crop numbers average the probabilities of the
    4 corner + centre crops and their mirror images. Writes OUT/results.json with --out.
    """
    names = _unique_names(models)
    probes = {name: loading.open_model(path) for name, path in zip(names, models)}
    source = loading.open_source(data_spec, split, "--data", data_dir=data_dir, skip_corrupt=skip_corrupt)
    source = loading.limit_images(source, images)
    try:
        result = output.evaluated(probes, source, crops, batch_size)
    except (ValueError, RuntimeError) as error:  # models that cannot be averaged, unreadable data
        raise click.UsageError(str(error).strip().splitlines()[0]) from None
    click.echo(f"{source.name} ({split}), {result['num_images']} images")
    click.echo(format_table(result))
    inputs = {name: model_input(probe) for name, probe in probes.items()}
    for name, described in inputs.items():
        click.echo(f"{name} {describe_input(described)}")
    if out:
        result.update(data=source.name, split=split, crops=crops, paths=dict(zip(names, models)), inputs=inputs)
        if source.holdout:
            result["holdout"] = source.holdout
        if source.skipped:
            result["skipped_files"] = list(source.skipped_files)
        from zfkeras.io.atomic import atomic_output

        with atomic_output(out, directory=True) as target:
            output.write_json(os.path.join(target, "results.json"), result)
        click.echo(f"wrote {out}/results.json")


def _unique_names(paths):
    """Short row names for the table: the model's directory/file name, numbered if repeated."""
    from zfkeras.training import RunDir

    names = []
    for path in paths:
        base = os.path.basename(os.path.normpath(path))
        if base == RunDir.MODEL:
            base = os.path.basename(os.path.dirname(os.path.abspath(path)))
        name, count = base, 2
        while name in names:
            name, count = f"{base} ({count})", count + 1
        names.append(name)
    return names
