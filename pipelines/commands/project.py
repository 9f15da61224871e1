"""``zf project``: project the strongest feature maps of images back to pixels (paper Sec. 2.1)."""

import os

import click
import numpy as np

from pipelines import figures, loading, options, output, runtime


def project_images(probe, images, layers, count, position="max", rule="deconvnet"):
    """``{layer: (maps [N, count], projections [N, count, H, W, C])}`` for the strongest maps.

    ``position``: ``"max"`` projects each map's strongest activation alone; ``"map"`` the whole map.
    ``rule``: the backward rule (:meth:`zfkeras.nn.probe.Probe.project`).
    """
    from zfkeras.analysis.top_activations import strongest_maps

    features = probe.features(images, layers)
    results = {}
    for layer in layers:
        maps = strongest_maps(features[layer], count).channels
        repeated = np.repeat(images, count, axis=0)
        projections = probe.project(repeated, layer, maps.reshape(-1), position, rule=rule)
        results[layer] = (maps, projections.reshape(len(images), count, *images.shape[1:]))
    return results


def plot_projections(images, names, results, title):
    """One block per image: a row per layer with the image, then each map's projection."""
    from zfkeras.io.display import pixels_to_display, to_display

    plt = figures.pyplot()
    layers = list(results)
    count = results[layers[0]][0].shape[1]
    rows = len(images) * len(layers)
    figure, axes = plt.subplots(rows, count + 1, figsize=(1.6 * (count + 1), 1.6 * rows), squeeze=False)
    for i, name in enumerate(names):
        for j, layer in enumerate(layers):
            row = axes[i * len(layers) + j]
            row[0].imshow(pixels_to_display(images[i]), cmap="gray")
            row[0].set_ylabel(f"{layer}", fontsize=8)
            row[0].set_title(name if j == 0 else "", fontsize=8)
            maps, projections = results[layer]
            for k in range(count):
                row[k + 1].imshow(to_display(projections[i, k]), cmap="gray")
                row[k + 1].set_title(f"map {maps[i, k]}", fontsize=7)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title, fontsize=9)
    return figure


@click.command()
@options.model_argument
@options.images_argument
@options.layers_option
@click.option(
    "--top",
    "count",
    default=6,
    show_default=True,
    type=click.IntRange(1, 64),
    metavar="N",
    help="How many maps per layer: the N strongest in each image.",
)
@click.option(
    "--position",
    type=click.Choice(["max", "map"]),
    default="max",
    show_default=True,
    help="Project each map's strongest activation alone (paper) or the whole map.",
)
@options.rule_option
@options.out_option(results="projection.npz", help="Output directory: projection.png and projection.npz (the arrays).")
@options.seed_option
def project(model, images, layers, count, position, rule, out, seed):
    """Project the strongest feature maps of IMAGES to pixels with MODEL's deconvnet (or --rule).

    MODEL is a model, or random:zfnet, random:alexnet or random:zfnet_small for that architecture
    with the paper's random initial weights (seeded by --seed). IMAGES are image files (any size,
    grey or colour: resized and centre-cropped to the model input) or built-in photos: chelsea,
    astronaut, coffee, rocket (scikit-image). Writes OUT/projection.png and OUT/projection.npz
    (images, and per layer the maps shown and their projections).
    """
    from zfkeras.io.atomic import atomic_output

    runtime.seed_everything(seed)
    probe, title = loading.open_model_or_random(model, seed)
    loading.check_rule(probe, rule)
    layers = loading.choose_layers(layers, probe)
    fewest = min(loading.map_counts(probe, layers).items(), key=lambda item: item[1])
    if count > fewest[1]:
        raise click.BadParameter(f"{count}: {fewest[0]} has only {fewest[1]} maps; use 1-{fewest[1]}", param_hint="--top")
    from zfkeras.data.transforms import fit_image

    pixels = np.stack([fit_image(loading.read_photo(name), probe.input_shape).pixels for name in images])
    names = [os.path.basename(name) for name in images]
    click.echo(f"projecting {len(layers)} layers x {count} maps for {len(images)} image(s)", err=True)
    results = project_images(probe, pixels, layers, count, position, rule)
    if rule != "deconvnet":
        title = f"{title} ({rule} rule)"
    arrays = {f"{layer}_maps": maps for layer, (maps, _) in results.items()}
    arrays.update({f"{layer}_projections": p for layer, (_, p) in results.items()})
    with atomic_output(out, directory=True) as target:  # the figure and the arrays appear together
        output.save_figure(plot_projections(pixels, names, results, title), os.path.join(target, "projection.png"))
        np.savez_compressed(os.path.join(target, "projection.npz"), images=pixels, rule=np.array(rule), **arrays)
    click.echo(f"wrote {out}/projection.png, {out}/projection.npz")
