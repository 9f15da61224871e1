"""``zf project``: project the strongest feature maps of images back to pixels (paper Sec. 2.1)."""

import os

import click
import numpy as np

from pipelines import _common


def strongest_maps(activations, count):
    """Indices of the ``count`` maps with the largest single activation, ``[N, count]``."""
    peaks = activations.max(axis=(1, 2))
    return np.argsort(-peaks, axis=1, kind="stable")[:, :count]


def project_images(probe, images, layers, count, position="max"):
    """``{layer: (maps [N, count], projections [N, count, H, W, C])}`` for the strongest maps.

    ``position``: ``"max"`` projects each map's strongest activation alone; ``"map"`` the whole map.
    """
    features = probe.features(images, layers)
    results = {}
    for layer in layers:
        maps = strongest_maps(features[layer], count)
        repeated = np.repeat(images, count, axis=0)
        projections = probe.project(repeated, layer, maps.reshape(-1), position)
        results[layer] = (maps, projections.reshape(len(images), count, *images.shape[1:]))
    return results


def plot_projections(images, names, results, title):
    """One block per image: a row per layer with the image, then each map's projection."""
    from zfkeras.display import pixels_to_display, to_display

    plt = _common.pyplot()
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
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_path", help="SavedModel directory or .keras file (default: a new --arch model).")
@click.option("--arch", type=click.Choice(["zfnet", "alexnet", "zfnet_small"]), default="zfnet", show_default=True,
              help="Architecture to build with paper-init random weights when no --model is given.")
@click.option("--layers", default="conv1,conv2,conv3,conv4,conv5", show_default=True, help="Comma-separated conv layers.")
@click.option("--maps", "count", default=6, show_default=True, type=click.IntRange(1, 64), help="Strongest maps per layer.")
@click.option("--position", type=click.Choice(["max", "map"]), default="max", show_default=True,
              help="Project each map's strongest activation alone (paper) or the whole map.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output PNG (an .npz of the arrays goes beside it).")
@_common.seed_option
@_common.weights_option
def project(images, model_path, arch, layers, count, position, out, seed):
    """Project the strongest feature maps of IMAGES to pixels with the deconvnet.

    IMAGES are image files (any size, grey or colour: resized and centre-cropped to the model input)
    or built-in photos: chelsea, astronaut, coffee, rocket (scikit-image).
    """
    arrays_path = os.path.splitext(out)[0] + ".npz"
    _common.check_output(out, directory=False)
    _common.check_output(arrays_path, directory=False)
    _common.seed_everything(seed)
    if model_path:
        probe = _common.load_probe(model_path)
        title = os.path.basename(os.path.normpath(model_path))
    else:
        import zfkeras.models
        from zfkeras.probe import KerasProbe

        probe = KerasProbe(getattr(zfkeras.models, arch)(seed=seed))
        title = f"{arch} with random paper-init weights (seed {seed}): structure comes from the image, not training"
    from pipelines.visualize import map_counts

    layers = probe.check_layers(layers.split(","), probe.layer_names) if layers else probe.layer_names
    fewest = min(map_counts(probe, layers).items(), key=lambda item: item[1])
    if count > fewest[1]:
        raise click.BadParameter(f"{count}: {fewest[0]} has only {fewest[1]} maps; use 1-{fewest[1]}", param_hint="--maps")
    pixels = np.stack([_common.fit_image(_common.read_photo(name), probe.input_shape) for name in images])
    names = [os.path.basename(name) for name in images]
    click.echo(f"projecting {len(layers)} layers x {count} maps for {len(images)} image(s)", err=True)
    results = project_images(probe, pixels, layers, count, position)
    arrays = {f"{layer}_maps": maps for layer, (maps, _) in results.items()}
    arrays.update({f"{layer}_projections": p for layer, (_, p) in results.items()})
    with _common.atomic_path(out, arrays_path) as (figure_temp, arrays_temp):  # both replaced together at the end
        _common.save_figure(plot_projections(pixels, names, results, title), figure_temp)
        with open(arrays_temp, "wb") as handle:
            np.savez_compressed(handle, images=pixels, **arrays)
    click.echo(f"wrote {out}")
