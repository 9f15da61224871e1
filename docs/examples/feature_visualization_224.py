"""Feature visualization on the full 224x224 ZFNet against real colour photos (issue 19's check at 224).

The network is ZFNet at 224x224 with random he_normal weights, seed 0 (as in
``benchmarks/feature_visualization.py`` and ``tests/test_feature_visualization.py``: no ImageNet
weights exist offline). Eight conv5 units (0, 32, ..., 224, not picked by result) are optimised by
``zfkeras.analysis.feature_visualization.maximize_units`` (defaults: 256 steps, seed 0, one batch),
and each optimised image is compared with the unit's top-9 over every photo of FOLDER (the Tux Paint
stamps, ``docs/examples/tuxpaint_folder.py``) on the same objective (``centre_objective``: the mean
of the unit's map over its centre 7x7 of 13x13), and with the layer's other 255 units on that image.
Prints the numbers as JSON::

    python docs/examples/tuxpaint_folder.py --out data/tuxpaint
    PYTHONPATH=. .venv/bin/python docs/examples/feature_visualization_224.py data/tuxpaint

About 10 CPU minutes on 2 cores.
"""

import json
import sys
import time

import numpy as np

from zfkeras import data
from zfkeras.analysis.feature_visualization import centre_objective, maximize_units
from zfkeras.nn.models import build_model, zfnet_spec
from zfkeras.nn.probe import KerasProbe

UNITS = list(range(0, 256, 32))


def main(folder):
    model = build_model(zfnet_spec(10).replace(kernel_init="he_normal"), seed=0)  # he_normal keeps conv5 alive
    probe = KerasProbe(model)
    source = data.load_source(f"folder:{folder}", "all")
    on_data = np.concatenate([centre_objective(probe.features(x, ["conv5"])["conv5"]) for x, _ in data.eval_dataset(source, 224, 3, 32)])
    cpu, wall = time.process_time(), time.perf_counter()
    optimised = maximize_units(model, "conv5", UNITS, seed=0)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    on_optimised = centre_objective(probe.features(optimised, ["conv5"])["conv5"])  # [8, 256]
    rows = []
    for row, unit in enumerate(UNITS):
        best = np.sort(on_data[:, unit])[-9:]  # the unit's top-9 photos on this objective
        own = float(on_optimised[row, unit])
        rows.append(
            {
                "unit": unit,
                "optimised": own,
                "best_photo": float(best[-1]),
                "ninth_photo": float(best[0]),
                "over_best_photo": own / float(best[-1]) if best[-1] > 0 else None,
                "units_of_the_layer_driven_harder": int((on_optimised[row] > own).sum()),
            }
        )
    summary = {
        "photos": int(len(on_data)),
        "units": UNITS,
        "steps": 256,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "cpu_seconds_per_unit": cpu / len(UNITS),
        "beat_every_top9_photo": sum(r["optimised"] > r["best_photo"] for r in rows),
        "own_unit_in_top_10_percent": sum(r["units_of_the_layer_driven_harder"] < 25.6 for r in rows),
        "rows": rows,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
