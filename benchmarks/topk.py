"""Top-k scan: cost of the bookkeeping and memory against the number of images.

``python -m benchmarks topk [--images=N] [--smoke]``. On the small ZFNet (28x28, random weights, generated
images so no data I/O is timed), all five conv layers, every map, k = 9:

- CPU time of ``zfkeras.topk.scan`` over N images against a plain loop of ``probe.features`` on the
  same batches (the baseline: the forward passes any scan needs); the ratio is the top-k overhead;
- peak traced Python/numpy heap (tracemalloc) and process RSS growth of a scan over N and over 10N
  images; both ratios should stay near 1 (memory bounded by maps x k, not by images).
"""

import resource
import time
import tracemalloc

import numpy as np

from benchmarks.speed import smoke_mode


def _batches(n, batch_size, seed):
    rng = np.random.default_rng(seed)
    for _ in range(n // batch_size):
        yield rng.uniform(0, 255, (batch_size, 28, 28, 1)).astype("float32")


def _rss_bytes():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def main(argv):
    from zfkeras.analysis.top_activations import scan
    from zfkeras.nn.models import zfnet_small
    from zfkeras.nn.probe import KerasProbe

    smoke, argv = smoke_mode(argv)  # --smoke: 20 and 200 images
    batch_size = 10 if smoke else 100
    n = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--images=")), 2 * batch_size if smoke else 2000)
    probe = KerasProbe(zfnet_small(seed=0))
    layers = list(probe.layer_names)
    counts = {name: value.shape[-1] for name, value in probe.features(np.zeros((1, 28, 28, 1), "float32"), layers).items()}
    maps = {name: list(range(count)) for name, count in counts.items()}
    scan(probe, _batches(2 * batch_size, batch_size, 0), maps)  # warm up: trace the tf.functions

    start = time.process_time()
    for batch in _batches(n, batch_size, 1):
        probe.features(batch, layers=layers, batch_size=batch_size)
    baseline = time.process_time() - start
    start = time.process_time()
    scan(probe, _batches(n, batch_size, 1), maps)
    scanned = time.process_time() - start

    memory = {}
    for size in (n, 10 * n):
        rss = _rss_bytes()
        tracemalloc.start()
        scan(probe, _batches(size, batch_size, 2), maps)
        memory[size] = (tracemalloc.get_traced_memory()[1], _rss_bytes() - rss)
        tracemalloc.stop()
    heap_ratio = memory[10 * n][0] / memory[n][0]
    results = {
        "images": n,
        "maps": sum(counts.values()),
        "features_cpu_s": baseline,
        "scan_cpu_s": scanned,
        "scan_over_features": scanned / baseline,
        "peak_heap_bytes": {str(k): v[0] for k, v in memory.items()},
        "rss_growth_bytes": {str(k): v[1] for k, v in memory.items()},
        "peak_heap_ratio_10x": heap_ratio,
    }
    print(f"top-k scan of {n} images, {results['maps']} maps, k=9 (small ZFNet 28x28, batch {batch_size})")
    print(f"  CPU time: features only {baseline:.2f} s, scan {scanned:.2f} s -> ratio {scanned / baseline:.2f}")
    for size, (heap, rss) in memory.items():
        print(f"  {size:>7} images: peak heap {heap / 2**20:.1f} MiB, RSS growth {rss / 2**20:.1f} MiB")
    print(f"  peak heap 10x images / 1x: {heap_ratio:.3f}")
    return results
