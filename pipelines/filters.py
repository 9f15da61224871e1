"""``zf filters``: first-layer filters and layer-2 projections, with numbers (Fig. 6, Sec. 4.1)."""

import os

import click
import numpy as np

from pipelines import _common
from pipelines.visualize import Images, keras_of, map_counts, open_model, upscale


def diagnose(path, data, split, images, maps, batch_size, threshold, seed, skip_corrupt=False, data_dir=None):
    """All numbers and picture arrays of one model (see zfkeras.first_layer for what is computed);
    ``maps``: a ``--maps`` selection (:class:`pipelines._common.MapSelection`)."""
    from zfkeras import diagnostics
    from zfkeras.first_layer import first_layer_report

    probe, _ = open_model(path)
    if len(probe.layer_names) < 2:
        raise click.UsageError(f"{path}: needs two conv layers, has {', '.join(probe.layer_names)}")
    second = probe.layer_names[1]
    model = keras_of(probe, path)
    chosen = maps(map_counts(probe, [second]), seed)
    data_images = Images(data, split, probe.input_shape, batch_size, count=images, skip_corrupt=skip_corrupt, data_dir=data_dir)
    with _common.progressbar(length=data_images.batches or 0, label=f"{os.path.basename(path.rstrip('/'))}: scan {data_images.label}") as bar:
        try:
            result = first_layer_report(probe, model, data_images, chosen[second], threshold, batch_size, on_batch=lambda n: bar.update(1))
        except ValueError as error:
            raise click.UsageError(f"{path}: {error}") from None
    report = {"model": path, **result.to_dict(), "skipped_files": list(data_images.source.skipped_files)}
    pictures = {"filters": diagnostics.filter_grid(result.kernel), "projections": result.crops}
    return report, pictures


def caption(report):
    first, second = report["first_layer"], report["second_layer"]
    bands = first["band_shares"]
    dead = len(first["dead_filters"])
    aliasing = "n/a" if second["aliasing_share"] is None else f"{second['aliasing_share']:.3f}"
    return (
        f"{first['name']}: {first['filters']} filters {first['kernel'][0]}x{first['kernel'][1]}/{first['stride']}\n"
        f"dead {dead}/{first['filters']} = {first['dead_fraction']:.1%}\n"
        f"energy low/mid/high {bands['low']:.2f}/{bands['mid']:.2f}/{bands['high']:.2f}",
        f"{second['name']}: top-1 projections of {len(second['maps'])} maps\n"
        f"aliasing (energy above {second['nyquist_cycles_per_pixel']:.3g} cycles/px) {aliasing}",
    )


def filters_figure(labels, reports, pictures):
    """Fig. 6: per model a column with its first-layer filters (top) and layer-2 projections."""
    from zfkeras.diagnostics import display_tiles, mosaic

    plt = _common.pyplot()
    figure, axes = plt.subplots(2, len(reports), figsize=(6 * len(reports), 12), squeeze=False)
    for column, (label, report, picture) in enumerate(zip(labels, reports, pictures)):
        top, bottom = caption(report)
        axes[0, column].imshow(upscale(picture["filters"][None], 400)[0], interpolation="nearest")
        axes[0, column].set_title(f"{label}\n{top}", fontsize=9, loc="left")
        tiles = upscale(display_tiles(picture["projections"]), 48)
        axes[1, column].imshow(mosaic(tiles, int(np.ceil(np.sqrt(len(tiles)))), pad=2), interpolation="nearest")
        axes[1, column].set_title(bottom, fontsize=9, loc="left")
        for row in range(2):
            axes[row, column].set_axis_off()
    figure.tight_layout()
    return figure


@click.command()
@_common.model_argument(many=True, metavar="MODEL [MODEL2]")
@_common.data_options(images="Use only the first N images (default: the whole split).")
@_common.split_option()
@_common.maps_option("random:36", help="Second-layer maps to project")
@click.option(
    "--threshold",
    default=0.01,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Dead filter: mean activation <= this fraction of the median filter's.",
)
@_common.batch_size_option()
@_common.out_option(results="filters.json")
@_common.seed_option
def filters(models, data_spec, data_dir, skip_corrupt, images, split, maps, threshold, batch_size, out, seed):
    """First-layer filters and second-layer projections of one or two models, with diagnostics (Fig. 6).

    Per MODEL: the first conv layer's filters (each scaled to its own range), the fraction of dead
    filters, the share of filter energy in low / mid / high spatial frequencies, and the top-1
    deconvnet projections of second-layer maps with their aliasing share (energy above the first
    layer stride's Nyquist frequency). Definitions: zfkeras/diagnostics.py. Writes OUT/filters.png,
    OUT/<label>-conv1.png per model and OUT/filters.json.
    """
    from zfkeras.atomic import atomic_output

    if len(models) > 2:
        raise click.BadParameter(f"give one or two models, got {len(models)}", param_hint="MODEL [MODEL2]")
    _common.seed_everything(seed)
    labels = model_labels(models)
    reports, pictures = [], []
    for path in models:
        report, picture = diagnose(path, data_spec, split, images, maps, batch_size, threshold, seed, skip_corrupt, data_dir)
        reports.append(report)
        pictures.append(picture)
    with atomic_output(out, directory=True) as target:
        _common.save_figure(filters_figure(labels, reports, pictures), os.path.join(target, "filters.png"))
        plt = _common.pyplot()
        for label, report, picture in zip(labels, reports, pictures):
            figure = plt.figure(figsize=(5, 5.6))
            plt.imshow(upscale(picture["filters"][None], 400)[0], interpolation="nearest")
            plt.axis("off")
            plt.title(f"{label}\n{caption(report)[0]}", fontsize=9, loc="left")
            _common.save_figure(figure, os.path.join(target, f"{label}-{report['first_layer']['name']}.png"))
        _common.write_json(
            os.path.join(target, "filters.json"), {"data": data_spec, "split": split, "seed": seed, "models": dict(zip(labels, reports))}
        )
    for label, report in zip(labels, reports):
        click.echo(f"{label}: " + "; ".join(line.replace("\n", ", ") for line in caption(report)))
    click.echo(f"wrote {out}/filters.png, {out}/filters.json")


def model_labels(models):
    """Short distinct names for the models (file or directory names)."""
    names = [os.path.splitext(os.path.basename(os.path.normpath(path)))[0] for path in models]
    if len(set(names)) < len(names):
        names = [f"{i + 1}-{name}" for i, name in enumerate(names)]
    return names
