"""The ``zf`` command. Sub-commands are imported only when run, so ``zf --help`` stays fast."""

import logging
import os

import click

from pipelines.registry import COMMANDS, HELP, command
from pipelines.runtime import full_disk_line, os_error_line

# Set before TensorFlow is first imported: hide its C++ log lines (3: errors too, such as the
# harmless "NodeDef mentions attribute use_unbounded_threadpool" of every folder: source, "oneDNN
# supports DT_UINT8 only on platforms with AVX-512" or "failed call to cuInit"; fatal ones still
# show) and its retracing notices. TF_CPP_MIN_LOG_LEVEL=0 or 1 shows them. The start-up lines this
# does not hide are dropped when TensorFlow is imported (zfkeras.io.quiet).
if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") in ("2", "3"):
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
logging.getLogger("tensorflow").setLevel(logging.ERROR)
logging.getLogger("absl").setLevel(logging.ERROR)  # e.g. TFDS's "Variant folder ... has no dataset_info.json"


class UsageLine(click.ClickException):
    """A usage error (a bad option, a missing argument, a bad value) shown as one line, exit code 2."""

    exit_code = 2


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        return command(name) if name in COMMANDS else None

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:  # plain `zf`: the help
            raise
        except click.UsageError as error:  # `zf --bogus`: one line, as for a command's options
            raise UsageLine(error.format_message()) from None

    def invoke(self, ctx):
        # Library code raises ValueError with a message naming the bad input: show that one line.
        try:
            try:
                return self.run_command(ctx)
            except click.UsageError as error:  # Click's usage line and hint dropped: the error alone
                raise UsageLine(error.format_message()) from None
            except click.ClickException:
                raise
            except Exception as error:  # a corrupt image found while reading --data (TF error): one line naming it
                from pipelines.runtime import corrupt_data_error

                named = corrupt_data_error(error)
                if named is None:
                    full_disk = full_disk_line(error)  # TensorFlow's or h5py's own error: PATH: reason
                    if full_disk is None:
                        raise
                    raise click.ClickException(full_disk) from None
                raise UsageLine(named.format_message()) from None
        except OSError as error:  # unwritable output, full disk, missing file...: one line naming the path
            raise click.ClickException(os_error_line(error)) from None
        except ValueError as error:
            message = str(error).strip().splitlines()
            raise click.ClickException(message[0] if message else type(error).__name__) from None

    def run_command(self, ctx):
        """click.Group.invoke (not chained), with TensorFlow imported only once Click has parsed and
        checked the sub-command's arguments: a bad option is refused before TensorFlow loads."""
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not args:
            return super().invoke(ctx)
        ctx.args, ctx._protected_args = [], []
        with ctx:
            name, cmd, args = self.resolve_command(ctx, args)
            ctx.invoked_subcommand = name
            click.Command.invoke(self, ctx)
            sub_ctx = cmd.make_context(name, args, parent=ctx)  # parses; --help exits here
            with sub_ctx:
                # Every command imports TensorFlow; do it now, without its start-up chatter.
                from pipelines.runtime import import_tensorflow_quietly

                import_tensorflow_quietly()
                return sub_ctx.command.invoke(sub_ctx)

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
