"""``zf occlusion``: occlusion sensitivity maps, paper Fig. 7 (see :mod:`zfkeras.occlusion`)."""

import os

import click
import numpy as np

from pipelines import figures, loading, options, output, records


def save_result(result, class_names, name, out):
    """Write ``<name>.npz`` and ``<name>.png`` into the (temporary) output directory ``out``."""
    np.savez(
        os.path.join(out, name + ".npz"),
        positions=result.positions,
        feature_activity=result.feature_activity,
        true_class_prob=result.true_class_prob,
        top_label=result.top_label,
        projection=result.projection,
        image=result.image,
        layer=result.layer,
        feature_map=result.feature_map,
        label=result.label,
        patch=result.patch,
        stride=result.stride,
        clean_probs=result.clean_probs,
        class_names=np.array(class_names),
        rule=np.array(result.rule),
    )
    output.save_figure(figures.occlusion_figure(result, class_names, name), os.path.join(out, name + ".png"))


@click.command()
@options.model_argument
@options.weights_seed_option
@options.images_argument
@options.label_option
@click.option("--patch", type=click.IntRange(min=1), help="Side of the grey square in model-input pixels. Default: input height / 4.")
@click.option("--stride", type=click.IntRange(min=1), help="Grid step in pixels (square centres at 0, S, 2S, ...). Default: input height / 28.")
@click.option(
    "--fill", type=options.PixelValue(), help="Raw pixel value (0-255) of the square. Default: the training mean image (0 after mean subtraction)."
)
@click.option("--layer", help="Conv layer for panels (b) and (c). Default: the top conv layer.")
@click.option("--map", "feature_map", type=click.IntRange(min=0), help="Feature map of --layer. Default: the strongest in the unoccluded image.")
@options.batch_size_option(help="Occluded copies per forward pass (bounds memory).")
@options.rule_option(help="Backward rule of panel (c)'s projection")
@options.precision_option
@options.out_option(results="occlusion.json", written=(".npz", ".png"))
def occlusion(model, images, label, patch, stride, fill, layer, feature_map, batch_size, rule, out):
    """Occlusion sensitivity of MODEL on each IMAGE (any image file, or a built-in photo name).

    Slides a square over every grid position (it may run past the border and is clipped there)
    and records the total activity of one top-layer feature map, the probability of the true class
    and the most probable class. Writes OUT/<image name>.npz and OUT/<image name>.png (Fig. 7),
    then OUT/occlusion.json (a summary per image).
    """
    from zfkeras.analysis.occlusion import OcclusionEvaluator, default_stride, num_positions, occlusion_map
    from zfkeras.io.atomic import atomic_output

    probe = loading.open_model(model)
    loading.check_rule(probe, rule)
    class_names = list(probe.class_names)
    if layer is not None:
        layer = loading.choose_layers(layer, probe, "--layer")[0]
    labels = options.parse_labels(label, class_names, len(images))
    named = loading.load_images(images, probe.input_shape)
    size = f"{probe.input_shape[0]}x{probe.input_shape[1]}"
    if patch is not None and patch > max(probe.input_shape[:2]):
        raise click.BadParameter(f"{patch} is larger than the model input {size}; use 1-{max(probe.input_shape[:2])}", param_hint="--patch")
    if stride is not None and stride >= max(probe.input_shape[:2]):
        raise click.BadParameter(
            f"{stride} leaves one square position on the model input {size}; use 1-{max(probe.input_shape[:2]) - 1}", param_hint="--stride"
        )
    if feature_map is not None:
        chosen_layer = layer or probe.layer_names[-1]
        depth = loading.map_counts(probe, [chosen_layer])[chosen_layer]
        if feature_map >= depth:
            raise click.BadParameter(f"{feature_map}: {chosen_layer} has maps 0-{depth - 1}", param_hint="--map")
    evaluators = []
    for _name, image in named:
        try:
            evaluators.append(OcclusionEvaluator(probe, image, layer=layer, patch=patch, fill=fill, feature_map=feature_map))
        except ValueError as error:
            raise click.UsageError(str(error)) from None
    step = stride or default_stride(probe.input_shape)
    total = num_positions(probe.input_shape, step) * len(named)
    results = []
    with atomic_output(out, directory=True) as target, output.progressbar(length=total, label="occluding") as bar:
        for (name, image), evaluator, true_label in zip(named, evaluators, labels):
            result = occlusion_map(
                probe, image, label=true_label, stride=stride, batch_size=batch_size, progress=bar.update, evaluator=evaluator, rule=rule
            )
            save_result(result, class_names, name, target)
            results.append((name, result))
        output.write_json(
            os.path.join(target, "occlusion.json"),
            {
                "model": model,
                "seed": click.get_current_context().meta.get(options.SEED),
                "images": {name: records.summary_json(result, class_names, path) for (name, result), path in zip(results, images)},
            },
        )
    for name, result in results:
        worst = np.unravel_index(np.argmin(result.true_class_prob), result.true_class_prob.shape)
        click.echo(
            f"{name}: p({class_names[result.label]}) unoccluded {result.clean_probs[result.label]:.3f}, "
            f"min {result.true_class_prob[worst]:.3f} with the square at {tuple(result.positions[worst].tolist())}; "
            f"{result.layer} map {result.feature_map} activity {result.clean_activity:.4g} -> "
            f"min {result.feature_activity.min():.4g}; -> {os.path.join(out, name)}.npz/.png"
        )
