"""``zf visualize``: top-k activations per feature map, projected to pixels (paper Fig. 2)."""

import json
import os
import re

import click
import numpy as np

from pipelines import figures, loading, options, output, records, runtime


def parse_shard(text):
    """``--shard I/N`` -> (I, N), 1 <= I <= N."""
    match = re.fullmatch(r"(\d+)/(\d+)", text or "")
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise click.BadParameter(f"{text!r}: use I/N with 1 <= I <= N, e.g. 2/4", param_hint="--shard")
    return int(match[1]), int(match[2])


@click.command()
@options.model_argument
@options.data_options(images="Scan only the first N images (default: the whole split).")
@options.split_option()
@options.layers_option
@options.maps_option("random:16")
@click.option("--k", default=9, show_default=True, type=click.IntRange(1), help="Activations kept per map.")
@options.batch_size_option(help="Images per forward pass and projections per deconvnet call.")
@options.rule_option
@options.precision_option
@click.option("--shard", default=None, help="Scan only part I of N of the images (e.g. 2/4) and write topk.json, no figures.")
@click.option(
    "--merge",
    "merge_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    metavar="DIR",
    help="Skip the scan: merge the topk.json of these shard output dirs, then project and draw (repeatable).",
)
@options.out_option(results="summary.json")
@options.seed_option
def visualize(model, data_spec, data_dir, skip_corrupt, images, split, layers, maps, k, batch_size, rule, shard, merge_dirs, out, seed):
    """Top-k activations of feature maps of MODEL across a data set, projected to pixels (Fig. 2).

    Writes OUT/<layer>.png per layer (each map: a grid of its top-k projections (--rule) beside
    the matching image patches, both cut to the receptive field), OUT/topk.json
    (layer -> map -> [{image, y, x, value}], strongest first; image = index in the split) and
    OUT/summary.json.
    """
    from zfkeras.analysis.top_activations import scan

    runtime.seed_everything(seed)
    if shard and merge_dirs:
        raise click.UsageError("--shard and --merge exclude each other: scan shards first, then --merge their outputs")
    probe = loading.open_model(model)
    loading.check_rule(probe, rule)
    fields = loading.model_fields(probe)
    layer_names = loading.choose_layers(layers, probe)
    chosen = maps(loading.map_counts(probe, layer_names), seed)
    reading = dict(skip_corrupt=skip_corrupt, data_dir=data_dir)
    start, count = _shard_range(shard, data_spec, split, probe, batch_size, images, reading) if shard else (0, images)
    if merge_dirs:
        top, count = merge_shards(merge_dirs, k)
        layer_names, chosen = list(top.maps), {layer: top.maps[layer].tolist() for layer in top.maps}
        _check_merged(probe, model, layer_names, chosen)
    data_images = loading.image_batches(data_spec, split, probe.input_shape, batch_size, count=count, start=start, **reading)
    if not merge_dirs:
        with output.progressbar(data_images, length=data_images.batches, label=f"scan {data_images.label}") as bar:
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
        "rule": rule,
        "maps": chosen,
        "shard": shard,
        "fields": {layer: records.field_json(fields[layer]) for layer in layer_names},
    }
    if data_images.source.skipped:
        summary["skipped_files"] = list(data_images.source.skipped_files)
    if shard:
        _write_shard(out, top, summary, chosen, shard, start, k)
        return
    _project_and_draw(probe, top, data_images, fields, layer_names, chosen, summary, start, batch_size, out, rule)
    for layer in layer_names:
        values = top.entries(layer)["value"][:, 0]
        extent = summary["extent"][layer]["median_pixels"]
        click.echo(
            f"{layer}: {len(chosen[layer])} maps, field {fields[layer].size[0]}x{fields[layer].size[1]} px, "
            f"top-1 activation median {float(np.median(values)):.3g} max {float(values.max()):.3g}, "
            f"90% of projection energy in {extent if extent is None else round(extent)} px -> {out}/{layer}.png"
        )
    click.echo(f"scanned {top.images_seen} images; wrote {out}/topk.json")


def _shard_range(shard, data_spec, split, probe, batch_size, images, reading):
    """``(first image, count)`` of shard ``I/N`` of the (first ``images``) images of the split."""
    index, parts = parse_shard(shard)
    total = loading.image_batches(data_spec, split, probe.input_shape, batch_size, count=images, **reading).count
    if total is None:
        raise click.UsageError("--shard needs a data source whose size is known")
    start, stop = (index - 1) * total // parts, index * total // parts
    return start, stop - start


def _check_merged(probe, model, layer_names, chosen):
    unknown = [layer for layer in layer_names if layer not in probe.layer_names]
    if unknown or any(max(chosen[layer], default=0) >= count for layer, count in loading.map_counts(probe, layer_names).items()):
        raise click.BadParameter(f"the shards were scanned with another model: their layers or maps do not exist in {model}", param_hint="--merge")


def _write_shard(out, top, summary, chosen, shard, start, k):
    from zfkeras.io.atomic import atomic_output

    with atomic_output(out, directory=True) as target:
        output.write_json(os.path.join(target, "topk.json"), top.to_dict())
        output.write_json(os.path.join(target, "summary.json"), summary)
    maps_kept = sum(map(len, chosen.values()))
    click.echo(f"shard {shard}: images {start}..{start + top.images_seen - 1}, top-{k} of {maps_kept} maps -> {out}/topk.json")


def _project_and_draw(probe, top, data_images, fields, layer_names, chosen, summary, start, batch_size, out, rule):
    """Project every kept activation, one layer at a time (only its crops are in memory), and draw it."""
    from zfkeras.analysis.top_activations import project_topk
    from zfkeras.io.atomic import atomic_output

    total = sum(int((top.entries(layer)["image"] >= 0).sum()) for layer in layer_names)
    summary["figures"], summary["extent"] = {}, {}
    with atomic_output(out, directory=True) as target, output.progressbar(length=total, label=f"project {total} activations") as bar:
        for layer in layer_names:
            crops = project_topk(
                probe, top, data_images, fields, layers=[layer], first_image=start, batch_size=batch_size, progress=bar.update, rule=rule
            )
            path = os.path.join(target, f"{layer}.png")
            output.save_figure(figures.topk_figure(layer, chosen[layer], crops[layer], top.entries(layer)["value"], top.images_seen, rule), path)
            summary["figures"][layer] = os.path.basename(path)
            summary["extent"][layer] = _extent(crops[layer]["projections"], top.entries(layer)["value"], probe.input_shape)
        output.write_json(os.path.join(target, "topk.json"), top.to_dict())
        output.write_json(os.path.join(target, "summary.json"), summary)  # last: marks a complete output


def merge_shards(dirs, k):
    """Merge the topk.json of shard output dirs (checked to be disjoint and consistent)."""
    from zfkeras.analysis.top_activations import TopK

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


def _extent(projections, values, input_shape):
    """Fig. 2's hierarchy as a number: the median, over the kept activations that fired, of the
    pixels holding 90% of a projection's energy (:func:`zfkeras.analysis.top_activations.energy_extent`),
    and that as a share of the image's area."""
    from zfkeras.analysis.top_activations import energy_extent

    pixels = energy_extent(projections, 0.9)[values > 0]
    median = float(np.median(pixels)) if pixels.size else None
    area = int(input_shape[0]) * int(input_shape[1])
    return {"median_pixels": median, "median_share": None if median is None else median / area, "projections": int(pixels.size)}
