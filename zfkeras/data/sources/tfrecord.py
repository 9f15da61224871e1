"""``tfrecord:DIR``: the sharded TFRecords of JPEG bytes ``zf prepare`` writes, streamed."""

from __future__ import annotations

import os

import tensorflow as tf

from zfkeras.data.decode import MAX_PIXELS, read_check
from zfkeras.data.source import Source
from zfkeras.io.paths import inside
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


def _shard_examples(file, size, expected, channels, max_pixels):
    """``(image, label, index, ok, reason, lost, file, keep)`` of each record of the shard ``file``
    (``size`` bytes, ``expected`` records, -1 when unknown), in order, ``keep`` True; then one more
    element, kept (``keep``) only when the shard did not read whole, with ``ok`` False, a
    ``reason`` saying so and ``lost`` counting the records lost (at least 1).

    A record's JPEG is decoded unless its header says it is above ``max_pixels`` pixels (then ``ok``
    is False, ``reason`` names the record and its size, ``lost`` 1). A truncated or corrupt record
    ends a TFRecord reader, losing all that follows it, and a record that does not parse or decode
    is dropped: both errors are dropped where they happen, and the records and bytes that did read
    (each record takes its length + 16 framing bytes) are compared with the file's at the end. No
    per-record dataset and no string built for a good record: the check costs little.
    """
    limit = f" pixels, above the limit of {max_pixels:,} (max_pixels; zf: --max-pixels)"

    def read(record):
        example = tf.io.parse_single_example(record, TFRECORD_FEATURES)
        jpeg = example["image/jpeg"]
        shape = tf.cast(tf.image.extract_jpeg_shape(jpeg), tf.int64)
        small = shape[0] * shape[1] <= max_pixels
        image = tf.cond(small, lambda: tf.io.decode_jpeg(jpeg, channels=channels), lambda: tf.zeros([0, 0, channels], tf.uint8))
        framed = tf.cast(tf.strings.length(record), tf.int64) + 16
        return image, example["image/label"], example["image/index"], small, framed, shape[1], shape[0], False

    records = tf.data.TFRecordDataset(file).ignore_errors().map(read, num_parallel_calls=_AUTOTUNE, deterministic=True).ignore_errors()
    zero = tf.constant(0, tf.int64)
    end = (tf.zeros([0, 0, channels], tf.uint8), zero, zero, tf.constant(True), zero, zero, zero, tf.constant(True))

    def step(state, element):
        image, label, index, small, framed, width, height, last = element
        count, length = state[0] + tf.cast(tf.logical_not(last), tf.int64), state[1] + framed
        whole = tf.equal(length, size) & ((expected < 0) | tf.equal(count, expected))
        missing = tf.maximum(expected - count, 1)

        def why():  # built only for what is refused
            text = tf.strings.as_string
            told = tf.where(expected >= 0, tf.strings.join([", ", text(missing), " of its ", text(expected), " records lost"]), "")
            shard = ["a truncated or corrupt TFRecord shard, or records in it that do not decode (", text(count), " records read, "]
            broken = tf.strings.join([*shard, text(length), " of its ", text(size), " bytes", told, ")"])
            return tf.where(last, broken, tf.strings.join(["record ", text(count), " is an image of ", text(width), "x", text(height), limit]))

        ok = small & tf.logical_not(last)
        reason = tf.cond(ok | (last & whole), lambda: tf.constant(""), why)
        lost = tf.where(last & (expected >= 0), missing, 1)
        return (count, length), (image, label, index, ok, reason, lost, file, tf.logical_not(last & whole))

    return records.concatenate(tf.data.Dataset.from_tensors(end)).scan((zero, zero), step)


def tfrecord_examples(files, channels: int, *, shuffle_seed=None, skip_corrupt=False, max_pixels=MAX_PIXELS, expected=None, on_corrupt=None):
    """``(uint8 [H, W, channels], int64 label, int64 index)`` from TFRecord ``files`` of
    :data:`TFRECORD_FEATURES`, read 4 files at a time with parallel interleave.

    ``shuffle_seed`` None reads the files in the given order (the examples' order is then fixed);
    an int reshuffles the file order each iteration from that seed (the same on every worker, so
    FILE auto-sharding splits each epoch's order into disjoint sets of whole files).

    Bad data: a JPEG above ``max_pixels`` pixels (read from its header only; the record is named),
    or a shard that does not read whole (truncated, a record failing its checksum: the records
    after it are lost; or records that do not parse or decode; each shard is checked against its
    size in bytes and, given ``expected``, its record count, one per file) stops the read with a TF
    error naming the shard and what is wrong
    (:func:`zfkeras.data.decode.corrupt_file_in`, :func:`~zfkeras.data.decode.corrupt_reason_in`);
    with ``skip_corrupt`` it is left out, and ``on_corrupt("SHARD: reason", records lost)`` is
    called if given.
    """
    files = [os.fspath(f) for f in files]
    sizes = [os.path.getsize(f) for f in files]
    counts = [-1] * len(files) if expected is None else [int(n) for n in expected]
    names = tf.data.Dataset.from_tensor_slices((tf.constant(files, tf.string), tf.constant(sizes, tf.int64), tf.constant(counts, tf.int64)))
    if shuffle_seed is not None:
        names = names.shuffle(len(files), seed=int(shuffle_seed), reshuffle_each_iteration=True)

    def shard(file, size, count):
        return _shard_examples(file, size, count, channels, max_pixels)

    examples = names.interleave(shard, cycle_length=max(1, min(4, len(files))), block_length=1, num_parallel_calls=_AUTOTUNE, deterministic=True)
    if not skip_corrupt:

        def kept(image, label, index, ok, reason, lost, file, keep):
            with tf.control_dependencies([read_check(file, ok | tf.logical_not(keep), reason)]):
                return tf.identity(keep)

    else:

        def note(file, why, lost):
            if on_corrupt is not None:
                on_corrupt(f"{file.numpy().decode()}: {why.numpy().decode()}", int(lost.numpy()))
            return False

        def kept(image, label, index, ok, reason, lost, file, keep):
            return tf.cond(ok | tf.logical_not(keep), lambda: keep, lambda: tf.py_function(note, [file, reason, lost], tf.bool))

    return examples.filter(kept).map(lambda image, label, index, ok, reason, lost, file, keep: (image, label, index))


def load(directory: str, split: str, name: str, *, skip_corrupt: bool, max_pixels: int = MAX_PIXELS) -> Source:
    """Source from the TFRecord shards ``zf prepare`` wrote to ``directory`` (see :func:`load_source`).

    No ``select``: the examples are streamed (``dataset`` in a fixed shard order, ``stream(seed)``
    with the shard order reshuffled each epoch); each shard is already a class-mixed random sample.
    Shard names read from ``dataset.json`` must lie inside ``directory`` (:func:`zfkeras.io.paths.inside`).
    Bad records and truncated shards stop a read with an error naming the shard, or with
    ``skip_corrupt`` are skipped and recorded (``Source.skipped``: records lost; ``skipped_files``:
    ``"SHARD: what is wrong"``), see :func:`tfrecord_examples`.
    """
    index = read_tfrecord_index(directory)
    splits = index.get("splits", {})
    if split not in splits:
        raise ValueError(f"{directory} has no split {split!r} (it has {sorted(splits)})")
    entry = splits[split]
    index_file = os.path.join(directory, "dataset.json")
    files = [inside(directory, name, f"splits.{split}.files[{i}]", index_file) for i, name in enumerate(entry["files"])]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{directory}: shard {missing[0]} listed in dataset.json is missing")
    channels = int(index["channels"])
    expected = entry.get("shard_examples")
    expected = expected if isinstance(expected, list) and len(expected) == len(files) else None
    holder = []  # the Source, once made: skipped records are recorded on it as they are met

    def skipped(what, lost):
        source = holder[0]
        if what not in source.skipped_files:
            source.skipped_files = source.skipped_files + (what,)
            source.skipped += lost

    def stream(seed=None):
        examples = tfrecord_examples(
            files, channels, shuffle_seed=seed, skip_corrupt=skip_corrupt, max_pixels=max_pixels, expected=expected, on_corrupt=skipped
        )
        return examples.map(lambda image, label, number: (image, label))

    source = Source(
        dataset=stream(),
        class_names=list(index["class_names"]),
        num_examples=int(entry["examples"]),
        channels=channels,
        name=name,
        split=split,
        stream=stream,
        skip_corrupt=skip_corrupt,
        max_pixels=max_pixels,
    )
    holder.append(source)
    return source
