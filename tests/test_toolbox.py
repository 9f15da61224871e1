"""``zf toolbox``: the live toolbox's computation against the library, its web app against bad input,
and its page in a real browser (Debian's headless Chromium over the DevTools pipe, ``tests/browser.py``).

- :class:`zfkeras.analysis.live.LiveProbe` against the probe itself: maps (``features``),
  probabilities (``predict``) and the projection (``project(..., "max")``), on an export and on a
  Keras model; a projection at the wrong position is shown to fail the comparison.
- Uploads decode as TensorFlow decodes them; corrupt, truncated, empty and oversized ones are refused
  in one line, an oversized one from its header alone.
- The app, served by a real ``zf toolbox`` process on 127.0.0.1: its answers equal the library's
  numbers and pictures computed here; every bad request gets a one-line JSON error and the next
  request is served, sockets closed mid-upload and mid-frame included; Ctrl-C exits with code 0.
- The page with a fake webcam fed from a .y4m video written here: the maps are live, a click on a
  unit shows its projection, equal to ``probe.project`` of the same frame computed here.
- The page with uploads: the top-5 equals ``zf evaluate``'s model on that image; a corrupt and two
  oversized files show an error on the page and the next upload is answered; the atlas top-9 and
  the occlusion panels appear.
- A bounded load test: 8 clients for 60 s on 127.0.0.1, no failed request, memory flat.
"""

import io
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
from browser import Browser, needs_chromium  # noqa: E402
from train_helpers import write_small_idx  # noqa: E402

from benchmarks.toolbox import ToolboxServer, load, memory_summary  # noqa: E402
from pipelines.cli import main  # noqa: E402
from pipelines.commands.toolbox.engine import MAX_PIXELS, MAX_UPLOAD_BYTES, TooLarge, display_scale, maps_grid, read_atlas_units, read_upload  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "saved_models", "zfnet-fashion-mnist")
ATLAS_UNITS = (0, 1, 2, 3)  # the conv5 units of the hand-written atlas


# ---- files the tests send ---------------------------------------------------------------------


def png_bytes(array, **params):
    from PIL import Image

    array = np.asarray(array)
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array).save(buffer, format="PNG", **params)
    return buffer.getvalue()


def huge_png(side=8000):
    """A small PNG file whose header says ``side`` x ``side`` pixels (1-bit, all black)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data):
    """The reference decoder: TensorFlow's (the app decodes with PIL)."""
    import tensorflow as tf

    return tf.io.decode_png(data).numpy()


def write_y4m(path, frames):
    """A YUV4MPEG2 video (4:2:0, full-range BT.601 as JPEG) of RGB ``frames`` [T, H, W, 3], 5 frames/s."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F5:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in np.asarray(frames, "float64"):
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            luma = 0.299 * r + 0.587 * g + 0.114 * b
            blue = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
            red = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
            handle.write(b"FRAME\n")
            for plane in (luma, *(c.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)) for c in (blue, red))):
                handle.write(np.clip(np.round(plane), 0, 255).astype("uint8").tobytes())


def webcam_video(path, count=10):
    """Frames of a warm block sliding over grey stripes (texture everywhere, so no two map positions tie)."""
    rows, columns = np.mgrid[0:120, 0:160]
    frames = []
    for k in range(count):
        frame = np.empty((120, 160, 3))
        frame[...] = (90 + 50 * np.sin(columns / 6.0 + k) + 20 * np.cos(rows / 9.0))[..., None]
        block = (abs(rows - 60) < 28) & (abs(columns - 40 - 8 * k) < 18)
        frame[block] = np.array([230.0, 190.0, 110.0]) + 15 * np.sin(rows[block] / 3.0)[:, None]
        frames.append(frame)
    write_y4m(path, frames)


def write_atlas(directory, class_names):
    """An atlas directory laid out as ``zf atlas`` writes it (branch atlas: atlas.json last, one page
    and two top-9 mosaics per unit under LAYER/), for conv5 units :data:`ATLAS_UNITS` only."""
    os.makedirs(os.path.join(directory, "conv5"))
    units = {}
    for unit in ATLAS_UNITS:
        for kind, value in (("projections", 60 + 40 * unit), ("patches", 200 - 40 * unit)):
            with open(os.path.join(directory, "conv5", f"{unit}-{kind}.png"), "wb") as handle:
                handle.write(png_bytes(np.full((88, 88, 3), value, "uint8")))
        with open(os.path.join(directory, "conv5", f"{unit}.html"), "w") as handle:
            handle.write(f"<!doctype html><title>conv5 unit {unit}</title><h1>conv5 unit {unit}</h1>")
        units[str(unit)] = {
            "dead": False,
            "top9": [],
            "files": {"projections": f"{unit}-projections.png", "patches": f"{unit}-patches.png", "width": 88},
        }
    with open(os.path.join(directory, "atlas.json"), "w") as handle:
        json.dump({"model": SHIPPED, "class_names": class_names, "layers": {"conv5": {"units_total": 64, "units": units}}}, handle)


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    from zfkeras.export import open_model

    return open_model(SHIPPED)


@pytest.fixture(scope="module")
def files(tmp_path_factory, shipped):
    """The data directory, the atlas, and image files: Fashion-MNIST test images 0-5 as PNGs, a
    colour photo, a corrupt file, a 64-megapixel PNG and a file over the byte limit."""
    from zfkeras.data.sources.idx import load_idx

    root = tmp_path_factory.mktemp("toolbox")
    data = write_small_idx(str(root / "idx"), n_train=16, n_test=16)
    test_images = load_idx(os.path.join(data, "t10k-images-idx3-ubyte.gz"))
    write_atlas(str(root / "atlas"), shipped.class_names)
    paths = {"data": data, "atlas": str(root / "atlas"), "images": test_images[..., None]}
    import skimage.data

    contents = {
        "fashion.png": png_bytes(test_images[3]),
        "coffee.png": png_bytes(skimage.data.coffee()),
        "corrupt.png": png_bytes(test_images[0])[:60] + bytes(range(256)) * 4,
        "huge.png": huge_png(),
        "heavy.png": b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES),
    }
    for name, content in contents.items():
        (root / name).write_bytes(content)
        paths[name] = str(root / name)
    return paths


@pytest.fixture(scope="module")
def server(files):
    """``zf toolbox`` of the shipped model with 6 --data images and the hand-written atlas."""
    # Started with SIGINT ignored, as a shell starts a background job: Ctrl-C must still stop it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        running = ToolboxServer(SHIPPED, "--data", f"idx:{files['data']}", "--images", 6, "--atlas", files["atlas"])
    finally:
        signal.signal(signal.SIGINT, previous)
    yield running
    running.stop()


def request(server, path, body=None, method=None):
    """``(status, JSON answer or bytes)`` of one request to the server."""
    call = urllib.request.Request(server.address + path.lstrip("/"), data=body, method=method or ("POST" if body is not None else "GET"))
    try:
        with urllib.request.urlopen(call, timeout=120) as response:
            status, content, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        status, content, kind = error.code, error.read(), error.headers.get_content_type()
    return status, (json.loads(content) if kind == "application/json" else content)


def picture(data_url):
    """A ``data:image/png`` URL as an array (grey ``[h, w]`` or ``[h, w, C]``), decoded by TensorFlow."""
    import base64

    image = decode_png(base64.b64decode(data_url.split(",", 1)[1]))
    return image[..., 0] if image.shape[-1] == 1 else image


def as_bytes(shown):
    """Display values in [0, 1] as the 8-bit values the app's PNGs hold."""
    return np.round(np.clip(shown, 0, 1) * 255).astype("int64")


# ---- the computation, against the probe ---------------------------------------------------------


@pytest.fixture(scope="module")
def keras_probe():
    from zfkeras.nn.models import build_model, zfnet_small_spec
    from zfkeras.nn.probe import KerasProbe

    spec = zfnet_small_spec().with_units(conv1=6, conv2=8, conv3=8, conv4=8, conv5=6, fc6=16, fc7=16).replace(kernel_init="he_normal")
    return KerasProbe(build_model(spec, seed=3))


@pytest.fixture(scope="module")
def resnet_probe():
    """ResNet50 (a DAG: its projectable maps are block outputs) at 64x64 with random weights."""
    from zfkeras.nn.applications import build
    from zfkeras.nn.probe import KerasProbe

    return KerasProbe(build("resnet50", weights=None, input_shape=(64, 64, 3)))


@pytest.mark.parametrize("which", ["export", "keras", "resnet50"])
def test_live_probe_equals_the_probe(which, shipped, keras_probe, files, request):
    import skimage.data

    from zfkeras.analysis.live import LiveProbe
    from zfkeras.data.transforms import fit_image

    probe = {"export": shipped, "keras": keras_probe}.get(which) or request.getfixturevalue("resnet_probe")
    live = LiveProbe(probe)
    image = files["images"][5].astype("float32") if which != "resnet50" else fit_image(skimage.data.coffee(), probe.input_shape).pixels
    names = probe.layer_names
    layers = names if which != "resnet50" else [names[0], names[len(names) // 2], names[-1]]
    for layer in layers:
        maps = probe.features(image[None], [layer])[layer][0]
        unit = int(np.argmax(maps.max(axis=(0, 1))))  # a unit that fires on this image
        look = live.look(image, layer, unit)
        np.testing.assert_allclose(look.maps, maps, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(look.probabilities, probe.predict(image[None])[0], rtol=1e-5, atol=1e-7)
        assert look.position == tuple(np.unravel_index(np.argmax(maps[..., unit]), maps.shape[:2]))
        assert look.activation == pytest.approx(float(maps[..., unit].max()), rel=1e-5)
        reference = probe.project(image[None], layer, unit, "max")[0]
        assert np.abs(reference).max() > 0
        np.testing.assert_allclose(look.projection, reference, atol=1e-5 * np.abs(reference).max())
        assert [c for c, _ in look.top(5)] == list(np.argsort(-look.probabilities, kind="stable")[:5])
    # The comparison can fail: the projection of a unit at another position is not the reference.
    y, x = look.position
    other = ((y + 1) % look.maps.shape[0], x)
    moved = probe.project(image[None], look.layer, look.unit, np.array([other], "int32"))[0]
    assert not np.allclose(moved, look.projection, atol=1e-5 * np.abs(look.projection).max())
    with pytest.raises(ValueError, match=names[0]):
        live.look(image, "conv9")
    with pytest.raises(ValueError, match="has maps 0-"):
        live.look(image, names[0], 9999)
    with pytest.raises(ValueError, match="integer"):
        live.look(image, names[0], 1.5)


@pytest.mark.parametrize("rule", ["guided", "gradient"])
def test_rule_gives_that_rules_projection_of_the_frame(rule, keras_probe, files, monkeypatch):
    """``zf toolbox --rule``: the frame's answer (what POST /api/frame returns) holds the unit's
    projection under that rule, equal to ``probe.project(..., "max", rule=rule)`` and not to the
    deconvnet's; the page is told the rule; occlusion's panel (c) projects under it too."""
    from pipelines.commands.toolbox.engine import Toolbox
    from zfkeras.analysis import occlusion
    from zfkeras.data.transforms import fit_image
    from zfkeras.io.display import to_display

    frame = png_bytes(files["images"][5])
    pixels = fit_image(decode_png(frame), keras_probe.input_shape).pixels
    counts = {name: keras_probe.features(pixels[None], [name])[name].shape[-1] for name in keras_probe.layer_names}
    engine = Toolbox(keras_probe, "tiny", counts, rule=rule)
    assert engine.describe()["rule"] == rule
    maps = keras_probe.features(pixels[None], ["conv3"])["conv3"][0]
    unit = int(np.argmax(maps.max(axis=(0, 1))))
    answer = engine.frame(frame, "conv3", str(unit))["unit"]
    wanted, deconvnet = (keras_probe.project(pixels[None], "conv3", unit, "max", rule=r)[0] for r in (rule, "deconvnet"))
    assert answer["projection_scale"] == pytest.approx(display_scale(wanted), rel=1e-4)
    shown = picture(answer["projection"]).astype(int)
    assert np.abs(shown - as_bytes(to_display(wanted))).max() <= 1
    assert np.abs(shown - as_bytes(to_display(deconvnet))).max() > 10  # the deconvnet's picture would not pass
    drawn = []
    library = occlusion.occlusion_map
    monkeypatch.setattr(occlusion, "occlusion_map", lambda *args, **kwargs: drawn.append(library(*args, **kwargs)) or drawn[-1])
    engine.occlusion(frame, "conv3", str(unit))
    assert drawn[0].rule == rule and np.array_equal(drawn[0].projection, keras_probe.project(pixels[None], "conv3", unit, "max", rule=rule)[0])
    with pytest.raises(ValueError, match="rule must be one of deconvnet, guided, gradient"):
        Toolbox(keras_probe, "tiny", counts, rule="smooth")


def test_uploads_decode_as_tensorflow_does_and_bad_ones_are_refused(files):
    import skimage.data
    import tensorflow as tf
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (21, 34, 1), dtype="uint8")
    colour = skimage.data.astronaut()[::8, ::8]
    rgba = np.concatenate([colour, rng.integers(0, 256, colour.shape[:2] + (1,), dtype="uint8")], axis=-1)
    for array in (grey, colour, rgba):
        data = png_bytes(array)
        np.testing.assert_array_equal(read_upload(data), decode_png(data))
    palette = png_bytes(Image.fromarray(colour).convert("P"))
    np.testing.assert_array_equal(read_upload(palette)[..., :3], decode_png(palette)[..., :3])
    deep = rng.integers(0, 65536, (9, 11)).astype("uint16")
    buffer = io.BytesIO()
    Image.fromarray(deep).save(buffer, format="PNG")
    np.testing.assert_array_equal(read_upload(buffer.getvalue()), tf.io.decode_image(buffer.getvalue(), dtype=tf.uint8).numpy())
    # EXIF orientation 6 (camera turned): shown turned 90 degrees clockwise, as browsers show it
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(colour).save(buffer, format="PNG", exif=exif)
    np.testing.assert_array_equal(read_upload(buffer.getvalue()), np.rot90(colour, k=-1))

    with pytest.raises(ValueError, match="empty upload"):
        read_upload(b"")
    with pytest.raises(ValueError, match="not an image file"):
        read_upload(b"GIF89 but not really" * 10)
    with pytest.raises(ValueError, match="not a readable image"):
        read_upload(png_bytes(colour)[:400])
    with pytest.raises(TooLarge, match=f"8000x8000 = 64,000,000 pixels is over the limit of {MAX_PIXELS:,}; not decoded"):
        read_upload(huge_png())
    with pytest.raises(TooLarge, match="over the limit"):  # past PIL's own ceiling too
        read_upload(huge_png(20000))


def test_maps_grid_lays_maps_out_where_the_page_looks_for_them():
    rng = np.random.default_rng(1)
    maps = rng.uniform(0, 3, (5, 3, 7)).astype("float32")  # 7 maps of 5 rows x 3 columns
    grid, geometry = maps_grid(maps)
    assert geometry == {"count": 7, "columns": 4, "rows": 2, "tile": [5, 3], "pad": 1, "max": pytest.approx(float(maps.max()))}
    assert grid.shape == (2 * 6 + 1, 4 * 4 + 1)
    for unit in range(7):
        row, column = divmod(unit, 4)
        top, left = 1 + row * 6, 1 + column * 4  # toolbox.js tileBox: pad + index * (side + pad)
        np.testing.assert_allclose(grid[top : top + 5, left : left + 3], maps[..., unit] / maps.max(), rtol=1e-6)
    assert grid[0].tolist() == [0.25] * grid.shape[1] and grid[:, 4].tolist() == [0.25] * grid.shape[0]


def test_atlas_is_read_through_one_function(files, tmp_path):
    units = read_atlas_units(files["atlas"])
    assert set(units) == {"conv5"} and sorted(units["conv5"]) == list(ATLAS_UNITS)
    assert units["conv5"][2] == {"page": "conv5/2.html", "projections": "conv5/2-projections.png", "patches": "conv5/2-patches.png"}
    with pytest.raises(ValueError, match="atlas.json: No such file"):
        read_atlas_units(str(tmp_path))
    (tmp_path / "atlas.json").write_text('{"layers": {"conv5": {"units": {"1": {}}}}}')
    with pytest.raises(ValueError, match="not the atlas.json of zf atlas"):
        read_atlas_units(str(tmp_path))


# ---- the app, through HTTP ----------------------------------------------------------------------


def test_frame_answers_equal_the_library(server, shipped, files):
    from zfkeras.data.transforms import fit_image
    from zfkeras.io.display import pixels_to_display, to_display

    status, model = request(server, "/api/model")
    assert status == 200 and model["input_shape"] == [28, 28, 1] and [layer["name"] for layer in model["layers"]] == shipped.layer_names
    assert [item["label"] for item in model["data"]] == [shipped.class_names[label] for label in np.asarray(read_labels(files["data"]))[:6]]
    status, data = request(server, "/api/data/4.png")
    assert status == 200 and np.array_equal(decode_png(data), files["images"][4])  # lossless
    for frame in (data, open(files["coffee.png"], "rb").read()):
        status, answer = request(server, "/api/frame?layer=conv3&unit=7", frame)
        assert status == 200, answer
        pixels = fit_image(decode_png(frame), shipped.input_shape).pixels
        probabilities = shipped.predict(pixels[None])[0]
        order = np.argsort(-probabilities, kind="stable")[:5]
        assert [entry["index"] for entry in answer["top5"]] == order.tolist()
        assert [entry["name"] for entry in answer["top5"]] == [shipped.class_names[c] for c in order]
        np.testing.assert_allclose([entry["probability"] for entry in answer["top5"]], probabilities[order], rtol=1e-5, atol=1e-7)
        assert np.abs(picture(answer["view"]).astype(int) - as_bytes(pixels_to_display(pixels))).max() <= 1
        maps = shipped.features(pixels[None], ["conv3"])["conv3"][0]
        grid, geometry = maps_grid(maps)
        assert answer["maps"]["count"] == 96 and answer["maps"]["columns"] == geometry["columns"]
        assert np.abs(picture(answer["maps"]["image"]).astype(int) - as_bytes(grid)).max() <= 1
        projection = shipped.project(pixels[None], "conv3", 7, "max")[0]
        unit = answer["unit"]
        assert unit["index"] == 7 and unit["position"] == list(np.unravel_index(np.argmax(maps[..., 7]), maps.shape[:2]))
        assert unit["activation"] == pytest.approx(float(maps[..., 7].max()), rel=1e-5)
        assert unit["projection_scale"] == pytest.approx(display_scale(projection), rel=1e-4)
        assert np.abs(picture(unit["projection"]).astype(int) - as_bytes(to_display(projection))).max() <= 1
        assert unit["atlas"] is None  # the atlas has conv5 units only
    status, answer = request(server, "/api/frame?layer=conv5&unit=2", data)
    assert answer["unit"]["atlas"] == {
        "page": "/atlas/conv5/2.html",
        "projections": "/atlas/conv5/2-projections.png",
        "patches": "/atlas/conv5/2-patches.png",
    }
    status, page = request(server, answer["unit"]["atlas"]["page"])
    assert status == 200 and b"conv5 unit 2" in page


def read_labels(data):
    from zfkeras.data.sources.idx import load_idx

    return load_idx(os.path.join(data, "t10k-labels-idx1-ubyte.gz"))


def test_occlusion_answer_equals_the_library(server, shipped, files):
    from zfkeras.analysis.occlusion import occlusion_map

    frame = open(files["fashion.png"], "rb").read()
    status, answer = request(server, "/api/occlusion?layer=conv5&unit=2", frame)
    assert status == 200, answer
    # computed here on the export itself, by full forward passes (the app runs the incremental
    # evaluator on the export's Keras model)
    result = occlusion_map(shipped, files["images"][3].astype("float32"), layer="conv5", feature_map=2)
    assert answer["incremental"] and answer["positions"] == 28 * 28 and answer["unit"] == 2 and answer["layer"] == "conv5"
    assert answer["label"] == shipped.class_names[result.label]
    assert answer["clean_probability"] == pytest.approx(float(result.clean_probs[result.label]), abs=1e-5)
    assert answer["lowest_probability"] == pytest.approx(float(result.true_class_prob.min()), abs=1e-5)
    assert answer["lowest_activity"] == pytest.approx(float(result.feature_activity.min()), rel=1e-4, abs=1e-4)
    panels = picture(answer["image"])
    assert panels.shape[1] > 3 * panels.shape[0] and panels.std() > 10  # five panels side by side, drawn


def raw_http(server, head, body=b"", close_after=None):
    """Send ``head`` and the first ``close_after`` bytes of ``body`` (all when None) on a raw
    socket, then close it without reading the answer."""
    host, port = server.address.split("//")[1].rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(head + (body if close_after is None else body[:close_after]))


def test_bad_requests_get_one_line_errors_and_the_next_request_is_served(server, files):
    good = png_bytes(files["images"][1])
    bad = [
        ("/api/frame?layer=conv2", open(files["corrupt.png"], "rb").read(), 400, "not a readable image"),
        ("/api/frame?layer=conv2", b"no picture here" * 20, 400, "not an image file"),
        ("/api/frame?layer=conv2", b"", 400, "empty upload"),
        ("/api/frame?layer=conv2", open(files["huge.png"], "rb").read(), 413, f"8000x8000 = 64,000,000 pixels is over the limit of {MAX_PIXELS:,}"),
        ("/api/frame?layer=conv2", open(files["heavy.png"], "rb").read(), 413, "over the upload limit of 32 MiB"),
        ("/api/frame?layer=conv2", iter([open(files["heavy.png"], "rb").read()]), 413, "over the upload limit of 32 MiB"),  # chunked: no length given
        ("/api/frame?layer=conv9", good, 400, "layer 'conv9' is not one of conv1, conv2, conv3, conv4, conv5"),
        ("/api/frame?layer=conv2&unit=64", good, 400, "unit 64: conv2 has maps 0-63"),
        ("/api/frame?layer=conv2&unit=seven", good, 400, "unit 'seven' is not a map index"),
        ("/api/occlusion?layer=conv2&unit=-1", good, 400, "unit -1: conv2 has maps 0-63"),
        ("/api/data/6.png", None, 404, "no image 6 of --data; there are 6"),
        ("/api/nothing", None, 404, "Not Found: GET /api/nothing"),
        ("/api/model", good, 405, "Method Not Allowed"),
    ]
    for path, body, status, message in bad:
        got, answer = request(server, path, body)
        assert (got, answer["error"]) == (status, answer["error"]) and message in answer["error"], (path, got, answer)
        assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
        got, answer = request(server, "/api/frame?layer=conv2&unit=5", good)
        assert got == 200 and answer["unit"]["index"] == 5
    head = f"POST /api/frame?layer=conv1&unit=3 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(good)}\r\n\r\n".encode()
    raw_http(server, head, good, close_after=len(good) // 2)  # the client goes away in the middle of the upload
    raw_http(server, head, good)  # ... and before the answer to a whole frame
    time.sleep(1)
    got, answer = request(server, "/api/frame?layer=conv1&unit=3", good)
    assert got == 200 and answer["unit"]["index"] == 3
    assert "client went away" in server.errors() and "Traceback" not in server.errors()


# ---- the page, in Chromium ----------------------------------------------------------------------


def wait(chrome, condition, timeout=90):
    """Wait until the JavaScript ``condition`` holds on the page."""
    deadline = time.monotonic() + timeout
    while not chrome.evaluate(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {condition}; page errors: {chrome.errors()}"
        time.sleep(0.1)


def choose_layer(chrome, layer):
    chrome.evaluate(f"(() => {{ const s = document.getElementById('layers'); s.value = '{layer}'; s.dispatchEvent(new Event('change')); }})()")


def click_unit(chrome, unit):
    """Click the middle of map ``unit``'s tile in the grid, placed from the answer's geometry (the
    layout of :func:`maps_grid`) and the picture's size on screen."""
    geometry, rect, natural = chrome.evaluate(
        "(() => { const p = document.getElementById('maps'); const r = p.getBoundingClientRect();"
        " return [toolbox.shown.answer.maps, [r.left, r.top, r.width, r.height], [p.naturalWidth, p.naturalHeight]]; })()"
    )
    row, column = divmod(unit, geometry["columns"])
    height, width = geometry["tile"]
    x = geometry["pad"] + column * (width + geometry["pad"]) + width / 2
    y = geometry["pad"] + row * (height + geometry["pad"]) + height / 2
    chrome.click(rect[0] + x * rect[2] / natural[0], rect[1] + y * rect[3] / natural[1])


# The frame on screen (its bytes, base64) and the pixels of a picture of the page, read at once.
READ_SHOWN = """(async () => {
  const shown = toolbox.shown, img = document.getElementById(%s);
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  const bytes = new Uint8Array(await shown.frame.arrayBuffer());
  let text = '';
  for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return {frame: btoa(text), pixels: Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data),
          width: canvas.width, height: canvas.height, src: img.src, answer: shown.answer};
})()"""


@needs_chromium
def test_page_with_a_fake_webcam_shows_live_maps_and_a_clicked_units_projection(server, shipped, tmp_path):
    import base64

    from PIL import Image

    from zfkeras.data.transforms import fit_image
    from zfkeras.io.display import to_display

    video = tmp_path / "webcam.y4m"
    webcam_video(str(video))
    flags = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={video}"]
    chrome = Browser(flags=flags)
    try:
        chrome.open(server.address)
        wait(chrome, "toolbox.model !== null")
        choose_layer(chrome, "conv2")
        chrome.evaluate("document.getElementById('webcam').click()")
        seen = set()
        while len(seen) < 3:  # live: the maps change with the video
            wait(chrome, f"toolbox.frames > {chrome.evaluate('toolbox.frames')} && toolbox.shown.answer.layer === 'conv2'")
            seen.add(chrome.evaluate("toolbox.shown.answer.maps.image"))
        assert chrome.evaluate("toolbox.source") == "webcam" and chrome.evaluate("document.getElementById('error').hidden")
        unit = 9
        click_unit(chrome, unit)
        wait(chrome, f"toolbox.shown.answer.unit !== null && toolbox.shown.answer.unit.index === {unit}")
        chrome.evaluate("document.getElementById('pause').click()")
        wait(chrome, "!toolbox.busy")
        shown = chrome.evaluate(READ_SHOWN % "'projection'")
        assert chrome.evaluate("document.getElementById('unit-title').textContent") == f"conv2 unit {unit}"
        assert chrome.evaluate("document.getElementById('marker').hidden") is False
        assert chrome.errors() == []
    finally:
        chrome.close()
    answer = shown["answer"]
    assert shown["src"] == answer["unit"]["projection"]  # the page shows the answer's projection
    frame = np.asarray(Image.open(io.BytesIO(base64.b64decode(shown["frame"]))))  # the JPEG the page sent
    assert frame.shape[:2] == (120, 160)
    pixels = fit_image(frame, shipped.input_shape).pixels
    reference = shipped.project(pixels[None], "conv2", unit, "max")[0]
    maps = shipped.features(pixels[None], ["conv2"])["conv2"][0]
    assert answer["unit"]["activation"] == pytest.approx(float(maps[..., unit].max()), rel=1e-5) and maps[..., unit].max() > 0
    assert answer["unit"]["projection_scale"] == pytest.approx(display_scale(reference), rel=1e-4)
    on_page = np.asarray(shown["pixels"]).reshape(shown["height"], shown["width"], 4)[..., 0]
    assert on_page.std() > 5  # not a blank picture
    assert np.abs(on_page.astype(int) - as_bytes(to_display(reference))).max() <= 1


def evaluate_top5(probe, image):
    """The top-5 of ``zf evaluate``'s path for one image: a Source of it, ``eval_dataset``'s centre
    view, ``probe.predict``."""
    from zfkeras.data import eval_dataset, in_memory_source

    source = in_memory_source(image[None], [0], probe.class_names, "upload", "test")
    size, _, channels = probe.input_shape
    views, _ = next(eval_dataset(source, size, channels, 1, crops="center").as_numpy_iterator())
    probabilities = probe.predict(views)[0]
    return [f"{probe.class_names[c]} {100 * probabilities[c]:.1f}%" for c in np.argsort(-probabilities, kind="stable")[:5]]


def upload(chrome, path, counter):
    """Choose ``path`` in the page's file input; wait until ``toolbox[counter]`` grows."""
    before = chrome.evaluate(f"toolbox.{counter}")
    chrome.choose_files("#file", [path])
    wait(chrome, f"toolbox.{counter} > {before}")


@needs_chromium
def test_uploads_on_the_page_top5_errors_atlas_and_occlusion(server, shipped, files, browser):
    browser.open(server.address)
    wait(browser, "toolbox.model !== null")
    top5 = "[...document.querySelectorAll('#top5 li')].map(li => li.textContent)"
    error = "document.getElementById('error').hidden ? null : document.getElementById('error').textContent"
    for name in ("fashion.png", "coffee.png"):
        upload(browser, files[name], "frames")
        assert browser.evaluate(top5) == evaluate_top5(shipped, decode_png(open(files[name], "rb").read())), name
        assert browser.evaluate(error) is None
    for name, message in (("corrupt.png", "not a readable image"), ("huge.png", "64,000,000 pixels is over the limit"), ("heavy.png", "32 MiB")):
        upload(browser, files[name], "errors")
        assert message in browser.evaluate(error), name
        upload(browser, files["fashion.png"], "frames")  # and the next upload is answered
        assert browser.evaluate(error) is None and browser.evaluate(top5) == evaluate_top5(shipped, files["images"][3])
    # a unit of the atlas: its top-9 pictures and its page
    choose_layer(browser, "conv5")
    wait(browser, "toolbox.shown.answer.layer === 'conv5'")
    click_unit(browser, 2)
    wait(browser, "toolbox.shown.answer.unit !== null && toolbox.shown.answer.unit.index === 2")
    wait(browser, "!document.getElementById('atlas').hidden")
    assert browser.evaluate("document.getElementById('atlas-page').getAttribute('href')") == "/atlas/conv5/2.html"
    loaded = "(() => { const p = document.getElementById('atlas-projections'); return p.complete && p.naturalWidth; })()"
    wait(browser, loaded)
    assert browser.evaluate(loaded) == 88
    # occlusion of the current frame
    browser.evaluate("document.getElementById('occlude').click()")
    wait(browser, "!document.getElementById('occlusion').hidden && document.getElementById('occlusion').complete", timeout=180)
    assert "conv5 map 2" in browser.evaluate("document.getElementById('occlusion-info').textContent")
    assert browser.evaluate("document.getElementById('occlusion').naturalWidth") > 800
    allowed = ("status of 400", "status of 413")  # the refused uploads, as the browser logs them
    assert [e for e in browser.errors() if not any(a in e for a in allowed)] == []


# ---- load, Ctrl-C, the command line --------------------------------------------------------------


def test_eight_clients_for_a_minute_no_failed_request_and_flat_memory(server, files):
    frames = [png_bytes(image) for image in files["images"][:6]] + [open(files["coffee.png"], "rb").read()]
    plan = [("conv1", 3), ("conv2", 40), ("conv3", 11), ("conv4", 90), ("conv5", 2), ("conv5", 63)]
    load(server, frames, plan, clients=8, seconds=10)  # warm-up: every layer traced
    measured = load(server, frames, plan, clients=8, seconds=60, every=5)
    assert measured["failures"] == [] and measured["requests"] > 8 * 10
    memory = memory_summary(measured["memory"])
    assert len(measured["memory"]) >= 12
    assert memory["last_mb"] - memory["first_mb"] < 30 and memory["max_mb"] - memory["first_mb"] < 60, memory


def test_ctrl_c_stops_the_server_cleanly(server):
    # An upload left half-sent on an open connection: the handler waits for the rest of its body,
    # and Ctrl-C must not wait for it longer than the server's short shutdown timeout.
    host, port = server.address.split("//")[1].rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as stalled:
        stalled.sendall(b"POST /api/frame?layer=conv1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"\x89PNG" * 10)
        time.sleep(1)
        started = time.monotonic()
        code = server.stop(timeout=30)
        seconds = time.monotonic() - started
    errors = server.errors()
    assert code == 0, errors.split("Extension modules")[0][-4000:]  # an aborted server's thread stacks
    assert seconds < 20, seconds
    assert errors.rstrip().endswith("zf toolbox: stopped") and "Traceback" not in errors


def test_command_line_errors_are_one_line(files, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["toolbox", SHIPPED, "--rule", "guided"])  # exported before the rules: deconvnet endpoints only
    assert result.exit_code == 2 and "--rule" in result.output and "no guided ones" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["toolbox", SHIPPED, "--atlas", str(tmp_path)])
    assert result.exit_code == 2 and "--atlas" in result.output and "atlas.json: No such file" in result.output
    result = runner.invoke(main, ["toolbox", str(tmp_path / "missing"), "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "warning: --host 0.0.0.0 serves the toolbox to other machines" in result.output
    assert "Traceback" not in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(main, ["toolbox", SHIPPED, "--port", str(port)])
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.output and "--port" in result.output


def test_benchmark_smoke_mode_measures_frames_and_memory():
    from benchmarks import toolbox

    report = toolbox.main(["--smoke=1"])
    row = report["rows"]["shipped 28x28x1 conv1"]
    assert row["requests"] >= 2 and row["frames_per_second"] > 0 and row["baseline_frames_per_second"] > 0
    assert row["ratio"] == pytest.approx(row["frames_per_second"] / row["baseline_frames_per_second"])
    assert set(row["server_ms"]) == {"decode_fit", "forward", "project", "render"}
    assert report["memory"]["exit_code"] == 0, report["memory"].get("stderr_tail")
    assert report["memory"]["failures"] == 0 and report["memory"]["requests"] > 0
