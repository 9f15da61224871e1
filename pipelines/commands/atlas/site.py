"""The atlas site writer: per unit its PNGs (top-9 projections and patches, the strip across epochs,
the optimised image), then every page (:mod:`.html`) and ``atlas.json`` (written last: it marks a
complete atlas) with every number the pages show.

Layout of the site (all paths relative, so it opens from ``file://`` and can be moved whole)::

    index.html, style.css, atlas.json
    LAYER/index.html          units by class selectivity
    LAYER/by-unit.html        units by number
    LAYER/UNIT.html           one unit (a stable address, e.g. conv3/117.html)
    LAYER/UNIT-projections.png, LAYER/UNIT-patches.png, LAYER/UNIT-thumb.png (large fields only),
    LAYER/UNIT-epochs.png (with checkpoints), LAYER/UNIT-optimized.png (--optimize)
"""

import math
import os

import numpy as np

from pipelines import output
from pipelines.commands.atlas import html

MINIMUM_SIDE = 216  # the unit page shows a top-9 mosaic at least this wide (small fields are upscaled)


def finite(value):
    """A float for JSON: None for NaN and infinities."""
    value = float(value)
    return value if math.isfinite(value) else None


def save_png(path, rgb):
    """``rgb`` float ``[h, w, 3]`` (or ``[h, w]``) in [0, 1] as an 8-bit PNG."""
    from PIL import Image

    array = np.clip(np.nan_to_num(np.asarray(rgb, "float64")), 0, 1)
    Image.fromarray(np.round(array * 255).astype("uint8")).save(path, optimize=True)


def mosaics(projections, patches):
    """``(projections, patches)`` of one unit's top-9 as 3x3 RGB mosaics in [0, 1]."""
    from zfkeras.io.display import display_tiles, mosaic, pixels_to_display

    side = int(np.ceil(np.sqrt(len(projections))))
    raw = pixels_to_display(patches).reshape(patches.shape)  # NaN (outside the image) stays NaN
    return mosaic(display_tiles(projections), side), mosaic(raw, side)


class Site:
    """Collects the atlas of each layer and writes the site into ``root`` (an empty directory).

    Args:
        root: the output directory being built.
        header: the site-wide facts (model, data, split, images, command, ...), kept in atlas.json.
        class_names: one name per class of the data.
    """

    def __init__(self, root, header, class_names):
        self.root, self.header, self.class_names = root, dict(header), list(class_names)
        self.layers = {}

    def add_layer(self, summary, crops, field, units_total):
        """Write the PNGs of every unit of ``summary`` (a :class:`zfkeras.analysis.atlas.LayerAtlas`)
        from ``crops`` (:func:`zfkeras.analysis.atlas.project_units`) and keep its numbers."""
        layer = summary.layer
        os.makedirs(os.path.join(self.root, layer), exist_ok=True)
        units = {}
        for m, channel in enumerate(summary.channels):
            record = self._unit_record(summary, m)
            projected, patches = mosaics(crops["projections"][m], crops["patches"][m])
            files = {"projections": f"{channel}-projections.png", "patches": f"{channel}-patches.png", "width": int(projected.shape[1])}
            files["scale"] = max(1, min(8, -(-MINIMUM_SIDE // files["width"])))
            save_png(os.path.join(self.root, layer, files["projections"]), projected)
            save_png(os.path.join(self.root, layer, files["patches"]), patches)
            files["thumbnail"] = files["projections"]
            if files["width"] > 2 * html.THUMB_SIDE:  # large fields: a small copy for the layer pages
                files["thumbnail"] = f"{channel}-thumb.png"
                self._thumbnail(projected, os.path.join(self.root, layer, files["thumbnail"]))
            record["files"] = files
            units[str(int(channel))] = record
        selectivity = np.where(summary.dead, -np.inf, np.nan_to_num(summary.selectivity, nan=-1.0))
        order = [int(summary.channels[m]) for m in sorted(range(len(summary.channels)), key=lambda m: (-selectivity[m], summary.channels[m]))]
        live = ~summary.dead
        self.layers[layer] = {
            "units_total": int(units_total),
            "field": [int(s) for s in field.size],
            "dead": [int(c) for c in summary.channels[summary.dead]],
            "near_duplicates": [[a, b, finite(r)] for a, b, r in summary.duplicates],
            "by_selectivity": order,
            "median_selectivity": finite(np.nanmedian(summary.selectivity[live]))
            if live.any() and not np.isnan(summary.selectivity[live]).all()
            else None,
            "mean_fire_rate": finite(summary.fire_rate.mean()) if len(summary.fire_rate) else None,
            "units": units,
        }

    @staticmethod
    def _thumbnail(rgb, path):
        from PIL import Image

        image = Image.fromarray(np.round(np.clip(np.nan_to_num(rgb), 0, 1) * 255).astype("uint8"))
        height = max(1, round(image.height * html.THUMB_SIDE / image.width))
        image.resize((html.THUMB_SIDE, height), Image.LANCZOS).save(path, optimize=True)

    def _unit_record(self, summary, m):
        """The JSON record of row ``m`` of a :class:`~zfkeras.analysis.atlas.LayerAtlas` (files added by the caller)."""
        names = self.class_names
        top = summary.top
        top9 = [
            {
                "rank": j + 1,
                **{f: int(top[f][m, j]) for f in ("image", "y", "x")},
                "value": finite(top["value"][m, j]),
                "class": names[int(top["labels"][m, j])],
            }
            for j in range(top["image"].shape[1])
            if top["image"][m, j] >= 0
        ]
        counts = summary.top_classes[m]
        row = summary.correlation[m]
        nearest = None
        if np.isfinite(row).any():
            best = int(np.nanargmax(row))
            nearest = {"unit": int(summary.channels[best]), "correlation": finite(row[best])}
        duplicates = [int(summary.channels[b]) for b in np.nonzero(np.nan_to_num(row, nan=-1) >= summary.duplicate_threshold)[0]]
        return {
            "dead": bool(summary.dead[m]),
            "fires": int(summary.fires[m]),
            "fire_rate": finite(summary.fire_rate[m]),
            "mean": finite(summary.mean[m]),
            "selectivity": finite(summary.selectivity[m]),
            "top9": top9,
            "histogram": [[int(b), int(c)] for b, c in enumerate(summary.histogram[m]) if c],
            "top100_classes": [[names[c], int(counts[c])] for c in np.argsort(-counts, kind="stable") if counts[c]],
            "class_means": {name: finite(summary.class_means[c, m]) for c, name in enumerate(names)},
            "nearest": nearest,
            "near_duplicates": duplicates,
        }

    def add_evolution(self, layer, channels, epochs, tops, tiles):
        """The unit across training: ``tops`` one k=1 TopK per epoch, ``tiles`` ``[M, epochs, fh, fw, C]``
        (:func:`zfkeras.analysis.evolution.follow_maps`)."""
        from zfkeras.io.display import display_tiles, mosaic

        entries = [top.entries(layer) for top in tops]
        for m, channel in enumerate(channels):
            record = self.layers[layer]["units"][str(int(channel))]
            strip = mosaic(display_tiles(tiles[m]), len(epochs))
            record["files"]["epochs"] = f"{channel}-epochs.png"
            record["files"]["epochs_width"] = int(strip.shape[1])
            save_png(os.path.join(self.root, layer, record["files"]["epochs"]), strip)
            record["evolution"] = [
                {"epoch": int(epoch), **{f: int(e[f][m, 0]) for f in ("image", "y", "x")}, "value": finite(e["value"][m, 0])}
                for epoch, e in zip(epochs, entries)
            ]

    def add_optimized(self, layer, channels, images, activations):
        """Each unit's optimised image (raw pixels ``[U, H, W, C]``) and its activation on it."""
        from zfkeras.io.display import pixels_to_display

        for channel, image, activation in zip(channels, images, activations):
            record = self.layers[layer]["units"][str(int(channel))]
            shown = pixels_to_display(image)
            record["files"]["optimized"] = f"{channel}-optimized.png"
            record["files"]["optimized_width"] = int(image.shape[1]) * max(1, -(-MINIMUM_SIDE // int(image.shape[1])))
            save_png(os.path.join(self.root, layer, record["files"]["optimized"]), shown)
            top1 = record["top9"][0]["value"] if record["top9"] else None
            record["optimized"] = {"activation": finite(activation), "top1": top1}

    def write(self):
        """Every page, style.css, then atlas.json."""
        with open(os.path.join(self.root, "style.css"), "w") as handle:
            handle.write(html.STYLE.lstrip())
        self._write("index.html", html.index_page(self.header, self.layers))
        names = list(self.layers)
        for index, layer in enumerate(names):
            record = self.layers[layer]
            neighbours = (names[index - 1] if index else None, names[index + 1] if index + 1 < len(names) else None)
            numbers = sorted(int(u) for u in record["units"])
            self._write(os.path.join(layer, "index.html"), html.layer_page(self.header, layer, record, record["by_selectivity"], neighbours, True))
            self._write(os.path.join(layer, "by-unit.html"), html.layer_page(self.header, layer, record, numbers, neighbours, False))
            for position, unit in enumerate(numbers):
                around = (numbers[position - 1] if position else None, numbers[position + 1] if position + 1 < len(numbers) else None)
                self._write(os.path.join(layer, f"{unit}.html"), html.unit_page(self.header, layer, record, unit, around))
        atlas = {**self.header, "class_names": self.class_names, "layers": self.layers}
        with open(os.path.join(self.root, "atlas.json"), "w") as handle:
            handle.write(output.json_text(atlas) + "\n")

    def _write(self, name, text):
        with open(os.path.join(self.root, name), "w") as handle:
            handle.write(text)
