"""``zf report``: one HTML page about one model, after the fact (TensorBoard is the live view).

Every section is computed by the library (:mod:`zfkeras.summary`, :mod:`zfkeras.topk`,
:mod:`zfkeras.evolution`, :mod:`zfkeras.first_layer`, :mod:`zfkeras.occlusion`,
:mod:`zfkeras.invariance`, :mod:`zfkeras.correspondence`) or read from the commands' own JSON
outputs (``zf transfer``, ``zf layers``), and drawn by the same figure functions the commands use.
The page (``index.html``), its PNGs and ``results.json`` (every number on the page) are written to
one directory, swapped in whole; the page needs no server, script or network.
"""

import json
import os
import re
import shlex

import click
import numpy as np

from pipelines import _common
from pipelines import report_html as page

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
    "transfer",
    "layers",
)


def section_name(text):
    if text not in SECTIONS:
        raise ValueError(text)
    return text


class CentreCrops:
    """Re-iterable batches ``[B, S, S, C]`` (raw pixels, centre crops) of the first ``count``
    images of an opened source, in source order; each pass re-reads the source."""

    def __init__(self, source, input_shape, batch_size, count=None):
        self.source, self.input_shape, self.batch_size = source, input_shape, batch_size
        total = source.num_examples
        self.count = count if total is None else total if count is None else min(count, total)

    def dataset(self, crops="center"):
        from zfkeras import data

        dataset = self.source.dataset if self.count is None else self.source.dataset.take(self.count)
        size, _, channels = self.input_shape
        return data.eval_dataset(dataset, size, channels, self.batch_size, crops=crops, cache=False)

    def __iter__(self):
        for images, _ in self.dataset().as_numpy_iterator():
            yield images


class Steps:
    """One progress bar (stderr) over the report's steps; a step may report its own fraction done."""

    UNITS = 100

    def __init__(self, names):
        self.names, self.position = list(names), 0
        self.bar = _common.progressbar(length=self.UNITS * len(self.names), label="report", item_show_func=lambda name: name or "")

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
@click.argument("model", metavar="MODEL", type=click.Path())
@_common.data_options
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
    type=_common.MapSelection(),
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
    help="Output directory of zf transfer or zf layers (holding results.json) to show (repeatable).",
)
@click.option(
    "--skip",
    type=_common.CommaList(section_name, "section names: " + ", ".join(SECTIONS)),
    default=None,
    help="Comma list of sections to leave out: " + ", ".join(SECTIONS) + ".",
)
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1), help="Images per forward pass.")
@_common.seed_option
@_common.out_option
def report(model, data_spec, data_dir, skip_corrupt, split, images, maps, examples, parts_file, results_dirs, skip, batch_size, seed, out):
    """One self-contained HTML page about MODEL (a SavedModel directory, a run directory or a .keras
    file): what it is, how it was trained, how accurate it is, and the paper's figures on it.

    Writes OUT/index.html (open it in a browser from disk), its PNGs, and OUT/results.json with
    every number on the page (accuracy as in zf evaluate's JSON).
    """
    _common.seed_everything(seed)
    skip = set(skip or ())
    results = [read_results(directory) for directory in results_dirs]
    parts = None
    if parts_file and "correspondence" not in skip:
        from pipelines.correspondence import read_parts

        parts = read_parts(parts_file)
    context = Context(model, seed, batch_size)
    source = _common.open_source(data_spec, split, "--data", data_dir=data_dir, skip_corrupt=skip_corrupt)
    height, width, _ = context.probe.input_shape
    if height != width:
        raise click.UsageError(f"the data pipeline makes square crops; the model's input is {height}x{width}")
    context.batches = CentreCrops(source, context.probe.input_shape, batch_size, images)
    context.source, context.maps, context.examples_wanted = source, maps, examples
    context.parts, context.results = parts, results
    steps = [(name, getattr(context, name)) for name in SECTIONS if name not in skip]
    progress = Steps([name for name, _ in steps])
    command = command_text(model, click.get_current_context())
    from zfkeras.atomic import atomic_output

    with atomic_output(out, directory=True) as target:
        context.target = target
        with progress.bar:
            sections = [progress.run(index, function) for index, (_, function) in enumerate(steps)]
        import zfkeras

        header = {
            "model": model,
            "data": source.name,
            "split": split,
            "images": context.batches.count,
            "command": command,
            "skipped": sorted(skip),
            "zfkeras_version": zfkeras.__version__,
        }
        with open(os.path.join(target, "index.html"), "w") as handle:
            handle.write(page.document(header, context.identity(), sections))
        results = {**header, "model_info": context.identity(), "sections": {s.key: s.numbers for s in sections}}
        with open(os.path.join(target, "results.json"), "w") as handle:
            handle.write(_common.json_text(results) + "\n")
    for section in sections:
        if section.summary:
            click.echo(f"{section.key}: {section.summary}")
    click.echo(f"wrote {os.path.join(out, 'index.html')}")


def command_text(model, ctx):
    """``zf report MODEL ...`` with the options given on the command line (defaults left out)."""
    words = ["zf", "report", model]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or ctx.get_parameter_source(param.name).name != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            words.append(param.opts[0])
        elif param.multiple:
            for item in value:
                words += [param.opts[0], str(item)]
        else:
            words += [param.opts[0], ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return shlex.join(words)


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "image"


class Context:
    """The model and data every section reads; one method per section, each returning a :class:`page.Section`."""

    def __init__(self, path, seed, batch_size):
        from zfkeras.probe import KerasProbe

        self.path, self.seed, self.batch_size = path, seed, batch_size
        loaded = _common.load_model(path)
        self.keras, self.record = loaded.model, loaded.record
        if os.path.isdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
            # a run directory: the probe reads its model.keras, class names from its config.json
            self.probe = KerasProbe(self.keras, class_names=loaded.class_names)
        else:
            self.probe = _common.load_probe(path)
        self.class_names = list(self.probe.class_names)
        self.meta = _export_metadata(path)
        self._examples = None

    def identity(self):
        meta = self.meta or {}
        return {
            "path": self.path,
            "keras_file": os.path.relpath(_common.model_file(self.path)),
            "input_shape": list(self.probe.input_shape),
            "classes": self.class_names,
            "model_name": meta.get("model_name", self.keras.name),
            "zfkeras_version": meta.get("zfkeras_version"),
        }

    def save(self, figure, name):
        _common.save_figure(figure, os.path.join(self.target, name))
        return name

    def examples(self):
        """``[(name, image [H, W, C], label)]``: ``--examples`` images of the split, distinct
        classes where possible, drawn with ``--seed`` from its first 500 (or --images) images."""
        if self._examples is None:
            images, labels = [], []
            pool = CentreCrops(self.source, self.probe.input_shape, self.batch_size, min(self.batches.count or 500, 500))
            for batch, batch_labels in pool.dataset().as_numpy_iterator():
                images.append(batch), labels.append(batch_labels)
            images, labels = np.concatenate(images), np.concatenate(labels)
            order = np.random.default_rng(self.seed).permutation(len(images))
            chosen, seen = [], set()
            for index in order:  # first one image per class, then the rest in the same order
                if int(labels[index]) not in seen:
                    chosen.append(int(index)), seen.add(int(labels[index]))
            chosen += [int(i) for i in order if int(i) not in chosen]
            chosen = sorted(chosen[: self.examples_wanted])
            self._examples = [(f"{slug(self.class_names[labels[i]])}-{i}", images[i], int(labels[i])) for i in chosen]
        return self._examples

    # ---- the sections, in page order -----------------------------------------------------------

    def architecture(self, advance):
        from zfkeras.receptive_field import receptive_fields
        from zfkeras.summary import architecture

        rows = architecture(self.keras)
        try:
            fields = receptive_fields(self.keras)
        except ValueError:
            fields = {}
        table = [
            [
                r.name,
                r.kind,
                r.settings,
                "x".join(map(str, r.output_shape)),
                f"{r.params:,}",
                f"{fields[r.name].size[0]}x{fields[r.name].size[1]} / {fields[r.name].jump[0]}" if r.name in fields else "",
            ]
            for r in rows
        ]
        total, trainable = sum(r.params for r in rows), sum(r.trainable_params for r in rows)
        numbers = {
            "params": total,
            "trainable_params": trainable,
            "input_shape": list(self.probe.input_shape),
            "layers": [
                {"name": r.name, "kind": r.kind, "settings": r.settings, "output_shape": list(r.output_shape), "params": r.params} for r in rows
            ],
        }
        height, width, channels = self.probe.input_shape
        meta = self.meta or {}
        body = [
            page.facts(
                [
                    (
                        "input",
                        f"{height}x{width}x{channels}, float32 raw pixels 0-255; the training mean image is "
                        "subtracted inside the model (layer subtract_mean)",
                    ),
                    ("preprocessing", meta.get("preprocessing", "resize the smaller side, centre crop (zfkeras.data.eval_dataset)")),
                    ("classes", f"{len(self.class_names)}: " + ", ".join(self.class_names)),
                    ("parameters", f"{total:,} ({trainable:,} trainable)"),
                ]
            ),
            page.table(
                ["layer", "type", "settings", "output", "parameters", "receptive field / stride (px)"],
                table,
                "Layers from input to output. The receptive field is the input window one unit of the layer "
                "sees; the stride is how far it moves per unit step.",
            ),
        ]
        return page.Section(
            "architecture", "What it is", "Table of layers (paper Fig. 3)", body, numbers, f"{len(rows)} layers, {total:,} parameters"
        )

    def training(self, advance):
        command = ((self.meta or {}).get("training") or {}).get("command") or (self.record or {}).get("command")
        run_dir, looked = _find_run(self.path, command)
        history = None
        if run_dir and os.path.exists(os.path.join(run_dir, "history.json")):
            with open(os.path.join(run_dir, "history.json")) as handle:
                history = json.load(handle)
        body = [page.code(command) if command else page.note("No training command recorded (no zfkeras.json or config.json).")]
        numbers = {"command": command, "run_dir": run_dir, "history": history is not None}
        metrics = (self.meta or {}).get("metrics")
        if metrics:
            shown = [
                (key, f"{value:.4g}" if isinstance(value, float) else str(value))
                for key, value in metrics.items()
                if not isinstance(value, (dict, list))
            ]
            body.append(page.facts(shown, "Final metrics recorded at export (test_* on the whole test split)."))
            numbers["metrics"] = metrics
        if history and history.get("epoch"):
            name = self.save(_curves_figure(history), "training-curves.png")
            best = int(np.nanargmin([np.nan if v is None else v for v in history.get("val_loss") or [np.nan]]))
            body.append(
                page.figure(
                    name,
                    "Training curves",
                    (
                        "Loss and accuracy per epoch on the training batches (random crops and flips) and on the validation "
                        "images, and the learning rate (log scale). Look for validation loss following training loss down; "
                        "a widening gap is over-fitting. The learning rate drops 10x when validation loss stops improving "
                        f"(the paper's annealing). Lowest validation loss at epoch {history['epoch'][best]}."
                    ),
                )
            )
            numbers["epochs"] = len(history["epoch"])
        else:
            body.append(
                page.note(
                    "No history.json found, so no training curves (looked in: " + ", ".join(looked) + "). "
                    "A run directory written by zf train holds it."
                )
            )
        recorded = _option(command, "--out") or _option(command, "--run-dir")  # the run directory zf train wrote
        candidates = [os.path.join(d, "logs") for d in (run_dir, recorded) if d]
        logs = next((d for d in candidates if os.path.isdir(d)), None)
        if logs:
            body.append(page.note(f"TensorBoard logs (the live view during training): tensorboard --logdir {logs}"))
        else:
            where = f" They were written to {recorded}/logs, which is not on this machine." if recorded else ""
            body.append(page.note("No TensorBoard logs found." + where))
        numbers["tensorboard_logs"] = logs
        return page.Section(
            "training", "How it was trained", "Sec. 3 recipe", body, numbers, f"history {'found in ' + run_dir if history else 'not found'}"
        )

    def accuracy(self, advance):
        from zfkeras.summary import Predictions

        predictions = Predictions(len(self.class_names))
        total = self.batches.count or 0
        done = 0
        # The same batching as zf evaluate (100 images per dataset batch, 256 views per predict call).
        for views, labels in self.batches.dataset("ten").as_numpy_iterator():
            flat = views.reshape((-1,) + views.shape[-3:])
            predictions.add(self.probe.predict(flat, batch_size=256).reshape(views.shape[:2] + (-1,)), labels)
            done += len(labels)
            advance(done, total)
        errors = predictions.errors()
        confusion = predictions.confusion("ten")
        name = self.save(_confusion_figure(confusion, self.class_names), "confusion.png")
        off = confusion - np.diag(np.diag(confusion))
        worst = np.dstack(np.unravel_index(np.argsort(-off, axis=None)[:3], off.shape))[0]
        mixed = "; ".join(f"{self.class_names[t]} taken for {self.class_names[p]} {off[t, p]} times" for t, p in worst if off[t, p])
        numbers = {"num_images": predictions.counter.count, "errors": errors, "confusion_ten_crop": confusion.tolist()}
        body = [
            page.accuracy_table(errors, predictions.counter.count),
            page.figure(
                name,
                "Confusion matrix (10 crops)",
                (
                    "Rows: true class; columns: the class predicted from the average of the 10 crops; each cell counts "
                    f"images, the diagonal the correct ones. Look for bright off-diagonal cells, the classes the model "
                    f"mixes up{': ' + mixed if mixed else ''}."
                ),
            ),
        ]
        return page.Section(
            "accuracy",
            "How accurate it is",
            "Table 2: single crop and 10 crops",
            body,
            numbers,
            f"top-1 error {100 * errors['top1_error']:.2f}% (10 crops "
            f"{100 * errors.get('ten_crop_top1_error', float('nan')):.2f}%) on {predictions.counter.count} images",
        )

    def _fields(self):
        from zfkeras.receptive_field import receptive_fields

        return receptive_fields(self.keras)

    def visualize(self, advance):
        from pipelines.visualize import map_counts, topk_figure
        from zfkeras.topk import project_topk, scan

        layers = list(self.probe.layer_names)
        self.chosen = self.maps(map_counts(self.probe, layers), self.seed)
        fields = self._fields()
        done, total = 0, self.batches.count or 0

        def counted(batches):
            nonlocal done
            for batch in batches:
                yield batch
                done += len(batch)
                advance(done, 2 * total)

        top = scan(self.probe, counted(self.batches), self.chosen, k=9)
        body, numbers = [], {"images": top.images_seen, "maps": self.chosen, "layers": {}}
        for number, layer in enumerate(layers):
            crops = project_topk(self.probe, top, self.batches, fields, layers=[layer], batch_size=64)
            values = top.entries(layer)["value"]
            name = self.save(topk_figure(layer, self.chosen[layer], crops[layer], values, top.images_seen), f"fig2-{layer}.png")
            size = fields[layer].size
            silent = int((values[:, 0] <= 0).sum())
            body.append(
                page.figure(
                    name,
                    f"Fig. 2, {layer}",
                    (
                        f"For {len(self.chosen[layer])} maps of {layer}, the 9 strongest activations over {top.images_seen} images "
                        f"(at most one per image): left, each projected to pixels by the deconvnet; right, the image patch under "
                        f"the activation's {size[0]}x{size[1]} px receptive field (light blue: outside the image). Look for one "
                        "pattern repeated across the 9 different images of a map; lower layers pick edges and blobs, higher layers "
                        "larger, class-specific parts, with more variation in the patches than in the projections."
                        + (f" {silent} map(s) never fired on these images (silent)." if silent else "")
                    ),
                )
            )
            numbers["layers"][layer] = {"field": list(size), "top1_median": float(np.median(values[:, 0])), "silent_maps": silent}
            advance(total + (number + 1) * total // len(layers), 2 * total)
        return page.Section("visualize", "Top-9 activations", "Fig. 2", body, numbers, f"{len(layers)} layers over {top.images_seen} images")

    def evolution(self, advance):
        from pipelines.evolution import combined_figure, find_checkpoints, load_checkpoint
        from zfkeras.evolution import stable_epoch, strongest
        from zfkeras.probe import KerasProbe
        from zfkeras.receptive_field import receptive_fields
        from zfkeras.topk import project_topk

        where = _checkpoint_home(self.path)
        try:
            checkpoints = find_checkpoints(where)
        except click.BadParameter:
            return page.Section(
                "evolution",
                "Feature evolution during training",
                "Fig. 4",
                [page.note(f"No epoch-XXX.keras checkpoints in {where} or its checkpoints/ folder.")],
                {"checkpoints": []},
                "no checkpoints",
            )
        if not hasattr(self, "chosen"):
            from pipelines.visualize import map_counts

            self.chosen = self.maps(map_counts(self.probe, list(self.probe.layer_names)), self.seed)
        maps = {layer: channels[:4] for layer, channels in self.chosen.items()}
        fields = self._fields()
        epochs = [epoch for epoch, _ in checkpoints]
        tiles, images = {layer: [] for layer in maps}, {layer: [] for layer in maps}
        # Each checkpoint's weights go into MODEL's own Keras model in turn, so its traced forward and
        # deconvnet functions serve every epoch (a new model per checkpoint would trace them all again).
        probe = self.probe if getattr(self.probe, "model", None) is self.keras else KerasProbe(self.keras, self.class_names)
        final = self.keras.get_weights()
        try:
            for number, (_epoch, file) in enumerate(checkpoints):
                checkpoint = load_checkpoint(file)
                try:
                    if receptive_fields(checkpoint) != fields:
                        raise ValueError
                    self.keras.set_weights(checkpoint.get_weights())
                except ValueError:
                    raise click.UsageError(f"{file}: a different architecture from {self.path}") from None
                top = strongest(probe, self.batches, maps)
                crops = project_topk(probe, top, self.batches, fields, batch_size=64)
                for layer in maps:
                    entries = top.entries(layer)
                    tiles[layer].append(crops[layer]["projections"][:, 0])
                    images[layer].append(np.where(entries["value"][:, 0] > 0, entries["image"][:, 0], -1))
                advance(number + 1, len(checkpoints))
        finally:
            self.keras.set_weights(final)
        numbers = {"checkpoints": epochs, "images": top.images_seen, "maps": maps, "layers": {}}
        for layer in maps:
            history = np.stack(images[layer], axis=1)  # [maps, epochs]; -1: silent at that epoch
            per_map = [stable_epoch(epochs, row.tolist()) for row in history]
            active = [s for s, row in zip(per_map, history) if row[-1] >= 0]
            numbers["layers"][layer] = {
                "stable_epoch": max(active or per_map),
                "per_map": dict(zip(map(str, maps[layer]), per_map)),
                "top1_images": dict(zip(map(str, maps[layer]), history.tolist())),
            }
        blocks = [(layer, np.stack(tiles[layer], axis=1)) for layer in maps]
        name = self.save(combined_figure(blocks, maps, epochs, 99.0, {"images": top.images_seen, "layers": numbers["layers"]}), "fig4-evolution.png")
        stable = ", ".join(f"{layer} {v['stable_epoch']}" for layer, v in numbers["layers"].items())
        body = [
            page.figure(
                name,
                "Fig. 4, feature evolution",
                (
                    f"For {sum(map(len, maps.values()))} maps, the strongest activation over {top.images_seen} images at each kept "
                    f"epoch (columns: epochs {', '.join(map(str, epochs))}), projected to pixels and contrast-enhanced. Look for "
                    "the lower layers settling within a few epochs and the upper ones changing longer (the paper: the upper "
                    f"layers develop only after 40-50 epochs). The top-1 image stops changing from epoch: {stable}."
                ),
            )
        ]
        return page.Section(
            "evolution", "Feature evolution during training", "Fig. 4", body, numbers, f"{len(epochs)} checkpoints; stable from epoch {stable}"
        )

    def filters(self, advance):
        from pipelines.filters import caption, filters_figure
        from pipelines.visualize import map_counts
        from zfkeras import diagnostics
        from zfkeras.first_layer import first_layer_report

        if len(self.probe.layer_names) < 2:
            return page.Section("filters", "First-layer filters", "Fig. 6", [page.note("Needs two conv layers.")], {}, "")
        second = self.probe.layer_names[1]
        chosen = _common.MapSelection().convert("random:36", None, None)(map_counts(self.probe, [second]), self.seed)[second]
        done, total = 0, self.batches.count or 0

        def on_batch(size):
            nonlocal done
            done += size
            advance(done, total)

        try:
            result = first_layer_report(self.probe, self.keras, self.batches, chosen, 0.01, 64, on_batch=on_batch)
        except ValueError as error:
            return page.Section("filters", "First-layer filters", "Fig. 6", [page.note(str(error))], {}, "")
        numbers = result.to_dict()
        label = os.path.basename(os.path.normpath(self.path))
        pictures = {"filters": diagnostics.filter_grid(result.kernel), "projections": result.crops}
        name = self.save(filters_figure([label], [numbers], [pictures]), "fig6-filters.png")
        first, second_numbers = numbers["first_layer"], numbers["second_layer"]
        bands = first["band_shares"]
        aliasing = second_numbers["aliasing_share"]
        facts = [
            ("filters", f"{first['filters']}, {first['kernel'][0]}x{first['kernel'][1]} stride {first['stride']}"),
            (
                "dead filters",
                f"{len(first['dead_filters'])} ({first['dead_fraction']:.1%}); mean activation at most "
                f"{first['dead_threshold']:.0%} of the median filter's",
            ),
            ("energy low / mid / high", f"{bands['low']:.2f} / {bands['mid']:.2f} / {bands['high']:.2f}"),
            (f"aliasing of {second} projections", "n/a (no map fired)" if aliasing is None else f"{aliasing:.3f}"),
        ]
        body = [
            page.facts(facts, "Sec. 4.1 numbers (definitions: zfkeras/diagnostics.py)."),
            page.figure(
                name,
                "Fig. 6, first-layer filters",
                (
                    " ".join(caption(numbers)).replace("\n", "; ") + ". Top: each first-layer filter, scaled to its own "
                    f"range; bottom: the top-1 deconvnet projections of {len(chosen)} {second} maps. Look for dead (flat) "
                    "filters and filters that are only high-frequency noise, and for a grid pattern in the projections "
                    "(aliasing from a large first-layer stride): the paper's Fig. 6 problems that smaller 7x7/2 filters fix."
                ),
            ),
        ]
        return page.Section(
            "filters", "First-layer filters", "Fig. 6, Sec. 4.1", body, numbers, f"{len(first['dead_filters'])} dead of {first['filters']}"
        )

    def occlusion(self, advance):
        from pipelines.occlusion import occlusion_figure, summary_json
        from zfkeras.occlusion import default_stride, num_positions, occlusion_map

        examples = self.examples()
        per_image = num_positions(self.probe.input_shape, default_stride(self.probe.input_shape))
        body, numbers, done = [], {}, 0
        for number, (name, image, label) in enumerate(examples):

            def progress(count, number=number):
                nonlocal done
                done += count
                advance(done, per_image * len(examples))

            result = occlusion_map(self.probe, image, label=label, batch_size=64, progress=progress)
            figure = self.save(occlusion_figure(result, self.class_names, name), f"fig7-{name}.png")
            summary = summary_json(result, self.class_names, name)
            numbers[name] = summary
            body.append(
                page.figure(
                    figure,
                    f"Fig. 7, {name}",
                    (
                        f"A grey {result.patch}x{result.patch} px square slides over the image (true class "
                        f"{self.class_names[label]}). (b) total activity of {result.layer} map {result.feature_map}, the "
                        f"strongest in the unoccluded image, and (c) its projection; (d) the probability of the true class, "
                        f"{summary['clean_prob']:.3f} unoccluded, lowest {summary['min_prob']:.3f}; (e) the most probable class. "
                        "Look for (d) dropping where the square hides the part that identifies the object, not the background, "
                        "and (b) dropping where it hides the pattern (c) shows."
                    ),
                )
            )
        return page.Section("occlusion", "Occlusion sensitivity", "Fig. 7", body, numbers, f"{len(examples)} images")

    def invariance(self, advance):
        from pipelines.invariance import curves_figure, curves_json, examples_figure
        from zfkeras.invariance import IDENTITY, default_amounts, default_layers, invariance_curves, resolve_fill

        examples = self.examples()
        named = [(name, image) for name, image, _ in examples]
        stack = np.stack([image for _, image in named])
        labels = np.asarray([label for _, _, label in examples])
        layers = default_layers(self.probe)
        amounts = default_amounts(self.probe.input_shape)
        curves = {}
        for number, kind in enumerate(amounts):
            curves.update(
                invariance_curves(self.probe, stack, labels=labels, amounts={kind: amounts[kind]}, layers=layers, fill="background", batch_size=64)
            )
            advance(number + 1, len(amounts))
        names = [name for name, _ in named]
        curves_name = self.save(curves_figure(curves, names, layers), "fig5-curves.png")
        shown = self.save(examples_figure(named, resolve_fill(self.probe, "background"), amounts), "fig5-transforms.png")
        numbers = curves_json(curves, names, self.class_names, layers, "background")
        rows = []
        for kind, c in curves.items():
            moved = ~np.isclose(c.amounts, IDENTITY[kind]) & ~((kind == "rotation") & np.isclose(c.amounts % 360, 0))
            rows.append(
                [kind] + [f"{np.nanmean(c.distances[layer][:, moved]):.3f}" for layer in layers] + [f"{c.true_class_prob[:, moved].mean():.3f}"]
            )
        body = [
            page.figure(
                shown,
                "Fig. 5, the transforms",
                f"Each transform applied to {names[0]}; uncovered pixels take the image's background value (median of its border).",
            ),
            page.table(
                ["transform"] + [f"mean distance {layer}" for layer in layers] + ["mean p(true class)"],
                rows,
                "Means over the transformed (not identity) amounts and the images.",
            ),
            page.figure(
                curves_name,
                "Fig. 5, invariance curves",
                (
                    f"Rows: vertical translation, scale, rotation of {len(names)} images. Columns: the distance of the "
                    f"{' and '.join(layers)} feature vectors from the untransformed image's (relative to its norm), and the "
                    f"probability of the true class. Look for the first layer's distance rising steeply with any change "
                    f"and {layers[-1]}'s rising less and more linearly (the paper: higher layers are more invariant to "
                    "translation and scale), and p(true class) staying high except under rotation, which the model "
                    "has not learned to ignore."
                ),
            ),
        ]
        return page.Section("invariance", "Feature invariance", "Fig. 5", body, numbers, f"{len(names)} images, layers {', '.join(layers)}")

    def correspondence(self, advance):
        from pipelines.correspondence import masks_figure, result_json
        from zfkeras import correspondence as analysis
        from zfkeras.occlusion import fill_values

        if self.parts is None:
            return page.Section(
                "correspondence",
                "Part correspondence",
                "Table 1",
                [page.note("Not computed: give --parts FILE (e.g. docs/examples/shirt-parts.json) with the same parts boxed in several images.")],
                {},
                "",
            )
        files, given_files, parts, objects = self.parts
        named = _common.load_images(files, self.probe.input_shape)
        images = np.stack([image for _, image in named])
        try:
            result = analysis.correspondence(self.probe, images, parts, objects=objects, draws=10, seed=self.seed, batch_size=64)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--parts") from None
        name = self.save(masks_figure(named, parts, result, fill_values(self.probe, None)), "fig8-masks.png")
        numbers = result_json(result, [n for n, _ in named], given_files, parts, objects, 10, self.seed)
        rows = [[part] + [f"{s[layer].mean:.3f} ± {s[layer].std:.3f}" for layer in result.layers] for part, s in result.scores.items()]
        pairs = len(images) * (len(images) - 1) // 2
        body = [
            page.table(
                ["part"] + [f"{layer}: sign change" for layer in result.layers],
                rows,
                (
                    f"Table 1: the fraction of features whose change under masking differs in sign between two images, "
                    f"mean ± std over the {pairs} image pairs (lower = the part is encoded more consistently); random: "
                    "masks of the same size at random places, 10 draws. Look for parts below the random row, more so at "
                    "the conv layer than at fc7, as in the paper."
                ),
            ),
            page.figure(name, "Fig. 8, the masks", "Each image, each part masked (red outline), then random masks."),
        ]
        return page.Section("correspondence", "Part correspondence", "Table 1, Fig. 8", body, numbers, f"{len(parts)} parts")

    def _results(self, kind):
        return [(directory, results) for directory, found, results in self.results if found == kind]

    def transfer(self, advance):
        return self._result_section(
            "transfer",
            "Transfer to new data",
            "Tables 4-5, Fig. 9",
            page.transfer_table,
            (
                "Mean per-class accuracy (± std over folds) of a softmax on the frozen pretrained features against the same "
                "network trained from scratch, by training images per class. Look for the pretrained features winning by "
                "far with few images, the paper's Caltech result."
            ),
        )

    def layers(self, advance):
        return self._result_section(
            "layers",
            "Which layer's features",
            "Table 7",
            page.layers_table,
            (
                "Mean per-class accuracy (± std over folds) of a linear classifier on each layer's frozen features. Look for "
                "where accuracy peaks: the paper found it rising layer by layer up to the top."
            ),
        )

    def _result_section(self, kind, title, paper, table, caption):
        found = self._results(kind)
        if not found:
            return page.Section(
                kind, title, paper, [page.note(f"No results given: run zf {kind} and pass its output directory with --results DIR.")], {}, ""
            )
        body, numbers = [], {}
        for directory, results in found:
            given = results.get("model")
            if given and os.path.realpath(given) != os.path.realpath(self.path):
                body.append(page.note(f"{directory} was computed for {given}, not {self.path}."))
            body.append(table(results, f"{caption} From {directory}/results.json (data {results.get('data_spec', results.get('data'))})."))
            if os.path.isfile(os.path.join(directory, "figure.png")):
                import shutil

                name = f"{kind}-{len(numbers) + 1}.png"
                shutil.copyfile(os.path.join(directory, "figure.png"), os.path.join(self.target, name))
                body.append(
                    page.figure(name, f"{paper}, {directory}", f"The same numbers as the table above, drawn by zf {kind} (figure.png of its output).")
                )
            numbers[directory] = results.get("summary")
        return page.Section(kind, title, paper, body, numbers, f"{len(found)} result(s)")


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


def _export_metadata(path):
    """zfkeras.json of the export MODEL is (or holds the .keras file of), else None."""
    for directory in (path, os.path.dirname(os.path.abspath(path))):
        meta = os.path.join(directory, "zfkeras.json") if os.path.isdir(directory) else None
        if meta and os.path.exists(meta):
            with open(meta) as handle:
                return json.load(handle)
    return None


def _option(command, name):
    """The value of option ``name`` in a recorded command line, or None."""
    words = shlex.split(command or "")
    return words[words.index(name) + 1] if name in words[:-1] else None


def _find_run(path, command):
    """``(run directory holding history.json or None, [places looked])``: MODEL itself, the folder
    of MODEL's .keras file and its parent, then the recorded command's --run-dir."""
    here = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    places = [here, os.path.relpath(os.path.dirname(os.path.abspath(here)))]
    recorded = _option(command, "--run-dir")
    if recorded:
        places.append(recorded)
    for place in places:
        if os.path.exists(os.path.join(place, "history.json")):
            return place, places
    return None, places


def _checkpoint_home(path):
    """Where MODEL's epoch checkpoints are: MODEL's directory (an export or run dir, with checkpoints/)."""
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def _curves_figure(history):
    """Loss, accuracy and learning rate per epoch (train and validation)."""
    plt = _common.pyplot()
    epochs = history["epoch"]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for axis, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values and any(v is not None for v in values):
                axis.plot(epochs, [np.nan if v is None else v for v in values], style, marker=".", label="validation" if prefix else "training")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[2].semilogy(epochs, history.get("lr") or [np.nan] * len(epochs), marker=".")
    axes[2].set_title("learning rate", fontsize=10)
    axes[2].set_xlabel("epoch")
    axes[2].grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _confusion_figure(confusion, class_names):
    """Counts with the class names on both axes, each cell written out."""
    plt = _common.pyplot()
    size = max(4.0, 0.42 * len(class_names) + 1.5)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    shown = axis.imshow(confusion, cmap="Blues")
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(ticks, class_names, fontsize=8)
    axis.set_xlabel("predicted (10 crops)")
    axis.set_ylabel("true class")
    if len(class_names) <= 20:
        limit = confusion.max() / 2
        for t in range(len(class_names)):
            for p in range(len(class_names)):
                axis.text(p, t, str(confusion[t, p]), ha="center", va="center", fontsize=7, color="white" if confusion[t, p] > limit else "black")
    figure.tight_layout()
    return figure
