"""The sections of ``zf report`` that ask whether the projections can be trusted: the sanity checks
(Adebayo et al. 2018) and the deletion / insertion curves (Petsiuk et al. 2018), by the same library
functions, tables and figure drawers as ``zf sanity`` and ``zf faithfulness``. Each takes the
report's :class:`~pipelines.commands.report.context.Context` and a progress callback and returns a
:class:`~pipelines.commands.report.html.Section`."""

import numpy as np

from pipelines import figures, loading, records
from pipelines.commands.report import html

SANITY_IMAGES = 20
FAITHFULNESS_IMAGES = 32


def labelled(context, count):
    """The first ``count`` images of the report's split and their labels."""
    from zfkeras.data import ImageBatches

    pool = ImageBatches(context.batches.source, context.probe.input_shape, context.batch_size, min(context.batches.count or count, count))
    images, labels = [], []
    for batch, batch_labels in pool.dataset().as_numpy_iterator():
        images.append(batch), labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def sanity(context, advance):
    from zfkeras.analysis.sanity import sanity_check

    probe = loading.with_all_rules(context.probe)
    images, labels = labelled(context, SANITY_IMAGES)
    result = sanity_check(probe, images, labels=labels, shown=1, seed=context.seed, progress=advance)
    table = result.to_dict()
    rows = {f"{rule}, {target}": result.grid[rule][target][:, 0] for target in result.targets for rule in result.rules}
    grid = context.save(
        figures.sanity_grid_figure(rows, images[0], result.layers, "|map| as layers are re-initialised from the top down"), "sanity-grid.png"
    )
    curves = context.save(figures.sanity_curves_figure(table), "sanity-curves.png")
    header, cascade = records.sanity_rows(table, "cascading")
    shown = [row for row in cascade if row[2] in ("spearman", "ssim")]
    first, last = table["layers"][0], table["layers"][-1]
    spearman = {(rule, target): table["cascading"][rule][target]["spearman"]["mean"] for rule in table["rules"] for target in table["targets"]}
    summary = ", ".join(f"{rule} {spearman[(rule, 'class')][0]:.2f}" for rule in table["rules"] if (rule, "class") in spearman)
    body = [
        html.table(
            header,
            shown,
            (
                f"Similarity of each rule's maps to the trained model's, mean ± std over {len(images)} images, as the layers are "
                f"re-initialised from the top ({first}) down to {last}, cumulatively (..LAYER: down to it). class: the projection "
                f"of the score of the image's class; unit: of the strongest unit of {result.unit.layer}. Spearman: rank correlation "
                "of |map|; SSIM of the normalised |map|. A map that explains the model must lose its similarity as soon as "
                "layers it reads are re-initialised; one that stays near 1 shows the image, not the model."
            ),
        ),
        html.figure(
            curves,
            "Model-parameter randomisation",
            (
                "Solid: cascading from the top; dashed: one layer at a time (the rest trained). Look for guided backprop "
                "staying high while the output layers are re-initialised (its maps do not read them), and the gradient "
                "dropping at once (Adebayo et al. 2018, Fig. 2). A unit's projection cannot change until its own layer "
                "or one below is re-initialised."
            ),
        ),
        html.figure(
            grid, "The maps as layers are re-initialised", f"Image 0 of the split; columns: trained, then down to each layer ({first} first)."
        ),
    ]
    return html.Section(
        "sanity", "Sanity checks of the projections", "Adebayo et al. 2018", body, table, f"class-map Spearman after -{first}: {summary}"
    )


def faithfulness(context, advance):
    from zfkeras.analysis.faithfulness import faithfulness as curves_of

    probe = loading.with_all_rules(context.probe)
    images, labels = labelled(context, FAITHFULNESS_IMAGES)
    result = curves_of(probe, images, labels=labels, steps=28, seed=context.seed, progress=advance)
    table = result.to_dict()
    header, rows = records.faithfulness_rows(table)
    name = context.save(figures.faithfulness_figure(table), "faithfulness-curves.png")
    aucs = table["targets"]["class"]
    best = min((kinds["deletion"]["auc_mean"], method) for method, kinds in aucs.items())
    body = [
        html.table(
            header,
            rows,
            (
                f"Area under the deletion and insertion curves, mean ± std over {len(images)} images of the split ({table['steps']} "
                "steps; removed pixels take the mean image). class: pixels ranked by the occlusion map or by each rule's "
                "projection of the class score, scored by p(class); unit: ranked by each rule's projection of the strongest "
                f"unit of {result.unit['layer']}, scored by its activation. random: a random ranking, the floor every map must beat."
            ),
        ),
        html.figure(
            name,
            "Deletion and insertion curves",
            (
                "Mean curves, ± std shaded. Look for maps whose deletion curve falls below the random one (the pixels they "
                "rank first matter to the model) and whose insertion curve rises above it."
            ),
        ),
    ]
    summary = f"lowest class deletion AUC: {best[1]} {best[0]:.3f} (random {aucs['random']['deletion']['auc_mean']:.3f})"
    return html.Section("faithfulness", "Deletion and insertion", "Petsiuk et al. 2018", body, table, summary)
