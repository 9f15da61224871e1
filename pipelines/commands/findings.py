"""``zf findings``: the paper's findings checked on a reproduction's records (docs/reproduction.md)."""

import glob
import json
import os

import click

from pipelines import options, output

# Where each experiment's record sits under RESULTS (docs/reproduce_emoji64.sh writes this layout).
LAYOUT = {
    "evaluate": "evaluate/results.json",
    "visualize": "visualize/summary.json",
    "evolution": "evolution/evolution.json",
    "invariance": "invariance/invariance.json",
    "localization": "localization/results.json",
    "correspondence": "correspondence/correspondence.json",
    "layers": "layers/results.json",
    "transfer-similar": "transfer-similar/results.json",
    "transfer-dissimilar": "transfer-dissimilar/results.json",
    "transfer-within": "transfer-within/results.json",
}
SEEDED = {
    "table3": "table3/seed-*/results.json",
    "fig6-filters": "fig6/seed-*/filters/filters.json",
    "fig6-evaluate": "fig6/seed-*/evaluate/results.json",
}
FIRST_LAYERS = ("zfnet64", "alexnet64")  # the model names (paths' basenames) of each fig6 seed


def read_json(path):
    """The JSON at ``path``, a one-line error naming it when unreadable."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise click.UsageError(f"{path}: cannot read JSON ({str(error).splitlines()[0]})") from None


def read_records(results):
    """``{experiment: record}`` of every LAYOUT file present, and ``{name: [records per seed]}``."""
    records = {name: read_json(os.path.join(results, path)) for name, path in LAYOUT.items() if os.path.isfile(os.path.join(results, path))}
    seeded = {name: [read_json(p) for p in sorted(glob.glob(os.path.join(results, pattern)))] for name, pattern in SEEDED.items()}
    return records, seeded


def first_layer_rows(filters, evaluations):
    """``(fine, coarse)`` rows of :func:`zfkeras.experiments.findings.first_layer_comparison` from the
    fig6 seeds' ``zf filters`` and ``zf evaluate`` records of the models named FIRST_LAYERS."""
    rows = {name: [] for name in FIRST_LAYERS}
    for record, evaluated in zip(filters, evaluations):
        for name in FIRST_LAYERS:
            model, errors = record["models"].get(name), evaluated["models"].get(name)
            if model is None or errors is None:
                raise click.UsageError(f"a fig6 seed lacks model {name!r}: name the two models {', '.join(FIRST_LAYERS)}")
            first, second = model["first_layer"], model["second_layer"]
            rows[name].append(
                {"dead_fraction": first["dead_fraction"], "aliasing_share": second["aliasing_share"], "top1_error": errors["top1_error"]}
            )
    return rows["zfnet64"], rows["alexnet64"]


def evaluate_all(records, seeded):
    """Every :class:`~zfkeras.experiments.findings.Finding`, in the order of docs/reproduction.md."""
    from zfkeras.experiments import findings as f

    def one(name, function, claim, paper, *extra):
        missing = [n for n in (name, *extra) if n not in records]
        if missing:
            return f.not_measured(claim, paper, f"no {LAYOUT[missing[0]]}")
        return function(records[name], *(records[e] for e in extra))

    found = [
        one("visualize", f.receptive_extent, "1", "higher layers' strongest activations are larger structures"),
        one("evolution", f.settling_order, "2", "lower layers converge first"),
        one("invariance", f.invariance_order, "3", "the top feature layer is more invariant than layer 1"),
    ]
    found += f.first_layer_comparison(*first_layer_rows(seeded["fig6-filters"], seeded["fig6-evaluate"]))
    found += [
        one("localization", f.occlusion_localization, "5", "occluding the object drops p(true class)"),
        one("correspondence", f.part_correspondence, "6", "parts are encoded consistently at conv5"),
        f.depth_ablation(seeded["table3"]),
        one("transfer-similar", f.transfer_gain, "8", "pretrained features beat training from scratch"),
        one("transfer-similar", f.transfer_gap_shrinks, "9", "the gain shrinks on unlike data", "transfer-dissimilar"),
        one("layers", f.layer_ordering, "10", "features become more discriminative with depth"),
    ]
    if "transfer-within" in records:
        found.append(f.transfer_gain(records["transfer-within"], "11", "features transfer within a domain (Yosinski et al. 2014)", max_n=5))
    else:
        found.append(f.not_measured("11", "features transfer within a domain", f"no {LAYOUT['transfer-within']}"))
    return found


def markdown_table(found):
    """The findings as a Markdown table: claim, the paper's claim, what we measured, holds?"""
    mark = {True: "holds", False: "does not hold", None: "not measured"}
    lines = ["| # | paper | ours | criterion |", "|---|---|---|---|"]
    lines += [f"| {x.claim} | {x.paper} | {x.measured} | {mark[x.holds]} |" for x in found]
    return "\n".join(lines)


@click.command()
@click.argument("results", type=click.Path(exists=True, file_okay=False))
@options.out_option
def findings(results, out):
    """Check each of the paper's findings on the records of a reproduction.

    RESULTS holds each experiment's output directory under a fixed name (evaluate/, visualize/,
    evolution/, invariance/, localization/, correspondence/, layers/, transfer-similar/,
    transfer-dissimilar/, transfer-within/, table3/seed-S/, fig6/seed-S/; see
    docs/reproduction.md). Writes OUT/results.json (each finding: the numbers, a sentence, whether
    the pre-registered criterion holds), OUT/table.txt (the Markdown table) and OUT/results.csv.
    A missing experiment is reported as not measured.
    """
    records, seeded = read_records(results)
    found = evaluate_all(records, seeded)
    headline = records.get("evaluate")
    result = {"results": os.path.abspath(results), "findings": [x.to_dict() for x in found], "evaluate": headline}
    table = markdown_table(found)
    csv_rows = [["claim", "paper", "measured", "holds"]] + [[x.claim, x.paper, x.measured, x.holds] for x in found]
    output.write_results(out, result, table, csv_rows)
    click.echo(table)
    held = sum(x.holds is True for x in found)
    click.echo(f"{held} of {sum(x.holds is not None for x in found)} measured findings hold ({len(found)} claims) -> {out}/results.json")
