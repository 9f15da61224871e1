"""Running ``zf`` in-process and checking how it fails: shared by the failure-behaviour tests."""

from click.testing import CliRunner

from pipelines.cli import main


def zf(*args):
    """``zf ARGS`` through Click's test runner (arguments turned into strings)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def last_line(result):
    """The last line the command printed ("" if none)."""
    lines = result.output.strip().splitlines()
    return lines[-1] if lines else ""


def assert_fails(result, code, *names):
    """Exit ``code``, no traceback nor uncaught exception, and the last line names each of ``names``."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    line = last_line(result)
    for name in names:
        assert str(name) in line, (name, line)
