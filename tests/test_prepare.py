"""``zf prepare`` and ``tfrecord:DIR`` sources: shards are class-mixed, complete and seeded; the
images are the source's, resized; two MultiWorkerMirroredStrategy workers read disjoint shards."""

import io
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from pipelines.cli import main
from zfkeras import data
from zfkeras.data.sources.tfrecord import TFRECORD_FORMAT, tfrecord_examples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 180
CLASSES = ("ant", "bee", "cat", "dog")


def zf(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A class-sorted folder with train/ and test/: 10 + 3 colour PNGs per class, 30x20 or 20x36,
    each a flat colour that names its class and file (so a decoded image can be traced back)."""
    root = tmp_path_factory.mktemp("prepare") / "photos"
    for split, count in (("train", 10), ("test", 3)):
        for label, name in enumerate(CLASSES):
            os.makedirs(root / split / name)
            for i in range(count):
                shape = (30, 20, 3) if i % 2 else (20, 36, 3)
                colour = (40 + 50 * label, 20 + 20 * i, 200 if split == "train" else 100)
                Image.fromarray(np.full(shape, colour, np.uint8)).save(root / split / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def prepared(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "records"
    result = zf("prepare", "--data", f"folder:{folder}", "--out", out, "--shards", "4", "--size", "12", "--seed", "3")
    assert result.exit_code == 0, result.output
    return out


def read_shard(path):
    """``(images, labels, indices)`` of one shard, decoded independently of zfkeras."""
    images, labels, indices = [], [], []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        example = tf.train.Example.FromString(record).features.feature
        images.append(np.asarray(Image.open(io.BytesIO(example["image/jpeg"].bytes_list.value[0]))))
        labels.append(example["image/label"].int64_list.value[0])
        indices.append(example["image/index"].int64_list.value[0])
    return images, labels, indices


def test_shards_are_class_mixed_complete_and_resized(folder, prepared):
    index = json.load(open(prepared / "dataset.json"))
    assert index["format"] == TFRECORD_FORMAT and index["class_names"] == list(CLASSES) and index["channels"] == 3
    train = data.load_source(f"folder:{folder}", "train")
    for split, per_class in (("train", 10), ("test", 3)):
        entry = index["splits"][split]
        assert entry["examples"] == 4 * per_class and entry["class_counts"] == [per_class] * 4
        assert len(entry["files"]) == 4
        seen = []
        for name in entry["files"]:
            images, labels, indices = read_shard(prepared / name)
            assert len(set(labels)) >= 2, (split, name, labels)  # no shard holds one class
            seen.extend(indices)
            source = train if split == "train" else data.load_source(f"folder:{folder}", "test")
            for image, label, number in zip(images, labels, indices):
                assert label == source.labels[number]
                original = np.asarray(Image.open(source.files[number]))
                h, w = original.shape[:2]
                small = min(h, w)
                assert image.shape == (round(h * 12 / small), round(w * 12 / small), 3)  # smaller side 12
                assert np.abs(image.astype(int) - original[0, 0].astype(int)).max() <= 3  # a flat colour survives JPEG
        assert sorted(seen) == list(range(4 * per_class))  # every example once
        assert seen != sorted(seen)  # written in a shuffled order, not class by class


def test_same_seed_same_shards_other_seed_other_order(folder, prepared, tmp_path):
    again = tmp_path / "again"
    assert zf("prepare", "--data", f"folder:{folder}", "--out", again, "--shards", "4", "--size", "12", "--seed", "3").exit_code == 0
    for name in json.load(open(prepared / "dataset.json"))["splits"]["train"]["files"]:
        assert (again / name).read_bytes() == (prepared / name).read_bytes()
    other = tmp_path / "other"
    assert zf("prepare", "--data", f"folder:{folder}", "--out", other, "--shards", "4", "--size", "12", "--seed", "4").exit_code == 0
    assert read_shard(other / "train-00000-of-00004.tfrecord")[2] != read_shard(prepared / "train-00000-of-00004.tfrecord")[2]


def test_images_takes_the_first_n_of_each_split(folder, tmp_path):
    # --images N means the first N images of the split on every command (the CLI convention).
    out = tmp_path / "first"
    assert zf("prepare", "--data", f"folder:{folder}", "--out", out, "--shards", "2", "--size", "12", "--images", "7").exit_code == 0
    for split in ("train", "test"):
        entry = json.load(open(out / "dataset.json"))["splits"][split]
        indices = [i for name in entry["files"] for i in read_shard(out / name)[2]]
        assert sorted(indices) == list(range(min(7, 4 * (10 if split == "train" else 3)))), (split, indices)


def test_tfrecord_source_streams_every_example(prepared):
    source = data.load_source(f"tfrecord:{prepared}", "train")
    assert (source.num_examples, source.channels, source.class_names, source.select) == (40, 3, list(CLASSES), None)
    labels = [int(y) for _, y in source.dataset.as_numpy_iterator()]
    assert sorted(labels) == sorted([0] * 10 + [1] * 10 + [2] * 10 + [3] * 10)
    assert [int(y) for _, y in source.dataset.as_numpy_iterator()] == labels  # dataset: a fixed order
    stream = source.stream(7)
    epochs = [[int(y) for _, y in stream.as_numpy_iterator()] for _ in range(3)]
    assert [sorted(e) for e in epochs] == [sorted(labels)] * 3
    files = json.load(open(prepared / "dataset.json"))["splits"]["train"]["files"]
    paths = [str(prepared / f) for f in files]
    fixed = [int(i) for _, _, i in tfrecord_examples(paths, 3).as_numpy_iterator()]
    seeded = [int(i) for _, _, i in tfrecord_examples(paths, 3, shuffle_seed=7).as_numpy_iterator()]
    reshuffled = tfrecord_examples(paths, 3, shuffle_seed=7)
    first, second = ([int(i) for _, _, i in reshuffled.as_numpy_iterator()] for _ in range(2))
    assert seeded != fixed and first == seeded  # the same seed gives the same first epoch
    assert second != first and sorted(second) == sorted(first)  # a new file order each epoch


def test_errors_name_the_bad_thing(folder, tmp_path):
    result = zf("prepare", "--data", f"tfrecord:{folder}", "--out", tmp_path / "again")
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].endswith(
        f"Invalid value for --data: {folder} is not a zf prepare output: it has no dataset.json"
    )
    with pytest.raises(ValueError, match="not a zf prepare output: it has no dataset.json"):
        data.load_source(f"tfrecord:{folder}")
    broken = tmp_path / "broken"
    for split in ("train", "test"):
        for name in CLASSES[:2]:
            os.makedirs(broken / split / name)
            for i in range(3):
                Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(broken / split / name / f"{i}.png")
    corrupt = broken / "train" / "bee" / "1a.png"  # sorted among the readable files
    corrupt.write_bytes(b"not a png" * 9)
    out = tmp_path / "out"
    result = zf("prepare", "--data", f"folder:{broken}", "--out", out, "--size", "0")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith(f"Invalid value for SOURCE: corrupt or unreadable image file {corrupt}; skip such files with --skip-corrupt")
    )
    assert sorted(os.listdir(tmp_path)) == ["broken"]  # nothing half-written
    result = zf("prepare", "--data", f"folder:{broken}", "--out", out, "--size", "0", "--skip-corrupt")
    assert result.exit_code == 0, result.output
    assert f"skipped 1 unreadable image(s) of the train split of folder:{broken}:\n  {corrupt}" in result.output
    entry = json.load(open(out / "dataset.json"))["splits"]["train"]
    assert entry["skipped_files"] == [str(corrupt)] and entry["examples"] == 6
    train = data.load_source(f"folder:{broken}", "train")
    for name in entry["files"]:  # the recorded index of each image is its file's, though one file was skipped
        for image, _label, number in zip(*read_shard(out / name)):
            assert train.files[number] != str(corrupt)
            assert image[0, 0, 0] == 30 * int(os.path.basename(train.files[number])[0])


WORKER = """
import json, sys
import numpy as np
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
from zfkeras.data.sources.tfrecord import read_tfrecord_index, tfrecord_examples
directory, out = sys.argv[1], sys.argv[2]
index = read_tfrecord_index(directory)
files = [f"{directory}/{name}" for name in index["splits"]["train"]["files"]]
dataset = tfrecord_examples(files, 3, shuffle_seed=11).map(lambda image, label, number: number).batch(2)
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
distributed = strategy.experimental_distribute_dataset(dataset.with_options(options))
epochs = []
for epoch in range(2):
    seen = []
    for batch in distributed:
        for part in strategy.experimental_local_results(batch):
            seen.extend(int(i) for i in part.numpy())
    epochs.append(seen)
json.dump(epochs, open(out, "w"))
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_workers_read_disjoint_files_and_together_all(prepared, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    processes = []
    try:
        for rank in range(2):
            config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}})
            env = dict(os.environ, TF_CONFIG=config, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
            processes.append(
                subprocess.Popen(
                    [sys.executable, str(script), str(prepared), str(tmp_path / f"{rank}.json")],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            )
        for process in processes:
            output, _ = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, output.decode()[-3000:]
    finally:
        for process in processes:  # never leave a worker waiting for its peer
            if process.poll() is None:
                process.kill()
                process.wait()
    first, second = (json.load(open(tmp_path / f"{rank}.json")) for rank in range(2))
    shard_of = {}
    files = json.load(open(prepared / "dataset.json"))["splits"]["train"]["files"]
    for number, name in enumerate(files):
        for i in read_shard(prepared / name)[2]:
            shard_of[i] = number
    for epoch in range(2):
        a, b = first[epoch], second[epoch]
        assert a and b and not set(a) & set(b)  # disjoint
        assert sorted(a + b) == list(range(40))  # together every example, once
        # whole files: each shard is read by one worker only, two shards each
        assert len({shard_of[i] for i in a}) == 2 and not {shard_of[i] for i in a} & {shard_of[i] for i in b}
    assert first[0] != first[1]  # the file order is reshuffled each epoch
