"""``zf report``: one HTML page about one model, after the fact (TensorBoard is the live view).

Every section is computed by the library (:mod:`zfkeras.analysis`) or read from the commands' own
JSON outputs (``zf transfer``, ``zf layers``), and drawn by the same figure functions the commands
use (:mod:`pipelines.figures`). The page (``index.html``), its PNGs and ``results.json`` (every
number on the page) are written to one directory, swapped in whole; the page needs no server,
script or network. The sections are in :mod:`.model_sections` and :mod:`.figure_sections`, the
page's HTML in :mod:`.html`.
"""

import json
import os
from functools import partial

import click

from pipelines import loading, options, output, runtime
from pipelines.commands.report import html
from pipelines.commands.report.context import Context
from pipelines.commands.report.figure_sections import correspondence, evolution, filters, invariance, occlusion, visualize
from pipelines.commands.report.model_sections import accuracy, architecture, layers, training, transfer
from pipelines.commands.report.trust_sections import faithfulness, sanity

SECTIONS = (
    "architecture",
    "training",
    "accuracy",
    "visualize",
    "evolution",
    "filters",
    "occlusion",
    "invariance",
    "correspondence",
    "sanity",
    "faithfulness",
    "transfer",
    "layers",
)


SECTION_FUNCTIONS = {
    "architecture": architecture,
    "training": training,
    "accuracy": accuracy,
    "visualize": visualize,
    "evolution": evolution,
    "filters": filters,
    "occlusion": occlusion,
    "invariance": invariance,
    "correspondence": correspondence,
    "sanity": sanity,
    "faithfulness": faithfulness,
    "transfer": transfer,
    "layers": layers,
}


def section_name(text):
    if text not in SECTIONS:
        raise ValueError(text)
    return text


class Steps:
    """One progress bar (stderr) over the report's steps; a step may report its own fraction done."""

    UNITS = 100

    def __init__(self, names):
        self.names, self.position = list(names), 0
        self.bar = output.progressbar(length=self.UNITS * len(self.names), label="report", item_show_func=lambda name: name or "")

    def run(self, index, function):
        start = index * self.UNITS

        def advance(done, total):
            target = start + int(self.UNITS * min(done, total) / max(total, 1))
            if target > self.position:
                self.bar.update(target - self.position, self.names[index])
                self.position = target

        self.bar.update(0, self.names[index])
        result = function(advance)
        advance(1, 1)
        return result


@click.command()
@options.model_argument
@options.data_options
@click.option(
    "--split",
    type=click.Choice(["test", "train"]),
    default="test",
    show_default=True,
    help="Split every section reads (accuracy, scans, example images).",
)
@click.option(
    "--maps",
    default="random:8",
    show_default=True,
    type=options.MapSelection(),
    help="Maps per conv layer for Fig. 2: all, a list like 0,3,7, or random:N (Fig. 4 follows the first 4).",
)
@click.option(
    "--examples",
    default=4,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Images of the split (distinct classes where possible) for occlusion and invariance.",
)
@click.option(
    "--parts",
    "parts_file",
    type=click.Path(dir_okay=False),
    help="Part boxes for Table 1, in zf correspondence's --parts format (e.g. docs/examples/shirt-parts.json).",
)
@click.option(
    "--results",
    "results_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Output directory of zf transfer or zf layers (holding results.json) to show (repeatable).",
)
@click.option(
    "--skip",
    type=options.CommaList(section_name, "section names: " + ", ".join(SECTIONS)),
    default=None,
    help="Comma list of sections to leave out: " + ", ".join(SECTIONS) + ".",
)
@click.option(
    "--atlas",
    "atlas_dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Output directory of zf atlas for this model: each Fig. 2 map links to its unit's page there.",
)
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1), help="Images per forward pass.")
@options.rule_option(help="Backward rule of the projections in Fig. 2, 4, 6 and 7 (sanity and faithfulness compare all three)")
@options.seed_option
@options.out_option
def report(
    model, data_spec, data_dir, skip_corrupt, split, images, maps, examples, parts_file, results_dirs, skip, atlas_dir, batch_size, rule, seed, out
):
    """One self-contained HTML page about MODEL (a SavedModel directory, a run directory or a .keras
    file): what it is, how it was trained, how accurate it is, and the paper's figures on it.

    Writes OUT/index.html (open it in a browser from disk), its PNGs, and OUT/results.json with
    every number on the page (accuracy as in zf evaluate's JSON).
    """
    runtime.seed_everything(seed)
    skip = set(skip or ())
    results = [read_results(directory) for directory in results_dirs]
    parts = None
    if parts_file and "correspondence" not in skip:
        parts = loading.read_parts(parts_file)
    atlas = None
    if atlas_dir:  # links from the page, relative to where the page will live
        atlas = (os.path.relpath(os.path.abspath(atlas_dir), os.path.abspath(out)), loading.read_atlas(atlas_dir))
    context = Context(model, seed, batch_size)
    context.rule = loading.check_rule(context.probe, rule)
    context.atlas = atlas
    context.batches = loading.image_batches(
        data_spec, split, context.probe.input_shape, batch_size, count=images, skip_corrupt=skip_corrupt, data_dir=data_dir
    )
    source = context.batches.source
    from zfkeras.analysis.evaluate import check_labels

    try:  # the accuracy, Fig. 7 and Fig. 5 read the data's labels as the model's classes
        check_labels({os.path.basename(os.path.normpath(model)): context.probe}, source)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--data") from None
    context.source, context.maps, context.examples_wanted = source, maps, examples
    context.parts, context.results = parts, results
    steps = [(name, partial(SECTION_FUNCTIONS[name], context)) for name in SECTIONS if name not in skip]
    progress = Steps([name for name, _ in steps])
    command = output.command_text(click.get_current_context(), "report", model)
    from zfkeras.io.atomic import atomic_output
    from zfkeras.version import __version__

    with atomic_output(out, directory=True) as target:
        context.target = target
        with progress.bar:
            sections = [progress.run(index, function) for index, (_, function) in enumerate(steps)]
        header = {
            "model": model,
            "data": source.name,
            "split": split,
            "images": context.batches.count,
            "command": command,
            "skipped": sorted(skip),
            "zfkeras_version": __version__,
        }
        with open(os.path.join(target, "index.html"), "w") as handle:
            handle.write(html.document(header, context.identity(), sections))
        results = {**header, "model_info": context.identity(), "sections": {s.key: s.numbers for s in sections}}
        with open(os.path.join(target, "results.json"), "w") as handle:
            handle.write(output.json_text(results) + "\n")
    for section in sections:
        if section.summary:
            click.echo(f"{section.key}: {section.summary}")
    click.echo(f"wrote {os.path.join(out, 'index.html')}")


def read_results(directory):
    """``(directory, "transfer" or "layers", results)`` from the results.json of a zf transfer or
    zf layers output, or a one-line error naming --results."""
    path = os.path.join(directory, "results.json")
    try:
        with open(path) as handle:
            results = json.load(handle)
        rows = results["summary"]
        kind = "transfer" if "method" in rows[0] else "layers" if "layer" in rows[0] else None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not the results.json of zf transfer or zf layers"
        raise click.BadParameter(f"{path}: {reason}", param_hint="--results") from None
    if kind is None:
        raise click.BadParameter(f"{path}: its summary rows are neither zf transfer's nor zf layers'", param_hint="--results")
    return directory, kind, results
