"""Mixed precision: which layers of a model compute in 16 bits, and functions that run it so.

A model's variables, its saved files and its exports always stay float32; a precision only
changes what its layers compute in, and only inside the functions made here (the layers' own
Keras dtype policies are set while such a function is traced, then put back). Three precisions:

- ``float32``: everything in float32 (exact; the reference).
- ``mixed_bfloat16``: convolutions, pools, dense layers and dropout compute in bfloat16 (8 bits of
  mantissa, float32's range); no loss scaling needed. Fast on CPUs with AVX-512 BF16 or AMX and on
  GPUs of compute capability 8 and up.
- ``mixed_float16``: the same in float16 (11 bits of mantissa, range +-65504); training needs loss
  scaling (:class:`keras.optimizers.LossScaleOptimizer`). For GPUs of compute capability 7.x.

Kept in float32 whatever the precision (:func:`float32_layers`): the mean subtraction
(:class:`~zfkeras.nn.layers.SubtractMean`, raw pixels 0-255 need float32's 24 bits) and an
application's preprocessing, local response normalization (no bfloat16 kernel on CPUs, and
``a**2`` overflows float16), softmax layers and the layers that give the model's outputs (the
softmax classifier, so probabilities and the loss are float32).
"""

import contextlib

import keras
import tensorflow as tf

from zfkeras.nn.applications import ImageNetPreprocessing
from zfkeras.nn.graph import Graph
from zfkeras.nn.layers import LocalResponseNormalization, SubtractMean

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
FLOAT32_TYPES = (SubtractMean, ImageNetPreprocessing, LocalResponseNormalization, keras.layers.Softmax, keras.layers.InputLayer)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with fast bfloat16 dot products


def check_precision(precision, name="precision"):
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line ValueError naming ``name``."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def cpu_has_bf16(cpuinfo="/proc/cpuinfo"):
    """Whether this machine's CPU has bfloat16 dot-product instructions (AVX-512 BF16 or AMX-BF16)."""
    try:
        with open(cpuinfo) as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def default_precision(gpus=None, cpuinfo="/proc/cpuinfo"):
    """The precision training defaults to on this machine (``--precision auto``).

    With GPUs (``gpus``: their compute capabilities ``[(major, minor)]``; default: the visible
    ones): ``mixed_bfloat16`` if every one is 8.0 or newer, ``mixed_float16`` if every one is 7.0 or
    newer, else ``float32``. Without GPUs: ``mixed_bfloat16`` on CPUs with bfloat16 instructions
    (:func:`cpu_has_bf16`), else ``float32``.
    """
    if gpus is None:
        gpus = [
            tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0))
            for gpu in tf.config.list_physical_devices("GPU")
        ]
    if gpus:
        oldest = min(tuple(c) for c in gpus)
        return "mixed_bfloat16" if oldest >= (8, 0) else "mixed_float16" if oldest >= (7, 0) else "float32"
    return "mixed_bfloat16" if cpu_has_bf16(cpuinfo) else "float32"


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def float32_layers(model):
    """The layers of ``model`` that compute in float32 whatever the precision (module docstring)."""
    graph = Graph(model)
    outputs = {id(graph.producer[id(tensor)].layer) for tensor in keras.tree.flatten(model.outputs)}
    kept = []
    for layer in _all_layers(model):
        softmax = isinstance(layer, keras.layers.Activation) and getattr(layer.activation, "__name__", "") == "softmax"
        if isinstance(layer, FLOAT32_TYPES) or softmax or id(layer) in outputs:
            kept.append(layer)
    return kept


@contextlib.contextmanager
def computing_in(model, precision):
    """While inside, ``model``'s layers compute in ``precision`` (all but :func:`float32_layers`);
    their float32 policies are restored on leaving.

    Keras reads a layer's policy when a call is traced, so a ``tf.function`` traced inside keeps
    the precision for good, while ``model.save`` and calls traced elsewhere see float32. Enter it
    around tracing, in one thread (a distribution strategy's replica threads run inside it).
    """
    check_precision(precision)
    if precision == "float32":
        yield model
        return
    keep = {id(layer) for layer in float32_layers(model)}
    changed = [(layer, layer.dtype_policy) for layer in _all_layers(model) if id(layer) not in keep]
    try:
        for layer, _ in changed:
            layer.dtype_policy = precision
        yield model
    finally:
        for layer, policy in changed:
            layer.dtype_policy = policy


def as_float32(values):
    """Floating tensors of a nest cast to float32 (16-bit maps and probabilities come back float32)."""
    return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32) if t.dtype.is_floating else t, values)


def compute_function(model, call, precision, input_signature=None):
    """``tf.function`` of ``call(*args)`` (which calls ``model`` or a model sharing its layers) with
    ``model``'s layers computing in ``precision`` and floating outputs cast to float32."""
    check_precision(precision)

    def run(*args):
        with computing_in(model, precision):
            return as_float32(call(*args))

    return tf.function(run, input_signature=input_signature, reduce_retracing=input_signature is None)
