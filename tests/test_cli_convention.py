"""The one CLI convention (README, "CLI convention"), checked on every ``zf`` command's options and
on real runs: MODEL positional, --out a directory, --data/--data-dir/--images wherever data is
read, --seed exactly where there is randomness, help text everywhere, progress and errors on
stderr, errors as one line, and no TensorFlow start-up chatter."""

import os
import subprocess
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner

from pipelines import loading
from pipelines import options as cli_options
from pipelines.cli import main
from pipelines.registry import COMMANDS, HELP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What each command does, written down here independently of the code, so that a command that
# loses (or gains) an option of the convention fails this test.
READS_MODEL = {
    "project",
    "export",
    "evaluate",
    "visualize",
    "evolution",
    "filters",
    "occlusion",
    "invariance",
    "correspondence",
    "transfer",
    "layers",
    "report",
    "localization",
    "sanity",
    "faithfulness",
    "atlas",
    "toolbox",
}
READS_DATA = {
    "demo",
    "train",
    "evaluate",
    "visualize",
    "evolution",
    "filters",
    "transfer",
    "layers",
    "ablate",
    "report",
    "prepare",
    "localization",
    "sanity",
    "faithfulness",
    "atlas",
    "toolbox",
}
RANDOM = {
    "demo",
    "train",
    "project",
    "visualize",
    "evolution",
    "filters",
    "correspondence",
    "transfer",
    "layers",
    "ablate",
    "prepare",
    "emoji",
    "localization",
    "sanity",  # --seed: the new weights
    "faithfulness",  # --seed: the random ranking
    "atlas",
}
# Their only randomness is MODEL keras:NAME --weights none (random weights), seeded by --seed.
RANDOM_WEIGHTS_ONLY = {"export", "evaluate", "occlusion", "invariance", "toolbox"}
PROJECTS = {"visualize", "project", "occlusion", "evolution", "filters", "report", "atlas", "toolbox"}  # take --rule (the backward rule)
DETERMINISTIC = {"findings"}  # no randomness at all (reads no model): no --seed
SERVES = {"toolbox"}  # a web app until Ctrl-C: it writes nothing, so it has no --out
# --precision: the scans' forward passes (float32 by default: exact), and the training step (auto).
PRECISION_SCANS = {"visualize", "occlusion", "evaluate", "atlas"}
TRAINS = {"train", "ablate"}


def command(name):
    return main.get_command(None, name)


def options(name):
    """``{"--name": click.Option}`` of the command's visible options (every alias included)."""
    found = {}
    for param in command(name).params:
        if isinstance(param, click.Option) and not param.hidden:
            for opt in param.opts + param.secondary_opts:
                found[opt] = param
    return found


def arguments(name):
    return [param for param in command(name).params if isinstance(param, click.Argument)]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_follows_the_convention(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert name in HELP and HELP[name]
    found = options(name)
    ctx = click.Context(command(name))

    # MODEL is the first positional argument of every command that reads a model, and no command
    # takes the model as an option or under another name.
    metavars = [param.make_metavar(ctx) for param in arguments(name)]
    if name in READS_MODEL:
        assert metavars and metavars[0].startswith("MODEL"), (name, metavars)
        assert f"{metavars[0]}" in result.output.splitlines()[0]
    else:
        assert not any("MODEL" in m for m in metavars), (name, metavars)
    assert not {"--model", "--run-dir", "--limit", "--arch-model"} & set(found), sorted(found)
    for param in arguments(name)[1:]:
        assert not param.name.startswith("model"), (name, param.name)

    # --out is a directory everywhere (a server writes nothing).
    assert ("--out" in found) == (name not in SERVES), name
    if name not in SERVES:
        out = found["--out"]
        assert isinstance(out.type, click.Path) and not out.type.file_okay and out.type.dir_okay, name
        assert out.metavar == "DIR", name

    # Data: --data SOURCE, --data-dir and --images N go together, on exactly the commands that read data.
    if name in READS_DATA:
        assert {"--data", "--data-dir", "--images"} <= set(found), (name, sorted(found))
        assert isinstance(found["--images"].type, click.IntRange) and found["--images"].type.min == 1
        assert found["--data"].metavar == "SOURCE" and found["--images"].metavar == "N"
    else:
        assert not {"--data", "--data-dir"} & set(found), (name, sorted(found))

    # --seed exactly where there is randomness: random weights (--weights none) wherever a model is
    # read (MODEL keras:NAME), and the commands' own.
    assert ("--weights" in found) == (name in READS_MODEL), name
    assert ("--seed" in found) == (name in RANDOM | READS_MODEL), name
    assert not RANDOM_WEIGHTS_ONLY & RANDOM and RANDOM_WEIGHTS_ONLY <= READS_MODEL
    if name in RANDOM_WEIGHTS_ONLY:
        assert "--weights none" in found["--seed"].help, name

    # --rule deconvnet|guided|gradient on every command that projects, the same choice everywhere.
    assert ("--rule" in found) == (name in PROJECTS), name
    if name in PROJECTS:
        assert list(found["--rule"].type.choices) == list(cli_options.RULES) and found["--rule"].default == "deconvnet"
    # --precision: float32 by default on the scans, auto on training, nowhere else.
    if name in PRECISION_SCANS | TRAINS:
        precision = found["--precision"]
        assert precision.default == ("float32" if name in PRECISION_SCANS else "auto"), name
        assert set(precision.type.choices) - {"auto"} == set(cli_options.PRECISIONS), name
    else:
        assert "--precision" not in found, name

    # A directory is DIR everywhere (not Click's DIRECTORY).
    for opt, param in found.items():
        if isinstance(param.type, click.Path) and not param.type.file_okay:
            assert param.metavar == "DIR", (name, opt)
    assert "DIRECTORY" not in result.output, name

    # --maps is a selection wherever it exists.
    if "--maps" in found:
        assert isinstance(found["--maps"].type, cli_options.MapSelection), name

    # Every option says what it does.
    for opt, param in found.items():
        assert param.help and len(param.help.strip()) > 8, (name, opt)


def test_the_rules_of_the_options_are_the_librarys():
    from zfkeras.nn.adjoint import RULES

    assert cli_options.RULES == RULES


def test_no_command_is_missed():
    assert set(COMMANDS) <= RANDOM | READS_MODEL | DETERMINISTIC  # every command is classified
    assert not DETERMINISTIC & (RANDOM | READS_MODEL)
    listed = CliRunner().invoke(main, ["--help"]).output
    for name in COMMANDS:
        assert f"  {name} " in listed


# ---- the shared pieces, on real runs ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny untrained zfnet_small saved three ways: a .keras file, a run directory holding
    model.keras (with the run's class names), and an IDX data directory."""
    from train_helpers import write_small_idx

    from zfkeras.nn.models import build_model, zfnet_small_spec

    root = tmp_path_factory.mktemp("convention")
    spec = zfnet_small_spec().with_units(conv1=6, conv2=6, conv3=6, conv4=6, conv5=6, fc6=16, fc7=16)
    model = build_model(spec, seed=2)
    model.save(root / "model.keras")
    os.makedirs(root / "run")
    model.save(root / "run" / "model.keras")
    names = [f"class-{i}" for i in range(10)]
    (root / "run" / "config.json").write_text('{"class_names": %s}' % str(names).replace("'", '"'))
    write_small_idx(str(root / "idx"), n_train=16, n_test=12)
    return {"root": root, "file": str(root / "model.keras"), "run": str(root / "run"), "idx": f"idx:{root / 'idx'}", "names": names}


def zf(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_run_directory_is_a_model(tiny, tmp_path):
    # The same weights read from the .keras file and from the run directory give the same errors;
    # the run directory's config.json supplies the class names.
    probe_file = loading.open_model(tiny["file"])
    probe_run = loading.open_model(tiny["run"])
    assert probe_run.class_names == tiny["names"]
    images = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(probe_file.predict(images), probe_run.predict(images))
    by_file = zf("evaluate", tiny["file"], "--data", tiny["idx"], "--crops", "single", "--out", tmp_path / "a")
    by_run = zf("evaluate", tiny["run"], "--data", tiny["idx"], "--crops", "single", "--out", tmp_path / "b")
    assert by_file.exit_code == 0 and by_run.exit_code == 0, by_file.output + by_run.output
    import json

    first, second = (json.load(open(tmp_path / name / "results.json")) for name in ("a", "b"))
    assert list(first["models"].values()) == [second["models"]["run"]]
    assert first["num_images"] == 12


def test_images_limits_the_images_read(tiny, tmp_path):
    import json

    result = zf("evaluate", tiny["file"], "--data", tiny["idx"], "--crops", "single", "--images", "5", "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert json.load(open(tmp_path / "e" / "results.json"))["num_images"] == 5
    result = zf(
        "visualize", tiny["file"], "--data", tiny["idx"], "--layers", "conv1", "--maps", "0", "--k", "2", "--images", "7", "--out", tmp_path / "v"
    )
    assert result.exit_code == 0, result.output
    assert json.load(open(tmp_path / "v" / "summary.json"))["images"] == 7


def test_scans_take_a_precision(tiny, tmp_path):
    from zfkeras.nn.precision import PRECISIONS

    assert cli_options.PRECISIONS == PRECISIONS
    import json

    results = {}
    for precision in ("float32", "mixed_bfloat16"):
        result = zf("evaluate", tiny["file"], "--data", tiny["idx"], "--crops", "single", "--precision", precision, "--out", tmp_path / precision)
        assert result.exit_code == 0, result.output
        (results[precision],) = json.load(open(tmp_path / precision / "results.json"))["models"].values()
    assert abs(results["mixed_bfloat16"]["top5_error"] - results["float32"]["top5_error"]) <= 1 / 12
    result = zf(
        "visualize",
        tiny["file"],
        "--data",
        tiny["idx"],
        "--layers",
        "conv1",
        "--maps",
        "0",
        "--k",
        "2",
        "--precision",
        "bf16",
        "--out",
        tmp_path / "v",
    )
    assert result.exit_code == 2 and "--precision" in result.stderr and "'bf16' is not one of" in result.stderr


def test_progress_on_stderr_and_results_on_stdout(tiny, tmp_path):
    result = zf("occlusion", tiny["file"], "chelsea", "--stride", "7", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "occluding" in result.stderr and "occluding" not in result.stdout
    assert "chelsea: p(" in result.stdout
    result = zf("invariance", tiny["file"], "chelsea", "--shifts", "0,2", "--scales", "1", "--angles", "0,90", "--out", tmp_path / "i")
    assert result.exit_code == 0, result.output
    assert "transforming" in result.stderr and "transforming" not in result.stdout


@pytest.mark.parametrize(
    "args, option, message",
    [
        (["invariance", "{file}", "chelsea", "--shifts", "0,x,2"], "--shifts", "'x' in '0,x,2'"),
        (["visualize", "{file}", "--data", "{idx}", "--maps", "some"], "--maps", "'some': use 'all'"),
        (["visualize", "{file}", "--data", "{idx}", "--layers", "conv1,conv9"], "--layers", "unknown layer 'conv9'"),
        (["visualize", "{file}", "--data", "{idx}", "--maps", "0,99", "--layers", "conv2"], "--maps", "map 99 does not exist in conv2"),
        (["occlusion", "{file}", "chelsea", "--layer", "fc9"], "--layer", "unknown layer 'fc9'"),
        (["project", "random:vgg", "chelsea"], "MODEL", "use random:ARCH"),
        (["evaluate", "{run}/config.json", "--data", "{idx}"], "MODEL", "MODEL must be a SavedModel directory"),
    ],
)
def test_errors_are_one_line_on_stderr_naming_the_option(tiny, tmp_path, args, option, message):
    args = [a.format(**tiny) for a in args] + ["--out", str(tmp_path / "out")]
    result = zf(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert option in lines[-1] and message in lines[-1], lines
    assert "Traceback" not in result.output
    assert not os.path.exists(tmp_path / "out")


def test_train_takes_out_and_still_accepts_run_dir(tiny, tmp_path):
    tiny_train = [
        "train",
        "--arch",
        "zfnet_small",
        "--units",
        "conv1=4,conv2=4,conv3=4,conv4=4,conv5=4,fc6=8,fc7=8",
        "--batch-size",
        "8",
        "--log-projections",
        "0",
        "--no-progress",
        "--val-split",
        "0",
        "--epochs",
        "1",
        "--checkpoint-epochs",
        "1",
        "--data",
        tiny["idx"],
        "--images",
        "8",
    ]
    result = zf(*tiny_train, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    import json

    record = json.load(open(tmp_path / "run" / "config.json"))
    assert record["num_train"] == 8  # --images 8 of the 16 training images
    assert " --out " in record["command"] and "--run-dir" not in record["command"]
    result = zf(*tiny_train, "--run-dir", tmp_path / "old")  # the deprecated name still works
    assert result.exit_code == 0, result.output
    assert (tmp_path / "old" / "model.keras").exists()
    result = zf(*tiny_train)
    assert result.exit_code == 2 and "Missing option '--out'" in result.stderr


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder: source of 28x28 grey PNGs, 2 classes of 4 (no train/ and test/: a split is held out)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for label in ("boots", "shirts"):
        (root / label).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / label / f"{i}.png")
    return f"folder:{root}"


# TensorFlow's C++ log lines (E0000/W0000/I0000 ..., absl's notice, the CPU-feature lines) and Keras'
# download notice: none may reach a zf command's output, whatever the source.
CHATTER = ("absl::InitializeLog()", "oneDNN", "cpu_feature_guard", "To enable the following instructions", "cuInit", "NodeDef mentions")


def assert_no_chatter(done):
    import re

    for chatter in CHATTER:
        assert chatter not in done.stderr, done.stderr
    assert not re.search(r"^[EWIF]\d{4} ", done.stderr, re.M), done.stderr
    assert "Downloading data from" not in done.stdout


def run_zf(*args, cwd=ROOT, env=None):
    # A fresh process, as on the command line: TensorFlow is imported by the command itself.
    env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("source", ["idx", "folder", "tfrecord"])
def test_no_tensorflow_log_lines_on_any_source(tiny, photos, tmp_path, source):
    data = {"idx": tiny["idx"], "folder": photos, "tfrecord": f"tfrecord:{tmp_path / 'records'}"}[source]
    if source == "tfrecord":
        done = run_zf("prepare", "--data", photos, "--out", tmp_path / "records", "--shards", "1")
        assert done.returncode == 0, done.stderr
        assert_no_chatter(done)
    done = run_zf("evaluate", tiny["file"], "--data", data, "--crops", "single")
    assert done.returncode == 0, done.stderr
    assert "top-1" in done.stdout
    assert_no_chatter(done)
    if source == "folder":
        done = run_zf(
            "visualize", tiny["file"], "--data", data, "--split", "train", "--layers", "conv1", "--maps", "0", "--k", "1", "--out", tmp_path / "v"
        )
        assert done.returncode == 0, done.stderr
        assert_no_chatter(done)


def test_import_zfkeras_is_quiet():
    # A Python script: TensorFlow's start-up lines (printed twice by TF 2.21) are dropped on import,
    # even without TF_CPP_MIN_LOG_LEVEL.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", "import zfkeras; print('imported')"],
        cwd=ROOT,
        env=dict(env, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0 and done.stdout == "imported\n", done.stderr
    assert done.stderr == ""


def test_a_bad_option_is_one_line_before_tensorflow_loads():
    # Click checks the arguments before TensorFlow is imported (the time is in docs/cli.md; here:
    # the process never imports it), and the error is one line.
    probe = "import sys, runpy; sys.argv = ['zf', 'occlusion', 'MODEL', 'chelsea', '--bogus']\n"
    probe += "try:\n    runpy.run_module('pipelines.cli', run_name='__main__')\nexcept SystemExit as e:\n"
    probe += "    print(e.code, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False", "False"], done.stdout + done.stderr
    assert done.stderr == "Error: No such option '--bogus'. Did you mean '--out'?\n"
