"""Streaming top-k against brute force, sharding, and bounded memory (issue 4, must-show 1).

Brute force: every activation of every image in memory as Python tuples, sorted with ``sorted``
by (-value, image, y, x), the documented order. It shares no code with zfkeras.topk.
"""

import json
import tracemalloc

import numpy as np
import pytest

from zfkeras.analysis.top_activations import TopK, project_topk, scan, strongest_maps
from zfkeras.nn.fields import receptive_fields
from zfkeras.nn.models import ConvSpec, ModelSpec, build_model, zfnet_small_spec
from zfkeras.nn.probe import KerasProbe


def brute_force(features, maps, k, distinct_images):
    """``{layer: {str(map): [entries]}}`` from all activations at once."""
    result = {}
    for layer, channels in maps.items():
        acts = np.asarray(features[layer], "float32")
        result[layer] = {}
        for channel in channels:
            entries = []
            for image in range(len(acts)):
                plane = acts[image, :, :, channel]
                cells = [(float(plane[y, x]), image, y, x) for y in range(plane.shape[0]) for x in range(plane.shape[1])]
                if distinct_images:
                    best = max(v for v, *_ in cells)
                    cells = [next(c for c in cells if c[0] == best)]  # first in row-major order
                entries.extend(cells)
            entries.sort(key=lambda e: (-e[0], e[1], e[2], e[3]))
            result[layer][str(channel)] = [{"image": i, "y": y, "x": x, "value": v} for v, i, y, x in entries[:k]]
    return result


def random_features(rng, n):
    """Activations with many exact ties (values on a coarse grid, mostly zero) and a dead map."""
    conv_a = np.maximum(rng.integers(-6, 4, (n, 5, 4, 6)), 0).astype("float32") * 0.5
    conv_a[..., 2] = 0.0  # a dead map: every entry ties at 0
    conv_b = rng.normal(size=(n, 3, 3, 4)).clip(0).astype("float32")
    return {"conv_a": conv_a, "conv_b": conv_b}


def scan_arrays(features, maps, k, distinct, bounds, first=0):
    top = TopK(maps, k, distinct)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        top.update({name: value[start:stop] for name, value in features.items()}, first + start)
    return top


MAPS = {"conv_a": [0, 2, 5, 3], "conv_b": [1, 3]}


@pytest.mark.parametrize("distinct", [True, False])
def test_streaming_equals_brute_force(rng, distinct):
    features = random_features(rng, 37)
    top = scan_arrays(features, MAPS, 9, distinct, [0, 5, 6, 20, 37])
    assert top.to_dict() == brute_force(features, MAPS, 9, distinct)
    assert top.images_seen == 37
    # fewer candidates than k: only the real ones are listed
    few = scan_arrays({n: v[:2] for n, v in features.items()}, MAPS, 9, True, [0, 2])
    assert all(len(entries) == 2 for per_map in few.to_dict().values() for entries in per_map.values())


@pytest.mark.parametrize("distinct", [True, False])
def test_sharded_scan_merge_equals_single_scan(rng, distinct):
    features = random_features(rng, 40)
    single = scan_arrays(features, MAPS, 5, distinct, [0, 7, 40]).to_dict()
    cuts = [0, 3, 11, 12, 29, 40]
    shards = []
    for start, stop in zip(cuts[:-1], cuts[1:]):
        part = {n: v[start:stop] for n, v in features.items()}
        inner = sorted({0, stop - start, *rng.integers(0, stop - start, 2).tolist()})
        shard = scan_arrays(part, MAPS, 5, distinct, inner, first=start)
        # a shard travels as topk.json between workers
        shards.append(TopK.from_dict(json.loads(json.dumps(shard.to_dict())), 5, distinct, shard.images_seen))
    left = shards[0]
    for shard in shards[1:]:
        left = left.merge(shard)
    right = shards[-1]
    for shard in reversed(shards[:-1]):
        right = shard.merge(right)
    tree = shards[0].merge(shards[1]).merge(shards[2].merge(shards[3].merge(shards[4])))
    for merged in (left, right, tree):
        assert merged.to_dict() == single
        assert merged.images_seen == 40


def test_merge_rejects_overlap_and_mismatch(rng):
    features = random_features(rng, 6)
    a = scan_arrays(features, MAPS, 3, True, [0, 6])
    with pytest.raises(ValueError, match="disjoint"):
        a.merge(a)
    with pytest.raises(ValueError, match="same k"):
        a.merge(scan_arrays(features, MAPS, 4, True, [0, 6], first=6))
    with pytest.raises(ValueError, match="k must be"):
        TopK(MAPS, 0)
    with pytest.raises(ValueError, match="channel indices"):
        TopK({"conv_a": [1, 1]})
    with pytest.raises(ValueError, match="no layer 'conv_b'"):
        TopK(MAPS).update({"conv_a": features["conv_a"]}, 0)


@pytest.fixture(scope="module")
def probe():
    spec = zfnet_small_spec(input_shape=(16, 16, 1)).with_units(conv1=6, conv2=6, conv3=6, conv4=6, conv5=6, fc6=8, fc7=8)
    return KerasProbe(build_model(spec, seed=3))


def batches(images, size):
    return [images[i : i + size] for i in range(0, len(images), size)]


def test_model_scan_equals_brute_force_and_shards(probe, rng):
    images = rng.uniform(0, 255, (48, 16, 16, 1)).astype("float32")
    maps = {"conv1": [0, 3, 5], "conv3": [1, 2], "conv5": list(range(6))}
    single = scan(probe, batches(images, 8), maps, k=9)
    # brute force over the same batches (so the float values are bit-identical)
    features = {}
    for batch in batches(images, 8):
        for name, value in probe.features(batch, layers=list(maps), batch_size=8).items():
            features.setdefault(name, []).append(value)
    features = {name: np.concatenate(parts) for name, parts in features.items()}
    assert single.to_dict() == brute_force(features, maps, 9, True)
    shards = [scan(probe, batches(images[a:b], 8), maps, k=9, first_image=a) for a, b in ((0, 16), (16, 40), (40, 48))]
    assert shards[2].merge(shards[0]).merge(shards[1]).to_dict() == single.to_dict()


def peak_scan_bytes(probe, n, maps, seed):
    """Peak Python-heap bytes (numpy included) of a scan over ``n`` images made batch by batch."""
    rng = np.random.default_rng(seed)
    generated = (rng.uniform(0, 255, (16, 16, 16, 1)).astype("float32") for _ in range(n // 16))
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        scan(probe, generated, maps, k=9)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_scan_memory_does_not_grow_with_images(probe):
    maps = {name: list(range(6)) for name in probe.layer_names}
    peak_scan_bytes(probe, 32, maps, 0)  # warm up: trace the tf.functions once
    small = peak_scan_bytes(probe, 64, maps, 1)
    large = peak_scan_bytes(probe, 640, maps, 2)
    assert large < 1.10 * small, (small, large)


def test_strongest_maps_by_hand():
    acts = np.zeros((2, 2, 3, 4), "float32")
    acts[0, :, :, 0] = 2.9  # largest sum (17.4), but its peak 3 is below maps 1 and 2
    acts[0, 1, 2, 0] = 3.0
    acts[0, 0, 1, 1] = 5.0
    acts[0, 1, 0, 2] = 5.0  # ties map 1: the lower channel comes first
    acts[0, 0, 0, 3] = 1.0
    acts[1, 1, 1, 3] = 7.0  # image 1: only map 3 fires; the rest tie at 0
    result = strongest_maps(acts, 3)
    assert result.channels.tolist() == [[1, 2, 0], [3, 0, 1]]
    np.testing.assert_array_equal(result.peaks, [[5.0, 5.0, 3.0], [7.0, 0.0, 0.0]])
    assert strongest_maps(acts, 4).channels.tolist() == [[1, 2, 0, 3], [3, 0, 1, 2]]
    for bad in (0, 5, 1.5):
        with pytest.raises(ValueError, match=r"count must be an int in \[1, 4\]"):
            strongest_maps(acts, bad)
    with pytest.raises(ValueError, match=r"\[N, h, w, K\]"):
        strongest_maps(acts[0], 2)


def cut_by_hand(image, top, left, size):
    """``image [H, W, C]`` rows top..top+size-1, columns left..left+size-1, NaN outside, pixel by pixel."""
    patch = np.full((size, size, image.shape[-1]), np.nan, "float32")
    for r in range(size):
        for c in range(size):
            if 0 <= top + r < image.shape[0] and 0 <= left + c < image.shape[1]:
                patch[r, c] = image[top + r, left + c]
    return patch


def test_project_topk_cuts_the_hand_computed_fields_of_a_wide_image(rng):
    """Fig. 2 patches and projections on a 20x28 input, against fields worked out by hand."""
    spec = ModelSpec(
        name="wide",
        input_shape=(20, 28, 1),
        num_classes=3,
        convs=(ConvSpec(4, 5, 2, "valid"), ConvSpec(5, 3, 1, "same")),
        fc=(8, None),
        kernel_init="he_normal",
        filter_radius=None,
    )
    model = build_model(spec, seed=1)
    probe = KerasProbe(model)
    images = rng.uniform(0, 255, (10, 20, 28, 1)).astype("float32")
    maps = {"conv1": [0, 2], "conv2": [1, 3, 4]}
    top = scan(probe, batches(images, 4), maps, k=3)
    crops = project_topk(probe, top, batches(images, 4), receptive_fields(model), batch_size=5)
    # conv1, 5x5 stride 2 valid (8x12 maps): unit (y, x) sees rows 2y..2y+4, columns 2x..2x+4.
    # conv2, 3x3 stride 1 "same" on those maps pads one conv1 unit (2 px) before: 9 px from 2y-2.
    hand = {"conv1": (5, 0), "conv2": (9, -2)}
    swapped_would_differ = 0
    for layer, (size, offset) in hand.items():
        entries = top.entries(layer)
        assert crops[layer]["patches"].shape == (len(maps[layer]), 3, size, size, 1)
        # whole-image projections of every kept unit, in one deconvnet call
        image, y, x = (entries[f].reshape(-1) for f in ("image", "y", "x"))
        channel = np.repeat(maps[layer], 3)
        projections = probe.project(images[image], layer, channel, np.stack([y, x], 1).astype("int32"))
        for n, (m, j) in enumerate(np.ndindex(len(maps[layer]), 3)):
            top_row, left = offset + 2 * int(y[n]), offset + 2 * int(x[n])
            np.testing.assert_array_equal(crops[layer]["patches"][m, j], cut_by_hand(images[image[n]], top_row, left, size))
            np.testing.assert_allclose(crops[layer]["projections"][m, j], cut_by_hand(projections[n], top_row, left, size), rtol=1e-5, atol=1e-6)
            swapped_would_differ += y[n] != x[n]
    assert swapped_would_differ >= 5
    assert np.isnan(crops["conv2"]["patches"]).any()  # some conv2 fields reach past the border


def test_energy_extent_counts_the_pixels_holding_the_energy():
    from zfkeras.analysis.top_activations import energy_extent

    projection = np.zeros((2, 6, 6, 3))
    projection[0, 1, 1] = [3.0, 0, 0]  # energy 9
    projection[0, 4, 2] = [0, 0, 1.0]  # energy 1
    projection[1] = np.nan  # outside the image: no energy
    projection[1, 0, :2] = 2.0  # two pixels of energy 12 each
    assert energy_extent(projection, 0.9).tolist() == [1, 2]  # 9/10 = 0.9 in one pixel; 12/24 < 0.9 needs both
    assert energy_extent(projection, 0.95).tolist() == [2, 2]
    assert energy_extent(np.zeros((3, 3, 1))) == 0
    brute = []
    for image in np.random.default_rng(0).normal(size=(5, 7, 9, 3)):
        energy = np.sort((image**2).sum(axis=-1).ravel())[::-1]
        brute.append(int(np.searchsorted(np.cumsum(energy) / energy.sum(), 0.9) + 1))
    assert energy_extent(np.random.default_rng(0).normal(size=(5, 7, 9, 3))).tolist() == brute
    with pytest.raises(ValueError, match="fraction"):
        energy_extent(projection, 0)
