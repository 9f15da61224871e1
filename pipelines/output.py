"""What commands write: output locations checked before any work, atomic JSON, figures and the
standard results directory (results.json last), and progress on stderr."""

import contextlib
import json
import os

import click

# The error columns of an evaluation, in the order tables show them (zf evaluate, zf report).
ERROR_COLUMNS = (
    ("top1_error", "top-1"),
    ("top5_error", "top-5"),
    ("ten_crop_top1_error", "top-1 (10 crops)"),
    ("ten_crop_top5_error", "top-5 (10 crops)"),
)


def check_output(path, option="--out", *, directory=True, results=None, written=()):
    """Fail now, before any work, with one line naming ``option`` if ``path`` could not be written
    at the end: a part of it is a file, its folder is not writable, or (``directory=True``) it is
    an existing directory that is not a previous output. ``results``: the file name that marks a
    previous output of the command; ``written``: file endings of an older output without it (an
    existing non-empty directory with neither is left alone). Leftovers of killed runs writing
    ``path`` are removed."""
    target = os.path.abspath(path)

    def fail(reason):
        raise click.BadParameter(f"cannot write {path}: {reason}", param_hint=option)

    existing = target
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if existing == target:
        if directory and not os.path.isdir(target):
            fail("it exists and is not a directory")
        if not directory and os.path.isdir(target):
            fail("it is a directory; give a file name")
        entries = os.listdir(target) if directory else []
        earlier = not entries or results in entries or (written and all(e.endswith(tuple(written)) for e in entries))
        if directory and results and not earlier:
            fail(f"it is a non-empty directory that is not an earlier output (no {results}); choose another path or remove it")
        existing = os.path.dirname(target)
    elif not os.path.isdir(existing):
        fail(f"{existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"no permission to write in {existing}")
    from zfkeras.io.atomic import clean_stale

    clean_stale(target)
    return path


def write_json(path, obj):
    """``obj`` as JSON in ``path``, written atomically (:func:`zfkeras.io.atomic.write_json`), lists
    of plain values on one line (:func:`json_text`)."""
    from zfkeras.io.atomic import write_json as write

    write(path, obj, text=json_text(obj))


def save_figure(figure, path, dpi=100):
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    from zfkeras.io.atomic import atomic_output

    with atomic_output(path) as temp:
        figure.savefig(temp, dpi=dpi, format=os.path.splitext(path)[1][1:] or "png", bbox_inches="tight")
    plt.close(figure)


def progressbar(*args, **kwargs):
    """click.progressbar on stderr, so stdout stays clean for scripts."""
    import sys

    return click.progressbar(*args, file=sys.stderr, **kwargs)


@contextlib.contextmanager
def percent_progress(label):
    """A 0-100% progress bar on stderr for library calls that report ``progress(done, total)``;
    yields that callback."""
    with progressbar(length=100, label=label) as bar:
        yield lambda done, total: bar.update(int(100 * done / total) - bar.pos)


def json_text(value, indent=0):
    """JSON indented like ``json.dumps(indent=2)``, but a list of plain values (numbers, strings)
    stays on one line, so image-index lists stay readable and small."""
    pad = " " * (indent + 2)
    if isinstance(value, dict) and value:
        items = (f"{pad}{json.dumps(str(key))}: {json_text(item, indent + 2)}" for key, item in value.items())
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, (list, tuple)) and value and any(isinstance(item, (dict, list, tuple)) for item in value):
        return "[\n" + ",\n".join(pad + json_text(item, indent + 2) for item in value) + "\n" + " " * indent + "]"
    return json.dumps(value)


def write_results(out, results, table, csv_rows, figure=None, files=None):
    """Write a command's standard outputs to the directory ``out`` at once: ``results.json``,
    ``results.csv`` (``csv_rows``: a header row then rows), ``table.txt`` and ``figure.png``
    (a matplotlib figure, or None), plus ``files`` ``{name: bytes}``. The directory is built
    beside ``out`` and swapped in whole, ``results.json`` written last; an old ``out`` is replaced."""
    import csv
    import io

    import matplotlib.pyplot as plt

    from zfkeras.io.atomic import atomic_output

    with atomic_output(out, directory=True) as temp:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(csv_rows)
        with open(os.path.join(temp, "results.csv"), "w") as handle:
            handle.write(buffer.getvalue())
        with open(os.path.join(temp, "table.txt"), "w") as handle:
            handle.write(table.rstrip("\n") + "\n")
        for name, content in (files or {}).items():
            with open(os.path.join(temp, name), "wb") as handle:
                handle.write(content)
        if figure is not None:
            figure.savefig(os.path.join(temp, "figure.png"), dpi=100, bbox_inches="tight")
            plt.close(figure)
        with open(os.path.join(temp, "results.json"), "w") as handle:
            handle.write(json_text(results) + "\n")


def command_text(ctx, name, *arguments):
    """``zf NAME ARGUMENTS...`` with the options given on the command line of the running command
    ``ctx`` (defaults left out), quoted for a shell."""
    import shlex

    words = ["zf", name, *map(str, arguments)]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name not in ctx.params or ctx.get_parameter_source(param.name).name != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            words.append(param.opts[0] if value or not param.secondary_opts else param.secondary_opts[0])
        elif param.multiple:
            for item in value:
                words += [param.opts[0], str(item)]
        elif callable(value):  # a converted selection (--maps) keeps its text
            words += [param.opts[0], str(getattr(value, "text", value))]
        else:
            words += [param.opts[0], ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return shlex.join(words)


def percent(mean, std):
    """``"86.5 ± 0.5"`` from fractions."""
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def figure_bytes(figure, dpi=100):
    """A matplotlib figure as PNG bytes (for ``write_results(files=...)``), the figure closed."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def evaluated(probes, source, crops="ten", batch_size=100):
    """:func:`zfkeras.analysis.evaluate.evaluate_source` of ``probes`` on ``source``, with a progress bar."""
    from zfkeras.analysis.evaluate import evaluate_source

    with progressbar(length=source.num_examples or 0, label="evaluating") as bar:
        return evaluate_source(probes, source, crops=crops, batch_size=batch_size, on_batch=bar.update)
