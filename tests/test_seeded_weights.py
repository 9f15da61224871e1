"""``--weights none`` builds random weights, so every command that takes it takes ``--seed``: two
runs with the same seed give identical outputs, another seed other ones (issue 24). The model is
a VGG16 at 32x32 (Keras' application, random weights: nothing to download); the commands whose
only randomness this is are run twice each, in-process (the seed must reset every random state the
first run left behind): occlusion and invariance (their results), and export (its weights, against
those the same seed builds in the test). zf evaluate
opens MODEL the same way (pipelines.loading.open_model), but its only outputs, error rates of a
random 1000-class model, are 100% whatever the weights: it is covered by export's check."""

import json

import keras
import numpy as np
from click.testing import CliRunner

from pipelines.cli import main

MODEL = "keras:vgg16@32x32"


def zf(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def npz(path):
    with np.load(path) as found:
        return {key: found[key] for key in found.files}


def same(first, second):
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def occlusion(out, seed):
    zf("occlusion", MODEL, "--weights", "none", "--seed", seed, "chelsea", "--stride", "8", "--out", out)
    return npz(out / "chelsea.npz")


def invariance(out, seed):
    zf("invariance", MODEL, "--weights", "none", "--seed", seed, "chelsea", "--shifts", "0,4", "--scales", "1", "--angles", "0,90", "--out", out)
    found = json.load(open(out / "invariance.json"))
    found.pop("command", None)
    return found


def exported(out, seed):
    zf("export", MODEL, "--weights", "none", "--seed", seed, "--out", out)
    return {f"w{i}": w for i, w in enumerate(keras.saving.load_model(str(out / "model.keras"), compile=False).get_weights())}


def built(seed):
    from zfkeras import open_model

    return {f"w{i}": w for i, w in enumerate(open_model(MODEL, "none", seed=seed).keras_model.get_weights())}


def test_same_seed_same_outputs_other_seed_other_outputs(tmp_path):
    same(occlusion(tmp_path / "o1", 3), occlusion(tmp_path / "o2", 3))
    other = occlusion(tmp_path / "o3", 4)
    assert not np.array_equal(other["feature_activity"], occlusion(tmp_path / "o4", 3)["feature_activity"])

    assert invariance(tmp_path / "i1", 3) == invariance(tmp_path / "i2", 3)

    # One export (they take a minute): its weights are those the same seed builds here, not another seed's.
    weights = exported(tmp_path / "x1", 3)
    same(weights, built(3))
    assert not np.array_equal(weights["w0"], built(4)["w0"])


def test_report_takes_the_weights_its_error_advises():
    # The ImageNet-weights error says "--weights FILE, or --weights none": zf report takes both.
    names = {opt for param in main.get_command(None, "report").params for opt in getattr(param, "opts", [])}
    assert {"--weights", "--seed"} <= names
