"""Custom layers and the filter-RMS constraint used by zfkeras models."""

from zfkeras.layers.filter_rms import FilterRMSNorm
from zfkeras.layers.lrn import LocalResponseNormalization
from zfkeras.layers.subtract_mean import SubtractMean
from zfkeras.layers.switch_max_pool import SwitchMaxPool, pooled_shape
from zfkeras.layers.unpool import Unpool, unpool

__all__ = ["FilterRMSNorm", "LocalResponseNormalization", "SubtractMean", "SwitchMaxPool", "Unpool", "pooled_shape", "unpool"]
