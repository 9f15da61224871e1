"""zf findings: each pre-registered criterion of docs/reproduction.md against hand-computed cases,
both ways (a record where it holds and one where it does not), and the command on a directory."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from pipelines.cli import main
from zfkeras.experiments import findings as f

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def summary(values):
    return {"extent": {f"conv{i + 1}": {"median_pixels": v} for i, v in enumerate(values)}}


def test_receptive_extent():
    assert f.receptive_extent(summary([10, 20, 30, 30, 40])).holds is True
    assert f.receptive_extent(summary([10, 20, 35, 30, 40])).holds is False  # falls conv3 -> conv4
    assert f.receptive_extent(summary([10, 12, 14, 16, 19])).holds is False  # conv5 < 2 x conv1
    assert f.receptive_extent({"extent": {}}).holds is None


def evolution(settled, last=10):
    return {"epochs": list(range(1, last + 1)), "layers": {f"conv{i + 1}": {"correlation": {"settled_epoch": s}} for i, s in enumerate(settled)}}


def test_settling_order_counts_never_as_after_the_last_epoch():
    assert f.settling_order(evolution([2, 3, 3, 6, None])).holds is True
    assert f.settling_order(evolution([2, None, 3, 6, 8])).holds is False  # never (11) then 3: falls
    assert f.settling_order(evolution([4, 4, 4, 4, 4])).holds is False  # conv5 not later than conv1
    assert f.settling_order({"epochs": [1], "layers": {"conv1": {}}}).holds is None


def invariance(conv1, fc7, amounts):
    record = {"amounts": amounts, "distance": {"conv1": conv1, "fc7": fc7}}
    return {"transforms": {"translation": record, "scale": {**record, "amounts": [1.0 if a == 0 else a for a in amounts]}}}


def test_invariance_order_averages_the_moved_amounts_only():
    amounts = [-2, 0, 2]
    # conv1: mean over moved = (0.8 + 1.0 + 0.6 + 0.8) / 4 = 0.8; fc7 (0.5 + 0.7 + 0.3 + 0.5) / 4 = 0.5
    found = f.invariance_order(invariance([[0.8, 0, 1.0], [0.6, 0, 0.8]], [[0.5, 0, 0.7], [0.3, 0, 0.5]], amounts))
    assert found.holds is True and found.numbers["distance"]["translation"] == pytest.approx({"conv1": 0.8, "fc7": 0.5})
    # Had the identity column (a large, fake value) been averaged in, fc7 would look worse than conv1.
    found = f.invariance_order(invariance([[0.8, 0, 1.0]], [[0.9, -3.0, 0.95]], amounts))
    assert found.holds is False and found.numbers["distance"]["scale"]["fc7"] == pytest.approx(0.925)


def rows(**columns):
    keys = list(columns)
    return [dict(zip(keys, values)) for values in zip(*columns.values())]


def test_first_layer_comparison_4c_needs_the_gap_above_the_larger_std():
    fine = rows(dead_fraction=[0.0, 0.02, 0.01], aliasing_share=[0.1, 0.12, 0.11], top1_error=[0.40, 0.42, 0.44])
    coarse = rows(dead_fraction=[0.1, 0.12, 0.08], aliasing_share=[0.09, 0.1, 0.1], top1_error=[0.45, 0.46, 0.47])
    a, b, c = f.first_layer_comparison(fine, coarse)
    assert (a.holds, b.holds, c.holds) == (True, False, True)  # errors: 0.46 - 0.42 = 0.04 > std 0.0163
    coarse = rows(dead_fraction=[0.1] * 3, aliasing_share=[0.2] * 3, top1_error=[0.40, 0.45, 0.50])
    assert f.first_layer_comparison(fine, coarse)[2].holds is False  # 0.45 - 0.42 < std 0.0408
    assert [x.holds for x in f.first_layer_comparison([], coarse)] == [None] * 3


def ablation(errors, extra=0.9):
    variants = [
        ("base", [], {}),
        ("without fc", [6, 7], {}),
        ("without conv", [3, 4], {}),
        ("without both", [3, 4, 6, 7], {}),
        ("wide", [], {"fc6": 9}),
    ]
    return {
        "variants": [
            {"variant": {"name": name, "without": without, "units": units, "convs": {}}, "test_top1_error": error}
            for (name, without, units), error in zip(variants, [*errors, extra])
        ]
    }


def test_depth_ablation_compares_both_removals_with_the_worse_single_one():
    seeds = [ablation([0.30, 0.31, 0.32, 0.45]), ablation([0.32, 0.33, 0.33, 0.47])]
    found = f.depth_ablation(seeds)
    assert found.holds is True and found.numbers["errors"]["base"][0] == pytest.approx(0.31)  # the wide row is not the base
    assert f.depth_ablation([ablation([0.30, 0.31, 0.40, 0.41]), ablation([0.30, 0.31, 0.44, 0.45])]).holds is False  # 0.01 < std 0.02
    assert f.depth_ablation([{"variants": ablation([0.3] * 4)["variants"][:2]}]).holds is None


def transfer(table, name="folder:tux"):
    summary = [{"method": m, "n_per_class": n, "mean": mean, "std": std} for n, methods in table.items() for m, (mean, std) in methods.items()]
    return {"data_spec": name, "folds": 5, "summary": summary}


def test_data_labels_leave_out_the_machine_directories():
    assert f.data_label("folder:/home/me/data/tuxpaint/photos/") == "folder:tuxpaint/photos"
    assert f.data_label("idx:out/fashion-split/last4") == "idx:fashion-split/last4"
    assert f.data_label("mnist_5k") == "mnist_5k"
    assert f.transfer_gain(transfer({1: {"pretrained": (0.5, 0), "scratch": (0.2, 0)}}, "folder:/srv/x/y/z")).measured.startswith("folder:y/z,")


def test_transfer_gain_and_gap():
    similar = transfer({1: {"pretrained": (0.5, 0.05), "scratch": (0.2, 0.05)}, 5: {"pretrained": (0.7, 0.03), "scratch": (0.4, 0.05)}})
    assert f.transfer_gain(similar).holds is True
    close = transfer({1: {"pretrained": (0.5, 0.05), "scratch": (0.2, 0.05)}, 5: {"pretrained": (0.7, 0.05), "scratch": (0.62, 0.05)}})
    assert f.transfer_gain(close).holds is False  # N=5: 0.08 < 0.10
    assert f.transfer_gain(close, max_n=1).holds is True
    assert f.transfer_gap_shrinks(similar, close).holds is True  # 0.08 < 0.30
    assert f.transfer_gap_shrinks(close, similar).holds is False
    assert f.transfer_gap_shrinks(similar, transfer({1: {"pretrained": (0.5, 0), "scratch": (0.2, 0)}})).holds is None


def test_layer_ordering_reads_the_largest_n():
    summary = [{"layer": layer, "classifier": "softmax", "n_per_class": n, "mean": mean, "std": 0.01} for layer, n, mean in [
        ("conv1", 5, 0.9), ("conv3", 5, 0.5), ("conv5", 5, 0.6), ("fc7", 5, 0.7),
        ("conv1", 8, 0.4), ("conv3", 8, 0.5), ("conv5", 8, 0.6), ("fc7", 8, 0.6),
    ]]  # fmt: skip
    found = f.layer_ordering({"summary": summary})
    assert found.holds is True and found.numbers["n"] == 8
    summary[-1]["mean"] = 0.55
    assert f.layer_ordering({"summary": summary}).holds is False


def correspondence(part_means, random_means):
    scores = {p: {"conv5": {"mean": c5}, "fc7": {"mean": c7}} for p, (c5, c7) in part_means.items()}
    scores["random"] = {"conv5": {"mean": random_means[0]}, "fc7": {"mean": random_means[1]}}
    return {"images": [0, 1, 2], "scores": scores}


def test_part_correspondence():
    assert f.part_correspondence(correspondence({"eyes": (0.10, 0.20), "mouth": (0.12, 0.21)}, (0.15, 0.22))).holds is True
    assert f.part_correspondence(correspondence({"eyes": (0.10, 0.20), "mouth": (0.16, 0.21)}, (0.15, 0.22))).holds is False
    assert f.part_correspondence(correspondence({"eyes": (0.10, 0.10), "mouth": (0.12, 0.11)}, (0.15, 0.22))).holds is False  # fc7 gap larger


def test_occlusion_localization():
    record = {
        "images": 3,
        "summary": {k: {"mean": v} for k, v in dict(object_drop=0.3, background_drop=0.01, share_inside=0.6, box_share=0.3).items()},
    }
    assert f.occlusion_localization(record).holds is True
    record["summary"]["share_inside"]["mean"] = 0.2
    assert f.occlusion_localization(record).holds is False


def write(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_command_on_a_results_directory(tmp_path):
    results = tmp_path / "results"
    write(results / "visualize" / "summary.json", summary([10, 20, 30, 30, 40]))
    write(results / "evolution" / "evolution.json", evolution([2, 3, 3, 6, 2]))
    for seed in (0, 1):
        write(results / "table3" / f"seed-{seed}" / "results.json", ablation([0.30, 0.31, 0.32, 0.45 + seed / 100]))
        models = {
            name: {"first_layer": {"dead_fraction": d}, "second_layer": {"aliasing_share": a}}
            for name, d, a in [("zfnet64", 0.0, 0.1), ("alexnet64", 0.2, 0.3)]
        }
        write(results / "fig6" / f"seed-{seed}" / "filters" / "filters.json", {"models": models})
        write(
            results / "fig6" / f"seed-{seed}" / "evaluate" / "results.json",
            {"models": {"zfnet64": {"top1_error": 0.4}, "alexnet64": {"top1_error": 0.5}}},
        )
    out = tmp_path / "findings"
    result = CliRunner().invoke(main, ["findings", str(results), "--out", str(out)])
    assert result.exit_code == 0, result.output
    found = {x["claim"]: x for x in json.loads((out / "results.json").read_text())["findings"]}
    assert [found[c]["holds"] for c in ("1", "2", "4a", "4b", "4c", "7")] == [True, False, True, True, True, True]
    assert found["5"]["holds"] is None and "localization/results.json" in found["5"]["measured"]
    assert found["7"]["numbers"]["seeds"] == 2 and found["4c"]["numbers"]["fine"] == pytest.approx([0.4, 0.0])
    assert "| 2 | lower layers converge" in (out / "table.txt").read_text() and "does not hold" in (out / "table.txt").read_text()
    assert "6 of 6 measured" not in result.output and "5 of 6 measured findings hold" in result.output
    (results / "layers").mkdir()
    (results / "layers" / "results.json").write_text("{not json")
    result = CliRunner().invoke(main, ["findings", str(results), "--out", str(tmp_path / "again")])
    assert result.exit_code == 2 and "layers/results.json: cannot read JSON" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "again").exists()


def test_numbers_are_plain_floats():
    found = f.first_layer_comparison(
        rows(dead_fraction=[0.0], aliasing_share=[0.1], top1_error=[0.4]),
        rows(dead_fraction=[np.float32(0.1)], aliasing_share=[0.2], top1_error=[0.5]),
    )
    json.dumps([x.to_dict() for x in found])  # JSON-able: no numpy scalars left


def test_published_records_name_no_path_of_the_machine(tmp_path):
    """docs/examples/publish_findings.py: repository paths become relative, each --path ABS=NAME its
    name (longest first), and a longer directory name that starts with ABS is left to its own pair."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("publish", os.path.join(ROOT, "docs", "examples", "publish_findings.py"))
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    names = publish.path_names(["/data/emoji64=out/emoji64", "/data/emoji64-c100=out/emoji64-c100", "/runs/t3=out/t3", "/runs/t3/a-s0=out/r/seed-0"])
    text = (
        f'{{"data": "folder:/data/emoji64", "small": "folder:/data/emoji64-c100/test", "model": "{publish.ROOT}/saved_models/m",'
        ' "runs": "/runs/t3/runs-s0", "seed": "/runs/t3/a-s0/results.json", "said": "read /data/emoji64."}'
    )
    assert json.loads(publish.relative_text(text, names)) == {
        "data": "folder:out/emoji64",
        "small": "folder:out/emoji64-c100/test",
        "model": "saved_models/m",
        "runs": "out/t3/runs-s0",
        "seed": "out/r/seed-0/results.json",
        "said": "read out/emoji64.",
    }
