"""The figures of the paper's analyses, drawn the same way by each command and by ``zf report``.

Each drawer takes arrays or a library result and returns a matplotlib figure (Agg backend); the
caller saves it (:func:`pipelines.output.save_figure`).
"""

import numpy as np


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (no screen here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def topk_figure(layer, channels, crops, values, images_scanned, rule="deconvnet"):
    """Fig. 2 for one layer: per map, a grid of its top-k projections beside the matching patches.

    ``values`` ``[maps, k]``: the kept activations (a map whose best is 0 is marked silent);
    ``rule``: the backward rule of the projections, named in the title."""
    from zfkeras.io.display import display_tiles, mosaic, pixels_to_display

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
    title = f"{layer}: top-{k} activations of {maps} maps over {images_scanned} images (left: {rule} projections, right: image patches)"
    return show_grid(grid, title, labels)


def show_image(axis, image, title):
    """Raw pixels 0-255 (grey or colour) on ``axis``."""
    from zfkeras.io.display import pixels_to_display

    axis.imshow(pixels_to_display(image), cmap="gray", vmin=0, vmax=1)
    axis.set_title(title, fontsize=9)
    axis.set_xticks([]), axis.set_yticks([])


def _cell_edges(count, stride, size):
    """Edges of the grid cells along one axis: each cell holds the pixels nearest its square's
    centre (i * stride), so the map lines up with the image; the outer edges are the image's."""
    return np.concatenate([[-0.5], (np.arange(1, count) - 0.5) * stride, [size - 0.5]])


def occlusion_figure(result, class_names, name, box=None):
    """Image and panels (b)-(e) of Fig. 7 for one :class:`~zfkeras.analysis.occlusion.OcclusionResult`;
    ``box`` ``(x0, y0, x1, y1)``: the object's box, outlined on the image and panel (d)."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    from zfkeras.io.display import to_display

    height, width = result.image.shape[:2]
    figure, axes = plt.subplots(1, 5, figsize=(17, 3.6))
    label_name = class_names[result.label]
    title = f"(a) {name}; square {result.patch}px, stride {result.stride}px\n(grey: where p({label_name}) is lowest)"
    show_image(axes[0], result.image, title)
    worst = np.unravel_index(np.argmin(result.true_class_prob), result.true_class_prob.shape)
    y, x = result.positions[worst]
    axes[0].add_patch(Rectangle((x - 0.5, y - 0.5), result.patch, result.patch, facecolor="0.5", edgecolor="red", alpha=0.85))
    if box is not None:
        for axis in (axes[0], axes[3]):
            axis.add_patch(Rectangle((box[0] - 0.5, box[1] - 0.5), box[2] - box[0], box[3] - box[1], fill=False, edgecolor="white", linewidth=1.5))
    rows, cols = result.top_label.shape
    ys, xs = _cell_edges(rows, result.stride, height), _cell_edges(cols, result.stride, width)
    panels = [
        (
            axes[1],
            result.feature_activity,
            f"(b) {result.layer} map {result.feature_map}: total activity\n(unoccluded {result.clean_activity:.3g})",
            None,
        ),
        (axes[3], result.true_class_prob, f"(d) p({label_name})\n(unoccluded {result.clean_probs[result.label]:.3f})", (0, 1)),
    ]
    for axis, values, title, limits in panels:
        vmin, vmax = limits or (None, None)
        shown = axis.pcolormesh(xs, ys, values, cmap="viridis", vmin=vmin, vmax=vmax)
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
        axis.set_title(title, fontsize=9)
    axes[2].imshow(to_display(result.projection), cmap="gray", vmin=0, vmax=1)
    rule = "" if result.rule == "deconvnet" else f", {result.rule} rule"
    axes[2].set_title(f"(c) projection of {result.layer} map {result.feature_map}\n(strongest activation, unoccluded{rule})", fontsize=9)
    # one colour per class index, the same in every figure
    palette = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    colours = ListedColormap([palette(c % palette.N) for c in range(len(class_names))])
    axes[4].pcolormesh(xs, ys, result.top_label, cmap=colours, vmin=-0.5, vmax=len(class_names) - 0.5)
    axes[4].set_title("(e) most probable label", fontsize=9)
    present = sorted(set(result.top_label.ravel().tolist()))
    axes[4].legend(
        handles=[Patch(color=colours(c), label=class_names[c]) for c in present],
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=8,
        frameon=False,
    )
    for axis in axes[1:]:
        axis.set_aspect("equal")
        axis.set_xlim(-0.5, width - 0.5), axis.set_ylim(height - 0.5, -0.5)
        axis.set_xticks([]), axis.set_yticks([])
    return figure


def curves_figure(curves, names, layers):
    """The 3x3 grid of Fig. 5: rows transforms; columns layer-1 distance, layer-7 distance, p(true)."""
    from zfkeras.analysis.invariance import UNITS

    plt = pyplot()
    figure, axes = plt.subplots(len(curves), len(layers) + 1, figsize=(4.2 * (len(layers) + 1), 3.2 * len(curves)), squeeze=False)
    for row, (kind, c) in enumerate(curves.items()):
        columns = [(c.distances[layer], f"{layer}: relative distance") for layer in layers]
        columns.append((c.true_class_prob, "p(true class)"))
        for col, (values, title) in enumerate(columns):
            axis = axes[row, col]
            for i, name in enumerate(names):
                axis.plot(c.amounts, values[i], marker=".", label=name)
            axis.set_title(f"{kind}: {title}", fontsize=9)
            axis.set_xlabel(UNITS[kind], fontsize=8)
            axis.tick_params(labelsize=8)
            axis.grid(alpha=0.3)
            if col == len(layers):
                axis.set_ylim(-0.02, 1.02)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    figure.suptitle("relative distance = ||x(transformed) - x(original)|| / ||x(original)||, per layer", fontsize=9)
    figure.tight_layout()
    return figure


def examples_figure(named, fill, amounts, shown=7):
    """Each transform applied to the first image at ``shown`` of its amounts (Fig. 5, column 1)."""
    from zfkeras.analysis.invariance import transform_image

    plt = pyplot()
    name, image = named[0]
    figure, axes = plt.subplots(len(amounts), shown, figsize=(1.6 * shown, 1.8 * len(amounts)), squeeze=False)
    for row, (kind, values) in enumerate(amounts.items()):
        picks = np.asarray(values)[np.unique(np.linspace(0, len(values) - 1, shown).round().astype(int))]
        for col in range(shown):
            axis = axes[row, col]
            axis.axis("off")
            if col < len(picks):
                show_image(axis, transform_image(image, kind, picks[col], fill), f"{kind} {picks[col]:g}")
    figure.suptitle(name, fontsize=9)
    figure.tight_layout()
    return figure


def caption(report):
    first, second = report["first_layer"], report["second_layer"]
    bands = first["band_shares"]
    dead = len(first["dead_filters"])
    aliasing = "n/a" if second["aliasing_share"] is None else f"{second['aliasing_share']:.3f}"
    return (
        f"{first['name']}: {first['filters']} filters {first['kernel'][0]}x{first['kernel'][1]}/{first['stride']}\n"
        f"dead {dead}/{first['filters']} = {first['dead_fraction']:.1%}\n"
        f"energy low/mid/high {bands['low']:.2f}/{bands['mid']:.2f}/{bands['high']:.2f}",
        f"{second['name']}: top-1 projections of {len(second['maps'])} maps\n"
        f"aliasing (energy above {second['nyquist_cycles_per_pixel']:.3g} cycles/px) {aliasing}",
    )


def filters_figure(labels, reports, pictures):
    """Fig. 6: per model a column with its first-layer filters (top) and layer-2 projections."""
    from zfkeras.io.display import display_tiles, mosaic

    plt = pyplot()
    figure, axes = plt.subplots(2, len(reports), figsize=(6 * len(reports), 12), squeeze=False)
    for column, (label, report, picture) in enumerate(zip(labels, reports, pictures)):
        top, bottom = caption(report)
        axes[0, column].imshow(upscale(picture["filters"][None], 400)[0], interpolation="nearest")
        axes[0, column].set_title(f"{label}\n{top}", fontsize=9, loc="left")
        tiles = upscale(display_tiles(picture["projections"]), 48)
        axes[1, column].imshow(mosaic(tiles, int(np.ceil(np.sqrt(len(tiles)))), pad=2), interpolation="nearest")
        axes[1, column].set_title(bottom, fontsize=9, loc="left")
        for row in range(2):
            axes[row, column].set_axis_off()
    figure.tight_layout()
    return figure


def silent_note(per_map_entry):
    silent = per_map_entry["silent_epochs"]
    return f" (silent at epoch {', '.join(map(str, silent))})" if silent else ""


def evolution_figure(layer, channels, epochs, tiles, stable, percentile, per_map):
    """Fig. 4 block of one layer: a row per map, a column per epoch, contrast-enhanced."""
    from zfkeras.io.display import display_tiles, mosaic

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


def combined_figure(blocks, chosen, epochs, percentile, report):
    """Fig. 4: one block per layer, side by side (rows: maps, columns: epochs), common tile size."""
    from zfkeras.io.display import display_tiles, mosaic

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


def correlation_figure(epochs, correlations, threshold=0.9):
    """Per layer, the median over its units (and the 25-75% band) of the correlation of each unit's
    responses at an epoch with its responses at the last epoch (Fig. 4 as a number)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for layer, values in correlations.items():
        with np.errstate(all="ignore"):
            low, median, high = np.nanpercentile(values, [25, 50, 75], axis=1)
        (line,) = axis.plot(epochs, median, marker=".", label=layer)
        axis.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
    axis.axhline(threshold, color="0.5", linestyle="--", linewidth=1)
    axis.set_xlabel("epoch")
    axis.set_ylabel("correlation with the last epoch's responses")
    axis.set_ylim(-0.1, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def resize_nearest(tile, size):
    """``tile [h, w, C]`` to ``[size, size, C]`` by nearest-neighbour sampling (NaN kept)."""
    rows = (np.arange(size) * tile.shape[0] // size).clip(0, tile.shape[0] - 1)
    cols = (np.arange(size) * tile.shape[1] // size).clip(0, tile.shape[1] - 1)
    return tile[rows][:, cols]


MASKED_ROWS = 12  # images drawn in Fig. 8 (the scores use them all): 81 faces made an 8 MB figure


def masks_figure(named, parts, result, fill, random_shown=2):
    """Fig. 8: each of the first :data:`MASKED_ROWS` images, then each part masked, then a few random
    masks of the first part's size."""
    from zfkeras.analysis.correspondence import mask_images

    named = named[:MASKED_ROWS]
    parts = {name: boxes[: len(named)] for name, boxes in parts.items()}
    plt = pyplot()
    columns = 1 + len(parts) + random_shown
    figure, axes = plt.subplots(len(named), columns, figsize=(1.7 * columns, 1.8 * len(named)), squeeze=False)
    images = np.stack([image for _, image in named])
    from matplotlib.patches import Rectangle

    shown = [("original", images, None)]
    shown += [(name, mask_images(images, boxes, fill), boxes) for name, boxes in parts.items()]
    draws = result.random_boxes.shape[0]
    for d in range(min(random_shown, draws)):
        boxes = result.random_boxes[d, 0][: len(named)]
        shown.append((f"random {d + 1}", mask_images(images, boxes, fill), boxes))
    for row, (name, _) in enumerate(named):
        for col in range(columns):
            axes[row, col].axis("off")
            if col < len(shown):
                title, stack, boxes = shown[col]
                show_image(axes[row, col], stack[row], title if row == 0 else "")
                if boxes is not None:  # outline the mask: the mean-image fill can look like cloth
                    y0, x0, y1, x1 = boxes[row]
                    axes[row, col].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=1))
        axes[row, 0].text(-2, images.shape[1] / 2, name, fontsize=7, rotation=90, va="center", ha="right")
    figure.tight_layout()
    return figure


RULE_COLOURS = {"deconvnet": "tab:blue", "guided": "tab:orange", "gradient": "tab:green", "occlusion": "tab:purple", "random": "grey"}


def sanity_curves_figure(table):
    """Adebayo et al.'s Fig. 2 for ``table`` (:meth:`zfkeras.analysis.sanity.SanityResult.to_dict`):
    similarity to the trained model's maps (rows: targets; columns: metrics) as layers are
    re-initialised from the top (cascading, solid) or one at a time (independent, dashed); the
    shuffled-label model's mean as a marker at the right."""
    plt = pyplot()
    targets, metrics, layers = table["targets"], table["metrics"], table["layers"]
    names = {"spearman": "Spearman rank corr. (|map|)", "ssim": "SSIM", "hog": "HOG correlation"}
    figure, axes = plt.subplots(len(targets), len(metrics), figsize=(4.2 * len(metrics), 3.3 * len(targets)), squeeze=False)
    steps = np.arange(len(layers) + 1)
    for row, target in enumerate(targets):
        for col, metric in enumerate(metrics):
            axis = axes[row, col]
            for rule in table["rules"]:
                colour = RULE_COLOURS.get(rule)
                for mode, style in (("cascading", "-"), ("independent", "--")):
                    mean = [1.0] + table[mode][rule][target][metric]["mean"]
                    axis.plot(steps, mean, style, color=colour, marker="o", markersize=3, label=f"{rule} ({mode})")
                if table.get("data") and target in table["data"][rule]:
                    axis.plot([steps[-1] + 1], table["data"][rule][target][metric]["mean"], "s", color=colour, markersize=6)
            ticks = ["trained"] + layers + (["shuffled\nlabels"] if table.get("data") else [])
            axis.set_xticks(range(len(ticks)))
            axis.set_xticklabels(ticks, rotation=60, fontsize=7)
            axis.set_ylim(-0.2, 1.05)
            axis.axhline(0, color="black", linewidth=0.5)
            axis.set_title(f"{target}: {names.get(metric, metric)}", fontsize=9)
            if row == 0 and col == 0:
                axis.legend(fontsize=6, loc="lower left")
    figure.suptitle(
        f"Similarity to the trained model's maps over {table['images']} images as layers are re-initialised "
        "(solid: from the top down, cumulative; dashed: that layer alone)",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def sanity_grid_figure(grid, image, layers, title):
    """The maps of one image as layers are re-initialised from the top down: ``grid``
    ``{row label: [1 + layers, H, W, C]}`` (trained first), shown as |map| summed over channels,
    each scaled to its 99th percentile (black: 0); ``image`` raw pixels first."""
    from zfkeras.analysis.sanity import grey, normalised
    from zfkeras.io.display import pixels_to_display

    plt = pyplot()
    rows, columns = len(grid), len(layers) + 2
    figure, axes = plt.subplots(rows, columns, figsize=(1.25 * columns, 1.35 * rows + 0.6), squeeze=False)
    for row, (label, maps) in enumerate(grid.items()):
        shown = normalised(grey(maps))
        axes[row, 0].imshow(pixels_to_display(image), cmap="gray")
        axes[row, 0].set_ylabel(label, fontsize=7)
        for step in range(len(maps)):
            axes[row, step + 1].imshow(shown[step], cmap="gray", vmin=0, vmax=1)
            if row == 0:
                axes[row, step + 1].set_title("trained" if step == 0 else f"-{layers[step - 1]}", fontsize=7)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title, fontsize=8)
    return figure


def faithfulness_figure(table):
    """Mean deletion and insertion curves (± std over images, shaded) of every method, per target,
    with the AUC in the legend (``table``: :meth:`zfkeras.analysis.faithfulness.FaithfulnessResult.to_dict`)."""
    plt = pyplot()
    targets = list(table["targets"])
    figure, axes = plt.subplots(len(targets), 2, figsize=(10, 3.6 * len(targets)), squeeze=False)
    fractions = np.asarray(table["fractions"])
    scores = {"class": "p(class)", "unit": "unit activation"}
    for row, target in enumerate(targets):
        for col, kind in enumerate(("deletion", "insertion")):
            axis = axes[row, col]
            for method, kinds in table["targets"][target].items():
                entry = kinds[kind]
                mean = np.asarray(entry["mean_curve"])
                colour = RULE_COLOURS.get(method)
                axis.plot(fractions, mean, color=colour, label=f"{method}: AUC {entry['auc_mean']:.3f} ± {entry['auc_std']:.3f}")
                spread = np.asarray(entry["std_curve"])
                axis.fill_between(fractions, mean - spread, mean + spread, color=colour, alpha=0.08)
            axis.set_xlabel(f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}, most relevant first", fontsize=8)
            axis.set_ylabel(scores.get(target, target), fontsize=8)
            axis.set_title(f"{target}: {kind} ({'lower' if kind == 'deletion' else 'higher'} AUC = more faithful)", fontsize=9)
            axis.legend(fontsize=7)
    figure.suptitle(f"Deletion and insertion curves (Petsiuk et al. 2018), mean over {table['images']} images", fontsize=9)
    figure.tight_layout()
    return figure
