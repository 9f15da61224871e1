"""``zf prepare``: a data source -> sharded TFRecords of resized JPEG bytes (``--data tfrecord:DIR``).

The way large ImageNet pipelines read their data: each image is decoded once here, resized so its
smaller side is ``--size`` (256 for 224 models, the aspect ratio kept), re-encoded as JPEG and
written with its label into one of ``--shards`` TFRecord files per split. Examples go into the shards
in a seeded random order (example ``k`` of that order into shard ``k mod N``), so every shard is a
class-mixed sample and a reader that interleaves shards needs only a small shuffle buffer.

Layout of ``--out DIR`` (built beside it, swapped in whole, ``dataset.json`` written last)::

    DIR/train-00000-of-00008.tfrecord ...   tf.train.Example: image/jpeg, image/label, image/index
    DIR/test-00000-of-00008.tfrecord ...    (when the source has a test split)
    DIR/dataset.json                        format, class names, channels, size, per split: shard
                                            files, examples (and per shard), class counts, skipped files
"""

import os

import click
import numpy as np

from pipelines import loading, options, output, runtime


def resize_smaller_side(image, size):
    """``uint8 [H, W, C]`` resized (bilinear, antialiased) so its smaller side is ``size``, the other
    ``round(side * size / smaller side)``; ``size`` 0 keeps the image as it is."""
    import tensorflow as tf

    if not size:
        return image
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    scale = tf.cast(size, tf.float64) / tf.cast(tf.minimum(h, w), tf.float64)
    new_h = tf.maximum(size, tf.cast(tf.round(tf.cast(h, tf.float64) * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(tf.cast(w, tf.float64) * scale), tf.int32))
    resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    return tf.saturate_cast(tf.round(resized), tf.uint8)


def _examples(source, seed, limit):
    """``(dataset of (image, label), order, shard_rng)``: the examples of ``source`` to write, in the
    order to write them: the first ``limit`` examples (all with None), as every ``--images N`` takes.
    Sources with ``select`` are read in a seeded permutation ``order`` of them (source indices;
    ``shard_rng`` None); streamed sources in their own order (``order`` None), each example then
    sent to a random shard drawn from ``shard_rng``."""
    rng = np.random.default_rng(seed)
    total = source.num_examples
    if source.select is not None and total is not None:
        order = rng.permutation(total if limit is None else min(limit, total))
        return source.select(order), order, None
    dataset = source.dataset if limit is None else source.dataset.take(limit)
    return dataset, None, rng


def write_split(source, directory, split, size, shards, seed, limit, quality, bar):
    """Write ``source`` (one split) as ``shards`` TFRecord files ``SPLIT-0000k-of-0000N.tfrecord`` in
    ``directory``; return its ``dataset.json`` entry."""
    import tensorflow as tf

    from zfkeras import data
    from zfkeras.data.sources.tfrecord import tfrecord_example

    dataset, order, shard_rng = _examples(source, seed, limit)
    channels = source.channels

    def encode(image, label):
        image = resize_smaller_side(data.to_channels(image, channels), size)
        return tf.io.encode_jpeg(image, quality=quality), label

    encoded = dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(8)
    count = len(order) if order is not None else source.num_examples if limit is None else limit
    shards = max(1, min(shards, count)) if count is not None else shards
    names = [f"{split}-{k:05d}-of-{shards:05d}.tfrecord" for k in range(shards)]
    writers = [tf.io.TFRecordWriter(os.path.join(directory, name)) for name in names]
    counts = np.zeros(len(source.class_names), np.int64)
    per_shard = np.zeros(shards, np.int64)
    files = source.files or ()
    position = 0  # next entry of order not yet written or skipped
    written = 0
    try:
        for jpeg, label in encoded.as_numpy_iterator():
            if order is not None:
                # A skipped corrupt file is recorded on the source before any later example is read.
                while files and files[order[position]] in source.skipped_files:
                    position += 1
                index, position = int(order[position]), position + 1
                shard = written % shards
            else:
                index, shard = written, int(shard_rng.integers(shards))
            writers[shard].write(tfrecord_example(jpeg, label, index))
            counts[label] += 1
            per_shard[shard] += 1
            written += 1
            bar.update(1)
    finally:
        for writer in writers:
            writer.close()
    return {
        "files": names,
        "examples": written,
        "shard_examples": per_shard.tolist(),
        "class_counts": counts.tolist(),
        "skipped_files": list(source.skipped_files),
        "holdout": source.holdout,
    }


@click.command()
@options.data_options(default=None, images="Only the first N images of each split (written in a seeded shuffled order; default: all).")
@options.out_option(results="dataset.json", help="Output directory (built beside it, then swapped in whole); read it with --data tfrecord:DIR.")
@click.option(
    "--size",
    default=256,
    show_default=True,
    type=click.IntRange(0),
    help="Resize each image so its smaller side is this (256 for 224 models); 0 keeps native sizes.",
)
@click.option("--shards", default=8, show_default=True, type=click.IntRange(1), help="TFRecord files per split.")
@click.option("--quality", default=95, show_default=True, type=click.IntRange(1, 100), help="JPEG quality of the stored images.")
@options.seed_option
def prepare(data_spec, data_dir, skip_corrupt, images, out, size, shards, quality, seed):
    """Write --data's train and test splits as sharded TFRecords of resized JPEGs in --out.

    --data is any data source (fashion_mnist, mnist_5k, idx:PATH, csv:PATH, folder:PATH, tfds:NAME).
    Examples are written in a seeded shuffled order across the shards, so every shard mixes classes.
    """
    if data_spec is None:
        raise click.UsageError("give the source to prepare with --data SOURCE, e.g. --data folder:PATH")
    sources = {"train": loading.open_source(data_spec, "train", "--data", data_dir=data_dir, skip_corrupt=skip_corrupt)}
    test = loading.open_source(data_spec, "test", "--data", data_dir=data_dir, skip_corrupt=skip_corrupt, optional=True)
    if test is not None:
        sources["test"] = test
    train = sources["train"]
    index = {
        "format": None,
        "source": train.name,
        "class_names": list(train.class_names),
        "channels": train.channels,
        "size": size,
        "quality": quality,
        "seed": seed,
        "splits": {},
    }
    from zfkeras.io.atomic import atomic_output

    with atomic_output(out, directory=True) as temp:
        for number, (split, source) in enumerate(sources.items()):
            total = source.num_examples if images is None else min(images, source.num_examples or images)
            with output.progressbar(length=total or 0, label=f"{split}: {total} images") as bar:
                try:
                    index["splits"][split] = write_split(source, temp, split, size, shards, [seed, number], images, quality, bar)
                except Exception as error:  # a corrupt image file met while reading: one line naming it
                    named = runtime.corrupt_data_error(error, "SOURCE")
                    if named is None:
                        raise
                    raise named from None
        from zfkeras.data.sources.tfrecord import TFRECORD_FORMAT

        index["format"] = TFRECORD_FORMAT
        with open(os.path.join(temp, "dataset.json"), "w") as handle:
            handle.write(output.json_text(index) + "\n")
    for split, entry in index["splits"].items():
        click.echo(f"{split}: {entry['examples']} images in {len(entry['files'])} shards")
    click.echo(f"wrote {out} (read it with --data tfrecord:{out})")
