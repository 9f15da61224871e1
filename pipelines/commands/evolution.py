"""``zf evolution``: feature evolution across the epoch checkpoints of a training run (Fig. 4)."""

import os

import click
import numpy as np

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
    type=options.Number(50, 100),
    help="Contrast: |values| above this percentile of each projection saturate.",
)
@click.option(
    "--probe-images",
    default=500,
    show_default=True,
    type=click.IntRange(2),
    help="The first N scanned images: each unit's peak responses on them at every epoch are correlated with the last epoch's.",
)
@options.out_option(results="evolution.json")
@options.seed_option
def evolution(model, data_spec, data_dir, skip_corrupt, images, split, layers, maps, batch_size, rule, percentile, probe_images, out, seed):
    """Strongest activation of chosen maps at each kept epoch, projected to pixels (Fig. 4), and how
    settled every unit is at each epoch.

    MODEL is a training run dir, an export with checkpoints/ (or a .keras file beside them), or a
    directory of epoch-XXX.keras files. Writes OUT/<layer>.png (maps x epochs), OUT/evolution.png
    (all layers), OUT/correlation.png and OUT/evolution.json with, per layer and map, the top-1
    {image, y, x, value} at each epoch and the epoch from which the top-1 image no longer changes
    (per layer: the latest over its maps); and per layer, the median over its units of the
    correlation of their responses with the last epoch's, and the epoch from which it stays >= 0.9.
    """
    from zfkeras.analysis.evolution import correlations_with_last, follow_maps, peak_activations
    from zfkeras.nn.probe import KerasProbe

    runtime.seed_everything(seed)
    checkpoints = loading.find_checkpoints(model)
    first = loading.load_checkpoint(checkpoints[0][1])  # fixes geometry, layers, maps and data
    probe = KerasProbe(first)
    layer_names = loading.choose_layers(layers, probe)
    chosen = maps(loading.map_counts(probe, layer_names), seed)
    data_images = loading.image_batches(data_spec, split, probe.input_shape, batch_size, count=images, skip_corrupt=skip_corrupt, data_dir=data_dir)
    fixed = _first_images(data_images, probe_images)
    responses = []

    def scanned(index, epoch, batches):
        label = f"epoch {epoch} ({index + 1}/{len(checkpoints)}): scan {data_images.label}"
        with output.progressbar(batches, length=data_images.batches, label=label) as bar:
            yield from bar

    loaded = ((epoch, first if index == 0 else loading.load_checkpoint(file)) for index, (epoch, file) in enumerate(checkpoints))
    try:
        epochs, tops, tiles = follow_maps(
            first,
            loaded,
            data_images,
            {layer: chosen[layer] for layer in layer_names},
            batch_size,
            scan_batches=scanned,
            on_checkpoint=lambda index: responses.append(peak_activations(probe, fixed, layer_names, batch_size)),
            rule=rule,
        )
    except ValueError as error:
        raise click.UsageError(f"{model}: {error}") from None
    report = {"run": model, "data": data_spec, "split": split, "images": tops[0].images_seen, "seed": seed, "rule": rule}
    report |= {"epochs": epochs, "layers": {}, "correlation_images": len(fixed)}
    if data_images.source.skipped:
        report["skipped_files"] = list(data_images.source.skipped_files)
    correlations = correlations_with_last(responses)
    _write(out, report, layer_names, chosen, epochs, tops, tiles, correlations, loading.model_fields(probe), percentile)
    listed = ", ".join(map(str, epochs))
    click.echo(f"{len(checkpoints)} checkpoints (epochs {listed}), {report['images']} {split} images -> {out}/evolution.png, evolution.json")


def _first_images(batches, count):
    """The first ``count`` images of ``batches``, in memory (the fixed probe set)."""
    kept, total = [], 0
    for batch in batches:
        kept.append(batch[: count - total])
        total += len(kept[-1])
        if total >= count:
            break
    return np.concatenate(kept)


def _write(out, report, layer_names, chosen, epochs, tops, tiles, correlations, fields, percentile):
    """OUT/<layer>.png, evolution.png, correlation.png and evolution.json (written last)."""
    from zfkeras.analysis.evolution import layer_stability, settle_epoch
    from zfkeras.io.atomic import atomic_output

    lines, blocks = [], []
    with atomic_output(out, directory=True) as target:
        for layer in layer_names:
            stability = layer_stability(epochs, tops, layer).to_dict()
            per_map, stable = stability["maps"], stability["stable_epoch"]
            with np.errstate(all="ignore"):
                median = np.nanmedian(correlations[layer], axis=1)
            settled = settle_epoch(epochs, median)
            report["layers"][layer] = {"stable_epoch": stable, "field": records.field_json(fields[layer]), "maps": per_map}
            report["layers"][layer]["correlation"] = {"median": [None if v != v else round(float(v), 4) for v in median], "settled_epoch": settled}
            block = tiles[layer]  # [maps, epochs, fh, fw, C]
            output.save_figure(
                figures.evolution_figure(layer, chosen[layer], epochs, block, stable, percentile, per_map), os.path.join(target, f"{layer}.png")
            )
            blocks.append((layer, block))
            detail = ", ".join(
                f"{c}:{v['stable_epoch']}" + (" (silent at the end)" if epochs[-1] in v["silent_epochs"] else "") for c, v in per_map.items()
            )
            lines.append(
                f"{layer}: top-1 image stable from epoch {stable} (map:epoch {detail}); unit responses settled (median r >= 0.9) from epoch {settled}"
            )
        output.save_figure(figures.combined_figure(blocks, chosen, epochs, percentile, report), os.path.join(target, "evolution.png"))
        output.save_figure(figures.correlation_figure(epochs, correlations), os.path.join(target, "correlation.png"))
        output.write_json(os.path.join(target, "evolution.json"), report)
    for line in lines:
        click.echo(line)
