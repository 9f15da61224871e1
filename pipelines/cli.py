"""The ``zf`` command. Sub-commands are imported only when run, so ``zf --help`` stays fast."""

import importlib
import logging
import os

import click

# Set before TensorFlow is first imported: hide its C++ log lines and retracing notices (the few
# start-up lines this does not hide are dropped by LazyGroup.invoke).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("tensorflow").setLevel(logging.ERROR)
logging.getLogger("absl").setLevel(logging.ERROR)  # e.g. TFDS's "Variant folder ... has no dataset_info.json"

# command name -> "module:function" (modules under pipelines/)
COMMANDS = {
    "demo": "pipelines.demo:demo",
    "project": "pipelines.project:project",
    "train": "pipelines.train:train",
    "export": "pipelines.export:export",
    "evaluate": "pipelines.evaluate:evaluate",
    "visualize": "pipelines.visualize:visualize",
    "evolution": "pipelines.evolution:evolution",
    "filters": "pipelines.filters:filters",
    "occlusion": "pipelines.occlusion:occlusion",
    "invariance": "pipelines.invariance:invariance",
    "correspondence": "pipelines.correspondence:correspondence",
    "transfer": "pipelines.transfer:transfer",
    "layers": "pipelines.layers:layers",
    "ablate": "pipelines.ablate:ablate",
    "report": "pipelines.report:report",
    "prepare": "pipelines.prepare:prepare",
}

HELP = {
    "demo": "Train, export, evaluate and visualize on the default data.",
    "project": "Project the strongest feature maps of images to pixels.",
    "train": "Train a ZFNet-family model (paper Sec. 3 recipe).",
    "export": "Export a .keras model to a SavedModel directory.",
    "evaluate": "Top-1/top-5 error of one or more models (single and 10-crop).",
    "visualize": "Top-9 activations projected to pixels (Fig. 2).",
    "evolution": "Feature evolution across training checkpoints (Fig. 4).",
    "filters": "First-layer filters and architecture diagnostics (Fig. 6).",
    "occlusion": "Occlusion sensitivity maps (Fig. 7).",
    "invariance": "Feature invariance to translation, scale, rotation (Fig. 5).",
    "correspondence": "Part correspondence analysis (Table 1).",
    "transfer": "Pretrained features vs training from scratch on new data (Tables 4-5, Fig. 9).",
    "layers": "How discriminative each layer's features are (Table 7).",
    "ablate": "Architecture variants on one budget (Table 3) and the first-layer comparison (Sec. 4.1).",
    "report": "One HTML page about one model: architecture, training, accuracy and the paper's figures.",
    "prepare": "Write a data source as sharded TFRecords of resized JPEGs (--data tfrecord:DIR).",
}


def os_error_line(error):
    """``PATH: reason`` for an OSError (its first line when it names no path)."""
    if error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    message = str(error).strip().splitlines()
    return message[0] if message else type(error).__name__


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, function = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), function)

    def invoke(self, ctx):
        # Every command imports TensorFlow; do it now, without its start-up chatter (not for --help).
        words = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if words and not {"--help", "-h"} & set(words):
            from pipelines._common import import_tensorflow_quietly

            import_tensorflow_quietly()
        # Library code raises ValueError with a message naming the bad input: show that one line.
        try:
            try:
                return super().invoke(ctx)
            except Exception as error:  # a corrupt image found while reading --data (TF error): one line naming it
                from pipelines._common import corrupt_data_error

                named = corrupt_data_error(error)
                if named is None:
                    raise
                raise named from None
        except OSError as error:  # unwritable output, full disk, missing file...: one line naming the path
            raise click.ClickException(os_error_line(error)) from None
        except ValueError as error:
            message = str(error).strip().splitlines()
            raise click.ClickException(message[0] if message else type(error).__name__) from None

    def format_commands(self, ctx, formatter):
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="zfkeras")
def main():
    """zfkeras: train ZFNet-family convnets and see inside them (Zeiler & Fergus, ECCV 2014)."""


if __name__ == "__main__":
    main()
