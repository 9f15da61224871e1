"""The foundation: Keras layers, ZFNet-family models, Keras applications, the graph walk, receptive
fields, the per-layer forward and adjoint steps, the deconvnet and the probe.

Import order is the dependency order: ``layers`` -> ``models``, ``applications`` -> ``graph`` ->
``precision`` -> ``fields`` -> ``adjoint`` -> ``deconv`` -> ``table`` -> ``probe``.
"""

from zfkeras.nn import layers
from zfkeras.nn.applications import ImageNetPreprocessing
from zfkeras.nn.deconv import Deconvnet
from zfkeras.nn.fields import Field, receptive_fields
from zfkeras.nn.graph import Graph
from zfkeras.nn.models import ARCHITECTURES, ConvSpec, ModelSpec, PoolSpec, build_model
from zfkeras.nn.precision import PRECISIONS
from zfkeras.nn.probe import KerasProbe, Probe

__all__ = [
    "ARCHITECTURES",
    "ConvSpec",
    "Deconvnet",
    "Field",
    "Graph",
    "ImageNetPreprocessing",
    "KerasProbe",
    "ModelSpec",
    "PRECISIONS",
    "PoolSpec",
    "Probe",
    "build_model",
    "layers",
    "receptive_fields",
]
