"""zfkeras: train ZFNet-family convnets in Keras and look inside them with a deconvnet.

The packages, lowest first (a package imports only from those before it; ``nn`` and ``data`` are
independent of each other):

- :mod:`zfkeras.io`: atomic writes, argument checks, pictures (no TensorFlow);
- :mod:`zfkeras.nn`: layers, models, the graph walk, receptive fields, the deconvnet, the probe;
- :mod:`zfkeras.data`: sources, crops, batches, training epochs;
- :mod:`zfkeras.training`: the paper's recipe, strategies, callbacks, the run directory;
- :mod:`zfkeras.export`: SavedModel exports, and opening any model as a Probe;
- :mod:`zfkeras.analysis`: Sec. 4, one module per figure or table;
- :mod:`zfkeras.experiments`: Sec. 5 (ablation, transfer, layer probes).
"""

from zfkeras.version import __version__, check_tensorflow  # isort: skip

check_tensorflow()  # a missing or old TensorFlow: one line saying how to install it  # isort: skip
from zfkeras.io.quiet import import_tensorflow_quietly  # isort: skip

import_tensorflow_quietly()  # without the absl/oneDNN lines TensorFlow's C++ prints (twice) on import  # isort: skip
from zfkeras.nn import layers  # registers the custom layers for .keras loading  # isort: skip
from zfkeras.data import Source, load_source
from zfkeras.export import export_model, open_model
from zfkeras.nn.deconv import Deconvnet
from zfkeras.nn.models import ConvSpec, ModelSpec, PoolSpec, alexnet, alexnet64, build_model, zfnet, zfnet64, zfnet_small
from zfkeras.nn.probe import KerasProbe, Probe
from zfkeras.training import TrainConfig, train

__all__ = [
    "ConvSpec",
    "Deconvnet",
    "KerasProbe",
    "ModelSpec",
    "PoolSpec",
    "Probe",
    "Source",
    "TrainConfig",
    "__version__",
    "alexnet",
    "alexnet64",
    "build_model",
    "export_model",
    "layers",
    "load_source",
    "open_model",
    "train",
    "zfnet",
    "zfnet64",
    "zfnet_small",
]
