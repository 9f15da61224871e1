"""``zf localization``: does occlusion hurt where the object is? Fig. 7 made quantitative with boxes."""

import json
import os

import click
import numpy as np

from pipelines import figures, loading, options, output, runtime


def read_boxes(path, source, root):
    """``[object box (x0, y0, x1, y1)]`` for every file of ``source``, from a boxes file keyed by the
    file's path relative to ``root`` (``zf emoji``'s boxes.json); a one-line error naming --boxes."""
    try:
        with open(path) as handle:
            boxes = json.load(handle)
    except (OSError, ValueError) as error:
        raise click.BadParameter(f"{path}: cannot read JSON ({str(error).splitlines()[0]})", param_hint="--boxes") from None
    found = []
    for file in source.files:
        key = os.path.relpath(file, root)
        entry = boxes.get(key) if isinstance(boxes, dict) else None
        if not isinstance(entry, dict) or len(entry.get("object") or []) != 4:
            raise click.BadParameter(f"{path} has no object box for {key}", param_hint="--boxes")
        found.append(entry["object"])
    return found


def choose(labels, count, seed):
    """``count`` image indices drawn with ``seed``, spread over the classes (round robin over a shuffle of each)."""
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in rng.permutation(np.unique(labels))]
    chosen = []
    while len(chosen) < count and any(by_class):
        for members in by_class:
            if members and len(chosen) < count:
                chosen.append(members.pop())
    return sorted(chosen)


def summary_figure(rows):
    """Per image: the share of the occlusion drop inside the box against the box's share of the grid."""
    plt = figures.pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    box = np.array([r["box_share"] for r in rows])
    share = np.array([np.nan if r["share_inside"] is None else r["share_inside"] for r in rows])
    left.scatter(box, share, s=10, alpha=0.6)
    left.plot([0, 1], [0, 1], "k--", linewidth=1, label="drop where the object is no more than elsewhere")
    left.set_xlabel("box's share of the occluder positions")
    left.set_ylabel("share of the p(true) drop inside the box")
    left.legend(fontsize=8)
    drops = [
        [r["object_drop"] for r in rows if r["object_drop"] is not None],
        [r["background_drop"] for r in rows if r["background_drop"] is not None],
    ]
    right.boxplot(drops)
    right.set_xticks([1, 2], ["occluder on the object", "on the background"])
    right.set_ylabel("drop of p(true class)")
    figure.tight_layout()
    return figure


@click.command()
@options.model_argument
@options.data_options(images="Images scanned: a seeded random N of the split, spread over the classes (default 200).")
@options.split_option()
@click.option(
    "--boxes",
    "boxes_file",
    type=click.Path(dir_okay=False),
    help="Object boxes keyed by file path (default: boxes.json in the folder of --data, as zf emoji writes).",
)
@click.option("--patch", type=click.IntRange(1), help="Square side in pixels (default: a quarter of the input).")
@click.option("--stride", type=click.IntRange(1), help="Grid step in pixels (default: input side / 28).")
@options.batch_size_option(256, help="Occluded copies per forward pass.")
@options.out_option
@options.seed_option
def localization(model, data_spec, data_dir, skip_corrupt, images, split, boxes_file, patch, stride, batch_size, out, seed):
    """Occlusion of --images images of a folder source whose objects are boxed, and where the drop of
    p(true class) falls: on the object or on the background (paper Fig. 7, Sec. 4.2, made a number).

    Per image: the mean drop with the square's centre on the object, the mean drop with the square
    off the object, and the share of the map's drop inside the box against the box's share of the
    grid. Writes results.json (every image and the mean ± std), results.csv, table.txt, figure.png
    and example-*.png (Fig. 7 panels of four images).
    """
    from zfkeras.analysis.occlusion import box_sensitivity, occlusion_map
    from zfkeras.data import subset

    runtime.seed_everything(seed)
    probe = loading.open_model(model)
    if not data_spec.startswith("folder:"):
        raise click.BadParameter("needs a folder: source (its files are what --boxes names)", param_hint="--data")
    root = data_spec[len("folder:") :]
    source = loading.open_source(data_spec, split, data_dir=data_dir, skip_corrupt=skip_corrupt)
    boxes = read_boxes(boxes_file or os.path.join(root, "boxes.json"), source, root)
    chosen = choose(np.asarray(source.labels), images or 200, seed)
    picked = loading.labelled_examples(subset(source, chosen), probe.input_shape, batch_size)
    rows, examples = [], []
    with output.progressbar(length=len(chosen), label=f"occluding {len(chosen)} images") as bar:
        for index, (image, label) in zip(chosen, picked):
            if image.shape != tuple(probe.input_shape):
                raise click.BadParameter(
                    f"{source.files[index]} is {image.shape[1]}x{image.shape[0]}, not the model's input size", param_hint="--data"
                )
            result = occlusion_map(probe, image, label=int(label), patch=patch, stride=stride, batch_size=batch_size)
            rows.append(
                {
                    "file": os.path.relpath(source.files[index], root),
                    "label": int(label),
                    "box": list(boxes[index]),
                    **box_sensitivity(result, boxes[index]).to_dict(),
                }
            )
            if len(examples) < 4:
                examples.append((os.path.splitext(os.path.basename(source.files[index]))[0], result, boxes[index]))
            bar.update(1)
    write(out, model, data_spec, split, seed, rows, examples, probe.class_names)


def write(out, model, data_spec, split, seed, rows, examples, class_names):
    keys = ("object_drop", "background_drop", "share_inside", "box_share")
    summary = {}
    for key in keys:
        values = np.array([r[key] for r in rows if r[key] is not None], np.float64)
        summary[key] = {"mean": float(values.mean()), "std": float(values.std()), "images": int(len(values))}
    results = {"model": model, "data": data_spec, "split": split, "seed": seed, "images": len(rows), "summary": summary, "per_image": rows}
    table = "\n".join(f"{key:<16} {summary[key]['mean']:.3f} ± {summary[key]['std']:.3f}  ({summary[key]['images']} images)" for key in keys)
    csv_rows = [["file", "label", *keys]] + [[r["file"], r["label"], *(r[k] for k in keys)] for r in rows]
    files = {
        f"example-{name}.png": output.figure_bytes(figures.occlusion_figure(result, class_names, name, box=box)) for name, result, box in examples
    }
    output.write_results(out, results, table, csv_rows, figure=summary_figure(rows), files=files)
    click.echo(table)
