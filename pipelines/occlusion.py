"""``zf occlusion``: occlusion sensitivity maps, paper Fig. 7 (see :mod:`zfkeras.occlusion`)."""

import os

import click
import numpy as np

from pipelines import _common


def show_image(axis, image, title):
    """Raw pixels 0-255 (grey or colour) on ``axis``."""
    from zfkeras.display import pixels_to_display

    axis.imshow(pixels_to_display(image), cmap="gray", vmin=0, vmax=1)
    axis.set_title(title, fontsize=9)
    axis.set_xticks([]), axis.set_yticks([])


def _cell_edges(count, stride, size):
    """Edges of the grid cells along one axis: each cell holds the pixels nearest its square's
    centre (i * stride), so the map lines up with the image; the outer edges are the image's."""
    return np.concatenate([[-0.5], (np.arange(1, count) - 0.5) * stride, [size - 0.5]])


def occlusion_figure(result, class_names, name):
    """Image and panels (b)-(e) of Fig. 7 for one :class:`~zfkeras.occlusion.OcclusionResult`."""
    plt = _common.pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    from zfkeras.display import to_display

    height, width = result.image.shape[:2]
    figure, axes = plt.subplots(1, 5, figsize=(17, 3.6))
    label_name = class_names[result.label]
    title = f"(a) {name}; square {result.patch}px, stride {result.stride}px\n(grey: where p({label_name}) is lowest)"
    show_image(axes[0], result.image, title)
    worst = np.unravel_index(np.argmin(result.true_class_prob), result.true_class_prob.shape)
    y, x = result.positions[worst]
    axes[0].add_patch(Rectangle((x - 0.5, y - 0.5), result.patch, result.patch, facecolor="0.5", edgecolor="red", alpha=0.85))
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
    axes[2].set_title(f"(c) projection of {result.layer} map {result.feature_map}\n(strongest activation, unoccluded)", fontsize=9)
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


def save_result(result, class_names, name, out):
    """Write ``<name>.npz`` and ``<name>.png`` into the (temporary) output directory ``out``."""
    np.savez(
        os.path.join(out, name + ".npz"),
        positions=result.positions,
        feature_activity=result.feature_activity,
        true_class_prob=result.true_class_prob,
        top_label=result.top_label,
        projection=result.projection,
        image=result.image,
        layer=result.layer,
        feature_map=result.feature_map,
        label=result.label,
        patch=result.patch,
        stride=result.stride,
        clean_probs=result.clean_probs,
        class_names=np.array(class_names),
    )
    _common.save_figure(occlusion_figure(result, class_names, name), os.path.join(out, name + ".png"))


def summary_json(result, class_names, path):
    """The numbers the printed line gives for one image."""
    worst = np.unravel_index(np.argmin(result.true_class_prob), result.true_class_prob.shape)
    return {
        "image": path,
        "label": class_names[result.label],
        "layer": result.layer,
        "feature_map": result.feature_map,
        "patch": result.patch,
        "stride": result.stride,
        "clean_prob": float(result.clean_probs[result.label]),
        "min_prob": float(result.true_class_prob[worst]),
        "min_prob_position": result.positions[worst].tolist(),
        "clean_activity": result.clean_activity,
        "min_activity": float(result.feature_activity.min()),
    }


@click.command()
@_common.model_argument
@_common.images_argument
@_common.label_option
@click.option("--patch", type=click.IntRange(min=1), help="Side of the grey square in model-input pixels. Default: input height / 4.")
@click.option("--stride", type=click.IntRange(min=1), help="Grid step in pixels (square centres at 0, S, 2S, ...). Default: input height / 28.")
@click.option(
    "--fill", type=_common.PixelValue(), help="Raw pixel value (0-255) of the square. Default: the training mean image (0 after mean subtraction)."
)
@click.option("--layer", help="Conv layer for panels (b) and (c). Default: the top conv layer.")
@click.option("--map", "feature_map", type=click.IntRange(min=0), help="Feature map of --layer. Default: the strongest in the unoccluded image.")
@_common.batch_size_option(help="Occluded copies per forward pass (bounds memory).")
@_common.out_option(results="occlusion.json", written=(".npz", ".png"))
def occlusion(model, images, label, patch, stride, fill, layer, feature_map, batch_size, out):
    """Occlusion sensitivity of MODEL on each IMAGE (any image file, or a built-in photo name).

    Slides a square over every grid position (it may run past the border and is clipped there)
    and records the total activity of one top-layer feature map, the probability of the true class
    and the most probable class. Writes OUT/<image name>.npz and OUT/<image name>.png (Fig. 7),
    then OUT/occlusion.json (a summary per image).
    """
    from pipelines.visualize import map_counts
    from zfkeras.atomic import atomic_output
    from zfkeras.occlusion import OcclusionEvaluator, default_stride, num_positions, occlusion_map

    probe = _common.load_probe(model)
    class_names = list(probe.class_names)
    if layer is not None:
        _common.choose_layers(layer, probe.layer_names, "--layer")
    labels = _common.parse_labels(label, class_names, len(images))
    named = _common.load_images(images, probe.input_shape)
    size = f"{probe.input_shape[0]}x{probe.input_shape[1]}"
    if patch is not None and patch > max(probe.input_shape[:2]):
        raise click.BadParameter(f"{patch} is larger than the model input {size}; use 1-{max(probe.input_shape[:2])}", param_hint="--patch")
    if stride is not None and stride >= max(probe.input_shape[:2]):
        raise click.BadParameter(
            f"{stride} leaves one square position on the model input {size}; use 1-{max(probe.input_shape[:2]) - 1}", param_hint="--stride"
        )
    if feature_map is not None:
        chosen_layer = layer or probe.layer_names[-1]
        depth = map_counts(probe, [chosen_layer])[chosen_layer]
        if feature_map >= depth:
            raise click.BadParameter(f"{feature_map}: {chosen_layer} has maps 0-{depth - 1}", param_hint="--map")
    evaluators = []
    for _name, image in named:
        try:
            evaluators.append(OcclusionEvaluator(probe, image, layer=layer, patch=patch, fill=fill, feature_map=feature_map))
        except ValueError as error:
            raise click.UsageError(str(error)) from None
    step = stride or default_stride(probe.input_shape)
    total = num_positions(probe.input_shape, step) * len(named)
    results = []
    with atomic_output(out, directory=True) as target, _common.progressbar(length=total, label="occluding") as bar:
        for (name, image), evaluator, true_label in zip(named, evaluators, labels):
            result = occlusion_map(probe, image, label=true_label, stride=stride, batch_size=batch_size, progress=bar.update, evaluator=evaluator)
            save_result(result, class_names, name, target)
            results.append((name, result))
        _common.write_json(
            os.path.join(target, "occlusion.json"),
            {"model": model, "images": {name: summary_json(result, class_names, path) for (name, result), path in zip(results, images)}},
        )
    for name, result in results:
        worst = np.unravel_index(np.argmin(result.true_class_prob), result.true_class_prob.shape)
        click.echo(
            f"{name}: p({class_names[result.label]}) unoccluded {result.clean_probs[result.label]:.3f}, "
            f"min {result.true_class_prob[worst]:.3f} with the square at {tuple(result.positions[worst].tolist())}; "
            f"{result.layer} map {result.feature_map} activity {result.clean_activity:.4g} -> "
            f"min {result.feature_activity.min():.4g}; -> {os.path.join(out, name)}.npz/.png"
        )
