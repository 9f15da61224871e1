"""The toolbox's web app on aiohttp: the page and its scripts (served from ``static/``, nothing from
elsewhere), a JSON API over :class:`.engine.Toolbox`, and the atlas directory when given.

Routes::

    GET  /                      the page (static/index.html); /static/* its script and style
    GET  /api/model             the model, its layers and map counts, the --data images, the limits
    POST /api/frame?layer=L[&unit=U]       body: an image file -> top-5, maps grid, unit projection
    POST /api/occlusion?layer=L[&unit=U]   body: an image file -> the Fig. 7 panels
    GET  /api/data/I.png        image I of --data, as PNG
    GET  /atlas/...             the --atlas directory (its pages and pictures)

The model runs on one worker thread (frames queue there in arrival order; TensorFlow keeps both
cores busy on one frame) and occlusions on another, one at a time, so a long occlusion does not
stall the live frames. Every error reaches its client as JSON ``{"error": one line}`` with a 4xx/5xx
status, and the next request is served: a corrupt or oversized upload (413 above
:data:`.engine.MAX_UPLOAD_BYTES` bytes or :data:`.engine.MAX_PIXELS` pixels), a wrong layer or unit,
too many waiting frames (503), a client gone mid-upload (logged on stderr: no one is left to tell).
"""

import asyncio
import concurrent.futures
import os
import sys

from aiohttp import web

from pipelines.commands.toolbox.engine import MAX_UPLOAD_BYTES, TooLarge, Toolbox

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
WAITING_FRAMES = 32  # frames admitted at once (running or queued); more get 503, so memory stays bounded

TOOLBOX = web.AppKey("toolbox", Toolbox)
WORKERS = web.AppKey("workers", dict)


class Busy(Exception):
    """The server has as much work queued as it takes (HTTP 503)."""


def log(message):
    """One line on the server's stderr (the terminal that started ``zf toolbox``)."""
    print(f"zf toolbox: {message}", file=sys.stderr, flush=True)


def error_response(status, message):
    return web.json_response({"error": message}, status=status, headers={"Cache-Control": "no-store"})


@web.middleware
async def errors(request, handler):
    """Every failure as ``{"error": one line}`` to its client; the server goes on."""
    try:
        return await handler(request)
    except TooLarge as error:
        return error_response(413, str(error))
    except ValueError as error:
        return error_response(400, str(error).strip().splitlines()[0])
    except LookupError as error:
        return error_response(404, str(error).strip().splitlines()[0])
    except Busy as error:
        return error_response(503, str(error))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return error_response(error.status, f"{error.reason}: {request.method} {request.path}")
    except (ConnectionError, asyncio.IncompleteReadError) as error:  # no one is left to answer: say so here
        log(f"client went away during {request.method} {request.path} ({type(error).__name__}); serving the next request")
        return error_response(400, "the upload was cut short")
    except Exception as error:  # a bug: the client hears of it in one line, the server goes on
        log(f"internal error on {request.method} {request.path}: {type(error).__name__}: {error}")
        return error_response(500, f"internal error ({type(error).__name__}); the server goes on")


async def read_image_body(request):
    """The request body (an image file), refused above :data:`MAX_UPLOAD_BYTES` before it is read
    when the client says its length, else as soon as it grows past it."""
    from aiohttp import ClientPayloadError

    limit = f"the upload limit of {MAX_UPLOAD_BYTES // 2**20} MiB"
    if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
        raise TooLarge(f"an image file of {request.content_length:,} bytes is over {limit}")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"the image file is over {limit}") from None
    except ClientPayloadError as error:
        raise ConnectionResetError(f"upload cut short ({error})") from None


async def on_worker(request, name, function, *args):
    """``function(*args)`` on the named worker thread, awaited without blocking other clients."""
    workers = request.app[WORKERS]
    if name == "frames":
        if workers["waiting"] >= WAITING_FRAMES:
            raise Busy(f"{WAITING_FRAMES} frames are already waiting; send the next one when an answer arrives")
        workers["waiting"] += 1
    elif workers["occluding"]:
        raise Busy("an occlusion is running; ask again when it has finished")
    else:
        workers["occluding"] = True
    try:
        return await asyncio.get_running_loop().run_in_executor(workers[name], function, *args)
    finally:
        if name == "frames":
            workers["waiting"] -= 1
        else:
            workers["occluding"] = False


def unit_of(request):
    unit = request.query.get("unit")
    return None if unit in (None, "") else unit


async def index(request):
    return web.FileResponse(os.path.join(STATIC, "index.html"), headers={"Cache-Control": "no-store"})


async def model(request):
    return web.json_response(request.app[TOOLBOX].describe())


async def frame(request):
    toolbox = request.app[TOOLBOX]
    layer, unit = toolbox.layer_and_unit(request.query.get("layer"), unit_of(request))  # refuse a bad layer before the upload is read
    data = await read_image_body(request)
    return web.json_response(await on_worker(request, "frames", toolbox.frame, data, layer, unit))


async def occlusion(request):
    toolbox = request.app[TOOLBOX]
    layer, unit = toolbox.layer_and_unit(request.query.get("layer"), unit_of(request))
    data = await read_image_body(request)
    return web.json_response(await on_worker(request, "occlusion", toolbox.occlusion, data, layer, unit))


async def data_image(request):
    png = request.app[TOOLBOX].data_png(request.match_info["index"])
    return web.Response(body=png, content_type="image/png")


async def stop_workers(app):
    for name in ("frames", "occlusion"):
        app[WORKERS][name].shutdown(wait=False, cancel_futures=True)


def make_app(toolbox, atlas_dir=None):
    """The aiohttp :class:`~aiohttp.web.Application` serving ``toolbox`` (and ``atlas_dir`` under ``/atlas/``)."""
    app = web.Application(client_max_size=MAX_UPLOAD_BYTES, middlewares=[errors])
    app[TOOLBOX] = toolbox
    app[WORKERS] = {
        "frames": concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zf-toolbox-frames"),
        "occlusion": concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zf-toolbox-occlusion"),
        "waiting": 0,
        "occluding": False,
    }
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/api/model", model)
    app.router.add_post("/api/frame", frame)
    app.router.add_post("/api/occlusion", occlusion)
    app.router.add_get(r"/api/data/{index}.png", data_image)
    if atlas_dir is not None:
        app.router.add_static("/atlas/", atlas_dir, follow_symlinks=False)
    app.on_shutdown.append(stop_workers)  # before the wait for requests in flight: queued frames are dropped
    return app
