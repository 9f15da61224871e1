"""``zf toolbox``: the live Deep Visualization Toolbox (Yosinski et al. 2015) in the browser, for
any model zfkeras opens: webcam, dropped or chosen images and images of ``--data``; the top-5, every
map of a layer, a clicked unit's deconvnet projection, activation and atlas top-9, occlusion."""

import asyncio
import ipaddress
import signal

import click

from pipelines import loading, options

LOOPBACK = ("localhost",)


def is_loopback(host):
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in LOOPBACK


def data_images(probe, data_spec, data_dir, skip_corrupt, split, count):
    """The first ``count`` native images of ``--data`` (uint8 ``[H, W, C]`` each) and their class names."""
    import numpy as np

    source = loading.open_source(data_spec, split, data_dir=data_dir, skip_corrupt=skip_corrupt)
    names = source.class_names
    if len(probe.class_names) == len(names):  # idx: and csv: sources number their classes; the model names them
        names = probe.class_names
    images, labels = [], []
    for image, label in source.dataset.take(count).as_numpy_iterator():
        images.append(np.asarray(image, "uint8"))
        labels.append(str(names[int(label)]))
    return images, labels


SHUTDOWN_SECONDS = 3.0


async def serve(app, host, port, ready):
    """Serve ``app`` until cancelled (Ctrl-C); ``ready(address)`` once it listens."""
    from aiohttp import web

    # Ctrl-C waits at most SHUTDOWN_SECONDS for requests in flight: a client that keeps a request
    # open (an upload never finished) would otherwise hold the server for aiohttp's default 60 s.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as error:
            raise click.BadParameter(
                f"cannot listen on {host}:{port}: {error.strerror or error}; choose another port (0: any free one)", param_hint="--port"
            ) from None
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        ready(f"http://{shown}:{bound[1]}/")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


@click.command()
@options.model_argument
@options.weights_seed_option
@click.option(
    "--atlas",
    "atlas_dir",
    type=click.Path(file_okay=False, exists=True),
    metavar="DIR",
    help="A zf atlas output: show each clicked unit's top-9 and link its page.",
)
@options.data_options(default=None, images="How many images of --data the page offers (the first N of the split; default 100).")
@options.split_option(help="Split of --data whose images the page offers.")
@options.rule_option(help="Backward rule of a clicked unit's projection")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but a loopback address serves other machines (a warning says so).",
)
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on (0: any free port; the address is printed)."
)
def toolbox(model, atlas_dir, data_spec, data_dir, skip_corrupt, images, split, rule, host, port):
    """Serve the live toolbox for MODEL in the browser, until Ctrl-C.

    The page takes frames from the webcam (the browser's getUserMedia), a dropped or chosen image
    file, or an image of --data; fits each to MODEL's input as evaluation does; and shows the top-5
    classes and every map of a chosen layer, live. Click a map to see its unit's deconvnet
    projection (or --rule's) on the current frame, its activation and, with --atlas, its top-9 images; ask for
    the occlusion maps (Fig. 7) of the current frame. Prints the address to open.
    """
    from pipelines.commands.toolbox.app import log, make_app
    from pipelines.commands.toolbox.engine import Toolbox, read_atlas_units

    if not is_loopback(host):
        click.echo(
            f"warning: --host {host} serves the toolbox to other machines: anyone who reaches this one on port {port} can send it images "
            "and see what the model makes of them. Use the default 127.0.0.1 unless you mean that.",
            err=True,
        )
    probe = loading.open_model(model)
    loading.check_rule(probe, rule)
    counts = loading.map_counts(probe, probe.layer_names)
    atlas = None
    if atlas_dir is not None:
        try:
            atlas = read_atlas_units(atlas_dir)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--atlas") from None
    shown, labels = ([], []) if data_spec is None else data_images(probe, data_spec, data_dir, skip_corrupt, split, images or 100)
    try:
        engine = Toolbox(probe, model, counts, shown, labels, atlas, rule)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--atlas") from None
    import numpy as np

    engine.live.look(np.zeros(probe.input_shape, "float32"), probe.layer_names[0], 0)  # trace the first frame's functions now

    def ready(address):
        click.echo(f"zf toolbox: {model} at {address} (Ctrl-C stops)")
        click.get_text_stream("stdout").flush()

    # A shell starts background jobs with SIGINT ignored and children inherit that; asyncio then
    # leaves SIGINT alone and Ctrl-C / kill -INT would not stop the server. It always takes SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        asyncio.run(serve(make_app(engine, atlas_dir), host, port, ready))
    except KeyboardInterrupt:
        log("stopped")
