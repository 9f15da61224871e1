"""``zf report``: one HTML page about one model (see :mod:`.command`)."""

from pipelines.commands.report.command import report

__all__ = ["report"]
