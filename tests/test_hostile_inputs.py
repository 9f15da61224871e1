"""Failure behaviour, round two (issue 22), part 1: inputs shared by others must not hurt us.

Through the ``zf`` command where the user meets each case: metadata entries that point out of
their directory (an export's ``zfkeras.json``, ``zf prepare``'s ``dataset.json``), a hostile image
(a 23,170 x 23,170 PNG of 1.5 MB) refused in bounded memory wherever images are read, EXIF
orientation applied as browsers do, and truncated or corrupt TFRecord shards named or skipped.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from cli_helpers import assert_fails, zf
from PIL import Image, ImageOps

from zfkeras.data import CorruptImageError, check_image, load_source, read_image
from zfkeras.data.headers import FORMATS, parse_header
from zfkeras.nn.models import build_model, zfnet_small_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300
GIB = 2**30


def zf_child(*args):
    """Run ``zf ARGS`` in a child of a fresh Python and return ``(exit code, stderr, stdout,
    peak RSS bytes of the zf process)``: the intermediate process waits for this one child only,
    so ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is that command's own peak (Linux: KiB)."""
    measure = (
        "import resource, subprocess, sys; "
        "done = subprocess.run([sys.executable, '-m', 'pipelines.cli', *sys.argv[1:]], capture_output=True, text=True); "
        "sys.stdout.write(done.stdout); sys.stderr.write(done.stderr); "
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)"
    )
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", measure, *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=ROOT)
    peak = int(done.stdout.strip().splitlines()[-1].split()[1]) * 1024
    return done.returncode, done.stderr, done.stdout, peak


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def black_png(path, side, block=1 << 24):
    """A valid ``side x side`` black RGB PNG, written without ever holding its pixels: its raw rows
    (a filter byte 0 and 3 * side zero bytes each) are all zeros, so the deflate stream is made
    of identical blocks (``Z_FULL_FLUSH`` resets the compressor between them), and the Adler-32 of
    ``n`` zeros is ``(n mod 65521) << 16 | 1``. 23,170 x 23,170 gives 1.5 MB."""
    total = side * (1 + 3 * side)
    block = min(block, total)
    compressor = zlib.compressobj(9)
    first = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeated = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(total - block, block)
    tail = compressor.compress(bytes(rest)) + compressor.flush(zlib.Z_FINISH)
    stream = first + repeated * whole + tail[:-4] + struct.pack(">I", ((total % 65521) << 16) | 1)
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", stream) + png_chunk(b"IEND", b""))
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny untrained model, a tiny trained export (2 epochs, no validation), the hostile PNG, and
    a folder of small grey images holding it."""
    root = tmp_path_factory.mktemp("hostile")
    spec = zfnet_small_spec().with_units(conv1=4, conv2=4, conv3=4, conv4=4, conv5=4, fc6=16, fc7=16)
    build_model(spec, seed=1).save(root / "model.keras")
    from train_helpers import write_small_idx

    write_small_idx(str(root / "idx"), n_train=24, n_test=8)
    tiny = ["--units", "conv1=4,conv2=4,conv3=4,conv4=4,conv5=4,fc6=16,fc7=16", "--batch-size", "8", "--log-projections", "0", "--no-progress"]
    result = zf(
        "train", *tiny, "--data", f"idx:{root / 'idx'}", "--epochs", "1", "--val-split", "0", "--out", root / "run", "--export", root / "export"
    )
    assert result.exit_code == 0, result.output
    big = black_png(root / "big.png", 23170)
    folder = root / "folder"
    for label in ("a", "b"):
        os.makedirs(folder / label)
        for i in range(3):
            Image.fromarray(np.full((28, 28), 60 * i + 40 * (label == "b"), np.uint8)).save(folder / label / f"{i}.png")
    shutil.copy(big, folder / "a" / "big.png")
    return {
        "root": root,
        "model": str(root / "model.keras"),
        "idx": f"idx:{root / 'idx'}",
        "export": str(root / "export"),
        "big": big,
        "folder": str(folder),
    }


# ---- every path a metadata file names stays inside its directory ---------------------------------


@pytest.fixture
def export_copy(setup, tmp_path):
    """A copy of the export, a file outside it, and a way to edit its zfkeras.json."""
    copy = tmp_path / "shared" / "export"
    shutil.copytree(setup["export"], copy)
    outside = tmp_path / "outside.npy"
    np.save(outside, np.full((28, 28, 1), 7.0, np.float32))

    def edit(**entries):
        meta = json.load(open(copy / "zfkeras.json"))
        meta.update(entries)
        (copy / "zfkeras.json").write_text(json.dumps(meta))

    return copy, outside, edit


def test_the_unchanged_copy_is_read(setup, export_copy):
    copy, _, _ = export_copy
    result = zf("evaluate", copy, "--data", setup["idx"], "--crops", "single", "--out", copy.parent / "out")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", ["occlusion", "visualize", "evaluate"])
def test_an_entry_out_of_the_export_is_refused_before_it_is_read(setup, export_copy, monkeypatch, command):
    copy, outside, edit = export_copy
    edit(mean_image="../../outside.npy")
    opened = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda file, *a, **k: opened.append(os.path.realpath(file)) or real_load(file, *a, **k))
    args = {
        "occlusion": ["occlusion", copy, "chelsea"],
        "visualize": ["visualize", copy, "--data", setup["idx"]],
        "evaluate": ["evaluate", copy, "--data", setup["idx"]],
    }[command]
    assert_fails(zf(*args, "--out", copy.parent / "out"), 2, "MODEL", "zfkeras.json: mean_image '../../outside.npy' points outside")
    assert str(outside) not in opened


@pytest.mark.parametrize(
    "entry, value",
    [
        ("keras_model", "../x/model.keras"),
        ("keras_model", "/etc/passwd"),
        ("history", "../../history.json"),
        ("checkpoints", ["checkpoints/../../a.keras"]),
    ],
)
def test_every_file_entry_is_checked(setup, export_copy, entry, value):
    copy, _, edit = export_copy
    edit(**{entry: value})
    result = zf("evaluate", copy, "--data", setup["idx"], "--out", copy.parent / "out")
    assert_fails(result, 2, "MODEL", entry, "points outside")


def test_a_link_out_of_the_export_is_refused(setup, export_copy):
    copy, outside, _ = export_copy
    os.remove(copy / "mean.npy")
    os.symlink(outside, copy / "mean.npy")
    assert_fails(zf("occlusion", copy, "chelsea", "--out", copy.parent / "out"), 2, "mean_image 'mean.npy' points outside", str(outside))


def test_a_shard_out_of_the_prepared_directory_is_refused(setup, tmp_path):
    out = tmp_path / "records"
    result = zf("prepare", "--data", setup["idx"], "--out", out, "--shards", "2", "--size", "0")
    assert result.exit_code == 0, result.output
    os.makedirs(tmp_path / "elsewhere")
    index = json.load(open(out / "dataset.json"))
    moved = index["splits"]["test"]["files"][1]
    shutil.move(out / moved, tmp_path / "elsewhere" / moved)
    index["splits"]["test"]["files"][1] = f"../elsewhere/{moved}"
    (out / "dataset.json").write_text(json.dumps(index))
    result = zf("evaluate", setup["model"], "--data", f"tfrecord:{out}", "--out", tmp_path / "e")
    assert_fails(result, 2, "--data", "dataset.json: splits.test.files[1]", "points outside")


# ---- a hostile image: refused from its header, in bounded memory, wherever images are read ------


def test_the_hostile_png_is_a_real_image(tmp_path):
    # The same construction at a side PIL decodes quickly gives a valid black image; at 23,170 it
    # is 1.5 MB with a header saying 23170 x 23170 (537 megapixels, 1.6 GB of RGB bytes).
    small = black_png(tmp_path / "small.png", 1500, block=1 << 20)
    with Image.open(small) as image:
        pixels = np.asarray(image)
    assert pixels.shape == (1500, 1500, 3) and not pixels.any()
    big = black_png(tmp_path / "big.png", 23170)
    assert os.path.getsize(big) < 1.6e6
    assert parse_header(open(big, "rb").read())[:3] == (23170, 23170, 3)


def test_hostile_image_argument_is_refused_in_bounded_memory(setup):
    code, stderr, _, peak = zf_child("occlusion", setup["model"], setup["big"], "--out", setup["root"] / "o")
    assert code == 2 and "Traceback" not in stderr, stderr
    line = stderr.strip().splitlines()[-1]
    assert "IMAGE" in line and "23170x23170 pixels" in line and "--max-pixels" in line and "100,000,000" in line, line
    assert peak < 1.5 * GIB, peak / GIB


def test_hostile_image_in_a_folder_is_refused_in_bounded_memory(setup):
    data = ["--data", f"folder:{setup['folder']}"]
    for command in (["evaluate", setup["model"], *data, "--split", "all"], ["prepare", *data]):
        code, stderr, _, peak = zf_child(*command, "--out", setup["root"] / "f")
        assert code == 2 and "Traceback" not in stderr, stderr
        line = stderr.strip().splitlines()[-1]
        assert os.path.join(setup["folder"], "a", "big.png") in line and "--max-pixels" in line, line
        assert peak < 1.5 * GIB, (command, peak / GIB)


def test_hostile_image_is_skipped_and_reported_with_skip_corrupt(setup, tmp_path):
    result = zf("evaluate", setup["model"], "--data", f"folder:{setup['folder']}", "--split", "all", "--skip-corrupt", "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image(s)" in result.stderr and "big.png" in result.stderr
    assert json.load(open(tmp_path / "e" / "results.json"))["num_images"] == 6


def test_max_pixels_is_the_limit_everywhere(setup, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((300, 451, 3), np.uint8)).save(photo)  # 135,300 pixels
    assert_fails(zf("occlusion", setup["model"], photo, "--max-pixels", "100000", "--out", tmp_path / "o"), 2, "IMAGE", "451x300 pixels", "100,000")
    assert zf("occlusion", setup["model"], photo, "--max-pixels", "200000", "--stride", "7", "--out", tmp_path / "o").exit_code == 0
    result = zf("evaluate", setup["model"], "--data", f"folder:{setup['folder']}", "--split", "all", "--max-pixels", "700", "--out", tmp_path / "e")
    assert_fails(result, 2, "--data", "28x28 pixels", "700")  # 784 pixels: every file of the folder is above it


def test_uploads_are_checked_from_their_bytes(setup):
    with pytest.raises(CorruptImageError, match="23170x23170 pixels .* above the limit of 100,000,000"):
        check_image(open(setup["big"], "rb").read())
    small = open(os.path.join(setup["folder"], "b", "1.png"), "rb").read()
    header = check_image(small)
    assert (header.width, header.height, header.channels, header.format) == (28, 28, 1, "PNG")
    np.testing.assert_array_equal(read_image(small), np.full((28, 28, 1), 100, np.uint8))
    with pytest.raises(ValueError, match="not a readable image"):
        check_image(b"<html>not an image</html>")


# ---- EXIF orientation: as browsers show a photo ------------------------------------------------


def sideways(path, orientation, fmt="JPEG", size=(20, 40)):
    """A ``size`` (h, w) photo, dark left half and bright right half with a red band on top (a
    quarter of its height), saved with EXIF ``orientation``; returns the array as stored."""
    h, w = size
    array = np.zeros((h, w, 3), np.uint8)
    array[:, w // 2 :] = 220
    array[: max(1, h // 4)] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return array


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_header_parser_against_pil(tmp_path, fmt):
    # Size, channels and orientation from our parser against PIL's reading of the same files, and
    # the turned pixels against PIL's exif_transpose of them (lossless PNG: exact).
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.{fmt.lower()}"
        sideways(path, orientation, fmt, size=(5, 7))
        width, height, channels, found, kind = parse_header(open(path, "rb").read())
        with Image.open(path) as image:
            assert (width, height, found, FORMATS[kind]) == (*image.size, image.getexif().get(0x0112), fmt)
            reference = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        assert channels == 3
        if fmt == "PNG":
            np.testing.assert_array_equal(read_image(path), reference)
    for mode, name in (("L", "g.gif"), ("RGB", "c.bmp"), ("L", "g.bmp"), ("RGBA", "a.png"), ("LA", "la.png"), ("L", "g.jpg")):
        Image.new(mode, (9, 4)).save(tmp_path / name)
        width, height, channels, orientation, kind = parse_header(open(tmp_path / name, "rb").read())
        decoded = tf.io.decode_image(tf.io.read_file(str(tmp_path / name)), expand_animations=False)
        assert (width, height, orientation) == (9, 4, 1) and channels == decoded.shape[-1], (name, channels, decoded.shape)


def test_exif_orientation_of_an_image_argument(tmp_path):
    stored = sideways(tmp_path / "phone.jpg", 6)
    from pipelines.loading import read_photo

    seen = read_photo(str(tmp_path / "phone.jpg"))
    as_stored = tf.io.decode_jpeg(tf.io.read_file(str(tmp_path / "phone.jpg"))).numpy()
    assert seen.shape == (40, 20, 3)  # orientation 6: stored lying down, turned 90 degrees clockwise
    np.testing.assert_array_equal(seen, np.rot90(as_stored, k=-1))
    red = seen[..., 0].astype(int) - seen[..., 1]
    assert red[:, -4:].mean() > 150 and red[:, :-6].mean() < 30  # the red band on top is now on the right
    assert seen[:20, :-6].mean() < 60 < 180 < seen[20:, :-6].mean()  # the bright right half is now below
    assert np.abs(as_stored.astype(int) - stored).mean() < 8  # the JPEG holds what was saved


def test_zf_sees_the_photo_standing_up(setup, tmp_path):
    # zf occlusion on the sideways JPEG (orientation 6) gives exactly what it gives on the same
    # pixels turned upright and saved without EXIF (a lossless PNG of the turned decode).
    sideways(tmp_path / "phone.jpg", 6)
    upright = np.rot90(tf.io.decode_jpeg(tf.io.read_file(str(tmp_path / "phone.jpg"))).numpy(), k=-1)
    Image.fromarray(np.ascontiguousarray(upright)).save(tmp_path / "upright.png")
    result = zf("occlusion", setup["model"], tmp_path / "phone.jpg", tmp_path / "upright.png", "--stride", "7", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    phone, standing = np.load(tmp_path / "o" / "phone.npz"), np.load(tmp_path / "o" / "upright.npz")
    assert sorted(phone) == sorted(standing)
    for key in phone:
        np.testing.assert_array_equal(phone[key], standing[key])
    sideways_pixels = tf.io.decode_jpeg(tf.io.read_file(str(tmp_path / "phone.jpg"))).numpy()
    Image.fromarray(sideways_pixels).save(tmp_path / "lying.png")  # the photo as stored: the model sees another image
    assert zf("occlusion", setup["model"], tmp_path / "lying.png", "--stride", "7", "--out", tmp_path / "o3").exit_code == 0
    lying = np.load(tmp_path / "o3" / "lying.npz")
    assert not np.array_equal(lying["feature_activity"], standing["feature_activity"]) and not np.array_equal(
        lying["projection"], standing["projection"]
    )


def test_exif_orientation_of_a_folder_through_zf_prepare(tmp_path):
    for label in ("a", "b"):
        os.makedirs(tmp_path / "photos" / label)
        sideways(tmp_path / "photos" / label / "phone.jpg", 6)
        sideways(tmp_path / "photos" / label / "plain.jpg", 1)
    source = load_source(f"folder:{tmp_path / 'photos'}", "all")
    read = [image for image, _ in source.dataset.as_numpy_iterator()]
    shapes = sorted(image.shape for image in read)
    assert shapes == [(20, 40, 3), (20, 40, 3), (40, 20, 3), (40, 20, 3)]
    # Turned the right way, not only to the right shape: orientation 6 is 90 degrees clockwise
    # (a reader turning it counter-clockwise, as orientation 8, gives the same shape and fails here).
    upright = np.rot90(tf.io.decode_jpeg(tf.io.read_file(str(tmp_path / "photos" / "a" / "phone.jpg"))).numpy(), k=-1)
    standing = [image for image in read if image.shape == (40, 20, 3)]
    assert all(np.array_equal(image, upright) for image in standing) and not np.array_equal(upright, upright[::-1, ::-1])
    out = tmp_path / "records"
    result = zf("prepare", "--data", f"folder:{tmp_path / 'photos'}", "--out", out, "--size", "0", "--shards", "1")
    assert result.exit_code == 0, result.output
    stored = []
    for split in ("train", "test"):
        for name in json.load(open(out / "dataset.json"))["splits"][split]["files"]:
            for record in tf.data.TFRecordDataset(str(out / name)).as_numpy_iterator():
                jpeg = tf.train.Example.FromString(record).features.feature["image/jpeg"].bytes_list.value[0]
                stored.append(tf.io.decode_jpeg(jpeg).numpy())
    assert sorted(image.shape for image in stored) == shapes
    for image in (image for image in stored if image.shape == (40, 20, 3)):  # re-encoded JPEGs: near the upright photo, far from it turned over
        assert np.abs(image.astype(int) - upright).mean() < 8 < 60 < np.abs(image.astype(int) - upright[::-1, ::-1]).mean()


# ---- truncated and corrupt TFRecord shards -----------------------------------------------------


@pytest.fixture
def records(setup, tmp_path):
    out = tmp_path / "records"
    result = zf("prepare", "--data", setup["idx"], "--out", out, "--shards", "2", "--size", "0")
    assert result.exit_code == 0, result.output
    index = json.load(open(out / "dataset.json"))
    assert index["splits"]["test"]["shard_examples"] == [4, 4]
    return out, [out / name for name in index["splits"]["test"]["files"]]


def test_a_truncated_shard_is_named_or_skipped_and_counted(setup, records, tmp_path):
    out, shards = records
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[: len(data) - 30])  # killed while writing: its last record cut short
    result = zf("evaluate", setup["model"], "--data", f"tfrecord:{out}", "--out", tmp_path / "e")
    assert_fails(result, 2, "--data", str(shards[0]), "a truncated or corrupt TFRecord shard", "1 of its 4 records lost", "--skip-corrupt")
    result = zf("evaluate", setup["model"], "--data", f"tfrecord:{out}", "--skip-corrupt", "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert f"skipped 1 unreadable image(s) of the test split of tfrecord:{out}" in result.stderr and str(shards[0]) in result.stderr
    assert json.load(open(tmp_path / "e" / "results.json"))["num_images"] == 7


def test_a_corrupt_record_loses_the_rest_of_its_shard_and_says_so(setup, records, tmp_path):
    out, shards = records
    data = bytearray(shards[1].read_bytes())
    (first,) = struct.unpack("<Q", data[:8])  # a record: length (8 bytes), its CRC (4), data, the data's CRC (4)
    data[16 + first + 12 + 20] ^= 0xFF  # a flipped byte in the second record's data: the reader stops there
    shards[1].write_bytes(bytes(data))
    result = zf("evaluate", setup["model"], "--data", f"tfrecord:{out}", "--skip-corrupt", "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert "1 records read" in result.stderr and "3 of its 4 records lost" in result.stderr
    assert "skipped 3 unreadable image(s)" in result.stderr
    assert json.load(open(tmp_path / "e" / "results.json"))["num_images"] == 5


def test_a_record_above_the_pixel_limit_is_named(setup, records, tmp_path):
    out, shards = records
    result = zf("evaluate", setup["model"], "--data", f"tfrecord:{out}", "--max-pixels", "700", "--out", tmp_path / "e")
    assert_fails(result, 2, "--data", str(shards[0]), "record 1 is an image of 28x28 pixels, above the limit of 700")
    result = zf("evaluate", setup["model"], "--data", f"tfrecord:{out}", "--max-pixels", "784", "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
