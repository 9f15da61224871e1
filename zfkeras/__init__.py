"""zfkeras: train ZFNet-family convnets in Keras and look inside them with a deconvnet."""

__version__ = "0.1.0"

from zfkeras import (
    applications,  # noqa: E402,F401  (registers ImageNetPreprocessing, for keras:NAME exports)
    layers,  # noqa: E402,F401  (registers the custom layers for .keras loading)
)
from zfkeras.deconv import Deconvnet  # noqa: E402
from zfkeras.models import ConvSpec, ModelSpec, PoolSpec, alexnet, build_model, zfnet, zfnet_small  # noqa: E402

__all__ = ["Deconvnet", "ModelSpec", "ConvSpec", "PoolSpec", "build_model", "zfnet", "alexnet", "zfnet_small", "layers"]
