"""Ablation (Table 3) and the Sec. 4.1 first-layer comparison: variant syntax, parameter counts
against hand counts, the runner on a tiny model (numbers recomputed by hand, reruns not retrained),
and ``zf ablate``.

Hand counts: a conv layer has k*k*c_in*c_out + c_out weights, a dense layer n_in*n_out + n_out; the
fc6 input is side*side*c_last with the last map side worked out by hand below for each geometry.
"""

import json
import os

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from train_helpers import TINY_UNITS, tiny_config, write_small_idx

from pipelines.commands.ablate import ablate
from zfkeras import data
from zfkeras.experiments.ablation import Variant, default_variants, parse_variant, run_ablation, sample_source, trainable_params
from zfkeras.nn.models import build_model
from zfkeras.training import TrainConfig


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_small_idx(str(tmp_path_factory.mktemp("idx")), n_train=160, n_test=48)


# ---- variant syntax ---------------------------------------------------------------------------


def test_parse_variant_forms():
    assert parse_variant("base") == Variant("base")
    assert parse_variant("without=3,4") == Variant("without=3,4", without=(3, 4))
    assert parse_variant("without=conv3,conv4,fc6, fc7").without == (3, 4, 6, 7)
    wide = parse_variant("units=conv3=192,conv4=192")
    assert wide.units == {"conv3": 192, "conv4": 192} and wide.without == ()
    coarse = parse_variant("name=big first;conv1=kernel:7,stride:2,padding:same")
    assert coarse.name == "big first" and coarse.convs == {"conv1": {"kernel": 7, "stride": 2, "padding": "same"}}
    both = parse_variant("without=6;units=fc7=8")
    assert (both.without, both.units, both.name) == ((6,), {"fc7": 8}, "without=6;units=fc7=8")
    assert parse_variant(both.text) == both  # text round-trips


@pytest.mark.parametrize(
    "text, named",
    [
        ("without=9", "'9' is not a layer"),
        ("without=fc5", "'fc5' is not a layer"),
        ("units=conv3", "LAYER=UNITS"),
        ("units=conv3=0", "positive int"),
        ("conv1=kernal:7", "unknown conv field 'kernal'"),
        ("conv1=stride:two", "needs an int"),
        ("wider", "has no '='"),
        ("depth=3", "unknown clause 'depth'"),
        ("name=only a label", "no change given"),
    ],
)
def test_parse_variant_errors_name_the_text(text, named):
    with pytest.raises(ValueError) as error:
        parse_variant(text)
    message = str(error.value)
    assert "\n" not in message and f"variant {text!r}" in message and named in message


def test_apply_drops_widths_of_removed_layers_and_names_bad_variants():
    base = tiny_config()
    config = Variant("v", without=(3, 4, 6)).apply(base)
    assert config.without == (3, 4, 6) and "conv3" not in config.units and "fc6" not in config.units
    assert config.units["conv5"] == TINY_UNITS["conv5"] and base.units == TINY_UNITS  # base untouched
    with pytest.raises(ValueError, match=r"^variant 'bad': conv3: that layer is removed"):
        Variant("bad", without=(3,), units={"conv3": 8}).apply(base)
    with pytest.raises(ValueError, match=r"^variant 'huge': .*shrink to nothing"):
        Variant("huge", convs={"conv1": {"kernel": 3, "stride": 16}}).apply(base)


# ---- parameter counts against hand counts ----------------------------------------------------


def conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def dense(n_in, n_out):
    return n_in * n_out + n_out


def hand_count(convs, fc, side, channels, classes):
    """``convs``: [(kernel, filters)] of the layers present; ``fc``: units of fc6/fc7 present;
    ``side``: the last conv block's map side; ``channels``: input channels."""
    total, c_in = 0, channels
    for k, c_out in convs:
        total, c_in = total + conv(k, c_in, c_out), c_out
    n_in = side * side * c_in
    for units in fc:
        total, n_in = total + dense(n_in, units), units
    return total + dense(n_in, classes)


def small_expected(u):
    """zfnet_small at 28x28x1, 10 classes, widths ``u``. Map sides: 3x3/1 "same" conv1 keeps 28,
    pools "same" 28 -> 14 -> 7, pool5 "valid" 7 -> 3; conv1 7x7/2 "same": 28 -> 14 -> 7 -> 4 -> 1."""
    c1, c2, c3, c4, c5, f6, f7 = (u[k] for k in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"))
    return {
        "base": hand_count([(3, c1), (3, c2), (3, c3), (3, c4), (3, c5)], [f6, f7], 3, 1, 10),
        "without fc6,fc7": hand_count([(3, c1), (3, c2), (3, c3), (3, c4), (3, c5)], [], 3, 1, 10),
        "without conv3,conv4": hand_count([(3, c1), (3, c2), (3, c5)], [f6, f7], 3, 1, 10),
        "without conv3,conv4,fc6,fc7": hand_count([(3, c1), (3, c2), (3, c5)], [], 3, 1, 10),
        f"wider conv3-5 ({2 * c3},{2 * c4},{2 * c5})": hand_count([(3, c1), (3, c2), (3, 2 * c3), (3, 2 * c4), (3, 2 * c5)], [f6, f7], 3, 1, 10),
        f"narrower fc6,fc7 ({f6 // 2},{f7 // 2})": hand_count([(3, c1), (3, c2), (3, c3), (3, c4), (3, c5)], [f6 // 2, f7 // 2], 3, 1, 10),
        "conv1 7x7/2": hand_count([(7, c1), (3, c2), (3, c3), (3, c4), (3, c5)], [f6, f7], 1, 1, 10),
    }


def zfnet_expected(u, classes):
    """zfnet at 224x224x3. Base sides (Fig. 3): 110 -> 55 -> 26 -> 13 -> 6. conv1 11x11/4 on the
    1-pixel border: (226 - 11) // 4 + 1 = 54 -> pool "same" 27 -> conv2 5x5/2 (27 - 5) // 2 + 1 = 12
    -> pool "same" 6 -> conv3-5 6 -> pool5 "valid" (6 - 3) // 2 + 1 = 2."""
    c1, c2, c3, c4, c5, f6, f7 = (u[k] for k in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"))
    layers = [(7, c1), (5, c2), (3, c3), (3, c4), (3, c5)]
    return {
        "base": hand_count(layers, [f6, f7], 6, 3, classes),
        "without fc6,fc7": hand_count(layers, [], 6, 3, classes),
        "without conv3,conv4": hand_count([(7, c1), (5, c2), (3, c5)], [f6, f7], 6, 3, classes),
        "without conv3,conv4,fc6,fc7": hand_count([(7, c1), (5, c2), (3, c5)], [], 6, 3, classes),
        f"wider conv3-5 ({2 * c3},{2 * c4},{2 * c5})": hand_count([(7, c1), (5, c2), (3, 2 * c3), (3, 2 * c4), (3, 2 * c5)], [f6, f7], 6, 3, classes),
        f"narrower fc6,fc7 ({f6 // 2},{f7 // 2})": hand_count(layers, [f6 // 2, f7 // 2], 6, 3, classes),
        "conv1 11x11/4": hand_count([(11, c1)] + layers[1:], [f6, f7], 2, 3, classes),
    }


def variant_counts(base):
    variants = default_variants(base.model_spec())
    return {v.name: trainable_params(build_model(v.apply(base).model_spec())) for v in variants}


def test_default_variants_of_zfnet_small_match_hand_counts():
    base = tiny_config(units={**TINY_UNITS, "fc6": 17, "fc7": 13})  # odd widths: halving rounds down
    assert variant_counts(base) == small_expected(base.units)
    keras.backend.clear_session()
    full = TrainConfig(arch="zfnet_small")
    assert variant_counts(full) == small_expected({"conv1": 32, "conv2": 64, "conv3": 96, "conv4": 96, "conv5": 64, "fc6": 256, "fc7": 256})


def test_default_variants_of_zfnet_224_match_hand_counts():
    units = {"conv1": 3, "conv2": 5, "conv3": 4, "conv4": 6, "conv5": 3, "fc6": 10, "fc7": 8}
    base = TrainConfig(arch="zfnet", input_shape=(224, 224, 3), num_classes=7, units=units)
    assert variant_counts(base) == zfnet_expected(units, 7)
    # The paper's widths: the base is Fig. 3's 62.4M-parameter ZFNet, and its AlexNet-like
    # first layer still leaves valid maps at 224.
    keras.backend.clear_session()
    paper = {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256, "fc6": 4096, "fc7": 4096}
    full = TrainConfig(arch="zfnet", input_shape=(224, 224, 3), num_classes=1000)
    expected = zfnet_expected(paper, 1000)
    assert expected["base"] == 62_357_608
    for variant in (Variant("base"), default_variants(full.model_spec())[-1]):
        assert trainable_params(build_model(variant.apply(full).model_spec())) == expected[variant.name]
        keras.backend.clear_session()


# ---- data subset and the runner ----------------------------------------------------------------


def test_sample_source_is_a_seeded_random_subset(idx_dir):
    source = data.load_source(f"idx:{idx_dir}", "train")
    every = [(image, int(label)) for image, label in source.dataset.as_numpy_iterator()]
    subset = sample_source(source, 40, seed=5)
    chosen = [(image, int(label)) for image, label in subset.dataset.as_numpy_iterator()]
    expected = np.sort(np.random.default_rng(5).permutation(len(every))[:40])
    assert subset.num_examples == 40 and len(chosen) == 40
    for (image, label), index in zip(chosen, expected):
        assert np.array_equal(image, every[index][0]) and label == every[index][1]
    assert list(expected) != list(range(40))  # not the first 40
    assert sample_source(source, 1000, seed=5) is source


class Counter(keras.callbacks.Callback):
    def __init__(self, counts, name):
        super().__init__()
        self.counts, self.name = counts, name

    def on_epoch_end(self, epoch, logs=None):
        self.counts[self.name] = self.counts.get(self.name, 0) + 1


def hand_top1_error(model, source):
    """Top-1 error of ``model`` on the centre crops of ``source``, by argmax and counting."""
    wrong = total = 0
    for images, labels in data.eval_dataset(source, 28, 1, 64, cache=False).as_numpy_iterator():
        wrong += int(np.sum(np.argmax(model.predict(images, verbose=0), axis=1) != labels))
        total += len(labels)
    return wrong / total


def test_runner_trains_reports_and_skips_finished_variants(idx_dir, tmp_path):
    train_source = data.load_source(f"idx:{idx_dir}", "train")
    test_source = data.load_source(f"idx:{idx_dir}", "test")
    base = tiny_config(epochs=2, checkpoint_epochs=(2,))
    variants = [Variant("base"), parse_variant("without=3,4"), parse_variant("name=coarse;conv1=kernel:5,stride:2")]
    counts, stages = {}, []
    runs = str(tmp_path / "runs")

    def run():
        return run_ablation(
            base,
            variants,
            train_source,
            test_source,
            runs,
            diagnose_images=20,
            callbacks=lambda v: [Counter(counts, v.name)],
            on_variant=lambda i, v, s: stages.append((v.name, s)),
        )

    results = run()
    assert counts == {"base": 2, "without=3,4": 2, "coarse": 2} and not any(r.reused for r in results)
    assert [r.run_dir for r in results] == [os.path.join(runs, name) for name in ("base", "without-3-4", "coarse")]
    for result in results:
        model = keras.saving.load_model(os.path.join(result.run_dir, "model.keras"), compile=False)
        assert result.params == trainable_params(model) and result.epochs == 2
        assert result.test_top1_error == pytest.approx(hand_top1_error(model, test_source), abs=1e-9)
        errors = [result.train_top1_error, result.val_top1_error, result.val_top5_error, result.test_top1_error]
        assert all(0 <= e <= 1 for e in errors) and result.val_top5_error <= result.val_top1_error
    assert results[1].params < results[0].params
    # first-layer diagnostics: the base (3x3/1: aliasing 0 by definition) and the conv1 variant only
    assert results[1].first_layer is None
    base_layer, coarse_layer = results[0].first_layer, results[2].first_layer
    assert base_layer.stride == 1 and base_layer.images == 20 and base_layer.aliasing_share in (0.0, None)
    assert coarse_layer.stride == 2 and coarse_layer.kernel.shape == (5, 5, 1, TINY_UNITS["conv1"])
    assert len(coarse_layer.maps) == TINY_UNITS["conv2"]
    assert ("coarse", "diagnose") in stages and ("without=3,4", "diagnose") not in stages

    mtimes = [os.path.getmtime(os.path.join(r.run_dir, "model.keras")) for r in results]
    counts.clear()
    again = run()
    assert counts == {} and all(r.reused for r in again)  # nothing retrained
    assert mtimes == [os.path.getmtime(os.path.join(r.run_dir, "model.keras")) for r in again]
    for first, second in zip(results, again):
        assert (first.test_top1_error, first.val_top1_error, first.train_top1_error) == (
            second.test_top1_error,
            second.val_top1_error,
            second.train_top1_error,
        )

    with pytest.raises(ValueError, match="holds a finished run with epochs=2, not 3"):
        run_ablation(base.replace(epochs=3), variants[:1], train_source, test_source, runs)
    with pytest.raises(ValueError, match="two variants share the name 'base'"):
        run_ablation(base, [Variant("base"), Variant("Base")], train_source, test_source, runs)


# ---- zf ablate ----------------------------------------------------------------------------------

TINY = ",".join(f"{k}={v}" for k, v in TINY_UNITS.items())


def test_cli_writes_outputs(idx_dir, tmp_path):
    out = tmp_path / "out"
    args = [
        "--data",
        f"idx:{idx_dir}",
        "--epochs",
        "1",
        "--images",
        "100",
        "--units",
        TINY,
        "--kernel-init",
        "he_normal",
        "--variant",
        "without=6,7",
        "--variant",
        "name=coarse;conv1=kernel:5,stride:2",
        "--diagnose-images",
        "16",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(ablate, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    names = [row["variant"]["name"] for row in record["variants"]]
    assert names == ["base", "without=6,7", "coarse"] and record["train_images"] == 100
    assert (tmp_path / "out-runs" / "base" / "model.keras").exists()  # runs beside --out, not inside
    table = (out / "table.txt").read_text()
    assert all(name in table for name in names) and "Sec. 4.1" in table
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("variant,changes,params")
    for name in ("figure.png", "first_layer.png"):
        assert (out / name).stat().st_size > 1000
    # a rerun reuses every run and writes the same numbers
    again = CliRunner().invoke(ablate, args, catch_exceptions=False)
    assert again.exit_code == 0 and again.output.count("reuse") == 3
    rerun = json.loads((out / "results.json").read_text())
    assert [r["test_top1_error"] for r in rerun["variants"]] == [r["test_top1_error"] for r in record["variants"]]


@pytest.mark.parametrize("variant", ["without=9", "conv1=kernal:7", "units=conv3"])
def test_cli_bad_variant_is_one_line(variant, tmp_path):
    result = CliRunner().invoke(ablate, ["--variant", variant, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and f"variant {variant!r}" in lines[0] and "--variant" in lines[0]
