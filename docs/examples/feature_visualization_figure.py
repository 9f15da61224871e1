"""Optimise every conv5 unit of the shipped model (zfkeras.analysis.feature_visualization.
maximize_units, seed 0, defaults), compare each image with the 10,000 Fashion-MNIST test images, and
draw docs/figures/feature-visualization/conv5.png: units 0, 8, ..., 56 (every eighth, not picked
by result), each one's optimised image beside the receptive-field patches of its top-9 test images
(the Fig. 2 rule: strongest position, one per image). conv5.json holds the numbers.

    PYTHONPATH=. .venv/bin/python docs/examples/feature_visualization_figure.py

About a minute on 2 cores.
"""

import json
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from zfkeras import data  # noqa: E402
from zfkeras.analysis.feature_visualization import centre_objective, maximize_units  # noqa: E402
from zfkeras.export import open_model  # noqa: E402
from zfkeras.nn.fields import crop  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "docs", "figures", "feature-visualization")
UNITS = list(range(0, 64, 8))  # drawn


def main():
    probe = open_model(os.path.join(ROOT, "saved_models", "zfnet-fashion-mnist"))
    model = probe.keras_model
    source = data.load_source("fashion_mnist", "test")
    images = np.concatenate([x for x, _ in data.eval_dataset(source, 28, 1, 1000).as_numpy_iterator()])
    maps = probe.features(images, ["conv5"], batch_size=1000)["conv5"]
    started = time.process_time()
    optimised = maximize_units(model, "conv5", list(range(64)), seed=0)
    seconds = time.process_time() - started
    optimised_maps = probe.features(optimised, ["conv5"])["conv5"]
    on_optimised, on_data = centre_objective(optimised_maps), centre_objective(maps)
    own = np.arange(64)
    ratio = on_optimised[own, own] / on_data.max(axis=0)
    ranks = (on_optimised > on_optimised[own, own][:, None]).sum(axis=1)
    strongest = maps.max(axis=(1, 2)).max(axis=0)  # each unit's strongest activation anywhere in any test image
    summary = {
        "units": 64,
        "cpu_seconds": seconds,
        "centre_mean_over_best_test_image": {"min": float(ratio.min()), "median": float(np.median(ratio)), "max": float(ratio.max())},
        "units_beating_every_test_image_centre_mean": int((ratio > 1).sum()),
        "worst_rank_in_layer": int(ranks.max()),
        "units_whose_strongest_position_beats_every_test_image": int((optimised_maps[own, :, :, own].max(axis=(1, 2)) > strongest).sum()),
    }
    field = probe.fields["conv5"]

    fig, axes = plt.subplots(len(UNITS), 10, figsize=(10 * 0.9, len(UNITS) * 0.98))
    numbers = {}
    for row, unit in enumerate(UNITS):
        peaks = maps[..., unit].reshape(len(maps), -1).max(axis=1)
        top9 = np.argsort(-peaks, kind="stable")[:9]
        axes[row, 0].imshow(optimised[unit, :, :, 0], cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_ylabel(f"unit {unit}", fontsize=7)
        for column, index in enumerate(top9, start=1):
            y, x = np.unravel_index(maps[index, :, :, unit].argmax(), maps.shape[1:3])
            axes[row, column].imshow(crop(images[index], field, y, x)[:, :, 0], cmap="gray", vmin=0, vmax=255)
        numbers[unit] = {
            "optimised_centre_mean": float(on_optimised[unit, unit]),
            "best_test_image_centre_mean": float(on_data[:, unit].max()),
            "optimised_rank_in_layer": int(ranks[unit]),
            "top9_images": [int(i) for i in top9],
        }
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("optimised", fontsize=7)
    axes[0, 5].set_title(f"top-9 test images, conv5 receptive field ({field.size[0]}x{field.size[1]} px)", fontsize=7)
    fig.tight_layout(pad=0.3)
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "conv5.png"), dpi=110)
    with open(os.path.join(OUT, "conv5.json"), "w") as handle:
        json.dump({"summary": summary, "drawn": numbers, "steps": 256, "seed": 0}, handle, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
