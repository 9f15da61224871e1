"""Speed and memory benchmarks: `python -m benchmarks [NAME ...] [--smoke]` (see benchmarks/__main__.py)."""

import importlib
import os
import pkgutil


def registered():
    """The benchmarks' names: every module of this package with a ``main(argv)`` (``speed`` holds shared helpers)."""
    here = os.path.dirname(__file__)
    names = sorted(m.name for m in pkgutil.iter_modules([here]) if not m.name.startswith("_"))
    return [name for name in names if callable(getattr(importlib.import_module(f"benchmarks.{name}"), "main", None))]
