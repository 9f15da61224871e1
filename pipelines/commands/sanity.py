"""``zf sanity``: do the projections depend on the model? Adebayo et al.'s randomisation tests
(see :mod:`zfkeras.analysis.sanity`)."""

import os

import click

from pipelines import figures, loading, options, output, records, runtime


def grid_rows(result, image_index=0):
    """``{"rule, target": [1 + layers, H, W, C]}`` of one image, for :func:`figures.sanity_grid_figure`."""
    return {f"{rule}, {target}": result.grid[rule][target][:, image_index] for target in result.targets for rule in result.rules}


def table_text(table):
    """Every mode's table (cascading, independent, shuffled labels) as plain text."""
    parts = []
    captions = {
        "cascading": "Cascading: layers re-initialised from the top down, cumulatively (..LAYER: down to LAYER)",
        "independent": "Independent: one layer re-initialised at a time (-LAYER), the others trained",
        "data": "Data randomisation: the model trained on shuffled labels",
    }
    for mode, caption in captions.items():
        if table.get(mode):
            parts.append(
                caption
                + ". Similarity to the trained model's maps, mean ± std over the images.\n"
                + records.rows_text(*records.sanity_rows(table, mode))
            )
    return "\n".join(parts)


@click.command()
@options.model_argument
@options.data_options(images="Use the first N images of the split (default: 50).")
@options.split_option(help="Split the images come from.")
@options.layers_option(help="Layers to re-initialise, top first (default: every layer with weights, output to input).")
@click.option("--unit-layer", help="Conv layer whose strongest unit per image is projected (default: the top conv layer).")
@click.option(
    "--random-labels-model",
    "random_labels",
    type=click.Path(),
    metavar="MODEL2",
    help="The same architecture trained on shuffled labels, for the data randomisation test.",
)
@click.option("--shown", default=2, show_default=True, type=click.IntRange(1, 10), help="Images drawn in the grid (grid-N.png each).")
@options.batch_size_option()
@options.out_option
@options.seed_option
def sanity(model, data_spec, data_dir, skip_corrupt, images, split, layers, unit_layer, random_labels, shown, batch_size, out, seed):
    """Sanity checks of MODEL's projections (Adebayo et al., NeurIPS 2018).

    Re-initialises MODEL's layers from the top down (cascading) and one at a time (independent),
    recomputes the deconvnet, guided backprop and gradient projections of the same images (the
    class score of each image's true class, and the strongest unit of the top conv layer) and
    measures how similar they stay to the trained model's: Spearman rank correlation of |map|,
    SSIM and HOG correlation. With --random-labels-model, the same against a model trained on
    shuffled labels. Writes OUT/figure.png (the curves), OUT/grid-N.png (the maps of image N as
    layers are re-initialised), OUT/table.txt, OUT/results.csv and OUT/results.json.
    """
    from zfkeras.analysis.sanity import sanity_check

    runtime.seed_everything(seed)
    probe = loading.with_all_rules(loading.open_model(model))
    count = images or 50
    pixels, labels, source = loading.labelled_images(data_spec, split, probe.input_shape, count, skip_corrupt, data_dir)
    if layers is not None:
        from zfkeras.analysis.sanity import weighted_layers

        loading.choose_layers(layers, probe, names=weighted_layers(probe.keras_model), what="layers with weights")
    if unit_layer is not None:
        loading.choose_layers(unit_layer, probe, "--unit-layer", what="projectable layers")
    other = None
    if random_labels is not None:
        other = loading.keras_model(loading.open_model(random_labels, option="--random-labels-model"), option="--random-labels-model")
    with output.percent_progress("randomising") as progress:
        try:
            result = sanity_check(
                probe,
                pixels,
                labels=labels,
                layers=layers,
                unit_layer=unit_layer,
                random_labels_model=other,
                shown=min(shown, len(pixels)),
                seed=seed,
                batch_size=batch_size,
                progress=progress,
            )
        except ValueError as error:
            raise click.UsageError(str(error).splitlines()[0]) from None
    table = result.to_dict()
    results = {"model": model, "data": source.name, "split": split, "seed": seed, "random_labels_model": random_labels, **table}
    csv_rows = []
    for mode in ("cascading", "independent", "data"):
        if table.get(mode):
            header, rows = records.sanity_rows(table, mode)
            csv_rows += [["mode"] + header] + [[mode] + row for row in rows]
    files = {}
    for index in range(min(shown, len(pixels))):
        title = f"image {index} ({source.class_names[labels[index]]}): |map| as layers are re-initialised from the top down (-LAYER: down to it)"
        figure = figures.sanity_grid_figure(grid_rows(result, index), pixels[index], result.layers, title)
        files[f"grid-{index}.png"] = output.figure_bytes(figure)
    text = table_text(table)
    output.write_results(out, results, text, csv_rows, figures.sanity_curves_figure(table), files)
    click.echo(text, nl=False)
    click.echo(f"-> {os.path.join(out, 'results.json')}, table.txt, figure.png, grid-*.png ({len(pixels)} images)")
