"""The training and evaluation steps of one model under a distribution strategy, in a precision.

:class:`Stepper` runs one SGD step per distributed batch (``strategy.run``): losses summed over
replicas and divided by the global batch size, gradients all-reduced by the optimizer.

- **Precision** (:mod:`zfkeras.nn.precision`): the step's forward and backward pass compute in
  ``precision``; the variables, the optimizer's state and everything saved stay float32. With
  ``mixed_float16`` the loss is scaled (the model's optimizer is a
  :class:`keras.optimizers.LossScaleOptimizer`, which skips steps with non-finite gradients and
  adapts the scale). Validation always runs in float32, so validation numbers are those of the
  model as it is saved and served.
- **XLA** (``jit_compile``): the forward and backward pass compiled as one XLA cluster. It needs a
  graph XLA can compile: ``max_pool_with_argmax`` (the switches of
  :class:`~zfkeras.nn.layers.SwitchMaxPool`) has no XLA kernel, so the compiled step runs the
  model's own layers as a chain with plain max pooling in place of each SwitchMaxPool
  (:func:`compilable_forward`: same layers, so same weights; nothing is copied). On a CPU XLA is
  slower (measured: docs/benchmarks.md), so :func:`resolve_jit` turns it on only for GPU replicas,
  and never under op determinism (``zf`` commands), since XLA's max-pool gradient is not deterministic.
"""

import keras
import tensorflow as tf

from zfkeras.nn.graph import Graph
from zfkeras.nn.layers import SwitchMaxPool
from zfkeras.nn.precision import check_precision, computing_in

JIT_CHOICES = ("auto", "on", "off")


def compilable_forward(model):
    """``f(images, training) -> outputs``: ``model``'s layers called in order, each SwitchMaxPool
    replaced by plain max pooling over the same windows (XLA-compilable; the same values).

    A ValueError unless ``model`` is a chain of layers (zfkeras models are).
    """
    layers = Graph(model).chain("an XLA-compiled training step")

    def forward(images, training=False):
        x = images
        for layer in layers:
            if isinstance(layer, SwitchMaxPool):
                window = dict(ksize=(1, *layer.pool_size, 1), strides=(1, *layer.strides, 1), padding=layer.padding.upper())
                x = tf.nn.max_pool2d(tf.cast(x, layer.compute_dtype), **window)
            else:
                x = layer(x, training=training)
        return x

    return forward


def op_determinism():
    """Whether TensorFlow's op determinism is on (``tf.config.experimental.enable_op_determinism``,
    which ``zf`` commands turn on: same seed, same numbers). TF has no public getter; Keras reads
    the same flag to keep XLA off."""
    try:
        from tensorflow.python.framework.config import is_op_determinism_enabled
    except ImportError:  # a TensorFlow without it: assume off
        return False
    return bool(is_op_determinism_enabled())


def resolve_jit(jit_compile, strategy, model):
    """Whether the training step is XLA-compiled: ``"on"``/True, ``"off"``/False, or ``"auto"``: on
    when the strategy's replicas are GPUs, off on CPUs (where XLA measured slower). XLA needs a chain
    :func:`compilable_forward` handles, and op determinism off (XLA has no deterministic max-pool
    gradient): ``"auto"`` is off without them, ``"on"`` a ValueError saying which is missing."""
    choice = {True: "on", False: "off"}.get(jit_compile, jit_compile)
    if choice not in JIT_CHOICES:
        raise ValueError(f"jit_compile must be one of {', '.join(JIT_CHOICES)}, got {jit_compile!r}")
    if choice == "off":
        return False
    try:
        compilable_forward(model)
        if op_determinism():
            raise ValueError("XLA has no deterministic max-pool gradient, and TensorFlow's op determinism is on (zf commands turn it on)")
    except ValueError as error:
        if choice == "on":
            raise ValueError(f"XLA: {error}") from None
        return False
    if choice == "on":
        return True
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: one device, a GPU if there is one
        devices = [device.name for device in tf.config.list_logical_devices("GPU")[:1]] or ["CPU"]
    return bool(devices) and all("GPU" in device.upper() for device in devices)


class Stepper:
    """Distributed SGD and evaluation steps of one compiled model: sums of (loss, correct, count) per call.

    Args:
        model: a compiled Keras classifier (softmax outputs); its optimizer updates it.
        strategy: the ``tf.distribute.Strategy`` whose scope made its variables.
        precision: what the training step computes in (:data:`zfkeras.nn.precision.PRECISIONS`).
        jit_compile: XLA-compile the forward and backward pass (:func:`resolve_jit` says when).
    """

    def __init__(self, model, strategy, precision="float32", jit_compile=False):
        self.model, self.strategy, self.precision = model, strategy, check_precision(precision)
        self.jit_compile = bool(jit_compile)
        self.forward = compilable_forward(model) if jit_compile else (lambda images, training: model(images, training=training))
        self.gradients = tf.function(self._gradients, jit_compile=True) if jit_compile else self._gradients
        self._train = tf.function(self._distributed(self._train_replica, precision), reduce_retracing=True)
        self._test = tf.function(self._distributed(self._test_replica, "float32"), reduce_retracing=True)

    def _distributed(self, replica_fn, precision):
        def step(batch):
            # Policies are read while tracing; entered here, in the one tracing thread, not in the
            # replica threads of a MirroredStrategy.
            with computing_in(self.model, precision):
                sums = self.strategy.run(replica_fn, args=batch)
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

        return step

    @staticmethod
    def _sums(labels, probs):
        per_example = keras.losses.sparse_categorical_crossentropy(labels, tf.cast(probs, tf.float32))
        correct = tf.cast(tf.equal(tf.argmax(probs, axis=-1), labels), tf.float32)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.stack([tf.reduce_sum(per_example), tf.reduce_sum(correct), count])

    def _gradients(self, images, labels, global_count, replicas):
        """(sums, gradients of the replica's share of the mean loss, loss-scaled under float16)."""
        optimizer = self.model.optimizer
        with tf.GradientTape() as tape:
            probs = self.forward(images, training=True)
            sums = self._sums(labels, probs)
            loss = sums[0] / tf.maximum(global_count, 1.0)
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / replicas
            if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
                loss = optimizer.scale_loss(loss)
        return sums, tape.gradient(loss, self.model.trainable_variables)

    def _train_replica(self, images, labels):
        context = tf.distribute.get_replica_context()
        # The mean over the GLOBAL batch (a partial last batch included): sum / global count,
        # so the all-reduced (summed) gradients equal the single-device gradient.
        global_count = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.shape(labels)[0], tf.float32))
        sums, gradients = self.gradients(images, labels, global_count, float(context.num_replicas_in_sync))
        self.model.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        return sums

    def _test_replica(self, images, labels):
        return self._sums(labels, self.model(images, training=False))

    def train_epoch(self, dataset, callbacks):
        """One pass over ``dataset`` (global batches); returns ``{"loss", "accuracy"}`` means."""
        totals = tf.zeros(3)
        for step, batch in enumerate(self.strategy.experimental_distribute_dataset(sharded(dataset))):
            callbacks.on_train_batch_begin(step)
            totals += self._train(batch)
            callbacks.on_train_batch_end(step, {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]})
        loss, correct, count = totals.numpy().tolist()
        return {"loss": loss / max(count, 1), "accuracy": correct / max(count, 1)}

    def evaluate(self, dataset):
        """Mean loss and accuracy over ``dataset`` in float32: ``{"val_loss", "val_accuracy"}``."""
        totals = tf.zeros(3)
        for batch in self.strategy.experimental_distribute_dataset(sharded(dataset)):
            totals += self._test(batch)
        loss, correct, count = totals.numpy().tolist()
        return {"val_loss": loss / max(count, 1), "val_accuracy": correct / max(count, 1)}


def sharded(dataset):
    """``dataset`` with an auto-shard policy for distribution: by element for sources built from
    tensors (no files to shard by), unless the dataset chose its own (tfrecord sources shard by
    FILE, so each worker reads distinct files)."""
    if dataset.options().experimental_distribute.auto_shard_policy != tf.data.experimental.AutoShardPolicy.AUTO:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
