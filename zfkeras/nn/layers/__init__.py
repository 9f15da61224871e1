"""Custom layers and the filter-RMS constraint used by zfkeras models."""

from zfkeras.nn.layers.filter_rms import FilterRMSNorm
from zfkeras.nn.layers.lrn import LocalResponseNormalization
from zfkeras.nn.layers.subtract_mean import SubtractMean
from zfkeras.nn.layers.switch_max_pool import SwitchMaxPool, pooled_shape
from zfkeras.nn.layers.unpool import Unpool, unpool

__all__ = ["FilterRMSNorm", "LocalResponseNormalization", "SubtractMean", "SwitchMaxPool", "Unpool", "pooled_shape", "unpool"]
