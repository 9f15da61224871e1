"""``zf transfer``: pretrained features against training from scratch on a new data set (paper
Tables 4-5, Fig. 9; see :mod:`zfkeras.transfer`)."""

import os
import shutil
import tempfile
import time

import click

from pipelines import figures, loading, options, output, runtime

METHOD_NAMES = {"scratch": "Non-pretrained convnet", "pretrained": "Pretrained convnet", "finetune": "Pretrained, fine-tuned"}


@click.command()
@options.model_argument
@options.data_options(default="mnist_5k", images="Use only the first N images of --split, which the folds are drawn from (default: all).")
@options.fold_options("1,5,10,15,30")
@click.option("--layer", default="fc7", show_default=True, help="Layers up to this one stay frozen; a new softmax reads it.")
@click.option(
    "--scratch-epochs",
    default=30,
    show_default=True,
    type=click.IntRange(0),
    help="Epochs of the from-scratch training on each fold's images (0: skip it).",
)
@click.option(
    "--scratch-steps",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="At least this many SGD steps per scratch or fine-tuning run: few images per class get more epochs (0: --scratch-epochs only).",
)
@click.option("--flip/--no-flip", default=True, show_default=True, help="Random horizontal flips in scratch and fine-tuning runs (off for digits).")
@click.option("--finetune", is_flag=True, help="Also fine-tune every layer from the pretrained weights (--scratch-epochs epochs).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), help="SGD batch of scratch and fine-tuning runs.")
@click.option(
    "--lr", default=1e-2, show_default=True, type=options.Number(0, min_open=True), help="SGD learning rate of scratch and fine-tuning runs."
)
@options.penalty_option(help="Softmax head: weight of the data term against the L2 penalty.")
@options.out_option
@options.seed_option
def transfer(
    model,
    data_spec,
    data_dir,
    skip_corrupt,
    images,
    per_class,
    split,
    folds,
    test_per_class,
    layer,
    scratch_epochs,
    scratch_steps,
    flip,
    finetune,
    batch_size,
    lr,
    C,
    out,
    seed,
):
    """Transfer MODEL's features to --data with few images per class (Tables 4-5, Fig. 9).

    For each N of --per-class and each of --folds draws of N training and up to --test-per-class
    test images per class (from the source's --split, default train), it reports the mean
    per-class accuracy of: a new softmax on MODEL's frozen --layer features ("pretrained"), the same architecture
    trained from random weights on the N images ("scratch"), and with --finetune every layer
    trained from the pretrained weights. Writes results.json (every run with its image indices),
    results.csv, table.txt and figure.png (Fig. 9) to --out.
    """
    runtime.seed_everything(seed)
    probe = loading.open_model(model)
    keras_model = loading.keras_model(probe)
    source = loading.limit_images(loading.open_source(data_spec, split, data_dir=data_dir, skip_corrupt=skip_corrupt), images)
    loading.check_feature_layer(keras_model, [layer], "--layer")

    from zfkeras.data import source_labels
    from zfkeras.experiments import transfer as methods

    started = time.monotonic()
    labels = source_labels(source)
    folds_by_n = loading.draw_folds(labels, per_class, folds, test_per_class, seed, source.class_names)
    features = methods.FrozenFeatures(keras_model, source, [layer])
    loading.compute_features(features, folds_by_n)
    num_classes = len(source.class_names)
    runs = []
    for draws in folds_by_n.values():
        for fold in draws:
            run, _ = methods.pretrained_run(features, layer, labels, fold, num_classes, C=C)
            runs.append(run)
            _report(run, folds)
    methods_trained = ["scratch"] * bool(scratch_epochs) + ["finetune"] * finetune
    if methods_trained:
        config = _train_config(probe, keras_model, source, scratch_epochs, batch_size, lr, seed).replace(flip=flip)
        runs += _trained_runs(methods_trained, keras_model, source, folds_by_n, config, scratch_steps, out, seed)

    settings = dict(per_class=per_class, folds=folds, test_per_class=test_per_class, scratch_epochs=scratch_epochs, finetune=finetune)
    settings.update(batch_size=batch_size, lr=lr, C=C, seed=seed)
    if scratch_steps or not flip:  # recorded only when used, so earlier results files stay comparable
        settings.update(scratch_steps=scratch_steps, flip=flip)
    head = {"model": model, "data_spec": data_spec, "data": source.name, "split": split, "layer": layer, **settings}
    _write(out, head, runs, _feature_note(keras_model, layer), started, per_class)


def _write(out, head, runs, features, started, per_class):
    """results.json (every run), results.csv, table.txt and figure.png (Fig. 9) of a transfer experiment."""
    from zfkeras.experiments.folds import summarize

    records = [run.to_dict() for run in runs]
    summary = summarize(records, ("method", "n_per_class"))
    results = {
        **head,
        "features": features,
        "metric": "mean per-class accuracy",
        "seconds": round(time.monotonic() - started, 1),
        "summary": summary,
        "runs": records,
    }
    table = _table(summary, per_class)
    csv_rows = [["method", "n_per_class", "fold", "mean_class_accuracy"]]
    csv_rows += [[r["method"], r["n_per_class"], r["fold"], f"{r['mean_class_accuracy']:.6f}"] for r in records]
    output.write_results(out, results, table, csv_rows, figure=_figure(summary, head["data_spec"], head["layer"]))
    click.echo(table)
    click.echo(f"wrote {out} in {results['seconds']:.0f} s", err=True)


def _trained_runs(names, model, source, folds_by_n, config, min_steps, out, seed):
    """Scratch and fine-tuning runs on every fold, each through zf train's loop in a work folder
    beside --out that is removed at the end; each run takes ``config.epochs`` epochs, or as many
    as ``min_steps`` SGD steps need on its fold's images."""
    from zfkeras.experiments import transfer as methods

    classes = len(source.class_names)
    runs = []
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)  # --out out/transfer in a fresh clone: out/ is made as the output would be
    work = tempfile.mkdtemp(prefix=".transfer-runs-", dir=parent)
    try:
        for method in names:
            for n, draws in folds_by_n.items():
                for fold in draws:
                    fresh = method == "scratch"
                    start = methods.scratch_model(model, classes, seed) if fresh else methods.with_new_head(model, classes, seed)
                    run_dir = os.path.join(work, f"{method}-n{n}-fold{fold.index}")
                    steps_per_epoch = -(-len(fold.train) // config.batch_size)
                    epochs = max(config.epochs, -(-min_steps // steps_per_epoch))
                    run, _ = methods.train_on_fold(start, source, fold, config.replace(epochs=epochs), run_dir, method, compute_mean=fresh)
                    runs.append(run)
                    _report(run, len(draws))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return runs


def _report(run, folds):
    click.echo(f"{run.method:>10} N={run.n_per_class:<3} fold {run.fold + 1}/{folds}: {100 * run.mean_class_accuracy:5.1f}%", err=True)


def _train_config(probe, keras_model, source, epochs, batch_size, lr, seed):
    """The TrainConfig of scratch and fine-tuning runs: MODEL's recorded recipe where there is one,
    on the target's classes, with no validation split and no kept checkpoints."""
    from zfkeras.training import TrainConfig

    recorded = dict((probe.record or {}).get("config", {}))
    keep = {key: recorded[key] for key in ("arch", "units", "without", "convs", "dropout", "kernel_init", "momentum") if key in recorded}
    shape = tuple(keras_model.inputs[0].shape[1:])
    try:
        return TrainConfig(
            **keep,
            input_shape=shape,
            num_classes=len(source.class_names),
            epochs=max(epochs, 1),
            batch_size=batch_size,
            lr=lr,
            val_split=0.0,
            checkpoint_epochs=(),
            seed=seed,
            data=source.name,
        )
    except ValueError as error:
        raise click.UsageError(f"{probe.path}: cannot train this model's architecture again ({error})") from None


def _feature_note(model, layer):
    from zfkeras.experiments.transfer import feature_layout

    shape, _, count = feature_layout(model, layer)
    return f"{layer}: {count} values per image (block output {list(shape)}), images fitted to the input as for evaluation"


def _table(summary, per_class):
    """The printed table, like the paper's Table 4: a row per method, a column per N."""
    header = f"{'# Train':<26}" + "".join(f"{f'Acc % {n}/class':>16}" for n in per_class)
    lines = [header]
    for method in ("scratch", "pretrained", "finetune"):
        cells = {row["n_per_class"]: row for row in summary if row["method"] == method}
        if cells:
            values = (output.percent(cells[n]["mean"], cells[n]["std"]) for n in per_class)
            lines.append(f"{METHOD_NAMES[method]:<26}" + "".join(f"{value:>16}" for value in values))
    return "\n".join(lines)


def _figure(summary, data_spec, layer):
    """Fig. 9: mean per-class accuracy against training images per class, with std error bars."""
    plt = figures.pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for method in ("pretrained", "finetune", "scratch"):
        rows = [row for row in summary if row["method"] == method]
        if rows:
            axis.errorbar(
                [r["n_per_class"] for r in rows],
                [100 * r["mean"] for r in rows],
                yerr=[100 * r["std"] for r in rows],
                marker="o",
                capsize=3,
                label=METHOD_NAMES[method],
            )
    axis.set_xlabel("training images per class")
    axis.set_ylabel("mean per-class accuracy (%)")
    axis.set_title(f"Transfer to {data_spec} ({layer} features)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend()
    return figure
