"""What the toolbox's web app asks of the model, as plain Python: an uploaded frame (image bytes)
in, a JSON-ready dict out (the top-5, every map of a layer as one grid picture, a unit's projection
and activation, its atlas entry; the Fig. 7 panels of an occlusion). No HTTP here (:mod:`.app`).

Pictures travel as ``data:image/png`` URLs at the model's own resolution (the page scales them
up); every frame is fitted to the model's input by the evaluation view
(:func:`zfkeras.data.transforms.fit_image`), exactly as ``zf project`` and ``zf occlusion`` fit a photo.
"""

import base64
import io
import json
import os
import time
import warnings

import numpy as np

# Limits of one upload, stated on the page and in docs/toolbox.md.
MAX_UPLOAD_BYTES = 32 * 2**20  # the request body: a 32 MiB image file
MAX_PIXELS = 50_000_000  # width x height read from the header, before any pixel is decoded (a 50-megapixel photo)
PERCENTILE = 99.5  # projections are shown as zfkeras.io.display.to_display does (0 -> mid-grey)


class TooLarge(ValueError):
    """An upload over :data:`MAX_UPLOAD_BYTES` or :data:`MAX_PIXELS` (HTTP 413)."""


def read_upload(data, max_pixels=MAX_PIXELS):
    """An uploaded image file's bytes as uint8 ``[H, W, C]`` (C 1-4), as a browser shows it (EXIF
    orientation applied; a GIF's first frame). The header is read first (PIL reads no pixel until
    asked), so an image over ``max_pixels`` is refused undecoded (:class:`TooLarge`); anything that
    is not a readable image is a ValueError saying so.

    This is the one place the toolbox decodes uploads; zfkeras gains a shared header check for
    every image reader (``zfkeras.data.read_image``), which replaces this function once it lands.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    accepted = "send a PNG, JPEG, GIF, BMP or WebP image file"
    if not data:
        raise ValueError(f"empty upload: {accepted}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's own ceiling: refused below as too large
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(f"the image is over the limit of {max_pixels:,} pixels; not decoded") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ValueError(f"not an image file ({len(data):,} bytes that no image format reads): {accepted}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise TooLarge(f"an image of {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,}; not decoded")
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit grey: the high byte, as TensorFlow decodes it
            array = np.asarray(image)
            array = array.astype("int64") >> 8 if image.mode.startswith("I") else array
            return np.clip(array, 0, 255).astype("uint8")[..., None]
        if image.mode not in ("L", "LA", "RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
        array = np.asarray(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"not a readable image ({reason[:120]}): {accepted}") from None
    return array[..., None] if array.ndim == 2 else array


def png_url(picture):
    """``picture`` float ``[h, w]``, ``[h, w, 1]`` or ``[h, w, 3]`` in [0, 1] (NaN as 0) as a
    ``data:image/png;base64`` URL of an 8-bit PNG, pixel for pixel."""
    from PIL import Image

    array = np.asarray(picture, "float32")
    array = np.rint(np.clip(np.nan_to_num(array, copy=False) * 255, 0, 255)).astype("uint8")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


GRID_FILL = 0.25  # the grey between maps


def maps_grid(maps, pad=1):
    """Every map ``[h, w, K]`` of a layer as one grey grid, maps in rows, about square: map ``k`` at
    row ``k // columns``, column ``k % columns``, its top-left pixel at ``pad + index * (side + pad)``
    (the layout of :func:`zfkeras.io.display.mosaic`, built here by reshaping: ZFNet's conv1 has
    96 maps of 110x110). Each map is scaled by the layer's largest activation in this frame, so
    quiet maps stay dark, as in the Deep Visualization Toolbox.
    ``(picture float32 [H, W] in [0, 1], geometry dict for the page)``."""
    height, width, count = maps.shape
    columns = max(1, int(np.ceil(np.sqrt(count * height / width))))
    rows = -(-count // columns)
    largest = float(maps.max()) if maps.size else 0.0
    cells = np.full((rows * columns, height + pad, width + pad), GRID_FILL, "float32")
    cells[:count, pad:, pad:] = np.moveaxis(np.clip(maps / (largest if largest > 0 else 1.0), 0, 1), -1, 0)
    grid = cells.reshape(rows, columns, height + pad, width + pad).transpose(0, 2, 1, 3).reshape(rows * (height + pad), columns * (width + pad))
    grid = np.pad(grid, ((0, pad), (0, pad)), constant_values=GRID_FILL)
    geometry = {"count": count, "columns": columns, "rows": rows, "tile": [height, width], "pad": pad, "max": largest}
    return grid, geometry


def display_scale(projection, percentile=PERCENTILE):
    """The ``|value|`` shown as white (or black): :func:`zfkeras.io.display.to_display`'s scale."""
    scale = float(np.percentile(np.abs(projection), percentile))
    return scale if scale > 0 else 1.0


def read_atlas_units(directory):
    """``{layer: {unit: {"page", "projections", "patches"}}}``: the addresses, relative to the atlas
    directory, of each unit's page and its top-9 pictures, read from the ``atlas.json`` that
    ``zf atlas`` writes last. The one function that knows that file's layout; a ValueError naming
    the file when it is missing or not an atlas."""
    path = os.path.join(directory, "atlas.json")
    try:
        with open(path) as handle:
            layers = json.load(handle)["layers"]
        found = {}
        for layer, record in layers.items():
            found[layer] = {
                int(unit): {
                    "page": f"{layer}/{int(unit)}.html",
                    "projections": f"{layer}/{entry['files']['projections']}",
                    "patches": f"{layer}/{entry['files']['patches']}",
                }
                for unit, entry in record["units"].items()
            }
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror}; give a directory written by zf atlas") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"{path}: not the atlas.json of zf atlas (layers -> units -> files)") from None
    return found


class Toolbox:
    """The model side of the toolbox: one opened model, the layers it offers, optional images of
    ``--data`` and an atlas.

    Args:
        probe: the :class:`~zfkeras.nn.probe.Probe` (opened once by the command).
        name: what the page calls the model.
        counts: ``{layer: number of maps}`` of every projectable layer.
        images: native uint8 ``[H, W, C]`` images of ``--data`` the page offers (may be empty),
            with ``labels`` (class names) beside them.
        atlas: :func:`read_atlas_units` of ``--atlas`` (None: no atlas).
        rule: the backward rule of the unit's projection and of occlusion's panel (c) (``--rule``).
    """

    def __init__(self, probe, name, counts, images=(), labels=(), atlas=None, rule="deconvnet"):
        from zfkeras.analysis.live import LiveProbe

        self.probe, self.name, self.counts = probe, name, dict(counts)
        self.live = LiveProbe(probe, rule)
        self.images, self.labels = list(images), list(labels)
        self.atlas = atlas
        self._occluder = None
        if atlas is not None:
            for layer, units in atlas.items():
                if layer not in self.counts or (units and max(units) >= self.counts[layer]):
                    raise ValueError(f"the atlas has {layer} unit(s) {sorted(units)[-1:]} that the model lacks; was it made for another model?")

    def describe(self):
        """The page's first question: the model, its layers, the data images, the limits."""
        return {
            "model": self.name,
            "input_shape": list(self.probe.input_shape),
            "classes": len(self.probe.class_names),
            "layers": [{"name": layer, "maps": count} for layer, count in self.counts.items()],
            "data": [{"index": i, "label": label} for i, label in enumerate(self.labels)],
            "atlas": self.atlas is not None,
            "rule": self.live.rule,
            "limits": {"bytes": MAX_UPLOAD_BYTES, "pixels": MAX_PIXELS},
        }

    def layer_and_unit(self, layer, unit):
        """The checked ``(layer, unit)`` of a request (strings from the URL; unit may be None)."""
        layer = layer or next(iter(self.counts))
        if layer not in self.counts:
            raise ValueError(f"layer {layer!r} is not one of {', '.join(self.counts)}")
        if unit is not None:
            try:
                unit = int(unit)
            except ValueError:
                raise ValueError(f"unit {unit!r} is not a map index; {layer} has maps 0-{self.counts[layer] - 1}") from None
            if not 0 <= unit < self.counts[layer]:
                raise ValueError(f"unit {unit}: {layer} has maps 0-{self.counts[layer] - 1}")
        return layer, unit

    def fit(self, data):
        """``(upload as the model's input [H, W, C] float32, source (height, width))``."""
        from zfkeras.data.transforms import fit_image

        native = read_upload(data)
        return fit_image(native, self.probe.input_shape).pixels, native.shape[:2]

    def frame(self, data, layer=None, unit=None):
        """One frame (an image file's bytes) at ``layer`` (default the first), with ``unit``'s
        projection when given: the JSON-ready dict the page draws."""
        from zfkeras.io.display import pixels_to_display, to_display

        layer, unit = self.layer_and_unit(layer, unit)
        clock = Clock()
        pixels, size = self.fit(data)
        clock.lap("decode_fit")
        look = self.live.see(pixels, layer)
        clock.lap("forward")
        if unit is not None:
            look = self.live.project(pixels, look, unit)
            clock.lap("project")
        grid, geometry = maps_grid(look.maps)
        result = {
            "view": png_url(pixels_to_display(pixels)),
            "source_size": [int(v) for v in size],
            "top5": [{"index": c, "name": self.probe.class_names[c], "probability": p} for c, p in look.top(5)],
            "layer": layer,
            "maps": {**geometry, "image": png_url(grid)},
            "unit": None,
        }
        if unit is not None:
            largest = geometry["max"] if geometry["max"] > 0 else 1.0
            result["unit"] = {
                "index": unit,
                "activation": look.activation,
                "position": list(look.position),
                "projection": png_url(to_display(look.projection, PERCENTILE)),
                "projection_scale": display_scale(look.projection),
                "map": png_url(look.maps[..., unit] / largest),
                "atlas": self.atlas_entry(layer, unit),
            }
        clock.lap("render")
        result["timing_ms"] = clock.laps
        return result

    def atlas_entry(self, layer, unit):
        """Addresses (under ``/atlas/``) of the unit's atlas page and top-9 pictures, or None."""
        entry = (self.atlas or {}).get(layer, {}).get(unit)
        return {key: "/atlas/" + value for key, value in entry.items()} if entry else None

    def occluder(self):
        """The probe occlusion runs on: a :class:`~zfkeras.nn.probe.KerasProbe` over an export's
        ``model.keras`` (loaded once, on the first occlusion), since the incremental exact evaluator
        needs the Keras layers; the probe itself when it is a Keras model or has no ``model.keras``."""
        from zfkeras.nn.probe import KerasProbe

        if self._occluder is None:
            self._occluder = self.probe
            if not isinstance(self.probe, KerasProbe):
                try:
                    self._occluder = KerasProbe(self.probe.keras_model, class_names=self.probe.class_names)
                except ValueError:  # an export without its model.keras: full forward passes
                    pass
        return self._occluder

    def occlusion(self, data, layer=None, unit=None):
        """The Fig. 7 panels of one frame (:func:`zfkeras.analysis.occlusion.occlusion_map`, the
        incremental exact evaluator where the model allows) for map ``unit`` of ``layer`` (default
        the strongest) and the frame's top class, with the panels' key numbers."""
        from pipelines import figures, output
        from zfkeras.analysis.occlusion import OcclusionEvaluator, occlusion_map

        layer, unit = self.layer_and_unit(layer, unit)
        start = time.perf_counter()
        pixels, _ = self.fit(data)
        probe = self.occluder()
        evaluator = OcclusionEvaluator(probe, pixels, layer=layer, feature_map=unit)
        result = occlusion_map(probe, pixels, evaluator=evaluator, rule=self.live.rule)
        figure = figures.occlusion_figure(result, self.probe.class_names, "this frame")
        picture = output.figure_bytes(figure, dpi=80)
        lowest = np.unravel_index(int(np.argmin(result.true_class_prob)), result.true_class_prob.shape)
        return {
            "image": "data:image/png;base64," + base64.b64encode(picture).decode("ascii"),
            "layer": result.layer,
            "unit": result.feature_map,
            "label": self.probe.class_names[result.label],
            "clean_probability": float(result.clean_probs[result.label]),
            "lowest_probability": float(result.true_class_prob[lowest]),
            "lowest_at": [int(v) for v in result.positions[lowest]],
            "clean_activity": float(result.clean_activity),
            "lowest_activity": float(result.feature_activity.min()),
            "positions": int(result.positions.shape[0] * result.positions.shape[1]),
            "patch": result.patch,
            "stride": result.stride,
            "incremental": evaluator.incremental is not None,
            "seconds": time.perf_counter() - start,
        }

    def data_png(self, index):
        """Image ``index`` of ``--data`` as PNG bytes (lossless: the page posts them back as a frame)."""
        from PIL import Image

        try:
            index = int(index)
            image = self.images[index] if index >= 0 else None
        except (ValueError, IndexError):
            image = None
        if image is None:
            raise LookupError(f"no image {index!r} of --data; there are {len(self.images)} (0-{len(self.images) - 1})")
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
        return buffer.getvalue()


class Clock:
    """Milliseconds of each named step since the previous one (the page shows where time goes)."""

    def __init__(self):
        self.laps, self.last = {}, time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.laps[name] = round(1000 * (now - self.last), 2)
        self.last = now
