"""``zf demo``: the main job on built-in data, every step a normal ``zf`` command (see README)."""

import os

import click

from pipelines import options


def run(command, args):
    """Run ``zf <command> args`` in this process (same code path as the command line)."""
    from pipelines.registry import command as zf_command

    click.secho(f"\n$ zf {command} {' '.join(args)}", bold=True, err=True)
    zf_command(command).main(args=list(args), prog_name=f"zf {command}", standalone_mode=False)


@click.command()
@click.option(
    "--out",
    default="out/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Output directory (one folder per step inside).",
)
@options.data_options(
    images="Use only the first N images of each split in every step (default: all for training and evaluation, 2000 for the scans)."
)
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1), help="Training epochs (the shipped model used 30).")
@click.option("--photo", default="chelsea", show_default=True, help="Photo projected through a 224x224 ZFNet at the end.")
@options.seed_option
def demo(out, data_spec, data_dir, skip_corrupt, images, epochs, photo, seed):
    """Train zfnet_small, export it, evaluate it, project its features to pixels, and end on its
    report linked to its atlas.

    Writes OUT/run (checkpoints, TensorBoard logs), OUT/model (SavedModel + .keras + zfkeras.json),
    OUT/evaluate/results.json, OUT/visualize (Fig. 2-style top-9 grids), OUT/photo/projection.png
    (a real photo's strongest maps through the full 224x224 ZFNet, random paper-init weights),
    OUT/atlas (every unit of every layer, browsable) and OUT/report/index.html (the model's page,
    each Fig. 2 map linked to its atlas page); prints the file:// address of the report.
    """
    model = os.path.join(out, "model")
    data = ["--data", data_spec, *(["--data-dir", data_dir] if data_dir else []), *(["--skip-corrupt"] if skip_corrupt else [])]
    data += ["--max-pixels", str(options.max_pixels())]
    limit = ["--images", str(images)] if images else []
    run(
        "train",
        [
            "--arch",
            "zfnet_small",
            *data,
            *limit,
            "--epochs",
            str(epochs),
            "--kernel-init",
            "glorot_uniform",
            "--dropout",
            "0",
            "--units",
            "fc6=512,fc7=512",
            "--patience",
            "3",
            "--seed",
            str(seed),
            "--out",
            os.path.join(out, "run"),
            "--export",
            model,
            "--no-progress",
        ],
    )
    run("evaluate", [model, *data, *limit, "--out", os.path.join(out, "evaluate")])
    run(
        "visualize",
        [model, *data, "--images", str(images or 2000), "--maps", "random:8", "--seed", str(seed), "--out", os.path.join(out, "visualize")],
    )
    run("project", ["random:zfnet", photo, "--layers", "conv1,conv2,conv5", "--top", "6", "--seed", str(seed), "--out", os.path.join(out, "photo")])
    scanned = ["--images", str(images or 2000)]
    run("atlas", [model, *data, *scanned, "--seed", str(seed), "--out", os.path.join(out, "atlas")])
    run("report", [model, *data, *scanned, "--atlas", os.path.join(out, "atlas"), "--seed", str(seed), "--out", os.path.join(out, "report")])
    page = os.path.abspath(os.path.join(out, "report", "index.html"))
    click.echo(f"\ndemo done: see {out}/; open the report (each Fig. 2 map links to its unit in the atlas):\nfile://{page}")
