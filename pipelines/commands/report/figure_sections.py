"""The sections of ``zf report`` that draw the paper's Sec. 4 figures on the model: Fig. 2, 4, 6, 7,
5 and Table 1, each by the same library functions and figure drawers as its own command. Each takes
the report's :class:`~pipelines.commands.report.context.Context` and a progress callback and returns
a :class:`~pipelines.commands.report.html.Section`."""

import os

import click
import numpy as np

from pipelines import figures, loading, options, records
from pipelines.commands.report import html
from pipelines.commands.report.context import checkpoint_home


def visualize(context, advance):
    from zfkeras.analysis.top_activations import project_topk, scan

    layers = list(context.probe.layer_names)
    context.chosen = context.maps(loading.map_counts(context.probe, layers), context.seed)
    fields = context.fields()
    done, total = 0, context.batches.count or 0

    def counted(batches):
        nonlocal done
        for batch in batches:
            yield batch
            done += len(batch)
            advance(done, 2 * total)

    top = scan(context.probe, counted(context.batches), context.chosen, k=9)
    body, numbers = [], {"images": top.images_seen, "maps": context.chosen, "layers": {}}
    for number, layer in enumerate(layers):
        crops = project_topk(context.probe, top, context.batches, fields, layers=[layer], batch_size=64, rule=context.rule)
        values = top.entries(layer)["value"]
        figure = figures.topk_figure(layer, context.chosen[layer], crops[layer], values, top.images_seen, context.rule)
        name = context.save(figure, f"fig2-{layer}.png")
        size = fields[layer].size
        silent = int((values[:, 0] <= 0).sum())
        body.append(
            html.figure(
                name,
                f"Fig. 2, {layer}",
                (
                    f"For {len(context.chosen[layer])} maps of {layer}, the 9 strongest activations over {top.images_seen} images "
                    f"(at most one per image): left, each projected to pixels by the {context.rule} rule; right, the image patch under "
                    f"the activation's {size[0]}x{size[1]} px receptive field (light blue: outside the image). Look for one "
                    "pattern repeated across the 9 different images of a map; lower layers pick edges and blobs, higher layers "
                    "larger, class-specific parts, with more variation in the patches than in the projections."
                    + (f" {silent} map(s) never fired on these images (silent)." if silent else "")
                ),
            )
        )
        numbers["layers"][layer] = {"field": list(size), "top1_median": float(np.median(values[:, 0])), "silent_maps": silent}
        if context.atlas is not None:
            body.append(atlas_links(context.atlas, layer, context.chosen[layer], numbers["layers"][layer]))
        advance(total + (number + 1) * total // len(layers), 2 * total)
    return html.Section("visualize", "Top-9 activations", "Fig. 2", body, numbers, f"{len(layers)} layers over {top.images_seen} images")


def atlas_links(atlas, layer, channels, numbers):
    """The maps of one Fig. 2 figure, each linked to its unit's page in the atlas (``--atlas``) where
    the atlas has it; ``numbers`` gets the linked maps' relative addresses."""
    home, data = atlas
    units = data["layers"].get(layer, {}).get("units", {})
    links = {int(c): f"{home}/{layer}/{int(c)}.html" for c in channels if str(int(c)) in units}
    numbers["atlas"] = {str(c): href for c, href in links.items()}
    return html.links(f"In the atlas, {layer} maps:", [(str(int(c)), links.get(int(c))) for c in channels])


def evolution(context, advance):
    from zfkeras.analysis.evolution import follow_maps, stable_epoch

    where = checkpoint_home(context.path)
    try:
        checkpoints = loading.find_checkpoints(where)
    except click.BadParameter:
        return html.Section(
            "evolution",
            "Feature evolution during training",
            "Fig. 4",
            [html.note(f"No epoch-XXX.keras checkpoints in {where} or its checkpoints/ folder.")],
            {"checkpoints": []},
            "no checkpoints",
        )
    if not hasattr(context, "chosen"):
        context.chosen = context.maps(loading.map_counts(context.probe, list(context.probe.layer_names)), context.seed)
    maps = {layer: channels[:4] for layer, channels in context.chosen.items()}
    loaded = ((epoch, loading.load_checkpoint(file)) for epoch, file in checkpoints)
    try:
        epochs, tops, tiles = follow_maps(
            context.keras, loaded, context.batches, maps, 64, on_checkpoint=lambda i: advance(i + 1, len(checkpoints)), rule=context.rule
        )
    except ValueError as error:
        raise click.UsageError(f"{context.path}: {error}") from None
    top = tops[-1]
    images = {layer: [np.where(t.entries(layer)["value"][:, 0] > 0, t.entries(layer)["image"][:, 0], -1) for t in tops] for layer in maps}
    numbers = {"checkpoints": epochs, "images": top.images_seen, "maps": maps, "layers": {}}
    for layer in maps:
        history = np.stack(images[layer], axis=1)  # [maps, epochs]; -1: silent at that epoch
        per_map = [stable_epoch(epochs, row.tolist()) for row in history]
        active = [s for s, row in zip(per_map, history) if row[-1] >= 0]
        numbers["layers"][layer] = {
            "stable_epoch": max(active or per_map),
            "per_map": dict(zip(map(str, maps[layer]), per_map)),
            "top1_images": dict(zip(map(str, maps[layer]), history.tolist())),
        }
    blocks = [(layer, tiles[layer]) for layer in maps]
    name = context.save(
        figures.combined_figure(blocks, maps, epochs, 99.0, {"images": top.images_seen, "layers": numbers["layers"]}), "fig4-evolution.png"
    )
    stable = ", ".join(f"{v['stable_epoch']} ({layer})" for layer, v in numbers["layers"].items())  # "30 (conv1), 12 (conv5)"
    body = [
        html.figure(
            name,
            "Fig. 4, feature evolution",
            (
                f"For {sum(map(len, maps.values()))} maps, the strongest activation over {top.images_seen} images at each kept "
                f"epoch (columns: epochs {', '.join(map(str, epochs))}), projected to pixels and contrast-enhanced. Look for "
                "the lower layers settling within a few epochs and the upper ones changing longer (the paper: the upper "
                f"layers develop only after 40-50 epochs). The top-1 image stops changing from epoch: {stable}."
            ),
        )
    ]
    return html.Section(
        "evolution",
        "Feature evolution during training",
        "Fig. 4",
        body,
        numbers,
        f"{len(epochs)} checkpoints; top-1 image stable from epoch {stable}",
    )


def filters(context, advance):
    from zfkeras.analysis.first_layer import first_layer_report
    from zfkeras.io.display import filter_grid

    if len(context.probe.layer_names) < 2:
        return html.Section("filters", "First-layer filters", "Fig. 6", [html.note("Needs two conv layers.")], {}, "")
    second = context.probe.layer_names[1]
    chosen = options.MapSelection().convert("random:36", None, None)(loading.map_counts(context.probe, [second]), context.seed)[second]
    done, total = 0, context.batches.count or 0

    def on_batch(size):
        nonlocal done
        done += size
        advance(done, total)

    try:
        result = first_layer_report(context.probe, context.keras, context.batches, chosen, 0.01, 64, on_batch=on_batch, rule=context.rule)
    except ValueError as error:
        return html.Section("filters", "First-layer filters", "Fig. 6", [html.note(str(error))], {}, "")
    numbers = result.to_dict()
    label = os.path.basename(os.path.normpath(context.path))
    pictures = {"filters": filter_grid(result.kernel), "projections": result.crops}
    name = context.save(figures.filters_figure([label], [numbers], [pictures]), "fig6-filters.png")
    first, second_numbers = numbers["first_layer"], numbers["second_layer"]
    bands = first["band_shares"]
    aliasing = second_numbers["aliasing_share"]
    facts = [
        ("filters", f"{first['filters']}, {first['kernel'][0]}x{first['kernel'][1]} stride {first['stride']}"),
        (
            "dead filters",
            f"{len(first['dead_filters'])} ({first['dead_fraction']:.1%}); mean activation at most "
            f"{first['dead_threshold']:.0%} of the median filter's",
        ),
        ("energy low / mid / high", f"{bands['low']:.2f} / {bands['mid']:.2f} / {bands['high']:.2f}"),
        (f"aliasing of {second} projections", "n/a (no map fired)" if aliasing is None else f"{aliasing:.3f}"),
    ]
    body = [
        html.facts(facts, "Sec. 4.1 numbers (definitions: zfkeras/analysis/first_layer.py)."),
        html.figure(
            name,
            "Fig. 6, first-layer filters",
            (
                " ".join(figures.caption(numbers)).replace("\n", "; ") + ". Top: each first-layer filter, scaled to its own "
                f"range; bottom: the top-1 projections ({context.rule} rule) of {len(chosen)} {second} maps. Look for dead (flat) "
                "filters and filters that are only high-frequency noise, and for a grid pattern in the projections "
                "(aliasing from a large first-layer stride): the paper's Fig. 6 problems that smaller 7x7/2 filters fix."
            ),
        ),
    ]
    return html.Section(
        "filters", "First-layer filters", "Fig. 6, Sec. 4.1", body, numbers, f"{len(first['dead_filters'])} dead of {first['filters']}"
    )


def occlusion(context, advance):
    from zfkeras.analysis.occlusion import default_stride, num_positions, occlusion_map

    examples = context.examples()
    per_image = num_positions(context.probe.input_shape, default_stride(context.probe.input_shape))
    body, numbers, done = [], {}, 0
    for number, (name, image, label) in enumerate(examples):

        def progress(count, number=number):
            nonlocal done
            done += count
            advance(done, per_image * len(examples))

        result = occlusion_map(context.probe, image, label=label, batch_size=64, progress=progress, rule=context.rule)
        figure = context.save(figures.occlusion_figure(result, context.class_names, name), f"fig7-{name}.png")
        summary = records.summary_json(result, context.class_names, name)
        numbers[name] = summary
        body.append(
            html.figure(
                figure,
                f"Fig. 7, {name}",
                (
                    f"A grey {result.patch}x{result.patch} px square slides over the image (true class "
                    f"{context.class_names[label]}). (b) total activity of {result.layer} map {result.feature_map}, the "
                    f"strongest in the unoccluded image, and (c) its projection; (d) the probability of the true class, "
                    f"{summary['clean_prob']:.3f} unoccluded, lowest {summary['min_prob']:.3f}; (e) the most probable class. "
                    "Look for (d) dropping where the square hides the part that identifies the object, not the background, "
                    "and (b) dropping where it hides the pattern (c) shows."
                ),
            )
        )
    return html.Section("occlusion", "Occlusion sensitivity", "Fig. 7", body, numbers, f"{len(examples)} images")


def invariance(context, advance):
    from zfkeras.analysis.invariance import IDENTITY, default_amounts, default_layers, invariance_curves, resolve_fill

    examples = context.examples()
    named = [(name, image) for name, image, _ in examples]
    stack = np.stack([image for _, image in named])
    labels = np.asarray([label for _, _, label in examples])
    layers = default_layers(context.probe)
    amounts = default_amounts(context.probe.input_shape)
    curves = {}
    for number, kind in enumerate(amounts):
        curves.update(
            invariance_curves(context.probe, stack, labels=labels, amounts={kind: amounts[kind]}, layers=layers, fill="background", batch_size=64)
        )
        advance(number + 1, len(amounts))
    names = [name for name, _ in named]
    curves_name = context.save(figures.curves_figure(curves, names, layers), "fig5-curves.png")
    shown = context.save(figures.examples_figure(named, resolve_fill(context.probe, "background"), amounts), "fig5-transforms.png")
    numbers = records.curves_json(curves, names, context.class_names, layers, "background")
    rows = []
    for kind, c in curves.items():
        moved = ~np.isclose(c.amounts, IDENTITY[kind]) & ~((kind == "rotation") & np.isclose(c.amounts % 360, 0))
        rows.append([kind] + [f"{np.nanmean(c.distances[layer][:, moved]):.3f}" for layer in layers] + [f"{c.true_class_prob[:, moved].mean():.3f}"])
    body = [
        html.figure(
            shown,
            "Fig. 5, the transforms",
            f"Each transform applied to {names[0]}; uncovered pixels take the image's background value (median of its border).",
        ),
        html.table(
            ["transform"] + [f"mean distance {layer}" for layer in layers] + ["mean p(true class)"],
            rows,
            "Means over the transformed (not identity) amounts and the images.",
        ),
        html.figure(
            curves_name,
            "Fig. 5, invariance curves",
            (
                f"Rows: vertical translation, scale, rotation of {len(names)} images. Columns: the distance of the "
                f"{' and '.join(layers)} feature vectors from the untransformed image's (relative to its norm), and the "
                f"probability of the true class. Look for the first layer's distance rising steeply with any change "
                f"and {layers[-1]}'s rising less and more linearly (the paper: higher layers are more invariant to "
                "translation and scale), and p(true class) staying high except under rotation, which the model "
                "has not learned to ignore."
            ),
        ),
    ]
    return html.Section("invariance", "Feature invariance", "Fig. 5", body, numbers, f"{len(names)} images, layers {', '.join(layers)}")


def correspondence(context, advance):
    from zfkeras.analysis import correspondence as analysis
    from zfkeras.analysis.occlusion import fill_values

    if context.parts is None:
        return html.Section(
            "correspondence",
            "Part correspondence",
            "Table 1",
            [html.note("Not computed: give --parts FILE (e.g. docs/examples/shirt-parts.json) with the same parts boxed in several images.")],
            {},
            "",
        )
    files, given_files, parts, objects = context.parts
    named = loading.load_images(files, context.probe.input_shape)
    images = np.stack([image for _, image in named])
    try:
        result = analysis.correspondence(context.probe, images, parts, objects=objects, draws=10, seed=context.seed, batch_size=64)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--parts") from None
    name = context.save(figures.masks_figure(named, parts, result, fill_values(context.probe, None)), "fig8-masks.png")
    numbers = records.result_json(result, [n for n, _ in named], given_files, parts, objects, 10, context.seed)
    rows = [[part] + [f"{s[layer].mean:.3f} ± {s[layer].std:.3f}" for layer in result.layers] for part, s in result.scores.items()]
    pairs = len(images) * (len(images) - 1) // 2
    body = [
        html.table(
            ["part"] + [f"{layer}: sign change" for layer in result.layers],
            rows,
            (
                f"Table 1: the fraction of features whose change under masking differs in sign between two images, "
                f"mean ± std over the {pairs} image pairs (lower = the part is encoded more consistently); random: "
                "masks of the same size at random places, 10 draws. Look for parts below the random row, more so at "
                "the conv layer than at fc7, as in the paper."
            ),
        ),
        html.figure(
            name,
            "Fig. 8, the masks",
            f"{'Each image' if len(named) <= figures.MASKED_ROWS else f'The first {figures.MASKED_ROWS} of the {len(named)} images'}, "
            "each part masked (red outline), then random masks.",
        ),
    ]
    return html.Section("correspondence", "Part correspondence", "Table 1, Fig. 8", body, numbers, f"{len(parts)} parts")
