"""``zf evolution``: feature evolution across the epoch checkpoints of a training run (Fig. 4)."""

import os

import click

from pipelines import figures, loading, options, output, records, runtime


@click.command()
@options.model_argument
@options.data_options(images="Scan only the first N images (default: the whole split).")
@options.split_option("train", help="Split to scan (the paper uses the training set).")
@options.layers_option
@options.maps_option("random:4")
@options.batch_size_option()
@options.rule_option
@click.option(
    "--percentile",
    default=99.0,
    show_default=True,
    type=click.FloatRange(50, 100),
    help="Contrast: |values| above this percentile of each projection saturate.",
)
@options.out_option(results="evolution.json")
@options.seed_option
def evolution(model, data_spec, data_dir, skip_corrupt, images, split, layers, maps, batch_size, rule, percentile, out, seed):
    """Strongest activation of chosen maps at each kept epoch, projected to pixels (Fig. 4).

    MODEL is a training run dir, an export with checkpoints/ (or a .keras file beside them), or a
    directory of epoch-XXX.keras files. Writes OUT/<layer>.png (maps x epochs), OUT/evolution.png
    (all layers) and OUT/evolution.json with, per layer and map, the top-1 {image, y, x, value} at
    each epoch and the epoch from which the top-1 image no longer changes (per layer: the latest
    over its maps).
    """
    from zfkeras.analysis.evolution import follow_maps, layer_stability
    from zfkeras.io.atomic import atomic_output
    from zfkeras.nn.probe import KerasProbe

    runtime.seed_everything(seed)
    checkpoints = loading.find_checkpoints(model)
    first = loading.load_checkpoint(checkpoints[0][1])  # fixes geometry, layers, maps and data
    probe = KerasProbe(first)
    fields = loading.model_fields(probe)
    layer_names = loading.choose_layers(layers, probe.layer_names)
    chosen = maps(loading.map_counts(probe, layer_names), seed)
    data_images = loading.image_batches(data_spec, split, probe.input_shape, batch_size, count=images, skip_corrupt=skip_corrupt, data_dir=data_dir)

    def scanned(index, epoch, batches):
        label = f"epoch {epoch} ({index + 1}/{len(checkpoints)}): scan {data_images.label}"
        with output.progressbar(batches, length=data_images.batches, label=label) as bar:
            yield from bar

    loaded = ((epoch, first if index == 0 else loading.load_checkpoint(file)) for index, (epoch, file) in enumerate(checkpoints))
    try:
        epochs, tops, tiles = follow_maps(
            first, loaded, data_images, {layer: chosen[layer] for layer in layer_names}, batch_size, scan_batches=scanned, rule=rule
        )
    except ValueError as error:
        raise click.UsageError(f"{model}: {error}") from None
    report = {
        "run": model,
        "data": data_spec,
        "split": split,
        "images": tops[0].images_seen,
        "seed": seed,
        "rule": rule,
        "epochs": epochs,
        "layers": {},
    }
    if data_images.source.skipped:
        report["skipped_files"] = list(data_images.source.skipped_files)
    lines = []
    with atomic_output(out, directory=True) as target:
        blocks = []
        for layer in layer_names:
            stability = layer_stability(epochs, tops, layer).to_dict()
            per_map, stable = stability["maps"], stability["stable_epoch"]
            report["layers"][layer] = {"stable_epoch": stable, "field": records.field_json(fields[layer]), "maps": per_map}
            block = tiles[layer]  # [maps, epochs, fh, fw, C]
            output.save_figure(
                figures.evolution_figure(layer, chosen[layer], epochs, block, stable, percentile, per_map), os.path.join(target, f"{layer}.png")
            )
            blocks.append((layer, block))
            detail = ", ".join(
                f"{c}:{v['stable_epoch']}" + (" (silent at the end)" if epochs[-1] in v["silent_epochs"] else "") for c, v in per_map.items()
            )
            lines.append(f"{layer}: top-1 image stable from epoch {stable} (map:epoch {detail}) -> {out}/{layer}.png")
        output.save_figure(figures.combined_figure(blocks, chosen, epochs, percentile, report), os.path.join(target, "evolution.png"))
        output.write_json(os.path.join(target, "evolution.json"), report)
    for line in lines:
        click.echo(line)
    listed = ", ".join(map(str, epochs))
    click.echo(f"{len(checkpoints)} checkpoints (epochs {listed}), {report['images']} {split} images -> {out}/evolution.png, evolution.json")
