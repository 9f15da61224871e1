"""Atomic outputs: the one writer every output of zfkeras and ``zf`` goes through.

An output (a file, several files in one folder, or a whole directory) is built in a temporary
sibling ``.NAME.partial-PID-XXXX`` and renamed into place at the end, so ``NAME`` is always either
absent, the previous complete result, or the new complete result. A directory that already exists
is replaced whole: it is first renamed to ``.NAME.old-PID-XXXX/NAME``, the new one is renamed in,
then the old one is deleted.

A killed process leaves its ``.NAME.partial-*`` (and, if killed between the two renames, a
``.NAME.old-*`` holding the previous result) behind; the next atomic write of ``NAME`` removes
those whose process is gone, putting the previous result back first if ``NAME`` is missing.

No TensorFlow here: the ``zf`` command imports this before deciding to load TF.
"""

import contextlib
import errno
import json
import os
import shutil
import tempfile

__all__ = ["atomic_output", "clean_stale", "make_parents", "save_model", "swap_directory", "write_json"]

_FULL_DISK = os.strerror(errno.ENOSPC)  # "No space left on device"


def _owner_alive(entry, prefix):
    """Whether the process that made ``entry`` (``prefix`` + ``PID-XXXX``) still runs (older
    names without a PID count as abandoned)."""
    pid = os.path.basename(entry)[len(prefix) :].split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive but not ours (EPERM)
        return True
    return True


def clean_stale(path):
    """Remove the leftovers of killed writers of ``path``: ``.NAME.partial-*`` and ``.NAME.old-*``
    siblings whose process is gone. If ``path`` is missing and a leftover ``.old-`` holds the
    previous result, that result is put back first. Returns the removed paths."""
    parent, name = os.path.split(os.path.abspath(os.fspath(path)))
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return []
    removed = []
    for kind in ("old", "partial"):
        prefix = f".{name}.{kind}-"
        for entry in (os.path.join(parent, e) for e in entries if e.startswith(prefix)):
            if _owner_alive(entry, prefix):
                continue
            previous = os.path.join(entry, name)
            if kind == "old" and not os.path.lexists(path) and os.path.lexists(previous):
                os.replace(previous, path)  # killed between the two renames: the old result goes back
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def make_parents(directory):
    """``os.makedirs(directory, exist_ok=True)``; returns the directories it created, deepest first."""
    missing = []
    current = os.path.abspath(directory)
    while not os.path.lexists(current):
        missing.append(current)
        current = os.path.dirname(current)
    os.makedirs(directory, exist_ok=True)
    return missing


def _remove_created(created):
    for directory in created:  # deepest first; only if still empty
        try:
            os.rmdir(directory)
        except OSError:
            break


def swap_directory(temp, path):
    """Rename the finished directory ``temp`` to ``path``, replacing an existing directory whole."""
    parent, name = os.path.split(path)
    old = None
    try:
        if os.path.lexists(path):
            old = tempfile.mkdtemp(prefix=f".{name}.old-{os.getpid()}-", dir=parent)
            os.replace(path, os.path.join(old, name))
        os.replace(temp, path)
    finally:
        if old is not None:
            if not os.path.lexists(path) and os.path.lexists(os.path.join(old, name)):
                os.replace(os.path.join(old, name), path)  # the new one failed to move in: keep the old
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(*paths, directory=False):
    """Yield temporary path(s) beside ``paths``; they replace ``paths`` only if the block succeeds.

    ``directory=False``: each of ``paths`` is a file (all in one folder); yields one temporary file
    path per path (a single path if one was given), named like the final file so extensions still
    select formats. ``directory=True``: one path, a directory; yields an empty temporary directory
    that becomes ``path``, replacing an existing directory whole.

    Parent directories are created, and removed again if the block fails. Leftovers of killed
    writers of the same paths are cleaned first (:func:`clean_stale`). An error of the block that
    names no file or only a temporary one (a full disk: ``[Errno 28]`` from a plain ``write``, or
    TensorFlow's own error) is re-raised as an OSError naming the output, ``PATH: reason``.
    """
    if not paths:
        raise TypeError("atomic_output needs at least one path")
    paths = [os.path.abspath(os.fspath(p)) for p in paths]
    parent = os.path.dirname(paths[0])
    if any(os.path.dirname(p) != parent for p in paths):
        raise ValueError(f"atomic_output: all paths must be in one folder, got {paths}")
    if directory and len(paths) != 1:
        raise ValueError("atomic_output(directory=True) takes one path")
    for path in paths:
        if directory and os.path.lexists(path) and not os.path.isdir(path):
            raise NotADirectoryError(20, "exists and is not a directory", path)
        if not directory and os.path.isdir(path):
            raise IsADirectoryError(21, "is a directory, expected a file", path)
    created = make_parents(parent)
    done = False
    try:
        for path in paths:
            clean_stale(path)
        name = os.path.basename(paths[0])
        temp = tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=parent)
        try:
            with _naming_output(paths[0], temp):
                if directory:
                    umask = os.umask(0)
                    os.umask(umask)
                    os.chmod(temp, 0o777 & ~umask)  # mkdtemp makes it private; an output is an ordinary directory
                    yield temp
                    swap_directory(temp, paths[0])
                else:
                    targets = [os.path.join(temp, os.path.basename(p)) for p in paths]
                    yield targets[0] if len(targets) == 1 else targets
                    for target, path in zip(targets, paths):
                        os.replace(target, path)
            done = True
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    finally:
        if not done:
            _remove_created(created)


@contextlib.contextmanager
def _naming_output(path, temp):
    """Errors of writing into ``temp`` that name no file, or only the temporary one, re-raised as
    an OSError naming the output ``path`` (``PATH: reason``): a full disk surfaces as a bare
    ``[Errno 28]`` from ``write``, or as a TensorFlow or h5py error of its own kind."""
    try:
        yield
    except OSError as error:
        if error.errno is not None and (error.filename is None or os.fspath(error.filename).startswith(temp)):
            raise OSError(error.errno, error.strerror or os.strerror(error.errno), path) from None
        if error.errno is None and _FULL_DISK in str(error):
            raise OSError(errno.ENOSPC, _FULL_DISK, path) from None
        raise
    except Exception as error:  # TensorFlow's writers (SavedModel, TFRecord) raise their own errors
        if _FULL_DISK in str(error):
            raise OSError(errno.ENOSPC, _FULL_DISK, path) from None
        raise


def write_json(path, obj, text=None):
    """Write ``obj`` as JSON (indent 2, a final newline) to ``path`` atomically; ``text``: the
    JSON text to write instead (e.g. a custom layout of ``obj``)."""
    with atomic_output(path) as temp:
        with open(temp, "w") as handle:
            handle.write((json.dumps(obj, indent=2) if text is None else text.rstrip("\n")) + "\n")


def save_model(model, path):
    """``model.save(path)`` (a Keras model, ``.keras`` file) atomically: ``path`` is whole or absent."""
    with atomic_output(path) as temp:
        model.save(temp)
