"""``zf correspondence``: part correspondence analysis, paper Table 1 and Fig. 8
(see :mod:`zfkeras.correspondence` for the measure)."""

import os

import click
import numpy as np

from pipelines import figures, loading, options, output, records, runtime


@click.command()
@options.model_argument
@click.option(
    "--parts",
    "parts_file",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="JSON file of images and part boxes: " + options.PARTS_FORMAT + ".",
)
@options.layers_option(help="Comma-separated feature layers. Default: the top conv layer and fc7.")
@click.option("--draws", default=10, show_default=True, type=click.IntRange(min=1), help="Random-mask draws for the control row.")
@click.option("--fill", type=options.PixelValue(), help="Raw pixel value (0-255) of the masks. Default: the training mean image.")
@options.batch_size_option()
@options.out_option(results="correspondence.json")
@options.max_pixels_option
@options.seed_option
def correspondence(model, parts_file, layers, draws, fill, batch_size, out, seed):
    """Part correspondence of MODEL (Table 1): mask the same part in every image of --parts and
    measure how consistently the features change, against random masks of the same size.

    Writes OUT/correspondence.txt (the table), OUT/correspondence.json (all numbers and masks)
    and OUT/masks.png (the masked images of the first 12, like Fig. 8).
    """
    from zfkeras.analysis import correspondence as analysis
    from zfkeras.analysis.occlusion import fill_values
    from zfkeras.io.atomic import atomic_output

    runtime.seed_everything(seed)
    files, given_files, parts, objects = loading.read_parts(parts_file)
    probe = loading.open_model(model)
    if layers is not None:
        layers = loading.choose_layers(layers, probe, names=probe.feature_names)
    named = loading.load_images(files, probe.input_shape)
    images = np.stack([image for _, image in named])
    try:
        result = analysis.correspondence(
            probe, images, parts, layers=layers, objects=objects, draws=draws, seed=seed, fill=fill, batch_size=batch_size
        )
    except ValueError as error:  # a box outside the model input, a reserved part name, ...
        raise click.BadParameter(f"{parts_file}: {error}", param_hint="--parts") from None
    names = [name for name, _ in named]
    text = records.table_text(result, len(images), draws)
    with atomic_output(out, directory=True) as target:
        with open(os.path.join(target, "correspondence.txt"), "w") as handle:
            handle.write(text)
        output.save_figure(figures.masks_figure(named, parts, result, fill_values(probe, fill)), os.path.join(target, "masks.png"))
        output.write_json(os.path.join(target, "correspondence.json"), records.result_json(result, names, given_files, parts, objects, draws, seed))
    click.echo(text, nl=False)
    click.echo(f"-> {out}/correspondence.txt, correspondence.json, masks.png")
