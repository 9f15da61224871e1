"""``zf ablate``: Table 3 (architecture variants on one budget) and the Sec. 4.1 / Fig. 6 first-layer comparison."""

import os
import shlex
import sys
import time

import click

from pipelines import figures, loading, options, output, runtime

METRICS = (("train_top1_error", "train top-1"), ("val_top1_error", "val top-1"), ("val_top5_error", "val top-5"), ("test_top1_error", "test top-1"))


class VariantType(click.ParamType):
    """A ``--variant`` text (zfkeras.experiments.ablation.VARIANT_SYNTAX) as a Variant; errors name the text."""

    name = "variant"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        from zfkeras.experiments.ablation import parse_variant

        try:
            return parse_variant(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def format_table(rows, title):
    """Table 3: one row per variant (errors in percent), then the Sec. 4.1 first-layer rows."""
    width = max(len("variant"), *(len(row["variant"]["name"]) for row in rows))
    lines = [title, f"{'variant':<{width}}  {'params':>11}  " + "  ".join(f"{name:>11}" for _, name in METRICS)]
    for row in rows:
        lines.append(f"{row['variant']['name']:<{width}}  {row['params']:>11,}  " + "  ".join(f"{_percent(row[key]):>11}" for key, _ in METRICS))
    compared = [row for row in rows if row["first_layer"]]
    if compared:
        lines += [
            "",
            "Sec. 4.1 / Fig. 6: first layer (dead filters over the test images scanned; aliasing of "
            "top-1 layer-2 projections, energy above the conv1 stride's Nyquist limit)",
            f"{'variant':<{width}}  {'conv1':>7}  {'dead filters':>16}  {'aliasing':>8}  {'test top-1':>10}",
        ]
        for row in compared:
            first, second = row["first_layer"]["first_layer"], row["first_layer"]["second_layer"]
            dead = f"{len(first['dead_filters'])}/{first['filters']} ({first['dead_fraction']:.1%})"
            aliasing = "-" if second["aliasing_share"] is None else f"{second['aliasing_share']:.3f}"
            conv1 = f"{first['kernel'][0]}x{first['kernel'][1]}/{first['stride']}"
            lines.append(f"{row['variant']['name']:<{width}}  {conv1:>7}  {dead:>16}  {aliasing:>8}  {_percent(row['test_top1_error']):>10}")
    return "\n".join(lines)


def csv_rows(rows):
    header = [
        "variant",
        "changes",
        "params",
        *(key for key, _ in METRICS),
        "epochs",
        "train_seconds",
        "reused",
        "conv1",
        "dead_fraction",
        "aliasing_share",
    ]
    table = [header]
    for row in rows:
        first = row["first_layer"]
        conv1 = "" if not first else "{0}x{1}/{2}".format(*first["first_layer"]["kernel"], first["first_layer"]["stride"])
        table.append(
            [
                row["variant"]["name"],
                row["variant"]["text"],
                row["params"],
                *(row[key] for key, _ in METRICS),
                row["epochs"],
                round(row["train_seconds"], 1),
                row["reused"],
                conv1,
                first["first_layer"]["dead_fraction"] if first else "",
                first["second_layer"]["aliasing_share"] if first else "",
            ]
        )
    return table


def errors_figure(rows, title):
    """Table 3 as bars: validation and test top-1 error per variant, parameter count on the right."""
    import numpy as np

    plt = figures.pyplot()
    names = [row["variant"]["name"] for row in rows][::-1]
    figure, axis = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    positions = np.arange(len(rows))
    for offset, (key, label) in zip((0.2, -0.2), (("val_top1_error", "val top-1"), ("test_top1_error", "test top-1"))):
        values = [100 * (row[key] if row[key] is not None else np.nan) for row in rows][::-1]
        axis.barh(positions + offset, values, height=0.4, label=label)
    axis.set_yticks(positions, names)
    axis.set_xlabel("error (%)")
    right = axis.secondary_yaxis("right")
    right.set_yticks(positions, [f"{row['params']:,} params" for row in rows][::-1])
    axis.set_title(title, fontsize=9, loc="left")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def first_layer_figure(results):
    """Fig. 6 side by side: each compared model's first-layer filters and layer-2 projections (``zf filters``'s figure)."""
    from zfkeras.io.display import filter_grid

    compared = [result for result in results if result.first_layer is not None]
    if not compared:
        return None
    reports = [result.first_layer.to_dict() for result in compared]
    pictures = [{"filters": filter_grid(r.first_layer.kernel), "projections": r.first_layer.crops} for r in compared]
    return figures.filters_figure([r.variant.name for r in compared], reports, pictures)


def epoch_progress(variant, epochs):
    """A Keras callback drawing one stderr progress bar over the variant's epochs."""
    import keras

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = output.progressbar(length=epochs, label=f"  {variant.name}: epochs")
            self.bar.__enter__()

        def on_epoch_end(self, epoch, logs=None):
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.__exit__(None, None, None)

    return Progress()


@click.command()
@options.training_options(epochs=5, epochs_help="Epochs per variant (the same budget for all).")
@options.data_options(images="Training images used: a random subset seeded by --seed (default: the whole training split).")
@click.option(
    "--variant",
    "variants",
    multiple=True,
    type=VariantType(),
    help="A variant to train (repeatable; default: the paper's Table 3 rows and a larger-stride conv1). "
    "Syntax: 'base', or clauses joined by ';': without=3,4 (or conv3,conv4,fc6,fc7), "
    "units=conv3=192,fc6=128, conv1=kernel:7,stride:2 (fields kernel, stride, filters, padding), "
    "name=LABEL. The base is always trained first.",
)
@click.option(
    "--diagnose-images", default=1000, show_default=True, type=click.IntRange(1), help="Test images scanned for the first-layer diagnostics."
)
@click.option(
    "--runs",
    "runs_dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Directory of the per-variant runs, kept between runs so a rerun skips finished variants "
    "(default: OUT-runs beside --out, which is replaced whole).",
)
@options.out_option
@options.seed_option
def ablate(data_spec, data_dir, skip_corrupt, images, variants, diagnose_images, runs_dir, out, seed):
    """Train variants of ARCH on one data set, seed and budget and compare them (paper Table 3, Sec. 4.1).

    The base is --arch with the training options (--units, --without, --lr, ...). Per variant:
    train top-1 error (final model, centre crop of its training images), validation
    top-1/top-5, test top-1, and trainable parameters. The base and each variant that changes conv1
    also get the first-layer diagnostics of `zf filters` (dead filters, layer-2 aliasing). Writes
    OUT/{results.json, results.csv, table.txt, figure.png (errors per variant), first_layer.png
    (Fig. 6: the first layers side by side)}; the runs stay in --runs.
    """
    started = time.monotonic()
    runtime.seed_everything(seed)
    from zfkeras.experiments import ablation

    train_source = loading.open_source(data_spec, "train", data_dir=data_dir, skip_corrupt=skip_corrupt)
    test_source = loading.open_source(data_spec, "test", data_dir=data_dir, skip_corrupt=skip_corrupt)
    recipe = options.recipe()
    arch, epochs = recipe["arch"], recipe["epochs"]
    base = loading.train_config(recipe, train_source, seed=seed, data=data_spec, checkpoint_epochs=(epochs,))
    size = base.input_shape[0]
    try:
        chosen = list(variants) if variants else ablation.default_variants(base.model_spec())
        if not any(v.is_base for v in chosen):
            chosen.insert(0, ablation.Variant("base"))
        for variant in chosen:
            variant.apply(base)
        train_source = ablation.sample_source(train_source, images, seed)
    except ValueError as error:
        raise click.UsageError(str(error).splitlines()[0]) from None
    runs_dir = runs_dir or os.path.normpath(out) + "-runs"
    # The command as typed after "ablate" (zf or python -m pipelines.cli), for the record.
    command = shlex.join(["zf", "ablate", *sys.argv[sys.argv.index("ablate") + 1 :]]) if "ablate" in sys.argv else "zf ablate"
    click.echo(
        f"ablation of {arch} {base.input_shape}: {len(chosen)} variants, {epochs} epochs each, "
        f"{train_source.num_examples} training images of {train_source.name}; runs in {runs_dir}",
        err=True,
    )

    def on_variant(index, variant, stage):
        click.echo(f"[{index + 1}/{len(chosen)}] {variant.name}: {stage}", err=True)

    results = ablation.run_ablation(
        base,
        chosen,
        train_source,
        test_source,
        runs_dir,
        diagnose_images=diagnose_images,
        callbacks=lambda variant: [epoch_progress(variant, epochs)],
        on_variant=on_variant,
        metadata={"command": command},
    )
    rows = [result.to_dict() for result in results]
    title = f"Table 3 (adapted): {arch} {size}x{size}, {train_source.num_examples} training images, {epochs} epochs, seed {seed}"
    table = format_table(rows, title)
    seconds = time.monotonic() - started
    record = {
        "command": command,
        "arch": arch,
        "data": train_source.name,
        "test_data": test_source.name,
        "train_images": train_source.num_examples,
        "epochs": epochs,
        "seed": seed,
        "runs": runs_dir,
        "seconds": seconds,
        "variants": rows,
    }
    extra = {}
    figure = first_layer_figure(results)
    if figure is not None:
        extra["first_layer.png"] = output.figure_bytes(figure)
    output.write_results(out, record, table, csv_rows(rows), errors_figure(rows, title), files=extra)
    click.echo(table)
    click.echo(f"wrote {out}/ (results.json, results.csv, table.txt, figure.png, first_layer.png) in {seconds:.0f} s", err=True)
