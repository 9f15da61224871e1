"""The sections of ``zf report`` about the model itself: what it is, how it was trained, how
accurate it is, and the Sec. 5 results given with ``--results``. Each takes the report's
:class:`~pipelines.commands.report.context.Context` and a progress callback and returns a
:class:`~pipelines.commands.report.html.Section`."""

import os

import numpy as np

from pipelines import figures
from pipelines.commands.report import html
from pipelines.commands.report.context import find_run


def architecture(context, advance):
    rows = context.probe.layer_table()
    try:
        fields = context.probe.fields
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
        "input_shape": list(context.probe.input_shape),
        "layers": [{"name": r.name, "kind": r.kind, "settings": r.settings, "output_shape": list(r.output_shape), "params": r.params} for r in rows],
    }
    height, width, channels = context.probe.input_shape
    meta = context.meta or {}
    body = [
        html.facts(
            [
                (
                    "input",
                    f"{height}x{width}x{channels}, float32 raw pixels 0-255; the training mean image is "
                    "subtracted inside the model (layer subtract_mean)",
                ),
                ("preprocessing", meta.get("preprocessing", "resize the smaller side, centre crop (zfkeras.data.eval_dataset)")),
                ("classes", f"{len(context.class_names)}: " + ", ".join(context.class_names)),
                ("parameters", f"{total:,} ({trainable:,} trainable)"),
            ]
        ),
        html.table(
            ["layer", "type", "settings", "output", "parameters", "receptive field / stride (px)"],
            table,
            "Layers from input to output. The receptive field is the input window one unit of the layer "
            "sees; the stride is how far it moves per unit step.",
        ),
    ]
    return html.Section("architecture", "What it is", "Table of layers (paper Fig. 3)", body, numbers, f"{len(rows)} layers, {total:,} parameters")


def training(context, advance):
    from zfkeras.training import RunDir  # imported when run: zf report refuses a bad option before TensorFlow loads

    command = ((context.meta or {}).get("training") or {}).get("command") or (context.record or {}).get("command")
    run_dir, looked = find_run(context.path, command)
    history = RunDir(run_dir).read_history() if run_dir else None
    body = [html.code(command) if command else html.note("No training command recorded (no zfkeras.json or config.json).")]
    numbers = {"command": command, "run_dir": run_dir, "history": history is not None}
    metrics = (context.meta or {}).get("metrics")
    if metrics:
        shown = [
            (key, f"{value:.4g}" if isinstance(value, float) else str(value)) for key, value in metrics.items() if not isinstance(value, (dict, list))
        ]
        body.append(html.facts(shown, "Final metrics recorded at export (test_* on the whole test split)."))
        numbers["metrics"] = metrics
    if history and history.get("epoch"):
        name = context.save(_curves_figure(history), "training-curves.png")
        body.append(html.figure(name, "Training curves", _curves_caption(history)))
        numbers["epochs"] = len(history["epoch"])
        numbers["validation"] = any(v is not None for v in history.get("val_loss") or [])
    else:
        body.append(
            html.note(
                "No history.json found, so no training curves (looked in: " + ", ".join(looked) + "). A run directory written by zf train holds it."
            )
        )
    recorded = RunDir.of_command(command)  # the run directory zf train wrote
    recorded = recorded and recorded.path
    candidates = [RunDir(d).logs_dir for d in (run_dir, recorded) if d]
    logs = next((d for d in candidates if os.path.isdir(d)), None)
    if logs:
        body.append(html.note(f"TensorBoard logs (the live view during training): tensorboard --logdir {logs}"))
    else:
        where = f" They were written to {recorded}/logs, which is not on this machine." if recorded else ""
        body.append(html.note("No TensorBoard logs found." + where))
    numbers["tensorboard_logs"] = logs
    return html.Section(
        "training", "How it was trained", "Sec. 3 recipe", body, numbers, f"history {'found in ' + run_dir if history else 'not found'}"
    )


def accuracy(context, advance):
    from zfkeras.analysis.summary import Predictions

    predictions = Predictions(len(context.class_names))
    total = context.batches.count or 0
    done = 0
    # The same batching as zf evaluate (100 images per dataset batch, 256 views per predict call).
    for views, labels in context.batches.dataset("ten").as_numpy_iterator():
        flat = views.reshape((-1,) + views.shape[-3:])
        predictions.add(context.probe.predict(flat, batch_size=256).reshape(views.shape[:2] + (-1,)), labels)
        done += len(labels)
        advance(done, total)
    errors = predictions.errors()
    confusion = predictions.confusion("ten")
    name = context.save(confusion_figure(confusion, context.class_names), "confusion.png")
    off = confusion - np.diag(np.diag(confusion))
    worst = np.dstack(np.unravel_index(np.argsort(-off, axis=None)[:3], off.shape))[0]
    mixed = "; ".join(f"{context.class_names[t]} taken for {context.class_names[p]} {off[t, p]} times" for t, p in worst if off[t, p])
    numbers = {"num_images": predictions.counter.count, "errors": errors, **confusion_record(confusion)}
    body = [
        html.accuracy_table(errors, predictions.counter.count),
        html.figure(
            name,
            "Confusion matrix (10 crops)",
            (
                "Rows: true class; columns: the class predicted from the average of the 10 crops; each cell counts "
                f"images{' (log scale, classes by index)' if len(confusion) > LABELLED_CONFUSION else ''}, the diagonal "
                "the correct ones. Look for bright off-diagonal cells, the classes the model "
                f"mixes up{': ' + mixed if mixed else ''}."
            ),
        ),
    ]
    return html.Section(
        "accuracy",
        "How accurate it is",
        "Table 2: single crop and 10 crops",
        body,
        numbers,
        f"top-1 error {100 * errors['top1_error']:.2f}% (10 crops "
        f"{100 * errors.get('ten_crop_top1_error', float('nan')):.2f}%) on {predictions.counter.count} images",
    )


def _results(context, kind):
    return [(directory, results) for directory, found, results in context.results if found == kind]


def transfer(context, advance):
    return _result_section(
        context,
        "transfer",
        "Transfer to new data",
        "Tables 4-5, Fig. 9",
        html.transfer_table,
        (
            "Mean per-class accuracy (± std over folds) of a softmax on the frozen pretrained features against the same "
            "network trained from scratch, by training images per class. Look for the pretrained features winning by "
            "far with few images, the paper's Caltech result."
        ),
    )


def layers(context, advance):
    return _result_section(
        context,
        "layers",
        "Which layer's features",
        "Table 7",
        html.layers_table,
        (
            "Mean per-class accuracy (± std over folds) of a linear classifier on each layer's frozen features. Look for "
            "where accuracy peaks: the paper found it rising layer by layer up to the top."
        ),
    )


def _result_section(context, kind, title, paper, table, caption):
    found = _results(context, kind)
    if not found:
        return html.Section(
            kind, title, paper, [html.note(f"No results given: run zf {kind} and pass its output directory with --results DIR.")], {}, ""
        )
    body, numbers = [], {}
    for directory, results in found:
        given = results.get("model")
        if given and os.path.realpath(given) != os.path.realpath(context.path):
            body.append(html.note(f"{directory} was computed for {given}, not {context.path}."))
        body.append(table(results, f"{caption} From {directory}/results.json (data {results.get('data_spec', results.get('data'))})."))
        if os.path.isfile(os.path.join(directory, "figure.png")):
            import shutil

            name = f"{kind}-{len(numbers) + 1}.png"
            shutil.copyfile(os.path.join(directory, "figure.png"), os.path.join(context.target, name))
            body.append(
                html.figure(name, f"{paper}, {directory}", f"The same numbers as the table above, drawn by zf {kind} (figure.png of its output).")
            )
        numbers[directory] = results.get("summary")
    return html.Section(kind, title, paper, body, numbers, f"{len(found)} result(s)")


def _curves_caption(history):
    """What the training curves show, and what is missing: a run without validation images
    (``zf train --val-split 0``) has no validation curve and annealed on the training loss."""
    validated = [(epoch, v) for epoch, v in zip(history["epoch"], history.get("val_loss") or []) if v is not None]
    if not validated:
        return (
            "Loss and accuracy per epoch on the training batches (random crops and flips), and the learning rate (log "
            "scale). This run held out no validation images (zf train --val-split 0, no --val-data), so there is no "
            "validation curve to compare against: over-fitting cannot be read here, and the learning rate dropped 10x "
            "when the training loss stopped improving."
        )
    best = min(validated, key=lambda pair: pair[1])[0]
    return (
        "Loss and accuracy per epoch on the training batches (random crops and flips) and on the validation "
        "images, and the learning rate (log scale). Look for validation loss following training loss down; "
        "a widening gap is over-fitting. The learning rate drops 10x when validation loss stops improving "
        f"(the paper's annealing). Lowest validation loss at epoch {best}."
    )


def _curves_figure(history):
    """Loss, accuracy and learning rate per epoch (train and validation)."""
    plt = figures.pyplot()
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


LABELLED_CONFUSION = 40  # classes up to which the confusion matrix names every class (beyond: a 9-inch heat map)


def confusion_figure(confusion, class_names):
    """Counts with the class names on both axes (each cell written out up to 20 classes); beyond
    :data:`LABELLED_CONFUSION` classes a fixed-size heat map of log counts by class index, since a
    figure that grows with the classes would be gigapixels at ImageNet's 1,000."""
    plt = figures.pyplot()
    if len(class_names) > LABELLED_CONFUSION:
        figure, axis = plt.subplots(figsize=(9, 8))
        shown = axis.imshow(np.log10(1 + confusion), cmap="Blues", interpolation="nearest")
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04, label="log10(1 + images)")
        axis.set_xlabel(f"predicted class index (10 crops; {len(class_names)} classes)")
        axis.set_ylabel("true class index")
        figure.tight_layout()
        return figure
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


def confusion_record(confusion):
    """The confusion matrix for results.json: the whole ``[true][predicted]`` list up to 100
    classes, else (``confusion_ten_crop_nonzero``) its non-zero cells as ``[true, predicted, count]``,
    at most one per image instead of classes squared."""
    if len(confusion) <= 100:
        return {"confusion_ten_crop": confusion.tolist()}
    true, predicted = np.nonzero(confusion)
    return {"confusion_ten_crop_nonzero": [[int(t), int(p), int(confusion[t, p])] for t, p in zip(true, predicted)], "classes": len(confusion)}
