"""``zf demo``: the main job on built-in data (see README)."""

import os

import click

from pipelines import _common
from pipelines.project import project


@click.command()
@click.option("--out", default="out/demo", show_default=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--photo", default="chelsea", show_default=True, help="Image file or built-in photo name.")
@_common.seed_option
@click.pass_context
def demo(ctx, out, photo, seed):
    """Build ZFNet (Fig. 3), project the strongest maps of every conv layer of a real photo to pixels."""
    png = os.path.join(out, "projections.png")
    ctx.invoke(project, images=(photo,), model_path=None, arch="zfnet", layers="conv1,conv2,conv3,conv4,conv5",
               count=6, position="max", out=png, seed=seed)
