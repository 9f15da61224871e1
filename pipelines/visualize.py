"""``zf visualize``: top-k activations per feature map, projected to pixels (paper Fig. 2).

Also the plumbing ``zf evolution`` and ``zf filters`` share: model + receptive fields, data
batches, and figure helpers.
"""

import json
import os
import re

import click
import numpy as np

from pipelines import _common

# ---- shared plumbing (zf visualize, zf evolution, zf filters) ---------------------------------


def keras_of(probe, path):
    """The Keras model behind ``probe`` (a SavedModel export's model.keras for an export), for
    geometry and weights."""
    return getattr(probe, "model", None) or _common.load_model(path).model


def open_model(path):
    """``(probe, fields)``: the Probe of MODEL (export or .keras) and ``{layer: Field}``."""
    from zfkeras.receptive_field import receptive_fields

    probe = _common.load_probe(path)
    model = keras_of(probe, path)
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

    def __init__(self, data, split, input_shape, batch_size, count=None, start=0, skip_corrupt=False, data_dir=None):
        height, width, channels = input_shape
        if height != width:
            raise click.UsageError(f"the data pipeline makes square crops; the model's input is {height}x{width}")
        self.source = _common.open_source(data, split, "--data", data_dir=data_dir, skip_corrupt=skip_corrupt)
        total = self.source.num_examples
        if total is not None and start >= total:
            raise click.BadParameter(f"the {split} split of {data} has {total} images; nothing from image {start} on", param_hint="--images/--shard")
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
    plt = _common.pyplot()
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
@_common.model_argument
@_common.data_options(images="Scan only the first N images (default: the whole split).")
@_common.split_option()
@_common.layers_option
@_common.maps_option("random:16")
@click.option("--k", default=9, show_default=True, type=click.IntRange(1), help="Activations kept per map.")
@_common.batch_size_option(help="Images per forward pass and projections per deconvnet call.")
@click.option("--shard", default=None, help="Scan only part I of N of the images (e.g. 2/4) and write topk.json, no figures.")
@click.option(
    "--merge",
    "merge_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    metavar="DIR",
    help="Skip the scan: merge the topk.json of these shard output dirs, then project and draw (repeatable).",
)
@_common.out_option(results="summary.json")
@_common.seed_option
def visualize(model, data_spec, data_dir, skip_corrupt, images, split, layers, maps, k, batch_size, shard, merge_dirs, out, seed):
    """Top-k activations of feature maps of MODEL across a data set, projected to pixels (Fig. 2).

    Writes OUT/<layer>.png per layer (each map: a grid of its top-k deconvnet projections beside
    the matching image patches, both cut to the receptive field), OUT/topk.json
    (layer -> map -> [{image, y, x, value}], strongest first; image = index in the split) and
    OUT/summary.json.
    """
    from zfkeras.atomic import atomic_output
    from zfkeras.topk import project_topk, scan

    _common.seed_everything(seed)
    probe, fields = open_model(model)
    layer_names = _common.choose_layers(layers, probe.layer_names)
    chosen = maps(map_counts(probe, layer_names), seed)
    start, count = 0, images
    if shard and merge_dirs:
        raise click.UsageError("--shard and --merge exclude each other: scan shards first, then --merge their outputs")
    if shard:
        index, parts = parse_shard(shard)
        total = Images(data_spec, split, probe.input_shape, batch_size, count=images, skip_corrupt=skip_corrupt, data_dir=data_dir).count
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
    data_images = Images(data_spec, split, probe.input_shape, batch_size, count=count, start=start, skip_corrupt=skip_corrupt, data_dir=data_dir)
    if not merge_dirs:
        with _common.progressbar(data_images, length=data_images.batches, label=f"scan {data_images.label}") as bar:
            top = scan(probe, bar, chosen, k=k, first_image=start)
    summary = {
        "model": model,
        "data": data_spec,
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
        with atomic_output(out, directory=True) as target:
            _common.write_json(os.path.join(target, "topk.json"), top.to_dict())
            _common.write_json(os.path.join(target, "summary.json"), summary)
        maps_kept = sum(map(len, chosen.values()))
        click.echo(f"shard {shard}: images {start}..{start + top.images_seen - 1}, top-{k} of {maps_kept} maps -> {out}/topk.json")
        return
    total = sum(int((top.entries(layer)["image"] >= 0).sum()) for layer in layer_names)
    summary["figures"] = {}
    with atomic_output(out, directory=True) as target, _common.progressbar(length=total, label=f"project {total} activations") as bar:
        for layer in layer_names:  # one layer at a time: only its crops are in memory
            crops = project_topk(probe, top, data_images, fields, layers=[layer], first_image=start, batch_size=batch_size, progress=bar.update)
            path = os.path.join(target, f"{layer}.png")
            _common.save_figure(topk_figure(layer, chosen[layer], crops[layer], top.entries(layer)["value"], top.images_seen), path)
            summary["figures"][layer] = os.path.basename(path)
        _common.write_json(os.path.join(target, "topk.json"), top.to_dict())
        _common.write_json(os.path.join(target, "summary.json"), summary)  # last: marks a complete output
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
