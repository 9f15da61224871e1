"""Docs that cannot rot (issue 24): every shell command printed in README.md and docs/*.md parses,
most of them run, and the README's measured numbers come from a results file.

- Every ``zf ...`` line of every shell block goes through Click's parser with its arguments as
  printed (``make_context``: unknown options, bad values and missing arguments fail here).
- The blocks are then run top to bottom, page by page, in a temporary directory that holds only
  links to ``saved_models/`` and ``docs/examples``, ``docs/figures`` (what the commands read), in a
  shortened form: the substitutions of :data:`SHORTER`, applied here for all to see, never by
  editing the docs. Commands that need data not available offline, install things, serve until
  Ctrl-C or take too long are listed in :data:`SKIPPED` with the reason (an entry that matches no
  command fails the test, so the list cannot go stale either).
- No printed command writes into tracked files: ``--out``, ``--export`` and ``--runs`` go under
  ``out/`` or ``runs/`` (``make figures``, docs/regenerate_figures.sh, is what rewrites
  ``docs/figures``); regenerate_figures.sh's own ``zf`` lines parse too.
- Every measured number of the README (a percentage or a decimal, versions aside) is found in a
  results file of ``docs/figures`` or an export's ``zfkeras.json``, as written.
"""

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from pipelines.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", ""}

# The shortening of the commands that are run (a few minutes in all on 2 cores): (pattern, replacement).
SHORTER = [
    (r"--epochs \d+", "--epochs 1"),
    (r"--scratch-epochs \d+", "--scratch-epochs 1"),
    (r"--checkpoint-epochs [\d,]+", "--checkpoint-epochs 1"),
    (r"--images \d+", "--images 16"),
    (r"--per-class [\d,]+", "--per-class 2"),
    (r"--folds \d+", "--folds 2"),
    (r"--stride 32", "--stride 112"),
]
# Commands reading a whole data set without --images get one (the first N images of the split).
IMAGES_ADDED = "--images 16"

# Commands not run, with the reason: (page, text the command contains, reason). They still parse.
SKIPPED = [
    ("README.md", "pip install", "installs the package this test runs in"),
    ("README.md", "make setup", "installs the package this test runs in"),
    ("README.md", "make demo", "the demo's steps are the commands of docs/cli.md, run by tests/test_cli_convention.py and the commands' tests"),
    ("README.md", "make test", "the test suite this test is part of"),
    ("testing.md", "make test", "the test suite this test is part of"),
    ("testing.md", "/tmp/gpu-venv", "installs TensorFlow into a new virtual environment (tests/test_install.py checks the rule)"),
    ("testing.md", "python3 -m venv", "installs TensorFlow into a new virtual environment (tests/test_install.py checks the rule)"),
    ("atlas.md", "zf atlas MODEL --data SOURCE", "a template: MODEL and SOURCE are placeholders"),
    ("atlas.md", "TF_CONFIG=", "needs two machines (tests/test_atlas_distributed.py runs two workers)"),
    ("benchmarks.md", "zf train", "the benchmark's two 5-epoch trainings (python -m benchmarks --smoke covers the benchmark)"),
    ("toolbox.md", "zf toolbox", "serves until Ctrl-C (tests/test_toolbox.py drives it in a browser)"),
    ("data-and-training.md", "apt-get install", "installs a Debian package"),
    (
        "data-and-training.md",
        "tuxpaint_folder.py",
        "the Tux Paint run trains the 62M-parameter ZFNet at 224: tests/test_real_size.py is its CI-sized version",
    ),
    (
        "data-and-training.md",
        "out/tuxpaint",
        "the Tux Paint run trains the 62M-parameter ZFNet at 224: tests/test_real_size.py is its CI-sized version",
    ),
    (
        "models-and-export.md",
        "keras:resnet50",
        "ResNet50 at 224 takes minutes here; tests/test_applications.py runs these commands on ResNet50 at 64x64",
    ),
    ("reproduction.md", "make reproduce", "the Emoji-64 reproduction: 7.6 h of wall time here (docs/reproduce_emoji64.sh)"),
    ("reproduction.md", "reproduce_emoji64.sh", "steps of the Emoji-64 reproduction: hours, and its data set built first"),
    ("experiments.md", "zf ablate", "trains every Table 3 variant (tests/test_ablation.py runs it on a small budget)"),
]


def shell_blocks(page):
    """``[(line number, text)]`` of the shell blocks of ``page`` (fenced, bash/sh/console or no
    language when its first line is a command)."""
    found = []
    text = page.read_text()
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        language, body = match[1], match[2]
        first = next((line for line in body.splitlines() if line.strip() and not line.startswith("#")), "")
        if language in SHELL_LANGUAGES and (language or re.match(r"(zf|python3?|pip|make|apt-get|TF_CONFIG=)\b", first)):
            found.append((text[: match.start()].count("\n") + 2, body))
    return found


def commands(block):
    """The commands of a block: continuation lines joined, comments and ``for`` loops' syntax
    dropped, ``$VAR`` of a loop set to its first value, leading ``NAME=value`` kept."""
    lines, loop, pending = [], {}, ""
    for line in block.replace("\\\n", " ").splitlines():
        pending += line + "\n"
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quoted string goes on (python -c "...")
            continue
        pending = ""
        if not words or words[0] in ("do", "done"):
            continue
        loop_match = re.match(r"for (\w+) in (\S+)", " ".join(words))
        if loop_match:
            loop[loop_match[1]] = loop_match[2]
            continue
        lines.append([re.sub(r"\$(\w+)", lambda m: loop.get(m[1], m[0]), word) for word in words])
    return lines


def all_commands():
    """``[(page name, line, words)]`` of every shell command in the docs, in reading order."""
    return [(page.name, line, words) for page in PAGES for line, block in shell_blocks(page) for words in commands(block)]


def zf_words(words):
    """The words after ``zf`` (environment assignments before it dropped), or None."""
    while words and re.match(r"\w+=", words[0]):
        words = words[1:]
    return words[1:] if words and words[0] == "zf" else None


def skip_reason(page, words):
    line = shlex.join(words)
    return next((reason for name, text, reason in SKIPPED if name == page and text in line), None)


def parse(words):
    """Click's parse of ``zf WORDS`` (types and callbacks included), raising click.UsageError."""
    name, *args = words
    command = main.get_command(None, name)
    if command is None:
        raise click.UsageError(f"no zf command {name!r}")
    with click.Context(main, info_name="zf") as parent:
        command.make_context(name, list(args), parent=parent)


def test_every_zf_line_of_the_docs_parses():
    found = [(page, line, zf_words(words)) for page, line, words in all_commands() if zf_words(words) is not None]
    assert len(found) >= 25, found  # the blocks are found at all
    failures = []
    for page, line, words in found:
        try:
            parse(words)
        except click.ClickException as error:
            failures.append(f"{page}:{line}: zf {shlex.join(words)}: {error.format_message()}")
    assert not failures, "\n".join(failures)


def test_the_parse_catches_what_rots():
    with pytest.raises(click.UsageError, match="No such option '--bogus'"):
        parse(["occlusion", "MODEL", "chelsea", "--bogus"])
    with pytest.raises(click.BadParameter, match="0 is not in the range"):
        parse(["train", "--epochs", "0", "--out", "out/x"])
    with pytest.raises(click.UsageError, match="no zf command"):
        parse(["vizualize", "MODEL"])
    block = "for p in a b; do\n  zf x --precision $p \\\n    --out 'out/y z'  # note\ndone\npython -c \"\nprint(1)\"\n"
    assert commands(block) == [["zf", "x", "--precision", "a", "--out", "out/y z"], ["python", "-c", "\nprint(1)"]]
    assert shortened(["zf", "train", "--data", "fashion_mnist", "--epochs", "30", "--out", "out/r"]) == [
        "zf",
        "train",
        "--data",
        "fashion_mnist",
        "--epochs",
        "1",
        "--out",
        "out/r",
        "--images",
        "16",
    ]


def figures_script_zf_lines():
    script = (ROOT / "docs" / "regenerate_figures.sh").read_text()
    values = dict(re.findall(r"^(\w+)=(\S+)$", script, re.M))
    lines = []
    for words in commands(script):
        words = [re.sub(r"\$\{?(\w+)(:-[^}]*)?\}?", lambda m: "zf" if m[1] == "ZF" else values.get(m[1], m[0]), w) for w in words]
        if words[0] == "zf":
            lines.append(words[1:])
    return lines


def test_the_figures_script_parses_and_the_docs_write_only_under_out():
    lines = figures_script_zf_lines()
    assert len(lines) >= 10
    for words in lines:
        parse(words)
    wrong = []
    for page, line, words in all_commands():
        for option, value in zip(words, words[1:]):
            if option in ("--out", "--export", "--runs") and not re.match(r"(out|runs)/", value):
                wrong.append(f"{page}:{line}: {option} {value}")
    assert not wrong, "examples must write under out/ or runs/ (make figures rewrites docs/figures):\n" + "\n".join(wrong)


def test_every_skip_is_used():
    used = {(name, text) for name, text, _ in SKIPPED if any(page == name and text in shlex.join(w) for page, _, w in all_commands())}
    assert used == {(name, text) for name, text, _ in SKIPPED}


def shortened(words):
    line = shlex.join(words)
    for pattern, replacement in SHORTER:
        line = re.sub(pattern, replacement, line)
    words = shlex.split(line)
    if zf_words(words) and "--data" in words and "--images" not in words:
        words += IMAGES_ADDED.split()
    return words


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh directory as the repository's root looks to the commands: links to what they read."""
    (tmp_path / "docs").mkdir()
    for part in ("saved_models", "docs/examples", "docs/figures"):
        os.symlink(ROOT / part, tmp_path / part)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(words, page, line):
    where = f"{page}:{line}: {shlex.join(words)}"
    print(where, flush=True)
    args = zf_words(words)
    if args is not None:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, f"{where}\n{result.output}"
        return
    if words[0] in ("python", "python3"):
        words = [sys.executable, *words[1:]]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(words, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{where}\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("page", [page.name for page in PAGES if shell_blocks(page)])
def test_the_commands_of_each_page_run_shortened(page, workdir):
    ran = 0
    for name, line, words in all_commands():
        if name != page or skip_reason(name, words):
            continue
        run(shortened(words), name, line)
        ran += 1
    if ran == 0:
        pytest.skip(f"every command of {page} is in SKIPPED")


# ---- the README's numbers ------------------------------------------------------------------------


def measured_numbers(text):
    """The README's measured numbers: percentages and decimals outside code blocks and links,
    versions (``Python 3.11``, ``>= 2.21``) left out."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    prose = re.sub(r"\]\([^)]*\)", "]", prose)
    numbers = []
    for match in re.finditer(r"(?<![\w./-])(\d[\d,]*\.\d+%?|\d[\d,]*%)", prose):
        before = prose[max(0, match.start() - 8) : match.start()]
        if re.search(r"(Python|>=|TensorFlow) ?$", before):
            continue
        numbers.append(match[1])
    return numbers


def json_numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from json_numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_numbers(item)


def recorded_numbers():
    files = [*(ROOT / "docs" / "figures").rglob("*.json"), *(ROOT / "saved_models").glob("*/zfkeras.json")]
    return {str(path.relative_to(ROOT)): list(json_numbers(json.loads(path.read_text()))) for path in files}


def matches(printed, value):
    """``printed`` ("92.20%", "0.880", "1,616") is ``value`` as written: a fraction as a percentage
    (or its complement: an error printed as an accuracy), rounded to the printed decimals."""
    text = printed.replace(",", "")
    decimals = len(text.rstrip("%").split(".")[1]) if "." in text else 0
    number = float(text.rstrip("%"))
    if text.endswith("%"):
        return any(round(100 * v, decimals) == number for v in (value, 1 - value))
    return round(value, decimals) == number


def test_the_readme_numbers_come_from_results_files():
    numbers = measured_numbers((ROOT / "README.md").read_text())
    assert "92.20%" in numbers  # the shipped model's accuracy is found
    recorded = recorded_numbers()
    missing = [n for n in numbers if not any(matches(n, v) for values in recorded.values() for v in values)]
    assert not missing, f"README numbers found in no results file (docs/figures/**.json, saved_models/*/zfkeras.json): {missing}"


def test_the_number_check_catches_a_stale_number():
    assert matches("92.20%", 0.078) and matches("92.20%", 0.922) and matches("0.880", 0.88012)
    assert not matches("92.21%", 0.078) and not matches("0.881", 0.88012)
    assert measured_numbers("Python 3.11, TensorFlow >= 2.21: 92.20% top-1 and 0.5 s ([x](a/1.5.md))") == ["92.20%", "0.5"]
