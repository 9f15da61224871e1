"""``zf atlas`` on the shipped Fashion-MNIST model: scan throughput, the whole atlas, flat memory.

    python -m benchmarks atlas [--images=2000] [--repeats=3] [--small=1000] [--large=10000] [--atlas-images=10000]
    python -m benchmarks atlas --smoke       (tiny sizes: checks the benchmark runs, numbers mean nothing)

On ``saved_models/zfnet-fashion-mnist`` (all 352 units of conv1-conv5) and the Fashion-MNIST test
images (Debian's files; generated noise where they are missing), in memory so no data I/O is timed:

- **scan**: the atlas scan (:func:`zfkeras.analysis.atlas_shards.scan_sharded`: every unit's top-100,
  counts, histograms and sums, shards of 2,048) against the model's plain forward pass
  (``probe.predict``, the export's ``serve``) over the same ``--images`` images in batches of 64,
  interleaved, median of ``--repeats``; the throughput ratio forward time / scan time (target >= 0.8);
- **memory**: the scan's peak resident memory over ``--small`` and ``--large`` images (shards of
  512, so both merge several), each in a fresh process (flat: ratio near 1), and its peak traced
  heap (tracemalloc: numpy's allocations); the images are made batch by batch, as a pipeline reads them;
- **atlas**: ``zf atlas`` of the whole model over the first ``--atlas-images`` test images (written
  as an ``idx:`` source) in a subprocess, evolution across its 6 checkpoints included: wall and CPU
  time, files and bytes on disk.
"""

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

from benchmarks.speed import interleaved, isolated_peaks, options, peak_target, report_peak

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "saved_models", "zfnet-fashion-mnist")
FASHION = "/usr/share/datasets/fashion-mnist"
BATCH = 64
MEMORY_SHARD = 512  # shards in the memory runs: both sizes merge several, as every large job does
DEFAULTS = {"images": 2000, "repeats": 3, "small": 1000, "large": 10000, "atlas_images": 10000}
SMOKE = {"images": 128, "repeats": 1, "small": 64, "large": 256, "atlas_images": 64}


SOURCE = {}


def source():
    """``(uint8 images [10000, 28, 28], labels)``: the Fashion-MNIST test images, read once (generated
    noise where Debian's files are missing)."""
    if not SOURCE:
        try:
            from zfkeras.data.sources.idx import load_idx

            SOURCE["images"] = load_idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"))
            SOURCE["labels"] = load_idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")).astype("int64")
        except FileNotFoundError:
            rng = np.random.default_rng(0)
            SOURCE["images"], SOURCE["labels"] = rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8), rng.integers(0, 10, 10000)
    return SOURCE["images"], SOURCE["labels"]


def read(start, count):
    """``(float32 images [B, 28, 28, 1], labels)`` batches of images ``start .. start + count - 1``
    (the test set repeated past 10,000), made batch by batch as a data pipeline would."""
    images, labels = source()
    for first in range(start, start + count, BATCH):
        index = np.arange(first, min(first + BATCH, start + count)) % len(images)
        yield images[index][..., None].astype("float32"), labels[index]


def write_idx(path, array):
    """A uint8 array as an MNIST-format IDX file (gzip), for an ``idx:`` source."""
    import gzip
    import struct

    array = np.asarray(array, np.uint8)
    with gzip.open(path, "wb") as handle:
        handle.write(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def scan(probe, count, maps, reducer=None, shard_images=2048):
    from zfkeras.analysis.atlas_shards import scan_sharded

    return scan_sharded(probe, read, count, maps, 10, batch_size=BATCH, shard_images=shard_images, reducer=reducer)[0]


def forward(probe, count):
    for images, _ in read(0, count):
        probe.predict(images, batch_size=BATCH)


def setting():
    from zfkeras.export import open_model

    probe = open_model(SHIPPED)
    counts = {name: value.shape[-1] for name, value in probe.features(np.zeros((1, 28, 28, 1), "float32"), probe.layer_names).items()}
    return probe, {name: list(range(count)) for name, count in counts.items()}


def memory_child(sizes):
    """In a fresh process (:func:`isolated_peaks`): print the peak RSS of a scan of the chosen size."""
    probe, maps = setting()
    source()  # the data set is not the scan's memory
    methods = {str(n): (lambda n=n: scan(probe, n, maps, shard_images=MEMORY_SHARD)) for n in sizes}
    report_peak(methods, "memory")


def throughput(probe, maps, count, repeats):
    from zfkeras.analysis.atlas import unit_reducer

    reducer = unit_reducer(probe, maps)  # traced once, as in one zf atlas run
    scan(probe, BATCH, maps, reducer)  # trace both paths first
    forward(probe, BATCH)
    methods = {"forward": lambda: forward(probe, count), "scan": lambda: scan(probe, count, maps, reducer)}
    medians, _ = interleaved(methods, repeats)
    return {
        "images": count,
        "forward_wall_s": medians["forward"][0],
        "forward_cpu_s": medians["forward"][1],
        "scan_wall_s": medians["scan"][0],
        "scan_cpu_s": medians["scan"][1],
        "scan_throughput_over_forward_cpu": medians["forward"][1] / medians["scan"][1],
        "scan_throughput_over_forward_wall": medians["forward"][0] / medians["scan"][0],
    }


def heap_peaks(probe, maps, sizes):
    source()
    peaks = {}
    for size in sizes:
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        scan(probe, size, maps, shard_images=MEMORY_SHARD)
        peaks[size] = tracemalloc.get_traced_memory()[1] - baseline
        tracemalloc.stop()
    return peaks


def whole_atlas(count, smoke):
    """``zf atlas`` of the shipped model in a subprocess: seconds (wall, CPU) and size on disk."""
    work = tempfile.mkdtemp(prefix="zf-atlas-bench-")
    out = os.path.join(work, "atlas")
    images, labels = source()
    write_idx(os.path.join(work, "t10k-images-idx3-ubyte.gz"), images[:count])
    write_idx(os.path.join(work, "t10k-labels-idx1-ubyte.gz"), labels[:count])
    args = [sys.executable, "-m", "pipelines.cli", "atlas", SHIPPED, "--data", f"idx:{work}", "--out", out]
    if smoke:
        args += ["--maps", "random:2", "--no-evolution"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"zf atlas failed: {done.stderr.strip().splitlines()[-1:]}")
    sizes = [os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(out) for name in names]
    shutil.rmtree(work, ignore_errors=True)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"atlas_images": count, "atlas_wall_s": wall, "atlas_cpu_s": cpu, "atlas_files": len(sizes), "atlas_bytes": sum(sizes)}


def main(argv):
    smoke = "--smoke" in argv
    chosen = dict(SMOKE) if smoke else options([a.replace("atlas-images", "atlas_images") for a in argv], DEFAULTS, "atlas")
    sizes = (chosen["small"], chosen["large"])
    if peak_target() is not None:  # a child of isolated_peaks
        memory_child(sizes)
        return {}
    probe, maps = setting()
    results = {"units": sum(map(len, maps.values())), "smoke": smoke}
    results.update(throughput(probe, maps, chosen["images"], chosen["repeats"]))
    print(f"atlas scan of {chosen['images']} images, {results['units']} units, batch {BATCH} (shipped model, Fashion-MNIST test images)")
    print(
        f"  forward pass {results['forward_cpu_s']:.2f} CPU s ({results['forward_wall_s']:.2f} wall), scan {results['scan_cpu_s']:.2f} CPU s "
        f"({results['scan_wall_s']:.2f} wall) -> scan throughput / forward {results['scan_throughput_over_forward_cpu']:.2f} CPU time "
        f"({results['scan_throughput_over_forward_wall']:.2f} wall)"
    )
    argv_child = ["--smoke"] if smoke else [f"--small={sizes[0]}", f"--large={sizes[1]}"]
    rss = isolated_peaks("atlas", argv_child, "memory", [str(n) for n in sizes])
    heap = heap_peaks(probe, maps, sizes)
    results.update({"peak_rss_bytes": {str(n): rss[str(n)] for n in sizes}, "peak_heap_bytes": {str(n): heap[n] for n in sizes}})
    results["peak_rss_ratio"] = rss[str(sizes[1])] / rss[str(sizes[0])] if rss[str(sizes[0])] and rss[str(sizes[1])] else None
    results["peak_heap_ratio"] = heap[sizes[1]] / heap[sizes[0]]
    for n in sizes:
        shown = "n/a" if rss[str(n)] is None else f"{rss[str(n)] / 2**20:.0f} MiB"
        print(f"  scan of {n:>6} images: peak RSS {shown} (fresh process), peak heap {heap[n] / 2**20:.1f} MiB")
    ratio = "n/a" if results["peak_rss_ratio"] is None else f"{results['peak_rss_ratio']:.3f}"
    print(f"  {sizes[1]} / {sizes[0]} images: peak RSS {ratio}x, peak heap {results['peak_heap_ratio']:.3f}x")
    results.update(whole_atlas(chosen["atlas_images"], smoke))
    print(
        f"zf atlas of the shipped model over {results['atlas_images']} test images{' (smoke: 2 units per layer)' if smoke else ''}: "
        f"{results['atlas_wall_s']:.0f} s wall, {results['atlas_cpu_s']:.0f} s CPU, {results['atlas_files']} files, "
        f"{results['atlas_bytes'] / 1e6:.1f} MB"
    )
    return results
