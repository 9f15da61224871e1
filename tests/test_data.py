"""Tests of zfkeras.data against independent references (numpy slicing, hand-written files)."""

import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from zfkeras import data
from zfkeras.data import decode
from zfkeras.data.sources import folder, idx
from zfkeras.data.sources.idx import DEBIAN_FASHION_MNIST_DIR, FASHION_MNIST_CLASS_NAMES

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def write_idx(path, array, compress=False):
    """Write ``array`` (uint8) as an IDX file by hand: magic 0x0000 08 ndim, big-endian dims, data."""
    array = np.asarray(array, np.uint8)
    raw = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.tobytes()
    if compress:
        raw = gzip.compress(raw)
    with open(path, "wb") as f:
        f.write(raw)


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(np.asarray(array, np.uint8)))


def collect(dataset):
    """All ``(image, label)`` of a source dataset as lists of numpy arrays / ints."""
    images, labels = [], []
    for x, y in dataset.as_numpy_iterator():
        images.append(x)
        labels.append(int(y))
    return images, labels


def memory_source(images, labels=None, channels=None):
    images = np.asarray(images, np.uint8)
    labels = np.arange(len(images), dtype=np.int64) if labels is None else np.asarray(labels, np.int64)
    return data.Source(
        dataset=tf.data.Dataset.from_tensor_slices((images, labels)),
        class_names=[str(i) for i in range(len(images))],
        num_examples=len(images),
        channels=channels or images.shape[-1],
        name="memory",
    )


RNG = np.random.default_rng(0)

# ---------------------------------------------------------------------------------------------
# spec strings
# ---------------------------------------------------------------------------------------------


def test_unknown_prefix_lists_accepted_forms():
    for spec in ("cifar10", "http://x", "folder:", "imagenet:foo"):
        with pytest.raises(ValueError) as err:
            data.load_source(spec)
        assert spec in str(err.value)
    with pytest.raises(ValueError, match="tfds:NAME.*folder:PATH.*idx:PATH.*fashion_mnist"):
        data.resolve_source("cifar10")


def test_load_size():
    assert data.load_size(224) == 256
    assert data.load_size(227) == 259  # round(259.4)
    # small inputs are not zoomed: the model sees the native image
    assert data.load_size(28) == 28 and data.load_size(32) == 32 and data.load_size(64) == 64
    assert data.train_padding(28) == 2 and data.train_padding(32) == 2 and data.train_padding(224) == 0


# ---------------------------------------------------------------------------------------------
# 1. IDX
# ---------------------------------------------------------------------------------------------


def test_idx_plain_and_gz(tmp_path):
    root = tmp_path / "my-fashion-mnist"
    root.mkdir()
    train_x = RNG.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    train_y = np.array([0, 9, 3, 3, 1, 2, 8], np.uint8)
    test_x = RNG.integers(0, 256, (3, 5, 4), dtype=np.uint8)
    test_y = np.array([5, 6, 7], np.uint8)
    write_idx(root / "train-images-idx3-ubyte.gz", train_x, compress=True)
    write_idx(root / "train-labels-idx1-ubyte.gz", train_y, compress=True)
    write_idx(root / "t10k-images-idx3-ubyte", test_x)
    write_idx(root / "t10k-labels-idx1-ubyte", test_y)

    for split, xs, ys in (("train", train_x, train_y), ("test", test_x, test_y)):
        source = data.load_source(f"idx:{root}", split)
        assert (source.num_examples, source.channels, source.name) == (len(xs), 1, f"idx:{root}")
        assert source.class_names == FASHION_MNIST_CLASS_NAMES
        images, labels = collect(source.dataset)
        np.testing.assert_array_equal(np.stack(images), xs[..., None])
        assert labels == ys.tolist()
        assert source.dataset.element_spec[0].dtype == tf.uint8
        assert source.dataset.element_spec[1].dtype == tf.int64

    digits = tmp_path / "digits"
    digits.mkdir()
    for name in ("train", "t10k"):
        write_idx(digits / f"{name}-images-idx3-ubyte", train_x)
        write_idx(digits / f"{name}-labels-idx1-ubyte", train_y)
    assert data.load_source(f"idx:{digits}").class_names == [str(i) for i in range(10)]


def test_idx_classes_file_and_the_library_writer(tmp_path):
    """classes.txt names (and counts) the classes; idx.write_idx writes what the hand-written
    writer above writes, byte for byte once decompressed."""
    x = RNG.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    y = np.array([0, 2, 1, 1, 0], np.uint8)
    for name in ("train", "t10k"):
        idx.write_idx(tmp_path / f"{name}-images-idx3-ubyte.gz", x)
        idx.write_idx(tmp_path / f"{name}-labels-idx1-ubyte.gz", y)
    write_idx(tmp_path / "reference", x)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz") as handle:
        assert handle.read() == (tmp_path / "reference").read_bytes()
    assert data.load_source(f"idx:{tmp_path}").class_names == [str(i) for i in range(10)]
    (tmp_path / "classes.txt").write_text("Shirt\nSneaker\nBag\n")
    source = data.load_source(f"idx:{tmp_path}", "test")
    assert source.class_names == ["Shirt", "Sneaker", "Bag"]
    assert collect(source.dataset)[1] == y.tolist()
    (tmp_path / "classes.txt").write_text("Shirt\nSneaker\n")
    with pytest.raises(ValueError, match="classes.txt names 2 classes, the labels go up to 2"):
        data.load_source(f"idx:{tmp_path}")
    with pytest.raises(ValueError, match="uint8"):
        idx.write_idx(tmp_path / "x.gz", np.zeros(3, np.int32))


def test_idx_errors_name_the_file(tmp_path):
    x = np.zeros((2, 3, 3), np.uint8)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 2], np.uint8))
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + b"\0" * 40)
    with pytest.raises(ValueError, match="magic") as err:
        data.load_source(f"idx:{tmp_path}")
    assert str(bad) in str(err.value)

    write_idx(bad, x)
    bad.write_bytes(bad.read_bytes()[:-5])  # short file
    with pytest.raises(ValueError) as err:
        data.load_source(f"idx:{tmp_path}")
    assert str(bad) in str(err.value)

    write_idx(bad, np.zeros((3, 3, 3), np.uint8))  # 3 images, 2 labels
    with pytest.raises(ValueError, match="labels"):
        data.load_source(f"idx:{tmp_path}")

    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        data.load_source(f"idx:{tmp_path}", "test")


# ---------------------------------------------------------------------------------------------
# 2. image folders
# ---------------------------------------------------------------------------------------------


def test_folder_mixed_formats_and_channels(tmp_path):
    from PIL import Image  # independent encoder for BMP and GIF

    grey = RNG.integers(0, 256, (10, 12, 1), dtype=np.uint8)
    rgb = RNG.integers(0, 256, (20, 16, 3), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (9, 7, 4), dtype=np.uint8)
    bmp = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    flat = np.full((8, 8, 3), (200, 40, 90), np.uint8)  # constant colour: JPEG/GIF keep it
    write_png(tmp_path / "cat" / "a_grey.png", grey)
    write_png(tmp_path / "cat" / "b_rgb.png", rgb)
    write_png(tmp_path / "ant" / "rgba.png", rgba)
    Image.fromarray(bmp).save(tmp_path / "ant" / "pic.bmp")
    tf.io.write_file(str(tmp_path / "dog" / "flat.jpg"), tf.io.encode_jpeg(flat, quality=100))
    Image.fromarray(flat).save(tmp_path / "dog" / "flat.gif")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")

    source = data.load_source(f"folder:{tmp_path}", "all")  # every image (no held-out test split)
    assert source.class_names == ["ant", "cat", "dog"]
    assert (source.channels, source.num_examples, source.skipped) == (3, 6, 0)
    images, labels = collect(source.dataset)
    assert labels == [0, 0, 1, 1, 2, 2]  # ant/pic.bmp, ant/rgba.png, cat/..., dog/flat.gif, dog/flat.jpg
    np.testing.assert_array_equal(images[0], bmp)
    np.testing.assert_array_equal(images[1], rgba[..., :3])
    np.testing.assert_array_equal(images[2], np.repeat(grey, 3, axis=-1))
    np.testing.assert_array_equal(images[3], rgb)
    for image in images[4:]:
        assert image.shape == (8, 8, 3)
        assert np.abs(image.astype(int) - flat).max() <= 2


def test_folder_all_grey_and_train_test_layout(tmp_path):
    a = RNG.integers(0, 256, (6, 9, 1), dtype=np.uint8)
    b = RNG.integers(0, 256, (11, 4, 1), dtype=np.uint8)
    c = RNG.integers(0, 256, (5, 5, 1), dtype=np.uint8)
    write_png(tmp_path / "train" / "x" / "0.png", a)
    write_png(tmp_path / "train" / "y" / "sub" / "1.png", b)  # nested files belong to class y
    write_png(tmp_path / "test" / "y" / "2.png", c)
    train = data.load_source(f"folder:{tmp_path}", "train")
    test = data.load_source(f"folder:{tmp_path}", "test")
    assert train.class_names == test.class_names == ["x", "y"]
    assert (train.channels, test.channels) == (1, 1)
    images, labels = collect(train.dataset)
    assert labels == [0, 1]
    np.testing.assert_array_equal(images[0], a)
    np.testing.assert_array_equal(images[1], b)
    images, labels = collect(test.dataset)
    assert labels == [1]
    np.testing.assert_array_equal(images[0], c)


def test_folder_corrupt_file_is_found_when_read_and_named_or_skipped(tmp_path):
    good = RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    write_png(tmp_path / "a" / "good.png", good)
    write_png(tmp_path / "b" / "good2.png", good[..., :1])
    corrupt = tmp_path / "b" / "broken.png"
    corrupt.write_bytes(b"this is not a png file at all" * 3)
    truncated = tmp_path / "b" / "half.jpg"
    jpeg = tf.io.encode_jpeg(good).numpy()
    truncated.write_bytes(jpeg[: len(jpeg) // 2])

    source = data.load_source(f"folder:{tmp_path}", "all")  # opening decodes nothing, so it succeeds
    assert source.num_examples == 4 and source.files[1:] == (str(corrupt), str(tmp_path / "b" / "good2.png"), str(truncated))
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        collect(source.dataset)
    assert data.corrupt_file_in(err.value) == str(corrupt)
    with pytest.raises(data.CorruptImageError) as err, data.naming_corrupt_files():
        collect(source.select([3, 0]))  # the truncated JPEG (valid header, broken data)
    assert err.value.path == str(truncated) and str(truncated) in str(err.value) and "skip_corrupt" in str(err.value)
    images, labels = collect(source.select([2, 0]))  # readable files only: no error
    assert labels == [1, 0]
    assert data.find_corrupt(source.files) == [str(corrupt), str(truncated)]

    source = data.load_source(f"folder:{tmp_path}", "all", skip_corrupt=True)
    assert (source.skipped, source.skipped_files) == (0, ())  # nothing read yet
    images, labels = collect(source.dataset)
    assert labels == [0, 1]
    np.testing.assert_array_equal(images[0], good)
    assert (source.skipped, source.skipped_files) == (2, (str(corrupt), str(truncated)))
    collect(source.select([1, 1, 0]))  # read again: each file is recorded once
    assert source.skipped_files == (str(corrupt), str(truncated))


def test_folder_select_keeps_the_given_order(tmp_path):
    arrays = [RNG.integers(0, 256, (4 + i, 5, 3), dtype=np.uint8) for i in range(6)]
    for i, array in enumerate(arrays):
        write_png(tmp_path / ("ab"[i % 2]) / f"{i}.png", array)
    source = data.load_source(f"folder:{tmp_path}", "all")
    order = [5, 0, 3, 3, 1]
    images, labels = collect(source.select(order))
    assert labels == [int(source.labels[i]) for i in order]
    for index, image in zip(order, images):
        expected = int(os.path.splitext(os.path.basename(source.files[index]))[0])
        np.testing.assert_array_equal(image, arrays[expected])
    with pytest.raises(ValueError, match="0..5"):
        source.select([6])


def test_folder_open_reads_only_a_sample_of_headers(tmp_path, monkeypatch):
    for i in range(12):
        write_png(tmp_path / ("ab"[i % 2]) / f"{i:02d}.png", RNG.integers(0, 256, (4, 4, 1), dtype=np.uint8))
    write_png(tmp_path / "a" / "colour.png", RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    for path in tmp_path.glob("*/*.png"):  # keep the header chunks, cut the pixel data (IDAT) short
        raw = path.read_bytes()
        path.write_bytes(raw[: raw.index(b"IDAT") + 6])
    opened = []
    real = decode.header_channels
    monkeypatch.setattr(decode, "header_channels", lambda path: opened.append(path) or real(path))
    source = data.load_source(f"folder:{tmp_path}", "all")  # would fail if it decoded any file
    assert len(opened) == 13 and source.channels == 3  # all headers of a small folder: one is colour
    with pytest.raises(tf.errors.InvalidArgumentError):
        collect(source.select([0]))
    opened.clear()
    monkeypatch.setattr(folder, "HEADER_SAMPLE", 5)
    monkeypatch.setattr(decode.probe_files, "__defaults__", (5, decode.HEADER_SEED))
    source = data.load_source(f"folder:{tmp_path}", "all")
    assert len(opened) == 5 and source.num_examples == 13
    again = []
    monkeypatch.setattr(decode, "header_channels", lambda path: again.append(path) or real(path))
    data.load_source(f"folder:{tmp_path}", "all")
    assert again == opened  # a seeded sample: the same files each time


# ---------------------------------------------------------------------------------------------
# 3. TFDS (a tiny builder prepared locally: no network)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory):
    import tensorflow_datasets as tfds

    class ZfkerasTinyDataTest(tfds.core.GeneratorBasedBuilder):
        """6 train + 3 validation images 8x8x3 whose pixels all equal the example id."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {"image": tfds.features.Image(shape=(8, 8, 3)), "label": tfds.features.ClassLabel(names=["red", "green", "blue"])}
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(0, 6), "validation": self._generate_examples(100, 3)}

        def _generate_examples(self, start, n):
            for i in range(start, start + n):
                yield i, {"image": np.full((8, 8, 3), i, np.uint8), "label": i % 3}

    data_dir = tmp_path_factory.mktemp("tfds")
    ZfkerasTinyDataTest(data_dir=str(data_dir)).download_and_prepare()
    return data_dir


def test_tfds_builder_train_and_test_fallback(tiny_tfds_dir):
    train = data.load_source("tfds:zfkeras_tiny_data_test", data_dir=tiny_tfds_dir)
    assert (train.num_examples, train.channels) == (6, 3)
    assert train.class_names == ["red", "green", "blue"]
    images, labels = collect(train.dataset)
    ids = [int(x[0, 0, 0]) for x in images]
    assert sorted(ids) == list(range(6))
    for x, i, y in zip(images, ids, labels):
        assert x.shape == (8, 8, 3) and x.dtype == np.uint8 and (x == i).all() and y == i % 3

    test = data.load_source("tfds:zfkeras_tiny_data_test", "test", data_dir=tiny_tfds_dir)
    images, labels = collect(test.dataset)
    assert test.num_examples == 3
    assert sorted(int(x[0, 0, 0]) for x in images) == [100, 101, 102]


def test_tfds_errors_are_one_clear_line(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds

    with pytest.raises(ValueError, match="no_such_dataset_zf") as err:
        data.load_source("tfds:no_such_dataset_zf", data_dir=tmp_path)
    assert "\n" not in str(err.value)

    def offline(self, *args, **kwargs):
        raise ConnectionError("no network\nmore detail")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(RuntimeError, match="fashion_mnist") as err:
        data.load_source("tfds:fashion_mnist", data_dir=tmp_path)
    assert "data_dir" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# 4. crops, resize, channels
# ---------------------------------------------------------------------------------------------


def pattern(h, w, c=2):
    """Pixel (y, x, k) = 1000 * k + 100 * y + x: every pixel says where it came from."""
    y, x, k = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    return (1000 * k + 100 * y + x).astype(np.float32)


def test_ten_crop_matches_hand_slices():
    image = pattern(9, 12)
    s = 6
    views = data.ten_crop(image, s).numpy()
    flipped = image[:, ::-1]
    expected = []
    for src in (image, flipped):
        expected += [src[:6, :6], src[:6, 6:], src[3:, :6], src[3:, 6:], src[1:7, 3:9]]
    assert views.shape == (10, s, s, 2)
    np.testing.assert_array_equal(views, np.stack(expected))
    # Documented relations: flipped top-left is the mirror of the original top-right, etc.
    for flipped_view, original_view in ((5, 1), (6, 0), (7, 3), (8, 2), (9, 4)):  # W - S = 6 is even
        np.testing.assert_array_equal(views[flipped_view], views[original_view][:, ::-1])
    # A batch gives [N, 10, S, S, C].
    batch = data.ten_crop(np.stack([image, image + 1]), s).numpy()
    assert batch.shape == (2, 10, s, s, 2)
    np.testing.assert_array_equal(batch[1], views + 1)


def test_center_crop_offsets():
    np.testing.assert_array_equal(data.center_crop(pattern(32, 32), 28).numpy(), pattern(32, 32)[2:30, 2:30])
    image = pattern(256, 256, 1)
    np.testing.assert_array_equal(data.center_crop(image, 224).numpy(), image[16:240, 16:240])
    np.testing.assert_array_equal(data.ten_crop(image, 224).numpy()[4], image[16:240, 16:240])


def test_resize_and_center_crop():
    # Already the right size on the short side: no resampling, only the centre crop.
    image = pattern(32, 48, 1)
    out = data.resize_and_center_crop(image, 32).numpy()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image[:, 8:40])
    # 2x antialiased bilinear downscale: interior pixels are the [1, 3, 3, 1] / 8 triangle filter.
    ramp = RNG.uniform(0, 255, (1, 160)).astype(np.float32)
    wide = np.repeat(ramp, 64, axis=0)[..., None]  # 64 x 160 -> 32 x 80 -> centre 32 x 32
    out = data.resize_and_center_crop(wide, 32).numpy()
    assert out.shape == (32, 32, 1)
    r = ramp[0].astype(np.float64)
    for col in range(32):  # resized column j = 24 + col (centre crop of width 80) averages r[2j-1 .. 2j+2]
        j = 24 + col
        expected = (r[2 * j - 1] + 3 * r[2 * j] + 3 * r[2 * j + 1] + r[2 * j + 2]) / 8
        np.testing.assert_allclose(out[:, col, 0], expected, rtol=1e-5)
    # Upscaling a constant image keeps it constant; uint8 in -> float32 raw units out.
    const = np.full((20, 30, 3), 77, np.uint8)
    np.testing.assert_allclose(data.resize_and_center_crop(const, 32).numpy(), 77.0, atol=1e-3)


def test_to_channels():
    rgb = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    luma = np.round(rgb.astype(np.float64) @ [0.299, 0.587, 0.114])[..., None]
    np.testing.assert_array_equal(data.to_channels(rgb, 1).numpy(), luma.astype(np.uint8))
    grey = rgb[..., :1]
    np.testing.assert_array_equal(data.to_channels(grey, 3).numpy(), np.repeat(grey, 3, -1))
    rgba = RNG.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    np.testing.assert_array_equal(data.to_channels(rgba, 3).numpy(), rgba[..., :3])
    np.testing.assert_array_equal(data.to_channels(rgba[..., :2], 1).numpy(), rgba[..., :1])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.uint8)])
    def dynamic(x):  # channel count unknown until run time, as for decoded files
        return data.to_channels(x, 3)

    np.testing.assert_array_equal(dynamic(grey).numpy(), np.repeat(grey, 3, -1))
    np.testing.assert_array_equal(dynamic(rgba).numpy(), rgba[..., :3])


# ---------------------------------------------------------------------------------------------
# 5. pipelines yield raw pixels; the mean is computed, never subtracted
# ---------------------------------------------------------------------------------------------


def test_pipelines_yield_raw_pixels_and_mean_image():
    raw = RNG.integers(0, 256, (10, 28, 28, 1), dtype=np.uint8)  # native size for S = 28: no zoom
    source = memory_source(raw)

    center = np.concatenate([x for x, _ in data.eval_dataset(source, 28, 1, 4).as_numpy_iterator()])
    assert center.dtype == np.float32
    np.testing.assert_array_equal(center, raw.astype(np.float32))  # the native image itself

    # 10 crops are taken from the image padded by 2 zero rows/columns, the views training sees.
    padded = np.pad(raw, ((0, 0), (2, 2), (2, 2), (0, 0)))
    ten_x, ten_y = next(data.eval_dataset(source, 28, 3, 4, crops="ten").as_numpy_iterator())
    assert ten_x.shape == (4, 10, 28, 28, 3) and ten_y.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(ten_x[2, 0], np.repeat(padded[2, :28, :28], 3, -1))
    np.testing.assert_array_equal(ten_x[2, 3], np.repeat(padded[2, 4:, 4:], 3, -1))
    np.testing.assert_array_equal(ten_x[2, 4], np.repeat(raw[2], 3, -1))
    np.testing.assert_array_equal(ten_x[2, 9], np.repeat(raw[2][:, ::-1], 3, -1))

    # Each training image is exactly some 28x28 window of its zero-padded image, maybe mirrored.
    shifts = set()
    for x, y in data.train_dataset(source, 28, 1, 5, seed=3).as_numpy_iterator():
        assert x.dtype == np.float32 and x.shape == (5, 28, 28, 1)
        for image, label in zip(x, y):
            found = [
                (t, c)
                for t in range(5)
                for c in range(5)
                for w in (padded[label, t : t + 28, c : c + 28], padded[label, t : t + 28, c : c + 28][:, ::-1])
                if np.array_equal(image, w)
            ]
            assert found
            shifts.update(found)
    assert len(shifts) > 1

    # Large inputs follow the paper: 256 -> random 224 crops inside the image, no padding.
    big = RNG.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    for x, y in data.train_dataset(memory_source(big), 224, 3, 2, seed=1).as_numpy_iterator():
        for image, label in zip(x, y):
            assert any(
                np.array_equal(image, w)
                for t in range(33)
                for c in range(33)
                for w in (big[label, t : t + 224, c : c + 224], big[label, t : t + 224, c : c + 224][:, ::-1])
            )

    mean = data.compute_mean_image(source, 28, 1)
    assert mean.dtype == np.float32 and mean.shape == (28, 28, 1)
    np.testing.assert_allclose(mean, raw.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(data.compute_mean_image(source, 28, 1, limit=3), raw[:3].mean(axis=0), rtol=1e-6)


def test_mean_image_of_variable_size_images():
    # Constant images of different sizes and colours: resizing keeps them constant.
    images = [np.full((h, w, 3), v, np.uint8) for h, w, v in ((40, 64, 10), (16, 20, 50), (37, 37, 90))]
    ds = tf.data.Dataset.from_generator(
        lambda: ((x, 0) for x in images), output_signature=(tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int64))
    )
    mean = data.compute_mean_image(ds, 32, 3)
    assert mean.shape == (32, 32, 3)
    np.testing.assert_allclose(mean, 50.0, atol=1e-4)
    grey_mean = data.compute_mean_image(ds, 32, 1)  # luma of a grey RGB pixel is that pixel
    np.testing.assert_allclose(grey_mean, 50.0, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# 6. determinism
# ---------------------------------------------------------------------------------------------


def test_train_dataset_is_deterministic_given_seed():
    raw = RNG.integers(0, 256, (24, 20, 26, 1), dtype=np.uint8)
    source = memory_source(raw)

    def epochs(seed, n=2):
        ds = data.train_dataset(source, 14, 1, 8, seed=seed)
        return [[(x, y) for x, y in ds.as_numpy_iterator()] for _ in range(n)]

    first, again, other = epochs(1), epochs(1), epochs(2)
    for run in (first, again):
        assert [len(b[1]) for b in run[0]] == [8, 8, 8]
        assert sorted(np.concatenate([b[1] for b in run[0]]).tolist()) == list(range(24))
    for epoch_a, epoch_b in zip(first, again):
        for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)

    def flat(epoch):
        return np.concatenate([x.ravel() for x, _ in epoch])

    assert not np.array_equal(flat(first[0]), flat(other[0]))  # another seed, other batches
    assert not np.array_equal(flat(first[0]), flat(first[1]))  # each epoch draws new crops


# ---------------------------------------------------------------------------------------------
# 7. the default source: Debian's Fashion-MNIST IDX files
# ---------------------------------------------------------------------------------------------


def test_default_source_falls_back_to_tfds(monkeypatch, tmp_path):
    monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "missing"))
    assert data.resolve_source(data.DEFAULT_SOURCE) == "tfds:fashion_mnist"
    assert data.resolve_source("idx:/x") == "idx:/x"


@pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION_MNIST_DIR), reason="Debian package dataset-fashion-mnist not installed")
def test_default_source_is_debian_fashion_mnist():
    assert data.DEFAULT_SOURCE == "fashion_mnist"
    assert data.resolve_source("fashion_mnist") == f"idx:{DEBIAN_FASHION_MNIST_DIR}"
    for split, count in (("train", 60000), ("test", 10000)):
        source = data.load_source(data.DEFAULT_SOURCE, split)
        assert (source.num_examples, source.channels) == (count, 1)
        assert source.class_names[0] == "T-shirt/top" and len(source.class_names) == 10
        assert source.dataset.cardinality().numpy() == count
        x, y = next(source.dataset.batch(count).as_numpy_iterator())
        assert x.shape == (count, 28, 28, 1) and x.dtype == np.uint8
        assert sorted(set(y.tolist())) == list(range(10))
        assert np.bincount(y).tolist() == [count // 10] * 10  # Fashion-MNIST is balanced
