"""Run benchmarks: ``python -m benchmarks`` (all) or ``python -m benchmarks train occlusion``
(every module of this package with a ``main``: see ``benchmarks.registered``).

Each module ``benchmarks/<name>.py`` has ``main(argv) -> dict`` that prints its own table and
returns the measured numbers; every number is compared against a baseline measured in the same run.
``--smoke`` runs each on tiny sizes in seconds, no timing meant (``tests/test_benchmarks.py``).
"""

import importlib
import os
import sys

from benchmarks import registered


def main(argv):
    names = registered()
    # Leading words that name benchmarks choose them; everything from the first option on is passed
    # to each benchmark's main (so "--images 6400" keeps its value).
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    chosen, options = argv[:split] or names, argv[split:]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        sys.exit(f"unknown benchmark {unknown[0]!r}; available: {', '.join(names)}")
    for name in chosen:
        print(f"== benchmark: {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main(options)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main(sys.argv[1:])
