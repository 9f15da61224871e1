"""``tfrecord:DIR``: the sharded TFRecords of JPEG bytes ``zf prepare`` writes, streamed."""

from __future__ import annotations

import os

import tensorflow as tf

from zfkeras.data.source import Source
from zfkeras.io.validation import first_line

_AUTOTUNE = tf.data.AUTOTUNE

TFRECORD_FORMAT = "zfkeras-tfrecord-1"


# One tf.train.Example per image: its JPEG bytes, class label and index in the source split.
TFRECORD_FEATURES = {
    "image/jpeg": tf.io.FixedLenFeature([], tf.string),
    "image/label": tf.io.FixedLenFeature([], tf.int64),
    "image/index": tf.io.FixedLenFeature([], tf.int64),
}


def tfrecord_example(jpeg: bytes, label: int, index: int) -> bytes:
    """One serialized ``tf.train.Example`` of :data:`TFRECORD_FEATURES` (what ``zf prepare`` writes)."""
    feature = {
        "image/jpeg": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        "image/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "image/index": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(index)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def read_tfrecord_index(directory: str) -> dict:
    """The ``dataset.json`` of a ``zf prepare`` output ``directory``; ValueError naming what is wrong."""
    import json

    path = os.path.join(directory, "dataset.json")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"TFRecord directory not found: {directory}")
    if not os.path.isfile(path):
        raise ValueError(f"{directory} is not a zf prepare output: it has no dataset.json")
    try:
        with open(path) as handle:
            index = json.load(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not readable JSON ({first_line(error)})") from None
    if not isinstance(index, dict) or index.get("format") != TFRECORD_FORMAT:
        raise ValueError(f"{path}: not a {TFRECORD_FORMAT} index (format {index.get('format') if isinstance(index, dict) else None!r})")
    return index


def tfrecord_examples(files, channels: int, *, shuffle_seed=None, skip_corrupt=False) -> tf.data.Dataset:
    """``(uint8 [H, W, channels], int64 label, int64 index)`` from TFRecord ``files`` of
    :data:`TFRECORD_FEATURES`, read 4 files at a time with parallel interleave.

    ``shuffle_seed`` None reads the files in the given order (the examples' order is then fixed);
    an int reshuffles the file order each iteration from that seed (the same on every worker, so
    FILE auto-sharding splits each epoch's order into disjoint sets of whole files).
    ``skip_corrupt`` drops records that do not parse or decode instead of raising.
    """
    names = tf.data.Dataset.from_tensor_slices(tf.constant(list(files), tf.string))
    if shuffle_seed is not None:
        names = names.shuffle(len(files), seed=int(shuffle_seed), reshuffle_each_iteration=True)
    records = names.interleave(
        tf.data.TFRecordDataset, cycle_length=min(4, len(files)), block_length=1, num_parallel_calls=_AUTOTUNE, deterministic=True
    )

    def decode(record):
        example = tf.io.parse_single_example(record, TFRECORD_FEATURES)
        image = tf.io.decode_jpeg(example["image/jpeg"], channels=channels)
        return image, example["image/label"], example["image/index"]

    examples = records.map(decode, num_parallel_calls=_AUTOTUNE, deterministic=True)
    return examples.ignore_errors() if skip_corrupt else examples


def load(directory: str, split: str, name: str, *, skip_corrupt: bool) -> Source:
    """Source from the TFRecord shards ``zf prepare`` wrote to ``directory`` (see :func:`load_source`).

    No ``select``: the examples are streamed (``dataset`` in a fixed shard order, ``stream(seed)``
    with the shard order reshuffled each epoch); each shard is already a class-mixed random sample.
    """
    index = read_tfrecord_index(directory)
    splits = index.get("splits", {})
    if split not in splits:
        raise ValueError(f"{directory} has no split {split!r} (it has {sorted(splits)})")
    entry = splits[split]
    files = [os.path.join(directory, f) for f in entry["files"]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{directory}: shard {missing[0]} listed in dataset.json is missing")
    channels = int(index["channels"])

    def stream(seed=None):
        examples = tfrecord_examples(files, channels, shuffle_seed=seed, skip_corrupt=skip_corrupt)
        return examples.map(lambda image, label, number: (image, label))

    return Source(
        dataset=stream(),
        class_names=list(index["class_names"]),
        num_examples=int(entry["examples"]),
        channels=channels,
        name=name,
        split=split,
        stream=stream,
        skip_corrupt=skip_corrupt,
    )
