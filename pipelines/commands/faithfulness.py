"""``zf faithfulness``: deletion and insertion curves of the occlusion map and each backward rule's
projections (Petsiuk et al., RISE; see :mod:`zfkeras.analysis.faithfulness`).

A command of its own, not a part of ``zf occlusion``: it scores every method (occlusion and the
three rules, class scores and units) on the same set of labelled images and reports AUCs over the
set, while ``zf occlusion`` draws one figure per image; the occlusion maps it needs come from the
same library function.
"""

import io
import os

import click
import numpy as np

from pipelines import figures, loading, options, output, records, runtime


@click.command()
@options.model_argument
@click.argument("image_files", nargs=-1, metavar="[IMAGE...]")
@options.data_options(images="Without IMAGE arguments: use the first N images of the split (default: 100).")
@options.split_option(help="Split the images come from (without IMAGE arguments).")
@options.label_option
@click.option("--steps", default=28, show_default=True, type=click.IntRange(2, 10_000), help="Steps from no pixel to all pixels on each curve.")
@click.option("--unit-layer", help="Conv layer whose strongest unit per image is projected and scored (default: the top conv layer).")
@click.option("--occlusion/--no-occlusion", default=True, show_default=True, help="Include the occlusion map (the default square and grid).")
@options.batch_size_option(default=256, help="Changed images per forward pass.")
@options.out_option
@options.seed_option
def faithfulness(model, image_files, data_spec, data_dir, skip_corrupt, images, split, label, steps, unit_layer, occlusion, batch_size, out, seed):
    """Deletion and insertion curves of MODEL's maps (Petsiuk et al., BMVC 2018).

    For each image (IMAGE files or built-in photos, else the first --images N of --data's split):
    the pixels are removed (deletion) or put back into the mean image (insertion) in --steps
    steps, most relevant first, as ranked by the occlusion map and by each rule's projection of
    the class score (scored by p(class)), by each rule's projection of the top conv layer's
    strongest unit (scored by that unit's activation), and at random (--seed). Writes
    OUT/figure.png (mean curves), OUT/table.txt (AUC mean ± std), OUT/aucs.npz (per image),
    OUT/results.csv and OUT/results.json.
    """
    from zfkeras.analysis.faithfulness import faithfulness as curves_of

    runtime.seed_everything(seed)
    probe = loading.with_all_rules(loading.open_model(model))
    if image_files:
        named = loading.load_images(image_files, probe.input_shape)
        pixels = np.stack([image for _, image in named])
        names, labels = [name for name, _ in named], options.parse_labels(label, probe.class_names, len(named))
        labels = None if labels[0] is None else np.asarray(labels)
        where = "images " + ", ".join(names)
    else:
        if label:
            raise click.BadParameter("--label goes with IMAGE arguments; images of --data carry their labels", param_hint="--label")
        pixels, labels, source = loading.labelled_images(data_spec, split, probe.input_shape, images or 100, skip_corrupt, data_dir)
        names, where = [f"{split}-{i}" for i in range(len(pixels))], f"{source.name} {split} images 0-{len(pixels) - 1}"
    if unit_layer is not None:
        loading.choose_layers(unit_layer, probe, "--unit-layer", what="projectable layers")
    with output.percent_progress(f"deletion/insertion on {len(pixels)} images") as progress:
        try:
            result = curves_of(
                probe,
                pixels,
                labels=labels,
                occlusion=occlusion,
                unit_layer=unit_layer,
                steps=steps,
                seed=seed,
                batch_size=batch_size,
                progress=progress,
            )
        except ValueError as error:
            raise click.UsageError(str(error).splitlines()[0]) from None
    table = result.to_dict()
    header, rows = records.faithfulness_rows(table)
    text = f"Deletion / insertion AUC over {where} ({steps} steps; removed pixels take the mean image)\n" + records.rows_text(header, rows)
    aucs = result.aucs()
    arrays = {f"{t}/{m}/{k}": values for t, methods in aucs.items() for m, kinds in methods.items() for k, values in kinds.items()}
    buffer = io.BytesIO()
    np.savez(buffer, images=np.array(names), labels=result.labels, **arrays)
    results = {"model": model, "images_from": where, "seed": seed, **table}
    output.write_results(out, results, text, [header] + rows, figures.faithfulness_figure(table), {"aucs.npz": buffer.getvalue()})
    click.echo(text, nl=False)
    click.echo(f"-> {os.path.join(out, 'results.json')}, table.txt, figure.png, aucs.npz")
