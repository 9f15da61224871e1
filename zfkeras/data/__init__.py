"""Data: sources named by one string, the paper's crops, evaluation batches and training epochs.

- :mod:`.sources` (``load_source("folder:PATH")``), one module per kind of source;
- :mod:`.source` (:class:`Source`, subsets), :mod:`.decode` (reading files: headers first, a pixel
  limit, EXIF orientation, corrupt files named; :func:`read_image` reads one file or upload);
- :mod:`.transforms` (resize, crops, ``native_to_input``, ``fit_image``);
- :mod:`.batches` (evaluation batches, :class:`ImageBatches`), :mod:`.epochs` (shuffled training
  epochs that scale), :mod:`.mean` (the mean image);
- :mod:`.emoji` (Emoji-64, the many-class colour analogue's builder).

Pipelines yield float32 **raw pixel values 0-255**, never mean-subtracted: the model's first layer
subtracts the mean image.
"""

from zfkeras.data.source import CorruptImageError, Source, in_memory_source, source_labels, subset  # isort: skip
from zfkeras.data.transforms import (  # isort: skip
    FittedImage,
    center_crop,
    fit_image,
    load_size,
    native_to_input,
    pad_image,
    random_crop_flip,
    resize_and_center_crop,
    ten_crop,
    to_channels,
    train_padding,
)
from zfkeras.data.decode import (  # isort: skip
    MAX_PIXELS,
    check_image,
    corrupt_file_error,
    corrupt_file_in,
    corrupt_reason_in,
    find_corrupt,
    naming_corrupt_files,
    read_image,
)
from zfkeras.data.batches import ImageBatches, eval_dataset, prepare_images, resized_dataset  # isort: skip
from zfkeras.data.mean import compute_mean_image  # isort: skip
from zfkeras.data.epochs import TrainingImages, plan_cache, train_dataset  # isort: skip
from zfkeras.data.sources import ACCEPTED_FORMS, DEFAULT_SOURCE, load_source, resolve_source  # isort: skip
from zfkeras.data.sources.folder import describe_holdout, holdout_files  # isort: skip

__all__ = [
    "ACCEPTED_FORMS",
    "MAX_PIXELS",
    "DEFAULT_SOURCE",
    "CorruptImageError",
    "FittedImage",
    "ImageBatches",
    "Source",
    "TrainingImages",
    "center_crop",
    "check_image",
    "compute_mean_image",
    "corrupt_file_error",
    "corrupt_file_in",
    "corrupt_reason_in",
    "describe_holdout",
    "eval_dataset",
    "find_corrupt",
    "fit_image",
    "holdout_files",
    "in_memory_source",
    "load_size",
    "load_source",
    "naming_corrupt_files",
    "native_to_input",
    "pad_image",
    "plan_cache",
    "prepare_images",
    "random_crop_flip",
    "read_image",
    "resize_and_center_crop",
    "resized_dataset",
    "resolve_source",
    "source_labels",
    "subset",
    "ten_crop",
    "to_channels",
    "train_dataset",
    "train_padding",
]
