"""``zf filters``: first-layer filters and layer-2 projections, with numbers (Fig. 6, Sec. 4.1)."""

import os

import click

from pipelines import figures, loading, options, output, runtime


def diagnose(path, data, split, images, maps, batch_size, threshold, seed, skip_corrupt=False, data_dir=None, rule="deconvnet"):
    """All numbers and picture arrays of one model (see zfkeras.analysis.first_layer for what is computed);
    ``maps``: a ``--maps`` selection (:class:`pipelines.options.MapSelection`)."""
    from zfkeras.analysis.first_layer import first_layer_report
    from zfkeras.io.display import filter_grid

    probe = loading.open_model(path)
    loading.check_rule(probe, rule)
    loading.model_fields(probe)
    if len(probe.layer_names) < 2:
        raise click.UsageError(f"{path}: needs two conv layers, has {', '.join(probe.layer_names)}")
    second = probe.layer_names[1]
    model = loading.keras_model(probe)
    chosen = maps(loading.map_counts(probe, [second]), seed)
    data_images = loading.image_batches(data, split, probe.input_shape, batch_size, count=images, skip_corrupt=skip_corrupt, data_dir=data_dir)
    with output.progressbar(length=data_images.batches or 0, label=f"{os.path.basename(path.rstrip('/'))}: scan {data_images.label}") as bar:
        try:
            result = first_layer_report(probe, model, data_images, chosen[second], threshold, batch_size, on_batch=lambda n: bar.update(1), rule=rule)
        except ValueError as error:
            raise click.UsageError(f"{path}: {error}") from None
    report = {"model": path, **result.to_dict(), "skipped_files": list(data_images.source.skipped_files)}
    pictures = {"filters": filter_grid(result.kernel), "projections": result.crops}
    return report, pictures


@click.command()
@options.model_argument(many=True, metavar="MODEL [MODEL2]")
@options.data_options(images="Use only the first N images (default: the whole split).")
@options.split_option()
@options.maps_option("random:36", help="Second-layer maps to project")
@click.option(
    "--threshold",
    default=0.01,
    show_default=True,
    type=options.Number(0, 1),
    help="Dead filter: mean activation <= this fraction of the median filter's.",
)
@options.batch_size_option()
@options.rule_option(help="Backward rule of the second-layer projections")
@options.out_option(results="filters.json")
@options.seed_option
def filters(models, data_spec, data_dir, skip_corrupt, images, split, maps, threshold, batch_size, rule, out, seed):
    """First-layer filters and second-layer projections of one or two models, with diagnostics (Fig. 6).

    Per MODEL: the first conv layer's filters (each scaled to its own range), the fraction of dead
    filters, the share of filter energy in low / mid / high spatial frequencies, and the top-1
    deconvnet projections of second-layer maps with their aliasing share (energy above the first
    layer stride's Nyquist frequency). Definitions: zfkeras/diagnostics.py. Writes OUT/filters.png,
    OUT/<label>-conv1.png per model and OUT/filters.json.
    """
    from zfkeras.io.atomic import atomic_output

    if len(models) > 2:
        raise click.BadParameter(f"give one or two models, got {len(models)}", param_hint="MODEL [MODEL2]")
    runtime.seed_everything(seed)
    labels = model_labels(models)
    reports, pictures = [], []
    for path in models:
        report, picture = diagnose(path, data_spec, split, images, maps, batch_size, threshold, seed, skip_corrupt, data_dir, rule)
        reports.append(report)
        pictures.append(picture)
    with atomic_output(out, directory=True) as target:
        output.save_figure(figures.filters_figure(labels, reports, pictures), os.path.join(target, "filters.png"))
        plt = figures.pyplot()
        for label, report, picture in zip(labels, reports, pictures):
            figure = plt.figure(figsize=(5, 5.6))
            plt.imshow(figures.upscale(picture["filters"][None], 400)[0], interpolation="nearest")
            plt.axis("off")
            plt.title(f"{label}\n{figures.caption(report)[0]}", fontsize=9, loc="left")
            output.save_figure(figure, os.path.join(target, f"{label}-{report['first_layer']['name']}.png"))
        output.write_json(
            os.path.join(target, "filters.json"),
            {"data": data_spec, "split": split, "seed": seed, "rule": rule, "models": dict(zip(labels, reports))},
        )
    for label, report in zip(labels, reports):
        click.echo(f"{label}: " + "; ".join(line.replace("\n", ", ") for line in figures.caption(report)))
    click.echo(f"wrote {out}/filters.png, {out}/filters.json")


def model_labels(models):
    """Short distinct names for the models (file or directory names)."""
    names = [os.path.splitext(os.path.basename(os.path.normpath(path)))[0] for path in models]
    if len(set(names)) < len(names):
        names = [f"{i + 1}-{name}" for i, name in enumerate(names)]
    return names
