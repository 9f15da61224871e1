"""``zf train``: train a ZFNet-family model with the paper's recipe (Sec. 3), optionally export it."""

import contextlib
import os
import shlex
import sys
import time

import click

from pipelines import loading, options, output, runtime


def epoch_summary(epochs, run_dir):
    """A Keras callback printing one line per epoch (the pipeline's output, not the library's), and
    the files skipped as unreadable so far (``RUN_DIR/skipped_files.json``)."""
    import keras

    from zfkeras.training import RunDir

    class EpochSummary(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            line = f"epoch {epoch + 1:3d}/{epochs}  loss {logs['loss']:.4f}  acc {100 * logs['accuracy']:6.2f}%"
            if logs.get("val_loss") is not None:
                line += f"  val_loss {logs['val_loss']:.4f}  val_acc {100 * logs['val_accuracy']:6.2f}%"
            click.echo(line + f"  lr {logs['lr']:.0e}  {logs['seconds']:.1f} s")
            if logs.get("skipped"):
                import json

                with open(RunDir(run_dir).skipped_file) as handle:
                    skipped = json.load(handle)
                shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
                click.echo(f"skipped {len(skipped)} unreadable image file(s) so far: {shown}", err=True)

    return EpochSummary()


def command_line(ctx, **resolved):
    """The full ``zf train`` command with every option spelled out (defaults included, ``resolved``
    values such as the precision ``auto`` chose in place of the given ones), so the recorded
    command retrains the same model even if defaults change."""
    words = ctx.command_path.split()
    if words and words[0] != "zf":
        words = ["zf", "train"]
    values = {**ctx.params, **options.recipe(), **resolved}
    for param in ctx.command.params:
        value = values.get(param.name)
        if not isinstance(param, click.Option) or value is None:
            continue
        if param.is_flag and param.secondary_opts:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            if value:
                words.append(param.opts[0])
        else:
            words += [param.opts[0], str(value)]
    return shlex.join(words)


@click.command()
@options.training_options()
@click.option("--data", "data_spec", default="fashion_mnist", show_default=True, metavar="SOURCE", help=f"Training source: {options.SOURCE_FORMS}.")
@click.option("--data-dir", type=click.Path(file_okay=False), metavar="DIR", help="TFDS data directory holding a prepared copy (tfds: sources).")
@click.option("--manual-dir", type=click.Path(file_okay=False), metavar="DIR", help="TFDS manual download directory (e.g. ImageNet tarballs).")
@options.skip_corrupt_option
@options.max_pixels_option
@click.option(
    "--cache",
    default="auto",
    show_default=True,
    help="Where resized training images come from: auto (memory when they fit --cache-budget), "
    "memory, none (decode every epoch) or a directory for a memory-mapped file. Never changes the batches.",
)
@click.option(
    "--cache-budget", default=2048, show_default=True, type=click.IntRange(0), help="MiB of resized images --cache auto may keep in memory."
)
@options.images_option(help="Use only the first N images of each split read: training, --val-data and, with --export, the test split (default: all).")
@click.option("--val-data", default=None, help="Validation source (its test split). Default: hold out --val-split.")
@click.option(
    "--checkpoint-epochs",
    default="1,2,5,10,20,30,40,64",
    show_default=True,
    type=options.IntList(1),
    help="Epochs whose model is kept in OUT/checkpoints (clipped to --epochs).",
)
@click.option("--strategy", default="auto", show_default=True, help="auto (every GPU, else one device), mirrored, multiworker (TF_CONFIG) or cpu:N.")
@click.option(
    "--out", "run_dir", type=click.Path(file_okay=False), metavar="DIR", help="Run directory (required); an unfinished run there is resumed."
)
@click.option("--run-dir", "old_run_dir", type=click.Path(file_okay=False), hidden=True, help="Deprecated name of --out.")
@click.option(
    "--export",
    "export_path",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Then evaluate on the test split and export here (e.g. out/NAME), kept checkpoints included.",
)
@click.option(
    "--log-projections",
    default=4,
    show_default=True,
    type=click.IntRange(0),
    help="Maps per conv layer whose deconvnet projections are logged to TensorBoard each epoch (0: off).",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Keras progress bar per epoch.")
@options.seed_option
def train(
    data_spec,
    data_dir,
    manual_dir,
    skip_corrupt,
    cache,
    cache_budget,
    images,
    val_data,
    checkpoint_epochs,
    strategy,
    run_dir,
    old_run_dir,
    export_path,
    log_projections,
    progress,
    seed,
):
    """Train ARCH on --data with the paper's recipe; every value is an option.

    Writes OUT/{config.json, history.json, model.keras, checkpoints/, logs/ (TensorBoard)};
    a killed run restarted with the same command resumes from its last epoch.
    """
    run_dir, option = (run_dir, "--out") if run_dir or not old_run_dir else (old_run_dir, "--run-dir")
    if not run_dir:
        raise click.UsageError("Missing option '--out' (the run directory).")
    from zfkeras.training import make_strategy

    # The strategy comes first: cpu:N and multiworker must be set up before TF runs anything.
    try:
        distribution = make_strategy(strategy)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--strategy") from None
    runtime.seed_everything(seed)
    output.check_output(run_dir, option)
    if export_path:
        output.check_output(export_path, "--export", results="zfkeras.json")
    reading = dict(data_dir=data_dir, manual_dir=manual_dir, skip_corrupt=skip_corrupt)
    train_source, val_source, test_source = _sources(data_spec, val_data, export_path, images, reading)
    recipe = options.recipe()
    fields = dict(checkpoint_epochs=options.int_list(checkpoint_epochs, "--checkpoint-epochs"), seed=seed, strategy=strategy, data=data_spec)
    fields.update(val_data=val_data, val_split=0.0 if val_data else recipe["val_split"])
    config = loading.train_config(recipe, train_source, **fields).resolved(run_dir)
    command = command_line(click.get_current_context(), precision=config.precision)
    click.echo(
        f"training {config.arch} {config.input_shape} on {train_source.name} ({train_source.num_examples} images, "
        f"{config.num_classes} classes), {distribution.num_replicas_in_sync} replica(s), {config.precision}, {config.epochs} epochs -> {run_dir}",
        err=True,
    )
    callbacks = [resume_notice(run_dir, config.epochs), epoch_summary(config.epochs, run_dir)]
    if log_projections:
        callbacks.append(projection_logger(train_source, config, log_projections, run_dir))
    metadata = {"command": command}
    if train_source.holdout:
        metadata["test_split"] = {"held_out": True, **train_source.holdout}
    caching = dict(cache=_checked_cache(cache, train_source), cache_budget=cache_budget * 1024**2)
    model, history, seconds = _train(config, train_source, val_source, run_dir, distribution, progress, metadata, callbacks, caching)
    from zfkeras.training import worker_role

    if not worker_role(distribution)[0]:
        click.echo(f"trained in {seconds:.0f} s (worker; the chief writes the run and the export)")
        return
    click.echo(f"trained in {seconds:.0f} s; final model {os.path.join(run_dir, 'model.keras')}")
    if export_path:
        _export(model, train_source, test_source, history, seconds, export_path, run_dir, command)


def _sources(data_spec, val_data, export_path, images, reading):
    """The training, validation (``--val-data`` or None) and, with ``--export``, test sources, all
    opened before training so a bad one stops the run at once."""
    train_source = loading.limit_images(loading.open_source(data_spec, "train", "--data", **reading), images)
    if len(train_source.class_names) < 2:
        raise click.BadParameter(
            f"{train_source.name} has {len(train_source.class_names)} class ({', '.join(train_source.class_names)}); "
            "training needs at least 2 (one sub-folder per class for folder: sources)",
            param_hint="--data",
        )
    val_source = loading.limit_images(loading.open_source(val_data, "test", "--val-data", **reading), images) if val_data else None
    test_source = loading.open_source(data_spec, "test", "--data", optional=True, **reading) if export_path else None
    test_source = test_source and loading.limit_images(test_source, images)
    if export_path and test_source is None:
        click.echo(f"the export will have no test metrics: {data_spec} has no test split", err=True)
    return train_source, val_source, test_source


def _checked_cache(cache, train_source):
    """``--cache`` checked before any work (a one-line error naming it)."""
    from zfkeras.data import plan_cache

    try:
        plan_cache(cache, train_source.num_examples, 1, 1)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--cache") from None
    return cache


def resume_notice(run_dir, epochs):
    """A Keras callback saying ``resuming from epoch N of OUT`` when the run picks up an unfinished one."""
    import keras

    class ResumeNotice(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if (logs or {}).get("backup"):  # the backup was truncated by a kill: what was done about it
                click.echo((logs or {})["backup"], err=True)
            done = getattr(self.model, "_initial_epoch", None) or 0  # set by BackupAndRestore, which runs first
            if done:
                click.echo(f"resuming from epoch {done + 1} of {run_dir} ({done} of {epochs} epochs done)", err=True)

    return ResumeNotice()


def projection_logger(source, config, maps, run_dir, images=64):
    """Fig. 4 live: the first ``maps`` maps of every conv layer, strongest activation over a fixed
    set of ``images`` training images (centre crops), projected to TensorBoard each epoch."""
    from zfkeras.data import eval_dataset
    from zfkeras.training import RunDir
    from zfkeras.training.callbacks import ProjectionLogger

    batch = next(iter(eval_dataset(source, config.input_shape[0], config.input_shape[2], images, cache=False)))[0]
    layers = [f"conv{i}" for i, conv in enumerate(config.model_spec().convs, 1) if conv is not None]
    chosen = {layer: list(range(min(maps, config.model_spec().convs[int(layer[4:]) - 1].filters))) for layer in layers}
    return ProjectionLogger(batch.numpy(), chosen, os.path.join(RunDir(run_dir).logs_dir, "projections"))


def _train(config, train_source, val_source, run_dir, distribution, progress, metadata, callbacks, caching):
    from zfkeras.training import train as train_model

    started = time.monotonic()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # progress (Keras's bar, a line per epoch) goes to stderr
            model, history = train_model(
                config, train_source, val_source, run_dir, callbacks=callbacks, progress=progress, strategy=distribution, metadata=metadata, **caching
            )
    except (ValueError, FloatingPointError) as error:
        raise click.ClickException(str(error)) from None
    return model, history, time.monotonic() - started


def _export(model, train_source, test_source, history, seconds, export_path, run_dir, command):
    from zfkeras.export import export_model
    from zfkeras.training import RunDir

    metrics = {key: history[key][-1] for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr")}
    metrics.update(epochs=len(history["epoch"]), train_seconds=sum(history["seconds"]), command_seconds=seconds)
    if test_source is None:
        click.echo("no test split: exporting without test metrics", err=True)
        metrics["test_split"] = None
    else:
        what = "held-out test split" if test_source.holdout else "test split"
        click.echo(f"evaluating on {test_source.name} {what} (centre crop and 10 crops)", err=True)
        from zfkeras.nn.probe import KerasProbe

        result = output.evaluated({"model": KerasProbe(model)}, test_source)
        metrics.update(test_data=test_source.name, test_images=result["num_images"])
        metrics["test_split"] = {"held_out": True, **test_source.holdout} if test_source.holdout else {"held_out": False}
        if test_source.skipped:
            metrics["test_skipped_files"] = list(test_source.skipped_files)
        metrics.update({f"test_{key}": value for key, value in result["models"]["model"].items()})
        click.echo(
            f"test top-1 error {100 * metrics['test_top1_error']:.2f}% (10-crop {100 * metrics['test_ten_crop_top1_error']:.2f}%), "
            f"top-5 {100 * metrics['test_top5_error']:.2f}%"
        )
    run = RunDir(run_dir)
    record = run.read_config()
    checkpoints = [path for _, path in run.checkpoints()]  # finished ones only, not a killed writer's partial folder
    export_model(
        model,
        export_path,
        class_names=train_source.class_names,
        config=record,
        metrics=metrics,
        command=command,
        checkpoints=checkpoints,
        history=history,
    )
    click.echo(f"exported {export_path}")
