"""Training with the paper's recipe (Sec. 3), on one device, several, or several machines.

Recipe (every value is a :class:`TrainConfig` field): SGD, learning rate 1e-2, momentum 0.9, the
learning rate multiplied by 0.1 when the validation loss has not improved for ``patience`` epochs,
global batch 128 split across replicas, dropout 0.5 on fc6/fc7, weights N(0, 1e-2), biases 0, each
conv filter's RMS capped at 0.1, random crops + flips (:func:`zfkeras.data.train_dataset`), and the
per-pixel training-set mean stored in the model's ``subtract_mean`` layer (so models take raw pixels).

One loop runs every :func:`make_strategy` strategy (Keras 3.15's ``model.fit`` fails under
``MultiWorkerMirroredStrategy``): ``strategy.run`` of one SGD step per distributed batch, losses
summed over replicas and divided by the global batch size, gradients all-reduced by the optimizer.
Keras callbacks (progress bar, TensorBoard, ``BackupAndRestore``, your own) are driven as in
``fit``. Each epoch's shuffle, crops and dropout masks depend only on ``(seed, epoch)`` and the
learning rate only on the recorded validation losses, so a killed run resumed from its backup ends
with the same weights as an uninterrupted one.

Run directory (:func:`train` writes it; other tools read it)::

    <run_dir>/config.json                 TrainConfig, data sources, class names, metadata (command)
    <run_dir>/checkpoints/epoch-001.keras  the model after each kept epoch (1-based, no optimizer)
    <run_dir>/backup/                     BackupAndRestore state while the run is unfinished
    <run_dir>/logs/                       TensorBoard: loss, accuracy, lr, histograms, conv1 filters
    <run_dir>/history.json                per-epoch loss, accuracy, val_loss, val_accuracy, lr, seconds
    <run_dir>/model.keras                 the final model (with optimizer state), written last
"""

import dataclasses
import json
import math
import os
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

import zfkeras
from zfkeras import data
from zfkeras.atomic import save_model as save_keras_atomic
from zfkeras.atomic import write_json as _write_json_atomic
from zfkeras.diagnostics import filter_grid
from zfkeras.epochs import READ_ERRORS, TrainingImages
from zfkeras.models import ARCHITECTURES, KERNEL_INITS, build_model

PAPER_CHECKPOINT_EPOCHS = (1, 2, 5, 10, 20, 30, 40, 64)
STRATEGY_FORMS = "'auto', 'mirrored', 'multiworker' or 'cpu:N'"
MEAN_IMAGES = 20_000  # images the training mean is computed over (a seeded sample of larger sets)
HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


@dataclasses.dataclass
class TrainConfig:
    """Everything that determines a training run (saved as ``config.json``).

    Attributes:
        arch: a name in ``zfkeras.models.ARCHITECTURES``. ``units``: optional layer widths,
            e.g. ``{"conv3": 512, "fc6": 2048}`` (``ModelSpec.with_units``). ``without``: layer
            numbers removed (``ModelSpec.without``, e.g. ``(3, 4)``). ``convs``: conv-layer fields
            changed, e.g. ``{"conv1": {"kernel": 7, "stride": 2}}`` (``ModelSpec.with_conv``).
            Together they rebuild any Table 3 variant from the run's ``config.json``.
        frozen: names of layers whose weights training leaves untouched (transfer learning).
        input_shape: model input ``(S, S, C)``; images are resized/cropped to it.
        num_classes: outputs; must match the training source's class names.
        epochs: epochs to train. batch_size: global batch (split across replicas).
        lr, momentum: SGD. patience: epochs without a validation-loss improvement larger than
            ``min_delta`` before the learning rate is multiplied by ``anneal_factor`` (not below
            ``min_lr``). With no validation data the training loss is watched instead.
        dropout, kernel_init, init_std, filter_radius: see ``zfkeras.models.ModelSpec``.
        checkpoint_epochs: 1-based epochs whose model is kept (clipped to ``epochs``).
        seed: initialization, validation split, shuffling, crops and dropout.
        strategy: ``make_strategy`` name. data, val_data: source specs, recorded for the record
            (the caller opens them). val_split: fraction of the training source held out for
            validation when no validation source is given (0 = none).
    """

    arch: str = "zfnet_small"
    input_shape: tuple = (28, 28, 1)
    num_classes: int = 10
    units: dict = dataclasses.field(default_factory=dict)
    without: tuple = ()
    convs: dict = dataclasses.field(default_factory=dict)
    frozen: tuple = ()
    epochs: int = 70
    batch_size: int = 128
    lr: float = 1e-2
    momentum: float = 0.9
    patience: int = 3
    anneal_factor: float = 0.1
    min_delta: float = 1e-4
    min_lr: float = 1e-6
    dropout: float = 0.5
    kernel_init: str = "normal"
    init_std: float = 1e-2
    filter_radius: Optional[float] = 0.1
    checkpoint_epochs: tuple = PAPER_CHECKPOINT_EPOCHS
    seed: int = 0
    strategy: str = "auto"
    data: str = data.DEFAULT_SOURCE
    val_data: Optional[str] = None
    val_split: float = 0.1

    def __post_init__(self):
        self.input_shape = tuple(int(v) for v in self.input_shape)
        self.checkpoint_epochs = tuple(sorted({int(e) for e in self.checkpoint_epochs}))
        self.units = dict(self.units or {})
        self.without = tuple(sorted({int(v) for v in self.without}))
        self.convs = {str(k): dict(v) for k, v in (self.convs or {}).items()}
        self.frozen = tuple(str(v) for v in self.frozen)
        self.validate()

    def validate(self):
        """Raise ValueError naming the first bad field."""
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if len(self.input_shape) != 3 or self.input_shape[0] != self.input_shape[1] or self.input_shape[2] not in (1, 3):
            raise ValueError(f"input_shape must be (S, S, 1) or (S, S, 3), got {self.input_shape}")
        for name in ("num_classes", "epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("lr", "min_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 < self.anneal_factor < 1:
            raise ValueError(f"anneal_factor must be in (0, 1), got {self.anneal_factor!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta!r}")
        if not 0 <= self.val_split < 1:
            raise ValueError(f"val_split must be in [0, 1), got {self.val_split!r}")
        if any(e < 1 for e in self.checkpoint_epochs):
            raise ValueError(f"checkpoint_epochs must be epoch numbers >= 1, got {self.checkpoint_epochs}")
        self.model_spec()  # validates units, dropout, kernel_init, init_std, filter_radius

    def model_spec(self):
        """The ``zfkeras.models.ModelSpec`` this config trains."""
        if self.kernel_init not in KERNEL_INITS:
            raise ValueError(f"kernel_init must be one of {KERNEL_INITS}, got {self.kernel_init!r}")
        spec = ARCHITECTURES[self.arch](num_classes=self.num_classes, input_shape=self.input_shape)
        if self.without:
            spec = spec.without(*self.without)
        for layer, fields in self.convs.items():
            spec = spec.with_conv(layer, **fields)
        if self.units:
            spec = spec.with_units(**self.units)
        return spec.replace(dropout=self.dropout, kernel_init=self.kernel_init, init_std=self.init_std, filter_radius=self.filter_radius)

    @property
    def kept_epochs(self):
        """``checkpoint_epochs`` clipped to the run."""
        return tuple(e for e in self.checkpoint_epochs if e <= self.epochs)

    def to_dict(self):
        tuples = ("input_shape", "checkpoint_epochs", "without", "frozen")
        return {**dataclasses.asdict(self), **{name: list(getattr(self, name)) for name in tuples}}

    @classmethod
    def from_dict(cls, values):
        """A config from :meth:`to_dict` output (unknown keys are an error)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field {unknown[0]!r}; fields: {', '.join(sorted(known))}")
        return cls(**values)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------


def make_strategy(name="auto"):
    """A ``tf.distribute.Strategy`` from a name.

    ``auto``: MirroredStrategy over the visible GPUs, or the default (one device) strategy without
    GPUs. ``mirrored``: MirroredStrategy over all visible devices. ``multiworker``:
    MultiWorkerMirroredStrategy over the cluster in ``TF_CONFIG``. ``cpu:N``: MirroredStrategy over N
    logical CPU devices (so the distributed path runs on a CPU machine).

    ``cpu:N`` and ``multiworker`` must be chosen before TensorFlow runs anything in this process
    (before any data set or model is made); otherwise a ValueError says so.
    """
    if not isinstance(name, str):
        raise ValueError(f"strategy must be a string ({STRATEGY_FORMS}), got {name!r}")
    key = name.strip().lower()
    if key == "auto":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if key == "mirrored":
        return tf.distribute.MirroredStrategy()
    if key == "multiworker":
        _check_tf_config()
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as error:
            raise ValueError(
                f"strategy 'multiworker' could not start ({str(error).splitlines()[0]}); create it before TensorFlow runs anything in this process"
            ) from None
    if key.startswith("cpu:"):
        count = key[4:]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"strategy {name!r}: N in 'cpu:N' must be a positive int")
        _logical_cpus(int(count))
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(int(count))])
    raise ValueError(f"unknown strategy {name!r}: use {STRATEGY_FORMS}")


def _check_tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError("strategy 'multiworker' needs TF_CONFIG (JSON with 'cluster' and 'task'), which is not set")
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            f'TF_CONFIG must be JSON like {{"cluster": {{"worker": ["host:port", ...]}}, "task": {{"type": "worker", "index": 0}}}}, got {raw!r}'
        ) from None
    if not workers:
        raise ValueError("TF_CONFIG lists no workers")


def _logical_cpus(count):
    """Split the CPU into ``count`` logical devices; fail clearly if TF has already set up devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        configured = tf.config.get_logical_device_configuration(cpu)
        have = len(configured) if configured else 1
        if have != count:
            raise ValueError(
                f"strategy 'cpu:{count}' needs {count} logical CPU devices, but TensorFlow already set up {have} "
                "in this process; choose the strategy before any data set or model is made (a fresh process)"
            ) from None


def worker_role(strategy):
    """``(is_chief, task_id)`` of this process: the chief writes the run; other workers only their backup."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_id = getattr(resolver, "task_id", 0) or 0
    return bool(getattr(strategy.extended, "should_checkpoint", True)), int(task_id)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def split_source(source, fraction, seed=0):
    """Hold out a random ``fraction`` of ``source`` for validation: ``(train, val)`` Sources.

    Which examples are held out depends only on ``seed`` (a permutation of the example indices),
    so class-sorted sources (folders) are split evenly too. Needs ``source.num_examples``.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    total = source.num_examples
    if not total:
        raise ValueError(f"cannot split {source.name}: its number of examples is unknown; give a validation source")
    held_out = int(round(total * fraction))
    if not 1 <= held_out < total:
        raise ValueError(f"val_split {fraction} of {total} examples leaves an empty training or validation set")
    is_val = np.zeros(total, bool)
    is_val[np.random.default_rng(seed).permutation(total)[:held_out]] = True
    if source.select is not None or source.files is not None:
        # Read only each part's examples, and keep them readable by id (shuffled epochs).
        train_part, val_part = data.subset(source, np.flatnonzero(~is_val)), data.subset(source, np.flatnonzero(is_val))
        return (dataclasses.replace(train_part, name=source.name), dataclasses.replace(val_part, name=source.name))
    flags = tf.constant(is_val)

    def part(keep_val):
        dataset = source.dataset.enumerate().filter(lambda i, example: tf.equal(tf.gather(flags, i), keep_val))
        return dataset.map(lambda i, example: example)

    common = dict(class_names=source.class_names, channels=source.channels, name=source.name, split=source.split, skip_corrupt=source.skip_corrupt)
    return (
        data.Source(dataset=part(False), num_examples=total - held_out, **common),
        data.Source(dataset=part(True), num_examples=held_out, **common),
    )


def _epoch_seed(seed, epoch):
    """A seed for epoch ``epoch`` (0-based) of a run seeded ``seed``: data order, crops, dropout."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 1) % (2**31 - 1)


def _sharded(dataset):
    # Sources built from tensors have no files to shard by: shard by element, unless the dataset
    # chose its own policy (tfrecord: sources shard by FILE, so each worker reads distinct files).
    if dataset.options().experimental_distribute.auto_shard_policy != tf.data.experimental.AutoShardPolicy.AUTO:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# --------------------------------------------------------------------------------------------
# Learning-rate schedule and callbacks
# --------------------------------------------------------------------------------------------


def annealed_lr(config, monitored):
    """Learning rate for the next epoch, given the watched loss of each epoch so far.

    Starts at ``config.lr``; whenever ``patience`` epochs pass without the loss dropping below the
    best so far minus ``min_delta``, it is multiplied by ``anneal_factor`` (floor ``min_lr``).
    A pure function of the history, so a resumed run anneals exactly as an uninterrupted one.
    """
    lr, best, wait = config.lr, math.inf, 0
    for value in monitored:
        if value < best - config.min_delta:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= config.patience:
                lr, wait = max(lr * config.anneal_factor, config.min_lr), 0
    return lr


class FirstLayerFilters(keras.callbacks.Callback):
    """Writes the first conv layer's filters as a TensorBoard image every epoch (``logdir/filters``)."""

    def __init__(self, logdir):
        super().__init__()
        self.logdir = logdir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        conv = next(layer for layer in self.model.layers if isinstance(layer, keras.layers.Conv2D))
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.logdir, "filters"))
        with self._writer.as_default():
            tf.summary.image(f"{conv.name}_filters", filter_grid(conv.kernel.numpy())[None], step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


class EpochCheckpoints(keras.callbacks.Callback):
    """Saves the model (weights and architecture, no optimizer) as ``epoch-NNN.keras`` after kept epochs."""

    def __init__(self, directory, epochs):
        super().__init__()
        self.directory, self.epochs = directory, set(epochs)
        self._twin = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 not in self.epochs:
            return
        if self._twin is None:  # an uncompiled copy keeps optimizer state out of the kept files
            self._twin = keras.models.clone_model(self.model)
        self._twin.set_weights(self.model.get_weights())
        save_keras_atomic(self._twin, os.path.join(self.directory, f"epoch-{epoch + 1:03d}.keras"))


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


class _Stepper:
    """Distributed SGD and evaluation steps of one model: sums of (loss, correct, count) per call."""

    def __init__(self, model, strategy):
        self.model, self.strategy = model, strategy
        self._train = tf.function(self._distributed(self._train_replica), reduce_retracing=True)
        self._test = tf.function(self._distributed(self._test_replica), reduce_retracing=True)

    def _distributed(self, replica_fn):
        def step(batch):
            sums = self.strategy.run(replica_fn, args=batch)
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

        return step

    @staticmethod
    def _sums(labels, probs):
        per_example = keras.losses.sparse_categorical_crossentropy(labels, probs)
        correct = tf.cast(tf.equal(tf.argmax(probs, axis=-1), labels), tf.float32)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.stack([tf.reduce_sum(per_example), tf.reduce_sum(correct), count])

    def _train_replica(self, images, labels):
        context = tf.distribute.get_replica_context()
        # The mean over the GLOBAL batch (a partial last batch included): sum / global count,
        # so the all-reduced (summed) gradients equal the single-device gradient.
        global_count = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.shape(labels)[0], tf.float32))
        with tf.GradientTape() as tape:
            probs = self.model(images, training=True)
            sums = self._sums(labels, probs)
            loss = sums[0] / tf.maximum(global_count, 1.0)
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / context.num_replicas_in_sync
        variables = self.model.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.model.optimizer.apply_gradients(zip(gradients, variables))
        return sums

    def _test_replica(self, images, labels):
        return self._sums(labels, self.model(images, training=False))

    def train_epoch(self, dataset, callbacks):
        """One pass over ``dataset`` (global batches); returns ``{"loss", "accuracy"}`` means."""
        totals = tf.zeros(3)
        for step, batch in enumerate(self.strategy.experimental_distribute_dataset(_sharded(dataset))):
            callbacks.on_train_batch_begin(step)
            totals += self._train(batch)
            callbacks.on_train_batch_end(step, {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]})
        loss, correct, count = totals.numpy().tolist()
        return {"loss": loss / max(count, 1), "accuracy": correct / max(count, 1)}

    def evaluate(self, dataset):
        totals = tf.zeros(3)
        for batch in self.strategy.experimental_distribute_dataset(_sharded(dataset)):
            totals += self._test(batch)
        loss, correct, count = totals.numpy().tolist()
        return {"val_loss": loss / max(count, 1), "val_accuracy": correct / max(count, 1)}


def _reset_dropout_seeds(model, seed, epoch):
    """Give every random layer an epoch-determined RNG state (Keras does not save it in backups)."""
    base = _epoch_seed(seed, epoch)
    for index, layer in enumerate(model.layers):
        for generator in getattr(layer, "_seed_generators", ()):
            generator.state.assign(np.asarray([(base + 104_729 * (index + 1)) % (2**31 - 1), 0]).astype(generator.state.dtype))


def _load_history(path, epochs_done):
    """The first ``epochs_done`` epochs of a saved history (a resumed run continues it)."""
    history = {key: [] for key in HISTORY_KEYS}
    if epochs_done and os.path.exists(path):
        with open(path) as handle:
            saved = json.load(handle)
        history = {key: list(saved.get(key, []))[:epochs_done] for key in HISTORY_KEYS}
    if len(history["epoch"]) != epochs_done:
        raise ValueError(f"{path} does not record the {epochs_done} epochs the backup has; cannot resume this run")
    return history


def _check_run_dir(run_dir, record):
    """A finished run is never overwritten; an unfinished one resumes only with the same config."""
    if os.path.exists(os.path.join(run_dir, "model.keras")):
        raise ValueError(f"{run_dir} already holds a finished run (model.keras); choose another run directory")
    path = os.path.join(run_dir, "config.json")
    if os.path.isdir(os.path.join(run_dir, "backup")) and os.path.exists(path):
        with open(path) as handle:
            before = json.load(handle).get("config", {})
        now = record["config"]
        # A key an older run did not record had its default value then.
        defaults = TrainConfig().to_dict()
        changed = [key for key in now if key != "strategy" and before.get(key, defaults.get(key)) != now[key]]
        if changed:
            key = changed[0]
            raise ValueError(
                f"{run_dir} holds an unfinished run with {key}={before.get(key)!r}, not {now[key]!r}; "
                "resume it with the same settings or choose another run directory"
            )


def _check_classes(config, train_source, val_source):
    for role, source in (("training", train_source), ("validation", val_source)):
        if source is not None and len(source.class_names) != config.num_classes:
            raise ValueError(f"config.num_classes is {config.num_classes} but {role} source {source.name} has {len(source.class_names)} classes")


def _prepare_model(config, strategy, images, model, compute_mean):
    """The compiled model to train, its variables made under ``strategy``'s scope.

    ``model`` None builds ``config.model_spec()``; otherwise a copy of ``model`` (architecture and
    weights) is trained, so a pretrained model passed in is never changed. ``config.frozen``
    layers are made non-trainable. With ``compute_mean`` the model's ``subtract_mean`` layer gets
    the mean image of the training images (``images``, a :class:`zfkeras.epochs.TrainingImages`).
    """
    with strategy.scope():
        if model is None:
            trained = build_model(config.model_spec(), seed=config.seed)
            for variable in trained.trainable_variables:
                # The filter RMS cap holds from the start, not only after the first update (an
                # he_normal conv1 on 3x3x1 would start at RMS 0.47 on inputs of +-128).
                if variable.constraint is not None:
                    variable.assign(variable.constraint(variable))
        else:
            trained = keras.models.clone_model(model)
            trained.set_weights(model.get_weights())
        _check_model(trained, config)
        if compute_mean:
            # A seeded sample of large sets: a folder of a million images is not decoded once up front.
            trained.get_layer("subtract_mean").set_mean(images.mean_image(limit=MEAN_IMAGES, seed=config.seed))
        for name in config.frozen:
            trained.get_layer(name).trainable = False
        trained.compile(
            optimizer=keras.optimizers.SGD(config.lr, momentum=config.momentum), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        trained.optimizer.build(trained.trainable_variables)
    return trained


def _check_model(model, config):
    """ValueError unless ``model`` takes ``config.input_shape``, has ``num_classes`` outputs and
    the ``frozen`` layers."""
    shape = tuple(model.inputs[0].shape[1:])
    if shape != config.input_shape:
        raise ValueError(f"model {model.name!r} takes inputs {shape}, but config.input_shape is {config.input_shape}")
    outputs = int(model.outputs[0].shape[-1])
    if outputs != config.num_classes:
        raise ValueError(f"model {model.name!r} has {outputs} outputs, but config.num_classes is {config.num_classes}")
    names = [layer.name for layer in model.layers]
    missing = [name for name in config.frozen if name not in names]
    if missing:
        raise ValueError(f"frozen layer {missing[0]!r} is not in model {model.name!r}; its layers: {', '.join(names)}")
    if "subtract_mean" not in names:
        raise ValueError(f"model {model.name!r} has no subtract_mean layer (zfkeras.layers.SubtractMean) to hold the mean image")


def _callbacks(config, out_dir, chief, model, steps, progress, extra, histograms):
    """Built-in callbacks (checkpoints, TensorBoard, filters, backup, progress) then ``extra``."""
    built_in = []
    if chief:
        logs_dir = os.path.join(out_dir, "logs")
        built_in += [
            EpochCheckpoints(os.path.join(out_dir, "checkpoints"), config.kept_epochs),
            keras.callbacks.TensorBoard(logs_dir, histogram_freq=int(histograms), write_graph=False, profile_batch=0),
            FirstLayerFilters(logs_dir),
        ]
    built_in.append(keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup"), double_checkpoint=True))
    if progress:
        built_in.append(keras.callbacks.ProgbarLogger())
    return keras.callbacks.CallbackList(built_in + list(extra), model=model, verbose=1 if progress else 0, epochs=config.epochs, steps=steps)


def train(
    config,
    train_source,
    val_source=None,
    run_dir="runs/train",
    *,
    model=None,
    compute_mean=None,
    callbacks=(),
    progress=False,
    strategy=None,
    metadata=None,
    histograms=True,
    cache="auto",
    cache_budget=None,
):
    """Train a model as ``config`` says and write ``run_dir`` (see the module docstring).

    If ``run_dir`` holds the backup of an unfinished run with the same config, training resumes
    from its last completed epoch. The global Python/NumPy/TF seeds are set to ``config.seed``.

    Args:
        config: a :class:`TrainConfig`.
        train_source: a ``zfkeras.data.Source`` of training images (any size; resized and cropped).
        val_source: a Source for validation, or None to hold out ``config.val_split`` of the
            training source (:func:`split_source`; none if ``val_split`` is 0).
        run_dir: output directory.
        model: a Keras model to train instead of building ``config.model_spec()``: pretrained (fine-
            tuning; ``config.frozen`` layers kept fixed) or pre-built (any zfkeras-layered convnet
            with ``config.input_shape`` and ``config.num_classes``). A copy is trained; ``model``
            itself is not changed. Pass the same model again to resume.
        compute_mean: set the model's mean image from the training set (default: only when the
            model is built here; a pretrained model keeps the mean it was trained with).
        callbacks: extra ``keras.callbacks.Callback`` objects, called after the built-in ones
            (``logs`` of ``on_epoch_end`` hold loss, accuracy, val_loss, val_accuracy, lr, seconds).
        progress: show Keras's progress bar for each epoch.
        strategy: a ``tf.distribute.Strategy``; default ``make_strategy(config.strategy)``.
        metadata: extra JSON-able entries for ``config.json`` (e.g. ``{"command": ...}``).
        histograms: log weight histograms to TensorBoard every epoch (about 0.6 s an epoch for
            the small model: many short runs, as in transfer folds, turn them off).
        cache, cache_budget: where resized training images come from (``"auto"``, ``"memory"``,
            ``"none"`` or a directory; :mod:`zfkeras.epochs`). It never changes the batches.
            Corrupt files of a ``skip_corrupt`` source are skipped: each epoch's ``logs["skipped"]``
            counts them and ``run_dir/skipped_files.json`` names them; otherwise the epoch stops with
            a CorruptImageError naming the file.

    Returns:
        ``(model, history)``: the trained Keras model and ``{key: [one value per epoch]}``.
    """
    strategy = strategy if strategy is not None else make_strategy(config.strategy)
    # TF's global seed enters tf.data's shuffles: fix it so a run depends on config.seed alone.
    keras.utils.set_random_seed(config.seed)
    train_source, val_source = _sources(config, train_source, val_source)
    chief, out_dir = _open_run(config, strategy, run_dir, train_source, val_source, model, metadata)

    compute_mean = model is None if compute_mean is None else compute_mean
    size, channels = config.input_shape[0], config.input_shape[2]
    images = TrainingImages(train_source, size, channels, cache=cache, cache_budget=cache_budget)
    model = _prepare_model(config, strategy, images, model, compute_mean)
    stepper = _Stepper(model, strategy)
    val_dataset = None
    if val_source is not None:
        val_dataset = data.eval_dataset(val_source, size, channels, max(config.batch_size, 256), crops="center")
    steps = math.ceil(train_source.num_examples / config.batch_size) if train_source.num_examples else None
    callback_list = _callbacks(config, out_dir, chief, model, steps, progress, callbacks, histograms)

    model.stop_training = False
    model._initial_epoch = None
    callback_list.on_train_begin()
    first_epoch = model._initial_epoch or 0  # set by BackupAndRestore when resuming
    history_path = os.path.join(out_dir, "history.json")
    history = _load_history(history_path, first_epoch)
    monitor = "val_loss" if val_dataset is not None else "loss"
    logs = {}
    for epoch in range(first_epoch, config.epochs):
        lr = annealed_lr(config, history[monitor])
        logs = _run_epoch(config, epoch, lr, model, stepper, images, val_dataset, callback_list)
        if logs["skipped"] and chief:
            _write_json_atomic(os.path.join(out_dir, "skipped_files.json"), [str(f) for f in images.skipped_files()])
        history["epoch"].append(epoch + 1)
        for key in HISTORY_KEYS[1:]:
            history[key].append(logs.get(key))
        _write_json_atomic(history_path, history)
        callback_list.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    if chief:
        save_keras_atomic(model, os.path.join(out_dir, "model.keras"))
    callback_list.on_train_end(logs)
    return model, history


def _sources(config, train_source, val_source):
    """The training and validation sources: ``val_source``, or ``config.val_split`` of the training one."""
    _check_classes(config, train_source, val_source)
    if val_source is None and config.val_split:
        train_source, val_source = split_source(train_source, config.val_split, config.seed)
    return train_source, val_source


def _open_run(config, strategy, run_dir, train_source, val_source, model, metadata):
    """Check ``run_dir`` (a finished run is never overwritten; an unfinished one resumes only with the
    same config) and write its ``config.json``. Returns ``(chief, out_dir)``: only the chief writes
    the run; other workers keep just what they need to resume, in ``run_dir/worker-N``."""
    chief, task_id = worker_role(strategy)
    out_dir = run_dir if chief else os.path.join(run_dir, f"worker-{task_id}")
    record = {
        "config": config.to_dict(),
        "model": "built from config" if model is None else f"given: {model.name}",
        "data": train_source.name,
        "val_data": val_source.name if val_source is not None else None,
        "num_train": train_source.num_examples,
        "num_val": val_source.num_examples if val_source is not None else 0,
        "class_names": list(train_source.class_names),
        "zfkeras_version": zfkeras.__version__,
        **(metadata or {}),
    }
    _check_run_dir(out_dir, record)
    os.makedirs(out_dir, exist_ok=True)
    _write_json_atomic(os.path.join(out_dir, "config.json"), record)
    return chief, out_dir


def _run_epoch(config, epoch, lr, model, stepper, images, val_dataset, callback_list):
    """Train epoch ``epoch`` (0-based) at ``lr``, then validate; returns its logs (loss, accuracy,
    val_loss, val_accuracy, lr, seconds, skipped). A corrupt file raises a CorruptImageError naming it."""
    started = time.monotonic()
    model.optimizer.learning_rate.assign(lr)
    _reset_dropout_seeds(model, config.seed, epoch)
    callback_list.on_epoch_begin(epoch)
    epoch_data = images.epoch(config.batch_size, _epoch_seed(config.seed, epoch), with_ids=False)
    try:
        logs = stepper.train_epoch(epoch_data, callback_list)
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"training diverged in epoch {epoch + 1} (loss {logs['loss']}); try a smaller lr than {lr:g}")
        if val_dataset is not None:
            logs.update(stepper.evaluate(val_dataset))
    except READ_ERRORS as error:
        raise images.corrupt_error(error) from None
    logs.update(lr=lr, seconds=time.monotonic() - started, skipped=len(images.skipped_files()))
    return logs
