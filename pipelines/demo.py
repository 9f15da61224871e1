"""``zf demo``: the main job on built-in data, every step a normal ``zf`` command (see README)."""

import os

import click

from pipelines import _common


def run(command, args):
    """Run ``zf <command> args`` in this process (same code path as the command line)."""
    from pipelines.cli import main

    click.secho(f"\n$ zf {command} {' '.join(args)}", bold=True, err=True)
    main.get_command(None, command).main(args=list(args), prog_name=f"zf {command}", standalone_mode=False)


@click.command()
@click.option("--out", default="out/demo", show_default=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--data", default="fashion_mnist", show_default=True, help="Data source (idx:PATH, folder:PATH, tfds:NAME).")
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1), help="Training epochs (the shipped model used 30).")
@click.option("--photo", default="chelsea", show_default=True, help="Photo projected through a 224x224 ZFNet at the end.")
@_common.skip_corrupt_option
@_common.seed_option
def demo(out, data, epochs, photo, skip_corrupt, seed):
    """Train zfnet_small, export it, evaluate it, and project its features to pixels.

    Writes OUT/run (checkpoints, TensorBoard logs), OUT/model (SavedModel + .keras + zfkeras.json),
    OUT/evaluate.json, OUT/visualize (Fig. 2-style top-9 grids) and OUT/photo.png (a real photo's
    strongest maps through the full 224x224 ZFNet, random paper-init weights).
    """
    model = os.path.join(out, "model")
    skip = ["--skip-corrupt"] if skip_corrupt else []
    run("train", ["--arch", "zfnet_small", "--data", data, "--epochs", str(epochs), "--kernel-init", "glorot_uniform",
                  "--dropout", "0", "--units", "fc6=512,fc7=512", "--patience", "3", "--seed", str(seed),
                  "--run-dir", os.path.join(out, "run"), "--export", model, "--no-progress", *skip])
    run("evaluate", [model, "--data", data, "--out", os.path.join(out, "evaluate.json"), *skip])
    run("visualize", [model, "--data", data, "--maps", "random:8", "--images", "2000", "--seed", str(seed),
                      "--out", os.path.join(out, "visualize"), *skip])
    run("project", [photo, "--arch", "zfnet", "--layers", "conv1,conv2,conv5", "--maps", "6", "--seed", str(seed),
                    "--out", os.path.join(out, "photo.png")])
    click.echo(f"\ndemo done: see {out}/")
