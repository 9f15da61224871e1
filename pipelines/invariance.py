"""``zf invariance``: feature distance and true-class probability under translation, scale and
rotation, paper Fig. 5 (see :mod:`zfkeras.invariance` for the transforms and the normalisation)."""

import csv
import io
import os

import click
import numpy as np

from pipelines import _common
from pipelines.occlusion import show_image

NUMBERS = _common.CommaList(float, "a comma-separated list of numbers like -8,0,8")


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


def curves_json(curves, names, class_names, layers, fill):
    """Everything the figure shows, as plain JSON."""
    from zfkeras.invariance import UNITS

    def clean(array):  # NaN (all-zero original features) -> null
        return [[None if np.isnan(v) else float(v) for v in row] for row in array]

    return {
        "images": names,
        "labels": [class_names[i] for i in next(iter(curves.values())).labels],
        "layers": layers,
        "distance": "||x(T(image)) - x(image)||_2 / ||x(image)||_2, features of one layer flattened",
        "fill": fill,
        "transforms": {
            kind: {
                "unit": UNITS[kind],
                "amounts": c.amounts.tolist(),
                "distance": {layer: clean(c.distances[layer]) for layer in layers},
                "true_class_prob": clean(c.true_class_prob),
            }
            for kind, c in curves.items()
        },
    }


def curves_csv(curves, names, class_names, layers):
    """One row per image, transform and amount."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "label", "transform", "amount"] + [f"distance_{layer}" for layer in layers] + ["true_class_prob"])
    for kind, c in curves.items():
        for i, name in enumerate(names):
            for t, amount in enumerate(c.amounts):
                row = [name, class_names[c.labels[i]], kind, f"{amount:g}"]
                row += [f"{c.distances[layer][i, t]:.6g}" for layer in layers] + [f"{c.true_class_prob[i, t]:.6g}"]
                writer.writerow(row)
    return text.getvalue()


def curves_figure(curves, names, layers):
    """The 3x3 grid of Fig. 5: rows transforms; columns layer-1 distance, layer-7 distance, p(true)."""
    from zfkeras.invariance import UNITS

    plt = _common.pyplot()
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
    from zfkeras.invariance import transform_image

    plt = _common.pyplot()
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


@click.command()
@_common.model_argument
@_common.images_argument
@_common.label_option
@click.option(
    "--shifts", type=NUMBERS, metavar="LIST", help="Vertical shifts in pixels, + = down. Default: whole pixels up to H/4 each way (15 steps)."
)
@click.option("--scales", type=NUMBERS, metavar="LIST", help="Scale factors (> 0) about the centre. Default: 0.6,0.7,...,1.6.")
@click.option("--angles", type=NUMBERS, metavar="LIST", help="Rotations in degrees, counter-clockwise. Default: 0,15,...,360.")
@_common.layers_option(help="Two or more comma-separated feature layers. Default: the first conv layer and fc7.")
@click.option(
    "--fill",
    default="background",
    show_default=True,
    type=Fill(),
    help="What a transform uncovers: 'background' (median of the image's border pixels), 'edge' (nearest border pixel), "
    "'mean' (training mean image, 0 after mean subtraction) or a raw value 0-255.",
)
@_common.batch_size_option()
@_common.out_option(results="invariance.json")
def invariance(model, images, label, shifts, scales, angles, layers, fill, batch_size, out):
    """Feature invariance of MODEL on each IMAGE (Fig. 5).

    Translates (vertically), scales and rotates each image and records the distance of its
    feature vector from the original's at two layers (relative to the original's norm) and the
    probability of its true class. Writes OUT/invariance.json, OUT/invariance.csv,
    OUT/invariance.png (the 3x3 curves) and OUT/transforms.png (the transforms of the first image).
    """
    from zfkeras.atomic import atomic_output
    from zfkeras.invariance import IDENTITY, UNITS, default_amounts, default_layers, invariance_curves, resolve_fill

    probe = _common.load_probe(model)
    class_names = list(probe.class_names)
    layers = _common.choose_layers(layers or default_layers(probe), probe.feature_names)
    if scales is not None and min(scales) <= 0:
        raise click.BadParameter(f"scale factors must be > 0, got {min(scales):g}", param_hint="--scales")
    labels = _common.parse_labels(label, class_names, len(images))
    named = _common.load_images(images, probe.input_shape)
    amounts = default_amounts(probe.input_shape)
    for kind, given in (("translation", shifts), ("scale", scales), ("rotation", angles)):
        if given is not None:
            amounts[kind] = np.asarray(given)
    stack = np.stack([image for _, image in named])
    if labels[0] is None:
        labels = None
    with _common.progressbar(list(amounts), label="transforming") as bar:
        curves = {}
        for kind in bar:
            curves.update(
                invariance_curves(probe, stack, labels=labels, amounts={kind: amounts[kind]}, layers=layers, fill=fill, batch_size=batch_size)
            )
    names = [name for name, _ in named]
    with atomic_output(out, directory=True) as target:
        with open(os.path.join(target, "invariance.csv"), "w") as handle:
            handle.write(curves_csv(curves, names, class_names, layers))
        _common.save_figure(curves_figure(curves, names, layers), os.path.join(target, "invariance.png"))
        _common.save_figure(examples_figure(named, resolve_fill(probe, fill), amounts), os.path.join(target, "transforms.png"))
        _common.write_json(os.path.join(target, "invariance.json"), curves_json(curves, names, class_names, layers, fill))
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
