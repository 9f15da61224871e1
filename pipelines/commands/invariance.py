"""``zf invariance``: feature distance and true-class probability under translation, scale and
rotation, paper Fig. 5 (see :mod:`zfkeras.invariance` for the transforms and the normalisation)."""

import os

import click
import numpy as np

from pipelines import figures, loading, options, output, records

NUMBERS = options.CommaList(options.finite_float, "a comma-separated list of finite numbers like -8,0,8")


class Fill(click.ParamType):
    """``background``, ``edge``, ``mean`` or a raw pixel value 0-255."""

    name = "background|edge|mean|VALUE"

    def convert(self, value, param, ctx):
        if value in ("background", "edge", "mean") or not isinstance(value, str):
            return value
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is None or not 0 <= number <= 255:
            self.fail(f"{value!r} is not 'background', 'edge', 'mean' or a pixel value 0-255", param, ctx)
        return number


@click.command()
@options.model_argument
@options.weights_seed_option
@options.images_argument
@options.label_option
@click.option(
    "--shifts", type=NUMBERS, metavar="LIST", help="Vertical shifts in pixels, + = down. Default: whole pixels up to H/4 each way (15 steps)."
)
@click.option("--scales", type=NUMBERS, metavar="LIST", help="Scale factors (> 0) about the centre. Default: 0.6,0.7,...,1.6.")
@click.option("--angles", type=NUMBERS, metavar="LIST", help="Rotations in degrees, counter-clockwise. Default: 0,15,...,360.")
@options.layers_option(help="Two or more comma-separated feature layers. Default: the first conv layer and fc7.")
@click.option(
    "--fill",
    default="background",
    show_default=True,
    type=Fill(),
    help="What a transform uncovers: 'background' (median of the image's border pixels), 'edge' (nearest border pixel), "
    "'mean' (training mean image, 0 after mean subtraction) or a raw value 0-255.",
)
@options.batch_size_option()
@options.out_option(results="invariance.json")
def invariance(model, images, label, shifts, scales, angles, layers, fill, batch_size, out):
    """Feature invariance of MODEL on each IMAGE (Fig. 5).

    Translates (vertically), scales and rotates each image and records the distance of its
    feature vector from the original's at two layers (relative to the original's norm) and the
    probability of its true class. Writes OUT/invariance.json, OUT/invariance.csv,
    OUT/invariance.png (the 3x3 curves) and OUT/transforms.png (the transforms of the first image).
    """
    from zfkeras.analysis.invariance import IDENTITY, UNITS, default_amounts, default_layers, invariance_curves, resolve_fill
    from zfkeras.io.atomic import atomic_output

    probe = loading.open_model(model)
    class_names = list(probe.class_names)
    layers = loading.choose_layers(layers or default_layers(probe), probe, names=probe.feature_names)
    if scales is not None and min(scales) <= 0:
        raise click.BadParameter(f"scale factors must be > 0, got {min(scales):g}", param_hint="--scales")
    labels = options.parse_labels(label, class_names, len(images))
    named = loading.load_images(images, probe.input_shape)
    amounts = default_amounts(probe.input_shape)
    for kind, given in (("translation", shifts), ("scale", scales), ("rotation", angles)):
        if given is not None:
            amounts[kind] = np.asarray(given)
    stack = np.stack([image for _, image in named])
    if labels[0] is None:
        labels = None
    with output.progressbar(list(amounts), label="transforming") as bar:
        curves = {}
        for kind in bar:
            curves.update(
                invariance_curves(probe, stack, labels=labels, amounts={kind: amounts[kind]}, layers=layers, fill=fill, batch_size=batch_size)
            )
    names = [name for name, _ in named]
    with atomic_output(out, directory=True) as target:
        with open(os.path.join(target, "invariance.csv"), "w") as handle:
            handle.write(records.curves_csv(curves, names, class_names, layers))
        output.save_figure(figures.curves_figure(curves, names, layers), os.path.join(target, "invariance.png"))
        output.save_figure(figures.examples_figure(named, resolve_fill(probe, fill), amounts), os.path.join(target, "transforms.png"))
        output.write_json(os.path.join(target, "invariance.json"), records.curves_json(curves, names, class_names, layers, fill))
    for kind, c in curves.items():
        moved = ~np.isclose(c.amounts, IDENTITY[kind]) & ~((kind == "rotation") & np.isclose(c.amounts % 360, 0))
        if not moved.any():
            continue
        distances = ", ".join(f"{layer} {np.nanmean(c.distances[layer][:, moved]):.3f}" for layer in layers)
        still = c.true_class_prob[:, ~moved].mean() if (~moved).any() else float("nan")
        click.echo(
            f"{kind} {c.amounts.min():g}..{c.amounts.max():g} {UNITS[kind]}: mean relative distance {distances}; "
            f"mean p(true) {still:.3f} untransformed, {c.true_class_prob[:, moved].mean():.3f} transformed"
        )
    click.echo(f"-> {out}/invariance.json, invariance.csv, invariance.png, transforms.png")
