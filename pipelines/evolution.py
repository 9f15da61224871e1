"""``zf evolution``: feature evolution across the epoch checkpoints of a training run (Fig. 4)."""

import os
import re

import click
import numpy as np

from pipelines import _common
from pipelines.visualize import Images, field_json, map_counts, show_grid, upscale

CHECKPOINT = re.compile(r"epoch-(\d+)\.keras$")


def find_checkpoints(path):
    """``[(epoch, file)]`` sorted by epoch, from a run dir or export (``checkpoints/`` inside, or
    beside its ``.keras`` file) or a directory holding the ``epoch-XXX.keras`` files itself."""
    if os.path.isfile(path) and path.endswith(".keras"):
        path = os.path.dirname(os.path.abspath(path))  # run/model.keras: the run's checkpoints
    if not os.path.isdir(path):
        raise click.BadParameter(
            f"{path}: not a directory; give a training run dir, an export with checkpoints/, or a dir of epoch-XXX.keras files", param_hint="MODEL"
        )
    inner = os.path.join(path, "checkpoints")
    directory = inner if os.path.isdir(inner) else path
    found = sorted((int(m[1]), os.path.join(directory, name)) for name in os.listdir(directory) if (m := CHECKPOINT.fullmatch(name)))
    if not found:
        raise click.BadParameter(f"{path}: no epoch-XXX.keras checkpoints in it or in its checkpoints/ folder", param_hint="MODEL")
    return found


def load_checkpoint(file):
    import keras

    import zfkeras  # noqa: F401  (registers custom layers)

    try:
        return keras.saving.load_model(file, compile=False)
    except Exception as error:
        raise click.UsageError(f"cannot load checkpoint {file}: {str(error).splitlines()[0]}") from None


def silent_note(per_map_entry):
    silent = per_map_entry["silent_epochs"]
    return f" (silent at epoch {', '.join(map(str, silent))})" if silent else ""


def evolution_figure(layer, channels, epochs, tiles, stable, percentile, per_map):
    """Fig. 4 block of one layer: a row per map, a column per epoch, contrast-enhanced."""
    from zfkeras.diagnostics import display_tiles, mosaic

    maps, count = tiles.shape[:2]
    shown = upscale(display_tiles(tiles.reshape(maps * count, *tiles.shape[2:]), percentile))
    pad = 14
    grid = mosaic(shown, count, pad=pad, fill=1.0)
    grid = np.concatenate([grid, np.ones((16, grid.shape[1], 3), "float32")])  # room for epoch labels
    height, width = shown.shape[1:3]
    labels = [(pad, pad + m * (height + pad) - 1, f"map {channel}{silent_note(per_map[str(channel)])}") for m, channel in enumerate(channels)]
    labels += [(pad + e * (width + pad), grid.shape[0] - 2, f"epoch {epoch}") for e, epoch in enumerate(epochs)]
    title = f"{layer}: strongest activation per map (rows: maps) by epoch; top-1 image stable from epoch {stable}"
    return show_grid(grid, title, labels)


@click.command()
@_common.model_argument
@_common.data_options(images="Scan only the first N images (default: the whole split).")
@_common.split_option("train", help="Split to scan (the paper uses the training set).")
@_common.layers_option
@_common.maps_option("random:4")
@_common.batch_size_option()
@click.option(
    "--percentile",
    default=99.0,
    show_default=True,
    type=click.FloatRange(50, 100),
    help="Contrast: |values| above this percentile of each projection saturate.",
)
@_common.out_option(results="evolution.json")
@_common.seed_option
def evolution(model, data_spec, data_dir, skip_corrupt, images, split, layers, maps, batch_size, percentile, out, seed):
    """Strongest activation of chosen maps at each kept epoch, projected to pixels (Fig. 4).

    MODEL is a training run dir, an export with checkpoints/ (or a .keras file beside them), or a
    directory of epoch-XXX.keras files. Writes OUT/<layer>.png (maps x epochs), OUT/evolution.png
    (all layers) and OUT/evolution.json with, per layer and map, the top-1 {image, y, x, value} at
    each epoch and the epoch from which the top-1 image no longer changes (per layer: the latest
    over its maps).
    """
    from zfkeras.atomic import atomic_output
    from zfkeras.evolution import layer_stability, strongest
    from zfkeras.probe import KerasProbe
    from zfkeras.receptive_field import receptive_fields
    from zfkeras.topk import project_topk

    _common.seed_everything(seed)
    checkpoints = find_checkpoints(model)
    epochs = [epoch for epoch, _ in checkpoints]
    tiles, tops, fields = {}, [], None
    for number, (epoch, file) in enumerate(checkpoints):
        keras_model = load_checkpoint(file)
        probe = KerasProbe(keras_model)
        if fields is None:  # the first checkpoint fixes geometry, layers, maps and data
            fields = receptive_fields(keras_model)
            layer_names = _common.choose_layers(layers, probe.layer_names)
            chosen = maps(map_counts(probe, layer_names), seed)
            data_images = Images(data_spec, split, probe.input_shape, batch_size, count=images, skip_corrupt=skip_corrupt, data_dir=data_dir)
        elif receptive_fields(keras_model) != fields:
            raise click.UsageError(f"{file}: a different architecture from {checkpoints[0][1]}; all checkpoints must come from one run")
        label = f"epoch {epoch} ({number + 1}/{len(checkpoints)})"
        with _common.progressbar(data_images, length=data_images.batches, label=f"{label}: scan {data_images.label}") as bar:
            top = strongest(probe, bar, chosen)
        crops = project_topk(probe, top, data_images, fields, batch_size=batch_size)
        for layer in layer_names:
            tiles.setdefault(layer, []).append(crops[layer]["projections"][:, 0])
        tops.append(top)
    report = {"run": model, "data": data_spec, "split": split, "images": tops[0].images_seen, "seed": seed, "epochs": epochs, "layers": {}}
    if data_images.source.skipped:
        report["skipped_files"] = list(data_images.source.skipped_files)
    lines = []
    with atomic_output(out, directory=True) as target:
        blocks = []
        for layer in layer_names:
            stability = layer_stability(epochs, tops, layer).to_dict()
            per_map, stable = stability["maps"], stability["stable_epoch"]
            report["layers"][layer] = {"stable_epoch": stable, "field": field_json(fields[layer]), "maps": per_map}
            block = np.stack(tiles[layer], axis=1)  # [maps, epochs, fh, fw, C]
            _common.save_figure(
                evolution_figure(layer, chosen[layer], epochs, block, stable, percentile, per_map), os.path.join(target, f"{layer}.png")
            )
            blocks.append((layer, block))
            detail = ", ".join(
                f"{c}:{v['stable_epoch']}" + (" (silent at the end)" if epochs[-1] in v["silent_epochs"] else "") for c, v in per_map.items()
            )
            lines.append(f"{layer}: top-1 image stable from epoch {stable} (map:epoch {detail}) -> {out}/{layer}.png")
        _common.save_figure(combined_figure(blocks, chosen, epochs, percentile, report), os.path.join(target, "evolution.png"))
        _common.write_json(os.path.join(target, "evolution.json"), report)
    for line in lines:
        click.echo(line)
    listed = ", ".join(map(str, epochs))
    click.echo(f"{len(checkpoints)} checkpoints (epochs {listed}), {report['images']} {split} images -> {out}/evolution.png, evolution.json")


def combined_figure(blocks, chosen, epochs, percentile, report):
    """Fig. 4: one block per layer, side by side (rows: maps, columns: epochs), common tile size."""
    from zfkeras.diagnostics import display_tiles, mosaic

    size, pad = 48, 6
    parts, labels, left = [], [], 0
    height = max(block.shape[0] for _, block in blocks) * (size + pad) + pad
    for layer, block in blocks:
        maps, count = block.shape[:2]
        shown = display_tiles(block.reshape(maps * count, *block.shape[2:]), percentile)
        grid = mosaic(np.stack([resize_nearest(tile, size) for tile in shown]), count, pad=pad, fill=1.0)
        grid = np.pad(grid, ((0, height - grid.shape[0]), (0, 3 * pad), (0, 0)), constant_values=1.0)
        labels.append((left + pad, 22, f"{layer}: stable from epoch {report['layers'][layer]['stable_epoch']}"))
        labels += [(left + pad + e * (size + pad), height + 40, str(epoch)) for e, epoch in enumerate(epochs)]
        parts.append(grid)
        left += grid.shape[1]
    grid = np.concatenate(parts, axis=1)
    grid = np.concatenate([np.ones((24, grid.shape[1], 3), "float32"), grid, np.ones((20, grid.shape[1], 3), "float32")])
    maps = sum(map(len, chosen.values()))
    listed = ", ".join(map(str, epochs))
    return show_grid(
        grid, f"Feature evolution: strongest activation of {maps} maps over {report['images']} images at epochs {listed} (columns)", labels
    )


def resize_nearest(tile, size):
    """``tile [h, w, C]`` to ``[size, size, C]`` by nearest-neighbour sampling (NaN kept)."""
    rows = (np.arange(size) * tile.shape[0] // size).clip(0, tile.shape[0] - 1)
    cols = (np.arange(size) * tile.shape[1] // size).clip(0, tile.shape[1] - 1)
    return tile[rows][:, cols]
