"""``zf atlas``: every unit of every layer, browsable (see :mod:`.command`)."""

from pipelines.commands.atlas.command import atlas

__all__ = ["atlas"]
