"""Does each of the paper's findings hold on a reproduction? The pre-registered criteria of
``docs/reproduction.md``, evaluated on the records the ``zf`` commands write.

Each function takes the parsed JSON of one or more experiments (``zf visualize``'s summary.json,
``zf evolution``'s evolution.json, ...) and returns a :class:`Finding`: the numbers the criterion
reads, a sentence with them, and whether the criterion is met. Nothing here tunes or picks: a
criterion is a fixed comparison of means (and standard deviations over seeds or folds).
"""

import dataclasses

import numpy as np

CONV_DEPTH = ("conv1", "conv2", "conv3", "conv4", "conv5")


@dataclasses.dataclass
class Finding:
    """One claim of the paper checked on our data.

    Attributes:
        claim: the criterion's number in ``docs/reproduction.md`` ("1", "4a", ...).
        paper: the paper's claim in a few words.
        measured: what we measured, in a sentence with the numbers.
        holds: whether the pre-registered criterion is met (None: not measured).
        numbers: the values the criterion compared (JSON-able).
    """

    claim: str
    paper: str
    measured: str
    holds: bool | None
    numbers: dict

    def to_dict(self):
        return dataclasses.asdict(self)


def not_measured(claim, paper, reason):
    """A :class:`Finding` for a claim whose experiment has no record (``reason`` says why)."""
    return Finding(claim, paper, f"not measured: {reason}", None, {})


def _mean_std(values):
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std())


def _never_falls(values):
    return all(b >= a for a, b in zip(values, values[1:]))


def receptive_extent(summary):
    """Claim 1 (Fig. 2) from ``zf visualize``'s summary.json: the median pixels holding 90% of a
    top-k projection's energy never fall with depth, and conv5's is at least twice conv1's."""
    paper = "higher layers' strongest activations are larger structures"
    extent = {layer: summary["extent"][layer]["median_pixels"] for layer in CONV_DEPTH if layer in summary.get("extent", {})}
    if len(extent) < 2 or any(value is None for value in extent.values()):
        return not_measured("1", paper, "summary.json has no extent for every conv layer")
    values = list(extent.values())
    holds = _never_falls(values) and values[-1] >= 2 * values[0]
    text = ", ".join(f"{layer} {value:.0f}" for layer, value in extent.items())
    return Finding("1", paper, f"median px holding 90% of a projection's energy: {text}", holds, {"extent": extent})


def settling_order(evolution):
    """Claim 2 (Fig. 4) from ``zf evolution``'s evolution.json: the epoch from which each layer's
    median unit correlation with the last epoch stays >= 0.9 never falls with depth, and conv5's is
    later than conv1's. A layer that never settles counts as settling after the last epoch."""
    paper = "lower layers converge within a few epochs, upper layers only after many"
    layers = [layer for layer in CONV_DEPTH if "correlation" in evolution.get("layers", {}).get(layer, {})]
    if len(layers) < 2:
        return not_measured("2", paper, "evolution.json has no unit correlations (run zf evolution with --probe-images)")
    after_last = evolution["epochs"][-1] + 1
    settled = {layer: evolution["layers"][layer]["correlation"]["settled_epoch"] for layer in layers}
    values = [after_last if value is None else value for value in settled.values()]
    holds = _never_falls(values) and values[-1] > values[0]
    text = ", ".join(f"{layer} {'never' if value is None else value}" for layer, value in settled.items())
    return Finding("2", paper, f"epoch from which the median unit correlation with the last epoch stays >= 0.9: {text}", holds, {"settled": settled})


def invariance_order(invariance, low="conv1", high="fc7"):
    """Claim 3 (Fig. 5) from ``zf invariance``'s invariance.json: the mean relative feature distance
    (over images and non-zero amounts) under translation and under scaling is smaller at ``high``
    than at ``low``."""
    paper = "small shifts and scalings change layer 1 a lot, the top feature layer less"
    distances = {}
    for transform in ("translation", "scale"):
        record = invariance["transforms"].get(transform)
        if record is None or not {low, high} <= set(record["distance"]):
            return not_measured("3", paper, f"invariance.json lacks {transform} distances of {low} and {high}")
        identity = 0.0 if transform == "translation" else 1.0
        moved = [i for i, amount in enumerate(record["amounts"]) if amount != identity]
        distances[transform] = {layer: float(np.asarray(record["distance"][layer], np.float64)[:, moved].mean()) for layer in (low, high)}
    holds = all(d[high] < d[low] for d in distances.values())
    text = "; ".join(f"{t}: {low} {d[low]:.3f}, {high} {d[high]:.3f}" for t, d in distances.items())
    return Finding("3", paper, f"mean relative feature distance, {text}", holds, {"distance": distances})


def first_layer_comparison(fine, coarse):
    """Claims 4a-4c (Sec. 4.1 / Fig. 6): ``fine`` and ``coarse`` are lists (one per seed) of
    ``{"dead_fraction", "aliasing_share", "top1_error"}`` of the 7x7/2 and the 11x11/4 first
    layer. 4a/4b: the coarse mean exceeds the fine one; 4c: by more than the larger std."""
    findings = []
    for claim, key, paper in (
        ("4a", "dead_fraction", "an 11x11/4 first layer has more dead filters than 7x7/2"),
        ("4b", "aliasing_share", "... and more aliasing in layer 2's projections"),
        ("4c", "top1_error", "... and a higher error"),
    ):
        if not fine or not coarse:
            findings.append(not_measured(claim, paper, "no runs of both first layers"))
            continue
        (fm, fs), (cm, cs) = _mean_std([r[key] for r in fine]), _mean_std([r[key] for r in coarse])
        holds = cm > fm + (max(fs, cs) if claim == "4c" else 0.0)
        text = f"{key.replace('_', ' ')}: 7x7/2 {fm:.3f} ± {fs:.3f}, 11x11/4 {cm:.3f} ± {cs:.3f} ({len(fine)} and {len(coarse)} seeds)"
        findings.append(Finding(claim, paper, text, holds, {"fine": [fm, fs], "coarse": [cm, cs], "seeds": [len(fine), len(coarse)]}))
    return findings


def occlusion_localization(localization):
    """Claim 5 (Fig. 7) from ``zf localization``'s results.json: the mean drop of p(true class)
    with the square on the object exceeds the drop off it, and the share of the map's drop inside
    the box exceeds the box's share of the grid."""
    paper = "occluding the object drops p(true class), occluding the background does not"
    s = {key: value["mean"] for key, value in localization["summary"].items()}
    holds = s["object_drop"] > s["background_drop"] and s["share_inside"] > s["box_share"]
    text = (
        f"{localization['images']} images: drop on the object {s['object_drop']:.3f}, off it {s['background_drop']:.3f}; "
        f"share of the drop inside the box {s['share_inside']:.3f} against the box's share of the grid {s['box_share']:.3f}"
    )
    return Finding("5", paper, text, holds, s)


def part_correspondence(correspondence, low="conv5", high="fc7"):
    """Claim 6 (Table 1) from ``zf correspondence``'s correspondence.json: at ``low`` every part's
    mean score is below the random masks', and the parts' mean gap to random is smaller at ``high``."""
    paper = "parts are encoded consistently across images at conv5, less so at fc7"
    scores = correspondence["scores"]
    parts = [name for name in scores if name != "random"]
    if not parts or any(layer not in scores["random"] for layer in (low, high)):
        return not_measured("6", paper, f"correspondence.json lacks parts or layers {low}, {high}")
    gap = {layer: float(np.mean([scores["random"][layer]["mean"] - scores[p][layer]["mean"] for p in parts])) for layer in (low, high)}
    below = all(scores[p][low]["mean"] < scores["random"][low]["mean"] for p in parts)
    holds = below and gap[high] < gap[low]
    text = (
        f"{len(parts)} parts over {len(correspondence['images'])} images: at {low} {'every' if below else 'not every'} part scores below random "
        f"(mean gap {gap[low]:.4f}); at {high} the mean gap is {gap[high]:.4f}"
    )
    return Finding("6", paper, text, holds, {"gap": gap, "parts": parts})


def depth_ablation(ablations):
    """Claim 7 (Table 3) from ``zf ablate``'s results.json of each seed: removing conv3, conv4,
    fc6 and fc7 raises the top-1 test error over the base by more than either removal alone, by
    more than the larger std (over seeds) of the compared variants."""
    paper = "removing the fc layers or two middle convs costs little; removing both costs much"
    names = {"base": (), "fc": (6, 7), "conv": (3, 4), "both": (3, 4, 6, 7)}
    errors = {key: [] for key in names}
    for record in ablations:
        for row in record["variants"]:
            for key, without in names.items():
                if tuple(row["variant"]["without"]) == without and not row["variant"]["units"] and not row["variant"]["convs"]:
                    errors[key].append(row["test_top1_error"])
    if not ablations or any(not values for values in errors.values()):
        return not_measured("7", paper, "no zf ablate results with the base and the three removals")
    stats = {key: _mean_std(values) for key, values in errors.items()}
    larger = max(stats[key][1] for key in ("fc", "conv", "both"))
    holds = stats["both"][0] - max(stats["fc"][0], stats["conv"][0]) > larger
    label = {"base": "base", "fc": "without fc6,7", "conv": "without conv3,4", "both": "without both"}
    text = ", ".join(f"{label[k]} {m:.1%} ± {s:.1%}" for k, (m, s) in stats.items()) + f" top-1 test error ({len(ablations)} seeds)"
    return Finding("7", paper, text, holds, {"errors": stats, "seeds": len(ablations)})


def data_label(spec):
    """A ``--data`` spec without the machine's directories: ``folder:/any/where/tuxpaint/photos`` ->
    ``folder:tuxpaint/photos`` (the last two path parts); names like ``mnist_5k`` stay as they are."""
    kind, sep, path = spec.partition(":")
    if not sep:
        return spec
    return f"{kind}:{'/'.join(path.rstrip('/').split('/')[-2:])}"


def _transfer_table(transfer):
    """``{n: {"pretrained": (mean, std), "scratch": (mean, std)}}`` of ``zf transfer``'s results.json."""
    table = {}
    for row in transfer["summary"]:
        table.setdefault(row["n_per_class"], {})[row["method"]] = (row["mean"], row["std"])
    return {n: methods for n, methods in sorted(table.items()) if {"pretrained", "scratch"} <= set(methods)}


def transfer_gain(transfer, claim="8", paper="pretrained features beat training from scratch with few images per class", max_n=None):
    """Claims 8 and 11 (Tables 4-5, Fig. 9) from ``zf transfer``'s results.json: at every N per
    class (up to ``max_n``) the pretrained mean accuracy exceeds the scratch mean by more than the
    sum of their stds."""
    table = {n: row for n, row in _transfer_table(transfer).items() if max_n is None or n <= max_n}
    if not table:
        return not_measured(claim, paper, "results.json has no N with both pretrained and scratch runs")
    holds = all(row["pretrained"][0] - row["scratch"][0] > row["pretrained"][1] + row["scratch"][1] for row in table.values())
    text = "; ".join(
        f"N={n}: pretrained {row['pretrained'][0]:.1%} ± {row['pretrained'][1]:.1%}, scratch {row['scratch'][0]:.1%} ± {row['scratch'][1]:.1%}"
        for n, row in table.items()
    )
    return Finding(
        claim,
        paper,
        f"{data_label(transfer['data_spec'])}, {transfer['folds']} folds: {text}",
        holds,
        {"table": {str(n): r for n, r in table.items()}},
    )


def transfer_gap_shrinks(similar, dissimilar, n=5):
    """Claim 9 (Sec. 5.2): the pretrained-minus-scratch gap at ``n`` per class is smaller on the
    ``dissimilar`` target than on the ``similar`` one (``zf transfer`` results.json of each)."""
    paper = "the gain shrinks on data unlike the training set"
    gaps = {}
    for name, record in (("similar", similar), ("dissimilar", dissimilar)):
        row = _transfer_table(record).get(n)
        if row is None:
            return not_measured("9", paper, f"the {name} target has no N={n} runs")
        gaps[name] = row["pretrained"][0] - row["scratch"][0]
    holds = gaps["dissimilar"] < gaps["similar"]
    text = f"gap at N={n}: {data_label(similar['data_spec'])} {gaps['similar']:+.1%}, {data_label(dissimilar['data_spec'])} {gaps['dissimilar']:+.1%}"
    return Finding("9", paper, text, holds, {"gap": gaps, "n": n})


def layer_ordering(layers, order=("conv1", "conv3", "conv5", "fc7"), classifier="softmax"):
    """Claim 10 (Table 7) from ``zf layers``' results.json: at the largest N, the ``classifier``'s
    mean accuracy never falls along ``order``."""
    paper = "features become more discriminative with depth"
    rows = [r for r in layers["summary"] if r["classifier"] == classifier]
    if not rows:
        return not_measured("10", paper, f"results.json has no {classifier} rows")
    n = max(r["n_per_class"] for r in rows)
    accuracy = {r["layer"]: (r["mean"], r["std"]) for r in rows if r["n_per_class"] == n}
    missing = [layer for layer in order if layer not in accuracy]
    if missing:
        return not_measured("10", paper, f"results.json has no {missing[0]} row")
    holds = _never_falls([accuracy[layer][0] for layer in order])
    text = f"{classifier} accuracy at N={n}: " + ", ".join(f"{layer} {accuracy[layer][0]:.1%} ± {accuracy[layer][1]:.1%}" for layer in order)
    return Finding("10", paper, text, holds, {"accuracy": {layer: accuracy[layer] for layer in order}, "n": n})
