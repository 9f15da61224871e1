"""The JSON (and CSV) of each analysis's results, written the same way by each command and by
``zf report``."""

import csv
import io

import numpy as np


def field_json(field):
    return {"size": list(field.size), "jump": list(field.jump), "offset": list(field.offset)}


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


def curves_json(curves, names, class_names, layers, fill):
    """Everything the figure shows, as plain JSON."""
    from zfkeras.analysis.invariance import UNITS

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


def mean_std(entry, index=None):
    """``"0.61 ± 0.12"`` from ``{"mean", "std"}`` (lists: item ``index``); "n/a" where undefined."""
    mean, std = (entry[key] if index is None else entry[key][index] for key in ("mean", "std"))
    return "n/a" if mean is None or mean != mean else f"{mean:.2f} ± {std:.2f}"


def sanity_rows(table, mode):
    """``(header, rows)`` of one mode of ``zf sanity``'s table (``"cascading"``, ``"independent"``
    or ``"data"``): per rule, target and metric, mean ± std over the images at each step."""
    steps = ["shuffled labels"] if mode == "data" else [f"-{layer}" if mode == "independent" else f"..{layer}" for layer in table["layers"]]
    header = ["rule", "target", "metric"] + steps
    rows = []
    for rule in table["rules"]:
        for target in [t for t in table["targets"] if t in table[mode][rule]]:  # the data test: class scores only
            entry = table[mode][rule][target]
            for metric in table["metrics"]:
                rows.append([rule, target, metric] + [mean_std(entry[metric], i) for i in range(len(steps))])
            rows.append([rule, target, "silent maps"] + [str(count) for count in entry["silent"]])
    return header, rows


def faithfulness_rows(table):
    """``(header, rows)``: mean ± std of the deletion and insertion AUCs per target and method."""
    header = ["target", "method", "deletion AUC (lower: better)", "insertion AUC (higher: better)"]
    rows = []
    for target, methods in table["targets"].items():
        for method, kinds in methods.items():
            rows.append([target, method] + [f"{kinds[k]['auc_mean']:.3f} ± {kinds[k]['auc_std']:.3f}" for k in ("deletion", "insertion")])
    return header, rows


def rows_text(header, rows):
    """A plain-text table, columns padded to their widest cell."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n"
