"""Paths read from a metadata file: each must stay inside the directory the file describes.

Models and data sets are shared as directories whose metadata file names their other files by
relative path (an export's ``zfkeras.json``: ``mean_image``, ``keras_model``, ``checkpoints``,
``history``; ``zf prepare``'s ``dataset.json``: its shards). Such a name is never trusted: it must
resolve, after following symbolic links, to a place inside that directory (also after following
its links), or the read stops with one line naming the metadata file and the entry. So a
``"../../elsewhere"`` entry, an absolute path, or a link pointing out of the directory is refused
before anything is opened. No TensorFlow here.
"""

import os

__all__ = ["inside"]


def inside(directory, name, entry, metadata):
    """The path of ``name`` (a relative path read from the metadata file ``metadata`` of
    ``directory``, under key ``entry``) if it resolves inside ``directory``, else a ValueError
    ``METADATA: ENTRY 'NAME' points outside DIRECTORY ...``.

    Args:
        directory: the directory the metadata describes (an export, a ``zf prepare`` output).
        name: the path as read from the metadata (must be a non-empty string).
        entry: what the name is in the metadata, for the message (e.g. ``"mean_image"``,
            ``"splits.train.files[3]"``).
        metadata: the metadata file, for the message.

    Returns:
        ``os.path.join(directory, name)`` (not resolved: messages keep naming what the user gave).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{metadata}: {entry} must be a file name inside {directory}, got {name!r}")
    path = os.path.join(os.fspath(directory), name)
    root = os.path.realpath(directory)
    resolved = os.path.realpath(path)
    if os.path.commonpath([root, resolved]) != root or resolved == root:
        raise ValueError(
            f"{metadata}: {entry} {name!r} points outside {directory} (to {resolved}); every file a metadata entry names "
            "must be inside its directory (links followed)"
        )
    return path
