"""``zf toolbox``: the live Deep Visualization Toolbox in the browser (see :mod:`.command`; the web
app in :mod:`.app`, the model side in :mod:`.engine`, the page in ``static/``)."""

from pipelines.commands.toolbox.command import toolbox

__all__ = ["toolbox"]
