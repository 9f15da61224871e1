"""``zf correspondence``: part correspondence analysis, paper Table 1 and Fig. 8
(see :mod:`zfkeras.correspondence` for the measure)."""

import json
import os

import click
import numpy as np

from pipelines import _common
from pipelines.occlusion import show_image

PARTS_FORMAT = (
    '{"images": [{"file": "a.png", "parts": {"collar": [y0, x0, y1, x1], ...}, "object": [y0, x0, y1, x1]}, ...]} '
    "with the same part names for every image; boxes in model-input pixels, end exclusive; "
    '"object" (optional) bounds the random masks; files relative to the JSON file'
)


def read_parts(path):
    """``(image paths, paths as written in the file, {part: [N, 4] boxes}, object boxes [N, 4] or None)``
    from a parts JSON file."""

    def bad(message):
        return click.BadParameter(f"{path}: {message}. Expected {PARTS_FORMAT}", param_hint="--parts")

    try:
        with open(path) as handle:
            spec = json.load(handle)
    except (OSError, ValueError) as error:
        raise bad(f"cannot read JSON ({str(error).splitlines()[0]})") from None
    entries = spec.get("images") if isinstance(spec, dict) else None
    if not isinstance(entries, list) or len(entries) < 2:
        raise bad('needs an "images" list of at least 2 entries')
    files, given_files, parts, objects = [], [], {}, []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not isinstance(entry.get("parts"), dict):
            raise bad(f'images[{index}] needs "file" (a string) and "parts" (an object)')
        names = list(entry["parts"])
        if index and names != list(parts):
            raise bad(f"images[{index}] has parts {names}, images[0] has {list(parts)}; every image needs the same parts")
        for name, box in entry["parts"].items():
            if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) for v in box)):
                raise bad(f"images[{index}].parts.{name} = {box!r} is not 4 integers [y0, x0, y1, x1]")
            parts.setdefault(name, []).append(box)
        objects.append(entry.get("object"))
        file = entry["file"] if os.path.isabs(entry["file"]) else os.path.join(os.path.dirname(os.path.abspath(path)), entry["file"])
        if not os.path.isfile(file):
            raise bad(f"images[{index}].file {entry['file']!r} does not exist")
        files.append(file)
        given_files.append(entry["file"])
    given = [o is not None for o in objects]
    if any(given) and not all(given):
        raise bad('give an "object" box for every image or for none')
    return (files, given_files, {name: np.asarray(boxes) for name, boxes in parts.items()}, (np.asarray(objects) if all(given) else None))


def table_text(result, count, draws):
    """Table 1 as plain text: mean +- std of the per-pair sign change, and Delta, per part and layer."""
    header = "part".ljust(12) + "".join(f"{layer + ': mean +- std':>24}{'Delta':>10}" for layer in result.layers)
    lines = [
        f"Mean feature sign change over the {count * (count - 1) // 2} image pairs "
        f"(random: {draws} draws per part size); Delta = sum over i != j = {count * (count - 1)} x mean.",
        header,
        "-" * len(header),
    ]
    for part, by_layer in result.scores.items():
        cells = ""
        for layer in result.layers:
            s = by_layer[layer]
            cells += f"{s.mean:>15.3f} +- {s.std:.3f}" + f"{s.delta:>10.2f}"
        lines.append(part.ljust(12) + cells)
    return "\n".join(lines) + "\n"


def result_json(result, names, files, parts, objects, draws, seed):
    return {
        "images": names,
        "files": files,
        "layers": result.layers,
        "measure": "H = fraction of features whose change eps = x - x_masked differs in sign; "
        "mean/std over unordered image pairs; delta = sum over ordered pairs i != j",
        "draws": draws,
        "seed": seed,
        "parts": {name: boxes.tolist() for name, boxes in parts.items()},
        "objects": None if objects is None else objects.tolist(),
        "scores": {
            part: {
                layer: {"mean": s.mean, "std": s.std, "delta": s.delta, "delta_std": s.delta_std, "pairs": s.pairs.tolist()}
                for layer, s in by_layer.items()
            }
            for part, by_layer in result.scores.items()
        },
        "random_boxes": result.random_boxes.tolist(),
    }


def masks_figure(named, parts, result, fill, random_shown=2):
    """Fig. 8: each image, then each part masked, then a few random masks of the first part's size."""
    from zfkeras.correspondence import mask_images

    plt = _common.pyplot()
    columns = 1 + len(parts) + random_shown
    figure, axes = plt.subplots(len(named), columns, figsize=(1.7 * columns, 1.8 * len(named)), squeeze=False)
    images = np.stack([image for _, image in named])
    from matplotlib.patches import Rectangle

    shown = [("original", images, None)]
    shown += [(name, mask_images(images, boxes, fill), boxes) for name, boxes in parts.items()]
    draws = result.random_boxes.shape[0]
    for d in range(min(random_shown, draws)):
        boxes = result.random_boxes[d, 0]
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


@click.command()
@_common.model_argument
@click.option(
    "--parts",
    "parts_file",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="JSON file of images and part boxes: " + PARTS_FORMAT + ".",
)
@_common.layers_option(help="Comma-separated feature layers. Default: the top conv layer and fc7.")
@click.option("--draws", default=10, show_default=True, type=click.IntRange(min=1), help="Random-mask draws for the control row.")
@click.option("--fill", type=_common.PixelValue(), help="Raw pixel value (0-255) of the masks. Default: the training mean image.")
@_common.batch_size_option()
@_common.out_option(results="correspondence.json")
@_common.seed_option
def correspondence(model, parts_file, layers, draws, fill, batch_size, out, seed):
    """Part correspondence of MODEL (Table 1): mask the same part in every image of --parts and
    measure how consistently the features change, against random masks of the same size.

    Writes OUT/correspondence.txt (the table), OUT/correspondence.json (all numbers and masks)
    and OUT/masks.png (the masked images, like Fig. 8).
    """
    from zfkeras import correspondence as analysis
    from zfkeras.atomic import atomic_output
    from zfkeras.occlusion import fill_values

    _common.seed_everything(seed)
    files, given_files, parts, objects = read_parts(parts_file)
    probe = _common.load_probe(model)
    if layers is not None:
        _common.choose_layers(layers, probe.feature_names)
    named = _common.load_images(files, probe.input_shape)
    images = np.stack([image for _, image in named])
    try:
        result = analysis.correspondence(
            probe, images, parts, layers=layers, objects=objects, draws=draws, seed=seed, fill=fill, batch_size=batch_size
        )
    except ValueError as error:  # a box outside the model input, a reserved part name, ...
        raise click.BadParameter(f"{parts_file}: {error}", param_hint="--parts") from None
    names = [name for name, _ in named]
    text = table_text(result, len(images), draws)
    with atomic_output(out, directory=True) as target:
        with open(os.path.join(target, "correspondence.txt"), "w") as handle:
            handle.write(text)
        _common.save_figure(masks_figure(named, parts, result, fill_values(probe, fill)), os.path.join(target, "masks.png"))
        _common.write_json(os.path.join(target, "correspondence.json"), result_json(result, names, given_files, parts, objects, draws, seed))
    click.echo(text, nl=False)
    click.echo(f"-> {out}/correspondence.txt, correspondence.json, masks.png")
