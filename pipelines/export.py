"""``zf export``: a ``.keras`` model -> a SavedModel directory with serve/features/project endpoints."""

import json
import os
import re

import click

from pipelines import _common


def _run_record(model_path):
    """The training run's ``config.json`` beside or above MODEL (run_dir/model.keras or
    run_dir/checkpoints/epoch-NNN.keras), and its history, if there is one."""
    here = os.path.dirname(os.path.abspath(model_path))
    for run_dir in (here, os.path.dirname(here)):
        path = os.path.join(run_dir, "config.json")
        if os.path.exists(path):
            with open(path) as handle:
                record = json.load(handle)
            history_path = os.path.join(run_dir, "history.json")
            history = json.load(open(history_path)) if os.path.exists(history_path) else None
            return record, history
    return None, None


def _metrics_at(history, model_path):
    """The history entry of MODEL's epoch (a checkpoint ``epoch-NNN.keras``, else the last one)."""
    if not history or not history.get("epoch"):
        return None
    match = re.fullmatch(r"epoch-(\d+)\.keras", os.path.basename(model_path))
    epoch = int(match.group(1)) if match else history["epoch"][-1]
    if epoch not in history["epoch"]:
        return None
    index = history["epoch"].index(epoch)
    metrics = {key: values[index] for key, values in history.items() if key != "epoch" and len(values) > index}
    return {**metrics, "epochs": epoch}


@click.command()
@_common.model_argument
@_common.out_option(results="zfkeras.json", help="Export directory, e.g. saved_models/NAME.")
@click.option("--class-names", metavar="LIST", help="Comma-separated class names (default: from the run's config.json, else 0..C-1).")
def export(model, out, class_names):
    """Export MODEL (a .keras file, a run directory holding model.keras, or keras:NAME with
    --weights) to a SavedModel directory usable without zfkeras.

    Endpoints: serve(images) -> probabilities, features(images) -> every conv layer and fc6/fc7,
    project_<conv>(images, channel, position) and project_map_<conv>(images, channel) -> deconvnet
    reconstructions; plus model.keras, mean.npy and zfkeras.json (metadata). The training command,
    config and last-epoch metrics come from the run directory's config.json / history.json.
    """
    from zfkeras.export import export_model

    model_path = _common.model_file(model)
    probe = _common.load_probe(model_path)
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
            probe.model, out, class_names=names, config=record, metrics=metrics, command=record.get("command") if record else None, history=history
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    click.echo(f"exported {model_path} -> {out}")
