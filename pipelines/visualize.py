"""``zf visualize``: top-k activations per feature map, projected to pixels (paper Fig. 2).

Also the plumbing ``zf evolution`` and ``zf filters`` share: model + receptive fields, data
batches, ``--layers`` / ``--maps`` parsing, and figure helpers.
"""

import json
import os
import re
import zlib

import click
import numpy as np

from pipelines._common import (
    check_output,
    load_model,
    load_probe,
    open_source,
    progressbar,
    output_directory,
    pyplot,
    save_figure,
    seed_everything,
    seed_option,
    skip_corrupt_option,
    write_json,
    weights_option,
)

DEFAULT_SOURCE = "fashion_mnist"  # zfkeras.data.DEFAULT_SOURCE, spelled here so --help needs no TF import


# ---- shared plumbing (zf visualize, zf evolution, zf filters) ---------------------------------


def keras_model(path):
    """The Keras model of MODEL, for geometry and weights (:func:`pipelines._common.load_model`)."""
    return load_model(path).model


def open_model(path):
    """``(probe, fields)``: the Probe of MODEL (export or .keras) and ``{layer: Field}``."""
    from zfkeras.probe import KerasProbe
    from zfkeras.receptive_field import receptive_fields

    probe = load_probe(path)
    model = probe.model if isinstance(probe, KerasProbe) else keras_model(path)
    try:
        fields = receptive_fields(model)
    except ValueError as error:
        raise click.UsageError(f"{path}: {error}") from None
    return probe, fields


class Images:
    """Batches of one data split at a model's input size, in source order; re-iterable (each pass
    re-reads the source, so memory does not grow with the number of images).

    Images ``start`` .. ``start + count - 1`` of the split; global indices are kept.
    """

    def __init__(self, data, split, input_shape, batch_size, count=None, start=0, skip_corrupt=False):
        height, width, channels = input_shape
        if height != width:
            raise click.UsageError(f"the data pipeline makes square crops; the model's input is {height}x{width}")
        self.source = open_source(data, split, "--data", skip_corrupt=skip_corrupt)
        total = self.source.num_examples
        if total is not None and start >= total:
            raise click.BadParameter(
                f"the {split} split of {data} has {total} images; nothing from image {start} on", param_hint="--images/--shard"
            )
        available = None if total is None else total - start
        self.count = available if count is None else count if available is None else min(count, available)
        self.start, self.size, self.channels, self.batch_size = start, height, channels, batch_size
        self.class_names = self.source.class_names

    def __iter__(self):
        from zfkeras import data as zdata

        dataset = self.source.dataset.skip(self.start)
        if self.count is not None:
            dataset = dataset.take(self.count)
        batches = zdata.eval_dataset(dataset, self.size, self.channels, self.batch_size, crops="center", cache=False)
        for images, _ in batches.as_numpy_iterator():
            yield images

    @property
    def label(self):
        """ "N images" for progress labels."""
        return f"{self.count if self.count is not None else 'all'} images"

    @property
    def batches(self):
        """Number of batches, or None when the source does not know its size."""
        return -(-self.count // self.batch_size) if self.count is not None else None


def map_counts(probe, layers):
    """``{layer: number of maps}`` from one forward pass of a blank image."""
    features = probe.features(np.zeros((1, *probe.input_shape), "float32"), layers=layers)
    return {layer: int(features[layer].shape[-1]) for layer in layers}


def parse_layers(text, probe):
    """``--layers conv1,conv5`` (default: all conv layers) as a list."""
    names = list(probe.layer_names)
    if not text:
        return names
    layers = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in layers if name not in names]
    if unknown or not layers:
        raise click.BadParameter(
            f"unknown layer {unknown[0] if unknown else text!r}; this model has {', '.join(names)}", param_hint="--layers"
        )
    return layers


def parse_maps(text, counts, seed):
    """``--maps all | 0,3,7 | random:N`` -> ``{layer: sorted channel indices}``.

    ``random:N`` draws N maps per layer (all if fewer) from a generator seeded by ``seed`` and the
    layer name, so the choice is the same whichever other layers are asked for.
    """
    text = text.strip()
    maps = {}
    for layer, count in counts.items():
        if text == "all":
            maps[layer] = list(range(count))
        elif re.fullmatch(r"random:\d+", text) and int(text[7:]) > 0:
            rng = np.random.default_rng([seed, zlib.crc32(layer.encode())])
            maps[layer] = sorted(int(c) for c in rng.choice(count, min(int(text[7:]), count), replace=False))
        elif re.fullmatch(r"\d+(,\d+)*", text):
            chosen = sorted({int(c) for c in text.split(",")})
            if chosen[-1] >= count:
                raise click.BadParameter(f"map {chosen[-1]} does not exist in {layer}, which has maps 0-{count - 1}", param_hint="--maps")
            maps[layer] = chosen
        else:
            raise click.BadParameter(f"{text!r}: use 'all', a list like '0,3,7', or 'random:N' with N >= 1", param_hint="--maps")
    return maps


def parse_shard(text):
    """``--shard I/N`` -> (I, N), 1 <= I <= N."""
    match = re.fullmatch(r"(\d+)/(\d+)", text or "")
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise click.BadParameter(f"{text!r}: use I/N with 1 <= I <= N, e.g. 2/4", param_hint="--shard")
    return int(match[1]), int(match[2])


def upscale(tiles, minimum=64):
    """Nearest-neighbour upscale ``[..., h, w, C]`` tiles by an integer so the side is >= ``minimum``."""
    factor = max(1, -(-minimum // max(tiles.shape[-3], tiles.shape[-2])))
    return np.repeat(np.repeat(tiles, factor, axis=-3), factor, axis=-2)


def show_grid(image, title, labels=(), dpi=100):
    """A figure showing ``image`` [h, w, 3] pixel for pixel, with ``labels`` = [(x, y, text)]."""
    plt = pyplot()
    height, width = image.shape[:2]
    header = 40
    figure = plt.figure(figsize=(width / dpi, (height + header) / dpi), dpi=dpi)
    axes = figure.add_axes([0, 0, 1, height / (height + header)])
    axes.imshow(np.clip(image, 0, 1), interpolation="nearest")
    axes.set_axis_off()
    for x, y, text in labels:
        axes.text(x, y, text, fontsize=7, ha="left", va="bottom", color="black")
    figure.text(0.01, 1 - 6 / (height + header), title, fontsize=9, ha="left", va="top")
    return figure


def field_json(field):
    return {"size": list(field.size), "jump": list(field.jump), "offset": list(field.offset)}


# ---- zf visualize ---------------------------------------------------------------------------


def topk_figure(layer, channels, crops, values, images_scanned):
    """Fig. 2 for one layer: per map, a grid of its top-k projections beside the matching patches.

    ``values`` ``[maps, k]``: the kept activations (a map whose best is 0 is marked silent)."""
    from zfkeras.diagnostics import display_tiles, mosaic
    from zfkeras.display import pixels_to_display

    k = values.shape[1]
    side = int(np.ceil(np.sqrt(k)))
    projections = upscale(crops["projections"])
    patches = upscale(crops["patches"])
    maps, _, height, width, _ = projections.shape
    pairs = []
    for m in range(maps):
        shown = display_tiles(projections[m])
        raw = pixels_to_display(patches[m]).reshape(patches[m].shape)  # NaN (outside the image) stays NaN
        left = mosaic(shown, side, pad=1, fill=1.0)
        right = mosaic(raw, side, pad=1, fill=1.0)
        gap = np.ones((left.shape[0], max(2, width // 8), 3), "float32")
        pairs.append(np.concatenate([left, gap, right], axis=1))
    pairs = np.stack(pairs)
    pad = 14
    columns = max(1, min(maps, 1600 // (pairs.shape[2] + pad)))  # rows about 1600 px wide
    grid = mosaic(pairs, columns, pad=pad, fill=1.0)
    labels = []
    for m, channel in enumerate(channels):
        row, column = divmod(m, columns)
        labels.append(
            (
                pad + column * (pairs.shape[2] + pad),
                pad + row * (pairs.shape[1] + pad) - 1,
                f"map {channel}" + (" (silent)" if values[m, 0] <= 0 else ""),
            )
        )
    title = f"{layer}: top-{k} activations of {maps} maps over {images_scanned} images (left: deconvnet projections, right: image patches)"
    return show_grid(grid, title, labels)


@click.command()
@click.argument("model", type=click.Path())
@click.option("--data", default=DEFAULT_SOURCE, show_default=True, help="Data source: idx:PATH, folder:PATH, tfds:NAME or fashion_mnist.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True, help="Split to scan.")
@click.option("--layers", default=None, help="Comma-separated conv layers (default: all).")
@click.option("--maps", default="random:16", show_default=True, help="Maps per layer: all, a list like 0,3,7, or random:N.")
@click.option("--k", default=9, show_default=True, type=click.IntRange(1), help="Activations kept per map.")
@click.option("--images", default=None, type=click.IntRange(1), help="Scan only the first N images (default: the whole split).")
@click.option(
    "--batch-size",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Images per forward pass and projections per deconvnet call.",
)
@click.option("--shard", default=None, help="Scan only part I of N of the images (e.g. 2/4) and write topk.json, no figures.")
@click.option(
    "--merge",
    "merge_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Skip the scan: merge the topk.json of these shard output dirs, then project and draw (repeatable).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory (replaced whole at the end).")
@skip_corrupt_option
@seed_option
@weights_option
def visualize(model, data, split, layers, maps, k, images, batch_size, shard, merge_dirs, out, skip_corrupt, seed):
    """Top-k activations of feature maps across a data set, projected to pixels (Fig. 2).

    Writes OUT/<layer>.png per layer (each map: a grid of its top-k deconvnet projections beside
    the matching image patches, both cut to the receptive field), OUT/topk.json
    (layer -> map -> [{image, y, x, value}], strongest first; image = index in the split) and
    OUT/summary.json.
    """
    from zfkeras.topk import project_topk, scan

    check_output(out, results="summary.json")
    seed_everything(seed)
    probe, fields = open_model(model)
    layer_names = parse_layers(layers, probe)
    counts = map_counts(probe, layer_names)
    chosen = parse_maps(maps, counts, seed)
    start, count = 0, images
    if shard and merge_dirs:
        raise click.UsageError("--shard and --merge exclude each other: scan shards first, then --merge their outputs")
    if shard:
        index, parts = parse_shard(shard)
        total = Images(data, split, probe.input_shape, batch_size, count=images, skip_corrupt=skip_corrupt).count
        if total is None:
            raise click.UsageError("--shard needs a data source whose size is known")
        start, stop = (index - 1) * total // parts, index * total // parts
        count = stop - start
    if merge_dirs:
        top, scanned = merge_shards(merge_dirs, k)
        layer_names = list(top.maps)
        chosen = {layer: top.maps[layer].tolist() for layer in layer_names}
        unknown = [layer for layer in layer_names if layer not in probe.layer_names]
        if unknown or any(max(chosen[layer], default=0) >= count for layer, count in map_counts(probe, layer_names).items()):
            raise click.BadParameter(
                f"the shards were scanned with another model: their layers or maps do not exist in {model}", param_hint="--merge"
            )
        start, count = 0, scanned
    data_images = Images(data, split, probe.input_shape, batch_size, count=count, start=start, skip_corrupt=skip_corrupt)
    if not merge_dirs:
        with progressbar(data_images, length=data_images.batches, label=f"scan {data_images.label}") as bar:
            top = scan(probe, bar, chosen, k=k, first_image=start)
    summary = {
        "model": model,
        "data": data,
        "split": split,
        "images": top.images_seen,
        "first_image": start,
        "k": k,
        "distinct_images": True,
        "seed": seed,
        "maps": chosen,
        "shard": shard,
        "fields": {layer: field_json(fields[layer]) for layer in layer_names},
    }
    if data_images.source.skipped:
        summary["skipped_files"] = list(data_images.source.skipped_files)
    if shard:
        with output_directory(out) as target:
            write_json(os.path.join(target, "topk.json"), top.to_dict())
            write_json(os.path.join(target, "summary.json"), summary)
        maps_kept = sum(map(len, chosen.values()))
        click.echo(f"shard {shard}: images {start}..{start + top.images_seen - 1}, top-{k} of {maps_kept} maps -> {out}/topk.json")
        return
    total = sum(int((top.entries(layer)["image"] >= 0).sum()) for layer in layer_names)
    summary["figures"] = {}
    with output_directory(out) as target, progressbar(length=total, label=f"project {total} activations") as bar:
        for layer in layer_names:  # one layer at a time: only its crops are in memory
            crops = project_topk(
                probe, top, data_images, fields, layers=[layer], first_image=start, batch_size=batch_size, progress=bar.update
            )
            path = os.path.join(target, f"{layer}.png")
            save_figure(topk_figure(layer, chosen[layer], crops[layer], top.entries(layer)["value"], top.images_seen), path)
            summary["figures"][layer] = os.path.basename(path)
        write_json(os.path.join(target, "topk.json"), top.to_dict())
        write_json(os.path.join(target, "summary.json"), summary)  # last: marks a complete output
    for layer in layer_names:
        values = top.entries(layer)["value"][:, 0]
        click.echo(
            f"{layer}: {len(chosen[layer])} maps, field {fields[layer].size[0]}x{fields[layer].size[1]} px, "
            f"top-1 activation median {float(np.median(values)):.3g} max {float(values.max()):.3g} -> {out}/{layer}.png"
        )
    click.echo(f"scanned {top.images_seen} images; wrote {out}/topk.json")


def merge_shards(dirs, k):
    """Merge the topk.json of shard output dirs (checked to be disjoint and consistent)."""
    from zfkeras.topk import TopK

    merged, ends = None, []
    for directory in dirs:
        try:
            summary = json.load(open(os.path.join(directory, "summary.json")))
            data = json.load(open(os.path.join(directory, "topk.json")))
        except (OSError, ValueError) as error:
            raise click.BadParameter(f"{directory}: not a shard output ({error})", param_hint="--merge") from None
        if summary.get("k") != k:
            raise click.BadParameter(f"{directory} was scanned with --k {summary.get('k')}, not {k}", param_hint="--merge")
        part = TopK.from_dict(data, k, images_seen=summary["images"])
        ends.append((summary["first_image"], summary["first_image"] + summary["images"]))
        try:
            merged = part if merged is None else merged.merge(part)
        except ValueError as error:
            raise click.BadParameter(f"{directory}: {error}", param_hint="--merge") from None
    ends.sort()
    if ends[0][0] != 0 or any(a[1] != b[0] for a, b in zip(ends, ends[1:])):
        raise click.BadParameter(f"the shards cover images {ends}, not one contiguous range from 0", param_hint="--merge")
    return merged, ends[-1][1]
