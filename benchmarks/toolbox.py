"""``zf toolbox`` through the app: frames/s of the frame -> activations-and-projection round trip, and
the server's memory over a long run of frames.

    python -m benchmarks toolbox [--seconds=30] [--soak=600] [--clients=1] [--smoke=1]

Each model is served by a real ``zf toolbox MODEL --port 0`` (a fresh process on 127.0.0.1); one
client sends it a webcam-sized frame (a 640x480 JPEG of skimage's ``chelsea``, a real photo, as the page sends
webcam frames) again
and again for ``--seconds``, each with a layer and a unit, and waits for the whole answer (top-5,
every map of the layer, the unit's projection) before sending the next, as the page does. Models:
the shipped Fashion-MNIST export (28x28x1) and the full ZFNet at 224x224x3 (random he_normal
weights, mean 120, as the other 224 benchmarks, saved as a ``.keras`` file), each at its first
and top conv layer.

Baseline, in the same run and process as the client: the same frame through the library the plain
way, no app and no HTTP: decode (PIL), ``fit_image``, ``probe.features``, ``probe.predict`` and
``probe.project(..., "max")``. The app's ratio to it shows what the web layer costs or saves (the
app runs one fused forward pass and projects at the position it read from the maps). The server's
own timing of each step (decode+fit, forward, project, render to PNGs) says what dominates; the
rest of the round trip is HTTP, JSON and the client.

Memory: the shipped model's server gets frames for ``--soak`` seconds (10 minutes by default; after
a warm-up of a tenth of it) while its resident memory is sampled; prints first, last and largest
sample and the least-squares slope in MB per minute. ``--smoke=1``: 2 s of frames per case, the
shipped model at conv1 only, a 10 s soak (a test runs it).
"""

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.speed import options, zfnet_224

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "saved_models", "zfnet-fashion-mnist")


class ToolboxServer:
    """``zf toolbox MODEL ARGS --port 0`` in a fresh process (this tree's code first on the path);
    ``address`` is the URL it printed. :meth:`stop` sends Ctrl-C (SIGINT) and returns the exit code."""

    def __init__(self, model, *args, timeout=240):
        # PYTHONFAULTHANDLER: a server that does not stop is aborted, and its threads' stacks land in errors().
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2", PYTHONFAULTHANDLER="1")
        self.stderr = tempfile.TemporaryFile()
        command = [sys.executable, "-m", "pipelines.cli", "toolbox", str(model), *map(str, args), "--port", "0"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.address = None
        deadline = time.monotonic() + timeout
        while self.address is None:
            line = self.process.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"zf toolbox did not start: {self.errors()}")
            found = re.search(r"http://\S+/", line)
            self.address = found.group(0) if found else None

    def rss(self):
        """The server's resident memory in bytes (/proc)."""
        with open(f"/proc/{self.process.pid}/status") as handle:
            return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:"))

    def errors(self):
        """What the server wrote on stderr so far."""
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def stop(self, timeout=60):
        """Ctrl-C, then the exit code (if it did not stop within ``timeout`` s: aborted, -6, its
        threads' stacks in :meth:`errors`; killed, -9, if even that hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGABRT)
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        self.process.stdout.close()
        return self.process.returncode


def webcam_frame(size=(480, 640)):
    """A webcam frame as the page sends it: a JPEG (quality 90, bytes) of skimage's ``chelsea``
    resized to ``size`` (height, width)."""
    import skimage.data
    from PIL import Image

    image = Image.fromarray(skimage.data.chelsea()).resize(size[::-1], Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


async def client(session, address, frames, plan, deadline, stats, count=None):
    """Send frames (cycling ``frames`` and ``plan`` ``[(layer, unit)]``) until ``deadline`` (or
    ``count`` requests), one at a time; record each round trip in ``stats``."""
    index = 0
    while time.monotonic() < deadline and (count is None or index < count):
        layer, unit = plan[index % len(plan)]
        started = time.perf_counter()
        try:
            async with session.post(f"{address}api/frame", params={"layer": layer, "unit": str(unit)}, data=frames[index % len(frames)]) as response:
                answer = await response.json()
            good = response.status == 200 and bool(answer["top5"]) and answer["unit"]["index"] == unit
            if good:
                stats["timing"].append(answer["timing_ms"])
            else:
                stats["failures"].append(f"HTTP {response.status}: {answer.get('error', answer.keys())}")
        except Exception as error:  # a failed request is counted, never hidden
            stats["failures"].append(f"{type(error).__name__}: {error}")
        stats["round_trips"].append(time.perf_counter() - started)
        index += 1


async def sample_memory(server, deadline, every, samples):
    while time.monotonic() < deadline:
        samples.append((time.monotonic(), server.rss()))
        await asyncio.sleep(every)
    samples.append((time.monotonic(), server.rss()))


def load(server, frames, plan, clients=1, seconds=10.0, every=None, count=None):
    """``clients`` concurrent clients sending frames to ``server`` for ``seconds`` (each at most
    ``count`` requests); with ``every``, the server's RSS sampled every ``every`` s. Returns
    ``{"requests", "failures" (messages), "seconds", "frames_per_second", "round_trip_ms" (median),
    "server_ms" (median of each step), "memory" [(s, bytes)]}``."""
    import aiohttp

    stats = {"timing": [], "failures": [], "round_trips": []}
    samples = []

    async def run():
        deadline = time.monotonic() + seconds
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            jobs = [client(session, server.address, frames, plan[i:] + plan[:i], deadline, stats, count) for i in range(clients)]
            if every:
                jobs.append(sample_memory(server, deadline, every, samples))
            await asyncio.gather(*jobs)

    started = time.perf_counter()
    asyncio.run(run())
    wall = time.perf_counter() - started
    steps = stats["timing"][0].keys() if stats["timing"] else ()
    return {
        "requests": len(stats["round_trips"]),
        "failures": stats["failures"],
        "seconds": wall,
        "frames_per_second": len(stats["round_trips"]) / wall,
        "round_trip_ms": 1000 * float(np.median(stats["round_trips"])) if stats["round_trips"] else None,
        "server_ms": {step: float(np.median([t[step] for t in stats["timing"]])) for step in steps},
        "memory": [(t - samples[0][0], rss) for t, rss in samples] if samples else [],
    }


def memory_summary(samples):
    """``{"first_mb", "last_mb", "max_mb", "slope_mb_per_min"}`` of ``[(seconds, bytes)]`` samples."""
    times = np.array([t for t, _ in samples])
    megabytes = np.array([rss for _, rss in samples]) / 2**20
    slope = float(np.polyfit(times / 60, megabytes, 1)[0]) if len(samples) > 2 and times[-1] > times[0] else 0.0
    return {"first_mb": float(megabytes[0]), "last_mb": float(megabytes[-1]), "max_mb": float(megabytes.max()), "slope_mb_per_min": slope}


def baseline(model_path, frame, layer, unit, seconds):
    """Frames/s of the plain library path in this process (see the module docstring)."""
    from PIL import Image

    from zfkeras.data.transforms import fit_image
    from zfkeras.export import open_model

    probe = open_model(model_path)

    def once():
        native = np.asarray(Image.open(io.BytesIO(frame)))
        pixels = fit_image(native, probe.input_shape).pixels[None]
        probe.features(pixels, [layer])
        probe.predict(pixels)
        probe.project(pixels, layer, unit, "max")

    once()  # tracing
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or count < 2:
        once()
        count += 1
    return count / (time.perf_counter() - started)


def measure(name, model_path, layers, frame, seconds):
    """Rows ``{(name, layer): {...}}`` of app and baseline frames/s for each layer (unit 0)."""
    rows = {}
    server = ToolboxServer(model_path)
    try:
        for layer in layers:
            load(server, [frame], [(layer, 0)], seconds=1.0, count=3)  # the layer's first frames trace its functions
            measured = load(server, [frame], [(layer, 0)], seconds=seconds)
            assert not measured["failures"], measured["failures"][:3]
            rows[(name, layer)] = {k: measured[k] for k in ("requests", "frames_per_second", "round_trip_ms", "server_ms")}
    finally:
        server.stop()
    for layer in layers:
        plain = baseline(model_path, frame, layer, 0, seconds)
        row = rows[(name, layer)]
        row.update(baseline_frames_per_second=plain, ratio=row["frames_per_second"] / plain)
    return rows


def soak(frame, seconds, every):
    """The shipped model's server under ``seconds`` of frames (all its layers, a unit each)."""
    server = ToolboxServer(SHIPPED)
    try:
        plan = [(layer, unit) for layer, unit in (("conv1", 3), ("conv2", 7), ("conv3", 11), ("conv4", 5), ("conv5", 2))]
        load(server, [frame], plan, seconds=max(2.0, seconds / 10))  # warm-up: every layer traced, allocators settled
        measured = load(server, [frame], plan, seconds=seconds, every=every)
    finally:
        code = server.stop()
    summary = {**memory_summary(measured["memory"]), "requests": measured["requests"], "failures": len(measured["failures"]), "exit_code": code}
    return {**summary, "stderr_tail": server.errors().split("Extension modules")[0][-4000:]} if code else summary


def main(argv=()):
    chosen = options(argv, {"seconds": 30, "soak": 600, "smoke": 0}, "toolbox")
    smoke = bool(chosen["smoke"])
    seconds = 2 if smoke else chosen["seconds"]
    frame = webcam_frame()
    cases = [("shipped 28x28x1", SHIPPED, ["conv1"] if smoke else ["conv1", "conv5"])]
    with tempfile.TemporaryDirectory() as scratch:
        if not smoke:
            path = os.path.join(scratch, "zfnet224.keras")
            zfnet_224().save(path)
            cases.append(("ZFNet 224x224x3", path, ["conv1", "conv5"]))
        report = {}
        for name, path, layers in cases:
            report.update(measure(name, path, layers, frame, seconds))
    print(f"frame: 640x480 JPEG of skimage chelsea; one client, {seconds} s per row; baseline: the library the plain way in one process")
    print(f"{'model':<18}{'layer':<7}{'app frames/s':>13}{'baseline':>10}{'ratio':>7}{'round trip ms':>14}  server ms (median): steps")
    for (name, layer), row in report.items():
        steps = ", ".join(f"{step} {ms:.1f}" for step, ms in row["server_ms"].items())
        print(
            f"{name:<18}{layer:<7}{row['frames_per_second']:>13.1f}{row['baseline_frames_per_second']:>10.1f}{row['ratio']:>6.2f}x"
            f"{row['round_trip_ms']:>14.1f}  {steps}"
        )
    memory = soak(frame, 10 if smoke else chosen["soak"], 1 if smoke else 10)
    print(
        f"memory, shipped model, {memory['requests']} frames over {10 if smoke else chosen['soak']} s ({memory['failures']} failed): "
        f"RSS {memory['first_mb']:.0f} -> {memory['last_mb']:.0f} MB (max {memory['max_mb']:.0f}), slope {memory['slope_mb_per_min']:+.2f} MB/min; "
        f"Ctrl-C exit code {memory['exit_code']}"
    )
    return {"rows": {f"{name} {layer}": row for (name, layer), row in report.items()}, "memory": memory}
