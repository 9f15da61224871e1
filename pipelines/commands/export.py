"""``zf export``: a ``.keras`` model -> a SavedModel directory with serve/features/project endpoints."""

import os

import click

from pipelines import loading, options


def _run_record(model_path):
    """The training run's ``config.json`` beside or above MODEL (run_dir/model.keras or
    run_dir/checkpoints/epoch-NNN.keras), and its history, if there is one."""
    from zfkeras.training import RunDir

    here = os.path.dirname(os.path.abspath(model_path))
    for run in (RunDir(here), RunDir(os.path.dirname(here))):
        record = run.read_config()
        if record is not None:
            return record, run.read_history()
    return None, None


def _metrics_at(history, model_path):
    """The history entry of MODEL's epoch (a checkpoint ``epoch-NNN.keras``, else the last one)."""
    if not history or not history.get("epoch"):
        return None
    from zfkeras.training import RunDir

    epoch = RunDir.checkpoint_epoch(model_path) or history["epoch"][-1]
    if epoch not in history["epoch"]:
        return None
    index = history["epoch"].index(epoch)
    metrics = {key: values[index] for key, values in history.items() if key != "epoch" and len(values) > index}
    return {**metrics, "epochs": epoch}


@click.command()
@options.model_argument
@options.weights_seed_option
@options.out_option(results="zfkeras.json", help="Export directory, e.g. saved_models/NAME.")
@click.option("--class-names", metavar="LIST", help="Comma-separated class names (default: from the run's config.json, else 0..C-1).")
def export(model, out, class_names):
    """Export MODEL (a .keras file, a run directory holding model.keras, or keras:NAME with
    --weights) to a SavedModel directory usable without zfkeras.

    Endpoints: serve(images) -> probabilities, features(images) -> every conv layer and fc6/fc7,
    project_<conv>(images, channel, position) and project_map_<conv>(images, channel) -> deconvnet
    reconstructions, the same with _guided and _gradient appended for the other backward rules, and
    project_predictions[_RULE](images, class) for the class scores; plus model.keras, mean.npy and
    zfkeras.json (metadata). The training command,
    config and last-epoch metrics come from the run directory's config.json / history.json.
    """
    from zfkeras.export import export_model, model_file

    try:
        model_path = model if model.startswith("keras:") else model_file(model)
    except ValueError as error:
        raise click.BadParameter(str(error).splitlines()[0], param_hint="MODEL") from None
    probe = loading.open_model(model_path)
    record, history = (None, None) if model_path.startswith("keras:") else _run_record(model_path)
    if class_names:
        names = [name.strip() for name in class_names.split(",")]
    elif record and record.get("class_names"):
        names = record["class_names"]
    else:
        names = probe.class_names
    metrics = _metrics_at(history, model_path)
    try:
        export_model(
            loading.keras_model(probe),
            out,
            class_names=names,
            config=record,
            metrics=metrics,
            command=record.get("command") if record else None,
            history=history,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    click.echo(f"exported {model_path} -> {out}")
