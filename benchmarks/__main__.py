"""Run benchmarks: ``python -m benchmarks`` (all) or ``python -m benchmarks train occlusion``
(train, topk, project, occlusion, data, feature_visualization, toolbox).

Each module ``benchmarks/<name>.py`` has ``main(argv) -> dict`` that prints its own table and
returns the measured numbers; every number is compared against a baseline measured in the same run.
"""

import importlib
import os
import pkgutil
import sys


def main(argv):
    here = os.path.dirname(__file__)
    shared = {"speed"}  # the timing helpers the benchmarks share, not a benchmark
    names = sorted(m.name for m in pkgutil.iter_modules([here]) if not m.name.startswith("_") and m.name not in shared)
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
