"""``tfds:NAME``: any TensorFlow Datasets builder, with a fast, clean failure when offline."""

from __future__ import annotations

import os
import shutil

import tensorflow as tf

from zfkeras.data.source import Source
from zfkeras.data.transforms import to_channels
from zfkeras.io.validation import first_line

_AUTOTUNE = tf.data.AUTOTUNE


def _tfds_split(splits, name: str, split: str) -> str:
    """Map our split name onto the builder's splits (``test`` falls back to ``validation``)."""
    base = split.split("[")[0]
    if base in splits:
        return split
    if base == "test" and "validation" in splits:
        return "validation" + split[len(base) :]
    raise ValueError(f"TFDS dataset {name!r} has no split {split!r} (it has {sorted(splits)})")


_DOWNLOAD_HOST = "storage.googleapis.com"  # TFDS fetches prepared copies and most source files from GCS


def online(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the TFDS download host opens within ``timeout`` seconds (assumed
    when a proxy is configured: downloads then go through it, not straight to the host)."""
    import socket

    if any(os.environ.get(name) for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")):
        return True
    try:
        socket.create_connection((_DOWNLOAD_HOST, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _tfds_entries(root: str, builder_dir: str) -> set:
    """Paths a TFDS download/prepare attempt may create: ``root`` itself and its entries, the entries
    of ``root/downloads`` and ``root/downloads/extracted``, and the folders down to ``builder_dir``."""
    found = {root} if os.path.lexists(root) else set()
    for directory in (root, os.path.join(root, "downloads"), os.path.join(root, "downloads", "extracted")):
        if os.path.isdir(directory):
            found.update(os.path.join(directory, name) for name in os.listdir(directory))
    path = builder_dir
    while path.startswith(root) and path != root:
        if os.path.lexists(path):
            found.add(path)
        for name in os.listdir(path) if os.path.isdir(path) else ():
            found.add(os.path.join(path, name))
        path = os.path.dirname(path)
    return found


def load(dataset_name: str, split: str, name: str, *, data_dir, manual_dir) -> Source:
    """Source from a TensorFlow Datasets builder (see :func:`load_source`)."""
    import tensorflow_datasets as tfds

    data_dir = os.fspath(data_dir) if data_dir is not None else None
    try:
        builder = tfds.builder(dataset_name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends
        raise ValueError(f"unknown TFDS dataset {dataset_name!r} ({first_line(e)}); check the name against tfds.list_builders()") from None
    if not builder.is_prepared():
        where = data_dir or "the default TFDS data dir (~/tensorflow_datasets)"
        if manual_dir is None and not online():
            # TFDS would retry each download for minutes and leave empty *.tmp.* folders behind.
            raise RuntimeError(
                f"TFDS dataset {dataset_name!r} is not prepared under {where}, and it cannot be downloaded "
                f"(no network: {_DOWNLOAD_HOST} is unreachable); prepare it on a machine with network access "
                f"(tfds build {dataset_name} --data_dir DIR, or tfds.builder({dataset_name!r}, data_dir=DIR)"
                ".download_and_prepare()) and pass that DIR as data_dir (--data-dir)"
            )
        config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir) if manual_dir is not None else None)
        root = getattr(builder, "_data_dir_root", None) or os.path.dirname(os.path.dirname(builder.data_dir))
        before = _tfds_entries(root, builder.data_dir)
        try:
            builder.download_and_prepare(download_config=config)
        except Exception as e:
            for path in sorted(_tfds_entries(root, builder.data_dir) - before, reverse=True):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)  # the failed attempt's *.tmp.* and incomplete folders
                elif os.path.lexists(path):
                    os.remove(path)
            raise RuntimeError(
                f"TFDS could not download/prepare {dataset_name!r} into {where} ({first_line(e)}); "
                "with no network, pass data_dir (--data-dir) holding a prepared copy, "
                "or manual_dir (--manual-dir) with the manually downloaded files"
            ) from None
    info = builder.info
    tfds_split = _tfds_split(info.splits, dataset_name, split)
    keys = info.supervised_keys
    if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)):
        raise ValueError(f"TFDS dataset {dataset_name!r} has no (image, label) supervised keys")
    image_feature, label_feature = info.features[keys[0]], info.features[keys[1]]
    shape = tuple(getattr(image_feature, "shape", ()) or ())
    if len(shape) != 3:
        raise ValueError(f"TFDS dataset {dataset_name!r}: {keys[0]!r} is not an [H, W, C] image")
    channels = 1 if shape[-1] in (1, 2) else 3
    names = getattr(label_feature, "names", None)
    class_names = list(names) if names else [str(i) for i in range(getattr(label_feature, "num_classes", 0) or 0)]
    dataset = builder.as_dataset(split=tfds_split, as_supervised=True, shuffle_files=False).map(
        lambda x, y: (to_channels(tf.cast(x, tf.uint8), channels), tf.cast(y, tf.int64)), num_parallel_calls=_AUTOTUNE, deterministic=True
    )
    try:
        num_examples = int(info.splits[tfds_split].num_examples)
    except Exception:
        num_examples = None
    return Source(dataset=dataset, class_names=class_names, num_examples=num_examples, channels=channels, name=name, split=split)
