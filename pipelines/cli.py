"""The ``zf`` command. Sub-commands are imported only when run, so ``zf --help`` stays fast."""

import logging
import os

import click

from pipelines.registry import COMMANDS, HELP, command
from pipelines.runtime import full_disk_line, os_error_line

# Set before TensorFlow is first imported: hide its C++ log lines and retracing notices (the few
# start-up lines this does not hide are dropped by LazyGroup.invoke).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("tensorflow").setLevel(logging.ERROR)
logging.getLogger("absl").setLevel(logging.ERROR)  # e.g. TFDS's "Variant folder ... has no dataset_info.json"


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        return command(name) if name in COMMANDS else None

    def invoke(self, ctx):
        # Every command imports TensorFlow; do it now, without its start-up chatter (not for --help).
        words = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if words and not {"--help", "-h"} & set(words):
            from pipelines.runtime import import_tensorflow_quietly

            import_tensorflow_quietly()
        # Library code raises ValueError with a message naming the bad input: show that one line.
        try:
            try:
                return super().invoke(ctx)
            except Exception as error:  # a corrupt image found while reading --data (TF error): one line naming it
                from pipelines.runtime import corrupt_data_error

                named = corrupt_data_error(error)
                if named is None:
                    full_disk = full_disk_line(error)  # TensorFlow's or h5py's own error: PATH: reason
                    if full_disk is None:
                        raise
                    raise click.ClickException(full_disk) from None
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
