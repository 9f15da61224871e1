"""``zf atlas``: every unit of every layer of MODEL over a data set, as a static site (a Microscope
for your own model and data).

One streaming pass keeps each unit's top activations and statistics (:mod:`zfkeras.analysis.atlas`),
shard by shard, resumable and spread over the replicas of ``--strategy``
(:mod:`zfkeras.analysis.atlas_shards`); then each layer's top-9 are projected by the deconvnet, and
the site is written (:mod:`.site`) into OUT, swapped in whole, ``atlas.json`` last.
"""

import hashlib
import os
import time

import click
import numpy as np

from pipelines import loading, options, output, runtime
from pipelines.commands.atlas.site import Site


@click.command()
@options.model_argument
@options.data_options(images="Scan only the first N images of the split (default: all).")
@options.split_option()
@options.layers_option(help="Comma-separated layers (default: every projectable layer with a receptive field).")
@options.maps_option("all", help="Units per layer")
@options.batch_size_option(help="Images per forward pass and projections per deconvnet call.")
@options.rule_option(help="Backward rule of the top-9 projections")
@options.precision_option
@click.option(
    "--shard-images",
    default=2048,
    show_default=True,
    type=click.IntRange(1),
    metavar="N",
    help="Images per shard (rounded up to a multiple of --batch-size): a killed run resumes from its last finished shard.",
)
@click.option(
    "--strategy", default="auto", show_default=True, help="Spread the scan over replicas: auto, mirrored, multiworker (TF_CONFIG) or cpu:N."
)
@click.option(
    "--state",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Where finished shards are kept until the atlas is written (default: .OUT.atlas-state beside --out).",
)
@click.option(
    "--duplicate-threshold",
    default=0.9,
    show_default=True,
    type=options.Number(0, 1, min_open=True),
    help="Correlation of top-100 activations from which two units of a layer count as near-duplicates.",
)
@click.option(
    "--evolution/--no-evolution", default=True, show_default=True, help="Show each unit across MODEL's checkpoints (Fig. 4), if it has any."
)
@click.option("--optimize", is_flag=True, help="Also show, for each unit, the image that maximises it (feature visualization by optimization).")
@click.option("--optimize-steps", type=click.IntRange(1), metavar="N", help="Optimization steps per unit with --optimize (default: the library's).")
@options.out_option(results="atlas.json", help="Output directory: the site (index.html, a folder per layer, atlas.json).")
@options.seed_option
def atlas(model, data_spec, data_dir, skip_corrupt, images, split, layers, maps, batch_size, rule, shard_images, strategy, state, **settings):
    """Every unit of every layer of MODEL over --data, browsable: a static site in OUT.

    For each unit: its top-9 activations (one per image) projected to pixels beside the image
    patches, a histogram of how strongly it fires, how often it fires, the classes it prefers and
    its class-selectivity index, dead and near-duplicate units flagged, and (where MODEL has
    checkpoints) the unit across training. --precision is what the scan computes in (float32:
    exact); projections are float32 under --rule whatever it is. MODEL may also be random:zfnet (random:alexnet,
    random:zfnet_small): the architecture with random paper-init weights, seeded by --seed.
    Open OUT/index.html from disk; every number is in OUT/atlas.json.
    """
    distribution = loading.distribution(strategy)  # first: cpu:N and multiworker must precede any TF work
    out, seed = settings["out"], settings["seed"]
    maximize_units = _optimizer() if settings["optimize"] else None
    runtime.seed_everything(seed)
    probe, _ = loading.open_model_or_random(model, seed)
    settings["rule"] = loading.check_rule(probe, rule)
    fields = loading.model_fields(probe)
    layer_names = loading.choose_layers(
        layers, probe, names=[name for name in probe.layer_names if name in fields], what="layers with a receptive field"
    )
    counts = loading.map_counts(probe, layer_names)
    chosen = maps(counts, seed)
    batches = loading.image_batches(data_spec, split, probe.input_shape, batch_size, count=images, skip_corrupt=skip_corrupt, data_dir=data_dir)
    if batches.count is None:
        raise click.UsageError(f"{data_spec}: the atlas needs a data source whose size is known")
    from zfkeras.analysis.atlas_shards import scan_sharded
    from zfkeras.io.shards import ShardStore
    from zfkeras.training import worker_role

    job = _job(model, probe, data_spec, split, batches.count, chosen, batch_size, shard_images)
    try:
        store = ShardStore(state or _state_dir(out), job)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--state") from None
    if store.stale:
        click.echo(f"{store.directory}: held shards of another atlas; starting afresh", err=True)
    started = time.monotonic()
    with output.progressbar(length=batches.count, label=f"scan {batches.count} images") as bar:
        scan, info = scan_sharded(
            probe, _reader(batches), batches.count, chosen, len(batches.class_names), batch_size=batch_size, shard_images=shard_images,
            strategy=distribution, store=store, progress=bar.update,
        )  # fmt: skip
    if info["found"]:
        click.echo(f"resumed: {info['found']} of {info['shards']} shards were already scanned in {store.directory}", err=True)
    is_chief, task = worker_role(distribution)
    if not is_chief:
        click.echo(f"worker {task}: scanned shards {info['scanned']} of {info['shards']}; the chief writes {out}")
        return
    header = _header(model, probe, data_spec, split, scan, settings, distribution)
    _write_site(probe, scan, batches, fields, chosen, counts, header, settings, maximize_units)
    store.remove()
    seconds = time.monotonic() - started
    click.echo(f"atlas of {sum(map(len, chosen.values()))} units in {len(chosen)} layers over {scan.images} images in {seconds:.0f} s")
    click.echo(f"open file://{os.path.abspath(os.path.join(out, 'index.html'))}")


def _optimizer():
    """:func:`zfkeras.analysis.feature_visualization.maximize_units` (imported where asked for)."""
    from zfkeras.analysis.feature_visualization import maximize_units

    return maximize_units


def _state_dir(out):
    parent, name = os.path.split(os.path.abspath(out))
    return os.path.join(parent, f".{name}.atlas-state")


def _reader(batches):
    """``read(start, count)``: ``(images, labels)`` numpy batches of those images of ``batches``' source."""
    from zfkeras.data import ImageBatches

    def read(start, count):
        part = ImageBatches(batches.source, (batches.size, batches.size, batches.channels), batches.batch_size, count=count, start=start)
        return part.dataset().as_numpy_iterator()

    return read


def _job(model, probe, data_spec, split, count, chosen, batch_size, shard_images):
    """What the shards depend on (:class:`zfkeras.io.shards.ShardStore`): the model (by name and by
    its features of a fixed image), the data, the units and the batching."""
    height, width, channels = probe.input_shape
    ramp = (np.arange(height * width * channels, dtype="float32").reshape(1, height, width, channels) * 7919) % 256
    features = probe.features(ramp, layers=list(chosen))
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(features[layer]).tobytes() for layer in chosen)).hexdigest()
    from zfkeras.version import __version__

    return {
        "model": model,
        "model_features": digest,
        "data": data_spec,
        "split": split,
        "images": count,
        "maps": {layer: [int(c) for c in channels] for layer, channels in chosen.items()},
        "batch_size": batch_size,
        "shard_images": shard_images,
        "precision": probe.precision,
        "zfkeras_version": __version__,
    }


def _header(model, probe, data_spec, split, scan, settings, distribution):
    from zfkeras.analysis.atlas import HISTOGRAM_EDGES, SHOWN, TOP
    from zfkeras.version import __version__

    metadata = getattr(probe, "metadata", None)  # an export names its model without loading it
    return {
        "model": model,
        "model_name": metadata.get("model_name", model) if metadata else probe.keras_model.name,
        "data": data_spec,
        "split": split,
        "images": scan.images,
        "shown": SHOWN,
        "top": TOP,
        "duplicate_threshold": settings["duplicate_threshold"],
        "rule": settings["rule"],
        "precision": probe.precision,
        "histogram_edges": [float(e) for e in HISTOGRAM_EDGES],
        "replicas": distribution.num_replicas_in_sync,
        "checkpoints": [],
        "command": output.command_text(click.get_current_context(), "atlas", model),
        "zfkeras_version": __version__,
    }


def _write_site(probe, scan, batches, fields, chosen, counts, header, settings, maximize_units):
    """Project each layer's top-9, draw and write everything into OUT (atomic, atlas.json last)."""
    from zfkeras.analysis.atlas import SHOWN, layer_atlas, project_units
    from zfkeras.io.atomic import atomic_output

    total = sum(len(c) for c in chosen.values()) * SHOWN
    with atomic_output(settings["out"], directory=True) as target:
        site = Site(target, header, class_names(probe, batches))
        with output.progressbar(length=total, label=f"project {total} activations") as bar:
            for group in _layer_groups(probe, fields, chosen):  # one pass over the data per group
                crops = project_units(probe, scan, batches, fields, group, batch_size=batches.batch_size, progress=bar.update, rule=settings["rule"])
                for layer in group:
                    summary = layer_atlas(scan, layer, settings["duplicate_threshold"])
                    site.add_layer(summary, crops.pop(layer), fields[layer], counts[layer])
                    bar.update(len(chosen[layer]) * SHOWN - int((summary.top["image"] >= 0).sum()))
        if settings["evolution"]:
            _evolution(site, probe, batches, chosen, header, settings["rule"])
        if maximize_units is not None:
            _optimize(site, probe, chosen, settings, maximize_units, batches.batch_size)
        site.write()


def class_names(probe, batches):
    """Names of the data's classes: the model's own where it has as many (an idx: or csv: source
    numbers its classes; the model was trained on them), else the source's."""
    names = list(batches.class_names)
    return list(probe.class_names) if len(probe.class_names) == len(names) else names


CROP_BUDGET = 256 * 2**20  # bytes of projections and patches held at once


def _layer_groups(probe, fields, chosen):
    """The chosen layers in groups whose crops fit :data:`CROP_BUDGET` together (a layer alone may not)."""
    from zfkeras.analysis.atlas import SHOWN

    groups, size = [[]], 0
    for layer, channels in chosen.items():
        need = 2 * 4 * len(channels) * SHOWN * fields[layer].size[0] * fields[layer].size[1] * probe.input_shape[-1]
        if groups[-1] and size + need > CROP_BUDGET:
            groups.append([])
            size = 0
        groups[-1].append(layer)
        size += need
    return [group for group in groups if group]


def _evolution(site, probe, batches, chosen, header, rule):
    """Each unit across MODEL's checkpoints (Fig. 4), when it has any."""
    from zfkeras.analysis.evolution import follow_maps

    path = header["model"]
    if path.startswith(("random:", "keras:")):
        return
    try:
        checkpoints = loading.find_checkpoints(path)
    except click.BadParameter:
        return
    loaded = ((epoch, loading.load_checkpoint(file)) for epoch, file in checkpoints)
    with output.progressbar(length=len(checkpoints), label=f"{len(checkpoints)} checkpoints") as bar:
        try:
            epochs, tops, tiles = follow_maps(
                loading.keras_model(probe), loaded, batches, chosen, batches.batch_size, on_checkpoint=lambda index: bar.update(1), rule=rule
            )
        except ValueError as error:
            raise click.UsageError(f"{path}: {error}") from None
    site.header["checkpoints"] = [int(e) for e in epochs]
    for layer, channels in chosen.items():
        site.add_evolution(layer, channels, epochs, tops, tiles[layer])


def _optimize(site, probe, chosen, settings, maximize_units, batch_size):
    """Each unit's optimised image and the unit's peak activation on it."""
    model = loading.keras_model(probe)
    steps = {"steps": settings["optimize_steps"]} if settings["optimize_steps"] else {}
    with output.progressbar(length=sum(map(len, chosen.values())), label="optimize") as bar:
        for layer, channels in chosen.items():
            images = np.asarray(maximize_units(model, layer, list(channels), seed=settings["seed"], batch_size=batch_size, **steps), "float32")
            features = probe.features(images, layers=[layer], batch_size=batch_size)[layer]
            peaks = features.max(axis=(1, 2))[np.arange(len(channels)), np.asarray(channels)]
            site.add_optimized(layer, channels, images, peaks)
            bar.update(len(channels))
    site.header["optimized"] = {"seed": settings["seed"], "steps": settings["optimize_steps"]}
