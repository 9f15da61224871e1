"""``zf layers``: how discriminative each layer's features are (paper Table 7, Sec. 5.3)."""

import time

import click

from pipelines import figures, loading, options, output, runtime

CLASSIFIERS = ("softmax", "svm")  # zfkeras.experiments.linear.KINDS (tested equal)


@click.command()
@options.model_argument
@options.data_options(default="mnist_5k", images="Use only the first N images of --split, which the folds are drawn from (default: all).")
@options.fold_options("5,30")
@options.layers_option(help="Layers to test (default: every conv layer, fc6 and fc7).")
@click.option(
    "--classifiers",
    type=options.CommaList(str, f"classifiers from {', '.join(CLASSIFIERS)}"),
    default=",".join(CLASSIFIERS),
    show_default=True,
    help="softmax (multinomial logistic regression) and/or svm (linear, squared hinge, one-vs-rest).",
)
@click.option(
    "--max-features",
    default=16384,
    show_default=True,
    type=click.IntRange(1),
    help="A conv block output with more values is max-pooled over equal spatial cells until it fits.",
)
@options.penalty_option(help="Weight of the data term against the L2 penalty, for both classifiers.")
@options.out_option
@options.seed_option
def layers(
    model, data_spec, data_dir, skip_corrupt, images, per_class, split, folds, test_per_class, layers, classifiers, max_features, C, out, seed
):
    """A linear classifier on each layer's frozen features of MODEL, per fold (Table 7).

    Conv layers give their block's output as the model pools it (after max pooling and LRN),
    flattened; fc6/fc7 their rectified output. For each N of --per-class, each of --folds draws
    and each of --classifiers, it reports the mean per-class accuracy (mean +- std over folds).
    Writes results.json, results.csv, table.txt and figure.png (accuracy against layer) to --out.
    """
    runtime.seed_everything(seed)
    keras_model = loading.keras_model(loading.open_model(model))
    from zfkeras.data import source_labels
    from zfkeras.experiments import transfer
    from zfkeras.experiments.folds import summarize
    from zfkeras.experiments.layer_probes import probe_layers

    names = loading.check_feature_layer(keras_model, layers or transfer.feature_layers(keras_model), "--layers")
    unknown = [name for name in classifiers if name not in CLASSIFIERS]
    if unknown:
        raise click.BadParameter(f"{unknown[0]!r} is not a classifier; use {', '.join(CLASSIFIERS)}", param_hint="--classifiers")
    source = loading.limit_images(loading.open_source(data_spec, split, data_dir=data_dir, skip_corrupt=skip_corrupt), images)
    started = time.monotonic()
    labels = source_labels(source)
    folds_by_n = loading.draw_folds(labels, per_class, folds, test_per_class, seed, source.class_names)
    features = transfer.FrozenFeatures(keras_model, source, names, max_features=max_features)
    loading.compute_features(features, folds_by_n)
    total = len(names) * len(classifiers) * sum(len(draws) for draws in folds_by_n.values())
    with output.progressbar(length=total, label="linear classifiers") as bar:
        records = probe_layers(features, labels, folds_by_n, names, classifiers, C, len(source.class_names), on_step=lambda: bar.update(1))
    summary = summarize(records, ("layer", "classifier", "n_per_class"))
    layouts = {name: transfer.feature_layout(keras_model, name, max_features) for name in names}
    results = {
        "model": model,
        "data": data_spec,
        "source": source.name,
        "split": split,
        "per_class": per_class,
        "folds": folds,
        "test_per_class": test_per_class,
        "classifiers": classifiers,
        "C": C,
        "max_features": max_features,
        "seed": seed,
        "features": {
            name: {"block_output": list(shape), "extra_max_pool": list(pool) if pool else None, "values": count}
            for name, (shape, pool, count) in layouts.items()
        },
        "metric": "mean per-class accuracy",
        "seconds": round(time.monotonic() - started, 1),
        "summary": summary,
        "runs": records,
        # Every layer and classifier of a run uses the same fold: its image indices, once.
        "fold_indices": [
            {"n_per_class": n, "fold": fold.index, "train": fold.train.tolist(), "test": fold.test.tolist()}
            for n, draws in folds_by_n.items()
            for fold in draws
        ],
    }
    columns = [(kind, n) for kind in classifiers for n in per_class]
    table = _table(summary, names, columns, layouts)
    csv_rows = [["layer", "classifier", "n_per_class", "fold", "mean_class_accuracy"]]
    csv_rows += [[r["layer"], r["classifier"], r["n_per_class"], r["fold"], f"{r['mean_class_accuracy']:.6f}"] for r in records]
    output.write_results(out, results, table, csv_rows, figure=_figure(summary, names, columns))
    click.echo(table)
    click.echo(f"wrote {out} in {results['seconds']:.0f} s", err=True)


def _table(summary, names, columns, layouts):
    """Table 7's layout transposed: a row per layer, a column per (classifier, N)."""
    cell = {(r["layer"], r["classifier"], r["n_per_class"]): r for r in summary}
    header = f"{'layer':<8}{'features':>10}" + "".join(f"{f'{kind} {n}/class':>17}" for kind, n in columns)
    lines = [header]
    for name in names:
        values = (output.percent(cell[name, kind, n]["mean"], cell[name, kind, n]["std"]) for kind, n in columns)
        lines.append(f"{name:<8}{layouts[name][2]:>10}" + "".join(f"{value:>17}" for value in values))
    return "\n".join(lines)


def _figure(summary, names, columns):
    """Mean per-class accuracy against layer, a line per (classifier, N), std error bars."""
    plt = figures.pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4))
    cell = {(r["layer"], r["classifier"], r["n_per_class"]): r for r in summary}
    for kind, n in columns:
        axis.errorbar(
            range(len(names)),
            [100 * cell[name, kind, n]["mean"] for name in names],
            yerr=[100 * cell[name, kind, n]["std"] for name in names],
            marker="o",
            capsize=3,
            linestyle="-" if kind == "softmax" else "--",
            label=f"{kind}, {n}/class",
        )
    axis.set_xticks(range(len(names)), names)
    axis.set_xlabel("features of layer")
    axis.set_ylabel("mean per-class accuracy (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return figure
