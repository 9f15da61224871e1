"""The rules and faithfulness benchmarks run end to end in their smoke modes (no timing asserted:
speed targets are measured by ``python -m benchmarks``, never in tests)."""

from benchmarks import faithfulness, rules


def test_rules_benchmark_smoke_mode(capsys):
    report = rules.main(["--smoke=1"])
    assert set(report["conv3"]) == {"given", "max"}
    assert set(report["conv3"]["given"]) == {"deconvnet", "guided", "gradient"}
    assert report["conv3"]["given"]["deconvnet"]["ratio_cpu"] == 1.0
    assert "x deconvnet CPU" in capsys.readouterr().out


def test_faithfulness_benchmark_smoke_mode(capsys):
    report = faithfulness.main(["--smoke=1"])
    entry = report["shipped"]
    assert entry["curve_images"] == 2 * 2 * 5
    assert entry["max_abs_difference"] < 1e-5  # batched and one image per predict give the same curves
    assert "batched" in capsys.readouterr().out
