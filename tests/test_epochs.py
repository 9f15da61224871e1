"""Training epochs (zfkeras.epochs): class mixing on a class-sorted folder at 224, cache choices that
never change the batches, ``auto`` against a budget, and corrupt files met mid-epoch."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from zfkeras import data
from zfkeras.data.decode import decode_file
from zfkeras.data.epochs import DEFAULT_CACHE_BUDGET, TrainingImages, plan_cache

CLASSES = 10
PER_CLASS = 30


def write_folder(root, classes=CLASSES, per_class=PER_CLASS, size=(40, 52)):
    """A class-sorted folder: class ``k`` holds PNGs whose pixels are all ``20 * k + 5`` (+ noise),
    so an image's class can be read back from its pixels after resizing and cropping."""
    rng = np.random.default_rng(0)
    for k in range(classes):
        os.makedirs(root / f"class{k:02d}", exist_ok=True)
        for j in range(per_class):
            image = np.full((*size, 3), 20 * k + 5, np.int16) + rng.integers(-2, 3, (*size, 3))
            tf.io.write_file(str(root / f"class{k:02d}" / f"{j:03d}.png"), tf.io.encode_png(image.astype(np.uint8)))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("sorted"))


def epoch_arrays(images, batch_size, seed):
    return [(x, y, i) for x, y, i in images.epoch(batch_size, seed).as_numpy_iterator()]


def test_class_sorted_folder_gives_mixed_batches_at_224(folder):
    source = data.load_source(f"folder:{folder}", "all")
    assert source.files is not None and list(source.labels) == sorted(source.labels)  # sorted on disk
    images = TrainingImages(source, 224, 3, cache="none")
    batches = epoch_arrays(images, 32, seed=0)
    assert sum(len(y) for _, y, _ in batches) == CLASSES * PER_CLASS
    for x, y, ids in batches[:-1]:  # every full batch of the first epoch
        assert x.shape == (32, 224, 224, 3)
        # labels match the pixels (class k is grey level 20k + 5) and the ids' labels
        np.testing.assert_array_equal(np.round((x.mean(axis=(1, 2, 3)) - 5) / 20).astype(int), y)
        np.testing.assert_array_equal(np.asarray(source.labels)[ids], y)
        shares = np.bincount(y, minlength=CLASSES) / len(y)
        assert (shares > 0).sum() >= 6, shares  # several classes in every batch
        assert shares.max() <= 0.25, shares  # close to uniform (1/10 each); a sorted stream gives 1.0


def test_same_seed_same_batches_other_seed_other_order(folder):
    source = data.load_source(f"folder:{folder}", "all")
    images = TrainingImages(source, 224, 3, cache="none")
    first, again = epoch_arrays(images, 50, seed=4), epoch_arrays(images, 50, seed=4)
    other = epoch_arrays(images, 50, seed=5)
    for (xa, ya, ia), (xb, yb, ib) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(ia, ib)
    ids = np.concatenate([i for _, _, i in first])
    assert sorted(ids.tolist()) == list(range(CLASSES * PER_CLASS))  # each image once per epoch
    assert not np.array_equal(ids, np.concatenate([i for _, _, i in other]))


def test_cache_choices_give_identical_batches(folder, tmp_path):
    source = data.load_source(f"folder:{folder}", "all")
    reference = epoch_arrays(TrainingImages(source, 64, 3, cache="none"), 40, seed=1)
    cache_dir = tmp_path / "cache"
    for cache in ("memory", str(cache_dir), "auto"):
        images = TrainingImages(source, 64, 3, cache=cache)
        for seed in (1,):
            batches = epoch_arrays(images, 40, seed)
            assert len(batches) == len(reference)
            for (xa, ya, ia), (xb, yb, ib) in zip(reference, batches):
                np.testing.assert_array_equal(ia, ib)
                np.testing.assert_array_equal(ya, yb)
                np.testing.assert_array_equal(xa, xb)
    cached = [name for name in os.listdir(cache_dir) if name.endswith(".npy")]
    assert len([n for n in cached if not n.endswith((".valid.npy", ".labels.npy"))]) == 1
    # A later run reuses the disk cache: it no longer needs the image files at all.
    moved = tmp_path / "moved"
    os.rename(folder, moved)
    try:
        reused = epoch_arrays(TrainingImages(source, 64, 3, cache=str(cache_dir)), 40, seed=1)
    finally:
        os.rename(moved, folder)
    for (xa, _, ia), (xb, _, ib) in zip(reference, reused):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(xa, xb)
    # A cache a killed run left half-written (images but no valid flags) is rebuilt, not read.
    os.remove(cache_dir / next(n for n in os.listdir(cache_dir) if n.endswith(".valid.npy")))
    rebuilt = epoch_arrays(TrainingImages(source, 64, 3, cache=str(cache_dir)), 40, seed=1)
    for (xa, _, ia), (xb, _, ib) in zip(reference, rebuilt):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(xa, xb)
    assert any(n.endswith(".valid.npy") for n in os.listdir(cache_dir))


def test_auto_cache_follows_the_budget(folder):
    source = data.load_source(f"folder:{folder}", "all")
    side = data.load_size(64)
    need = CLASSES * PER_CLASS * side * side * 3
    assert TrainingImages(source, 64, 3, cache="auto", cache_budget=need).plan.kind == "memory"
    small = TrainingImages(source, 64, 3, cache="auto", cache_budget=need - 1)
    assert small.plan.kind == "none" and "exceed" in small.plan.reason
    # ImageNet-sized: 1.28M images at 256x256x3 never go to memory by default.
    plan = plan_cache("auto", 1_281_167, 256, 3)
    assert plan.kind == "none" and 1_281_167 * 256 * 256 * 3 > DEFAULT_CACHE_BUDGET
    # A source held in memory already (IDX) is not copied.
    arrays = data.in_memory_source(np.zeros((8, 28, 28, 1), np.uint8), np.arange(8), list("01234567"), "m", "train")
    assert TrainingImages(arrays, 28, 1, cache="auto").plan.kind == "none"
    for bad in ("", "ram", 3):
        with pytest.raises(ValueError, match="cache must be 'auto', 'memory', 'none' or a directory"):
            plan_cache(bad, 10, 8, 1)


def test_in_memory_source_is_permuted_by_id():
    images = np.arange(12, dtype=np.uint8)[:, None, None, None] * np.ones((1, 28, 28, 1), np.uint8)
    source = data.in_memory_source(images, np.arange(12) % 3, ["a", "b", "c"], "m", "train")
    got = epoch_arrays(TrainingImages(source, 28, 1, cache="none"), 12, seed=7)
    ((x, y, ids),) = got
    np.testing.assert_array_equal(ids, np.random.default_rng(7).permutation(12))
    np.testing.assert_array_equal(y, ids % 3)
    # the pixels of each crop are its image's value, or zero padding
    for image, i in zip(x, ids):
        assert set(np.unique(image).tolist()) <= {0.0, float(i)}


def corrupt_source(tmp_path, skip):
    root = write_folder(tmp_path / "folder", classes=2, per_class=6, size=(30, 30))
    bad = root / "class01" / "002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    files = tuple(str(p) for p in sorted(root.glob("*/*.png")))
    labels = np.asarray([int(os.path.basename(os.path.dirname(f))[-2:]) for f in files], np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((list(files), labels)).map(lambda f, y: (decode_file(f, 3), y))
    return data.Source(
        dataset=dataset,
        class_names=["class00", "class01"],
        num_examples=len(files),
        channels=3,
        name="corrupt",
        labels=labels,
        files=files,
        skip_corrupt=skip,
    ), str(bad)


def test_corrupt_file_mid_epoch_is_skipped_and_named(tmp_path):
    source, bad = corrupt_source(tmp_path, skip=True)
    for cache in ("none", "memory"):
        images = TrainingImages(source, 28, 3, cache=cache)
        batches = epoch_arrays(images, 4, seed=0)
        ids = np.concatenate([i for _, _, i in batches])
        assert len(ids) == 11 and source.files.index(bad) not in ids.tolist()
        assert images.skipped_files() == [bad]


def test_corrupt_file_mid_epoch_stops_with_its_name(tmp_path):
    source, bad = corrupt_source(tmp_path, skip=False)
    images = TrainingImages(source, 28, 3, cache="none")
    with pytest.raises(Exception) as caught:
        for _ in images.epoch(4, seed=0):
            pass
    error = images.corrupt_error(caught.value)
    assert isinstance(error, data.CorruptImageError) and bad in str(error) and "skip" in str(error)
    with pytest.raises(data.CorruptImageError, match="002.png"):
        TrainingImages(source, 28, 3, cache="memory").epoch(4, seed=0)


def test_train_names_a_corrupt_file(tmp_path):
    from zfkeras.training import TrainConfig, train

    source, bad = corrupt_source(tmp_path, skip=False)
    config = TrainConfig(
        arch="zfnet_small",
        input_shape=(28, 28, 3),
        num_classes=2,
        epochs=1,
        batch_size=4,
        val_split=0.0,
        checkpoint_epochs=(),
        kernel_init="glorot_uniform",
    )
    with pytest.raises(data.CorruptImageError, match="002.png"):
        train(config, source, run_dir=str(tmp_path / "run"), cache="none", histograms=False)
    skipping, _ = corrupt_source(tmp_path / "again", skip=True)
    seen = []

    import keras

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(logs["skipped"])

    train(config, skipping, run_dir=str(tmp_path / "run2"), cache="none", histograms=False, callbacks=[Record()])
    assert seen == [1]
    with open(tmp_path / "run2" / "skipped_files.json") as handle:
        assert json.load(handle) == [str(tmp_path / "again" / "folder" / "class01" / "002.png")]


def test_no_flip_gives_only_unmirrored_shifts():
    """flip=False: every training crop of a small image is a shift of the zero-padded image, never
    its mirror; flip=True mirrors some of them (digits need the first)."""
    rng = np.random.default_rng(4)
    images = rng.integers(1, 255, (24, 12, 12, 1)).astype(np.uint8)  # no zero pixel: the padding is told apart
    source = data.in_memory_source(images, np.arange(24) % 3, ["a", "b", "c"], "m", "train")
    training = TrainingImages(source, 12, 1, cache="none")
    pad = data.train_padding(12)

    def views(flip):
        crops, labels, ids = (np.concatenate(part) for part in zip(*training.epoch(8, seed=2, flip=flip).as_numpy_iterator()))
        mirrored = 0
        for crop, i in zip(crops, ids):
            padded = np.pad(images[i].astype("float32"), ((pad, pad), (pad, pad), (0, 0)))
            shifts = [padded[y : y + 12, x : x + 12] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
            plain = any(np.array_equal(crop, s) for s in shifts)
            flipped = any(np.array_equal(crop, s[:, ::-1]) for s in shifts)
            assert plain or flipped
            mirrored += flipped and not plain
        return mirrored

    assert views(flip=False) == 0
    assert views(flip=True) > 3
