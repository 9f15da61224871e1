"""``tfrecord:DIR``: the sharded TFRecords of JPEG bytes ``zf prepare`` writes, streamed."""

from __future__ import annotations

import os

import tensorflow as tf

from zfkeras.data.decode import MAX_PIXELS, read_or_fail
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


def _shard_records(file, size, expected):
    """``(record, number, lost, reason)`` of each record of the shard ``file`` (``size`` bytes,
    ``expected`` records, -1 when unknown), numbered from 1 with ``lost`` 1 and ``reason`` "";
    then, when the shard did not read whole, one more element whose ``reason`` says so and whose
    ``lost`` counts the records lost (at least 1). A truncated or corrupt record ends a TFRecord
    reader, so all that follows it is lost: the reader's error is dropped, and the records and
    bytes read (each record takes its length + 16 framing bytes) are compared with the file's."""
    records = tf.data.TFRecordDataset(file).ignore_errors()
    tagged = records.map(lambda record: (record, False)).concatenate(tf.data.Dataset.from_tensors((tf.constant(""), True)))

    def step(state, element):
        count, length = state
        record, last = element
        framed = tf.cast(tf.strings.length(record), tf.int64) + 16
        grown = (count + tf.cast(tf.logical_not(last), tf.int64), length + tf.where(last, tf.constant(0, tf.int64), framed))
        return grown, (record, last, grown[0], grown[1])

    zero = tf.constant(0, tf.int64)
    scanned = tagged.scan((zero, zero), step)

    def broken(count, length):
        return tf.logical_or(tf.not_equal(length, size), tf.logical_and(expected >= 0, tf.not_equal(count, expected)))

    def shaped(record, last, count, length):
        number = tf.strings.as_string
        missing = tf.maximum(expected - count, 1)
        told = tf.where(expected >= 0, tf.strings.join([", ", number(missing), " of its ", number(expected), " records lost"]), "")
        reason = tf.strings.join(
            [
                "a truncated or corrupt TFRecord shard (",
                number(count),
                " records read, ",
                number(length),
                " of its ",
                number(size),
                " bytes",
                told,
                ")",
            ]
        )
        lost = tf.where(last, tf.where(expected >= 0, missing, 1), 1)
        return record, count, lost, tf.where(last, reason, "")

    return scanned.filter(lambda record, last, count, length: tf.logical_or(tf.logical_not(last), broken(count, length))).map(shaped)


def _decoded(channels, max_pixels):
    """``one(record, number, reason)`` -> a one-element dataset ``(image, label, index, ok,
    reason)``: the record parsed and its JPEG decoded, unless its header says it is above
    ``max_pixels`` pixels (then not decoded); a record that does not parse or decode (or the
    shard's broken-shard element, ``reason`` set) gives ``ok`` False and an empty image instead of
    an error (as :func:`zfkeras.data.decode.read_images` does)."""
    limit = f" pixels, above the limit of {max_pixels:,} (max_pixels; zf: --max-pixels)"

    def read(record, number):
        example = tf.io.parse_single_example(record, TFRECORD_FEATURES)
        jpeg = example["image/jpeg"]
        shape = tf.image.extract_jpeg_shape(jpeg)
        small = tf.cast(shape[0], tf.int64) * tf.cast(shape[1], tf.int64) <= max_pixels
        image = tf.cond(small, lambda: tf.io.decode_jpeg(jpeg, channels=channels), lambda: tf.zeros([0, 0, channels], tf.uint8))
        size = [tf.strings.as_string(shape[1]), "x", tf.strings.as_string(shape[0])]
        big = tf.strings.join(["record ", tf.strings.as_string(number), " is an image of ", *size, limit])
        return image, example["image/label"], example["image/index"], small, tf.where(small, "", big)

    def one(record, number, reason):
        decoded = tf.data.Dataset.from_tensors((record, number)).filter(lambda r, n: tf.equal(tf.strings.length(reason), 0)).map(read).ignore_errors()
        unread = tf.where(
            tf.equal(tf.strings.length(reason), 0), tf.strings.join(["record ", tf.strings.as_string(number), " does not parse or decode"]), reason
        )
        minus = tf.constant(-1, tf.int64)
        fallback = tf.data.Dataset.from_tensors((tf.zeros([0, 0, channels], tf.uint8), minus, minus, False, unread))
        return decoded.concatenate(fallback).take(1)

    return one


def tfrecord_examples(files, channels: int, *, shuffle_seed=None, skip_corrupt=False, max_pixels=MAX_PIXELS, expected=None, on_corrupt=None):
    """``(uint8 [H, W, channels], int64 label, int64 index)`` from TFRecord ``files`` of
    :data:`TFRECORD_FEATURES`, read 4 files at a time with parallel interleave.

    ``shuffle_seed`` None reads the files in the given order (the examples' order is then fixed);
    an int reshuffles the file order each iteration from that seed (the same on every worker, so
    FILE auto-sharding splits each epoch's order into disjoint sets of whole files).

    Bad data: a record that does not parse or decode, a JPEG above ``max_pixels`` pixels (read
    from its header only), or a truncated or corrupt shard (the records after the bad one are lost;
    each shard is checked against its size in bytes and, given ``expected``, its record count, one
    per file) stops the read with a TF error naming the shard and what is wrong
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
        return _shard_records(file, size, count).map(lambda record, number, lost, reason: (record, number, lost, reason, file))

    records = names.interleave(shard, cycle_length=max(1, min(4, len(files))), block_length=1, num_parallel_calls=_AUTOTUNE, deterministic=True)
    one = _decoded(channels, max_pixels)

    def example(record, number, lost, reason, file):
        return one(record, number, reason).map(lambda image, label, index, ok, why: (image, label, index, ok, why, file, lost))

    examples = records.interleave(example, cycle_length=8, block_length=1, num_parallel_calls=_AUTOTUNE, deterministic=True)
    if not skip_corrupt:
        return examples.map(lambda image, label, index, ok, why, file, lost: (read_or_fail(file, (image, ok, why)), label, index))

    def note(file, why, lost):
        if on_corrupt is not None:
            on_corrupt(f"{file.numpy().decode()}: {why.numpy().decode()}", int(lost.numpy()))
        return False

    kept = examples.filter(
        lambda image, label, index, ok, why, file, lost: tf.cond(
            ok, lambda: tf.constant(True), lambda: tf.py_function(note, [file, why, lost], tf.bool)
        )
    )
    return kept.map(lambda image, label, index, ok, why, file, lost: (image, label, index))


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
