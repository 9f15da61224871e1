"""Training with the paper's recipe (Sec. 3), on one device, several, or several machines.

Recipe (every value is a :class:`TrainConfig` field): SGD, learning rate 1e-2, momentum 0.9, the
learning rate multiplied by 0.1 when the validation loss has not improved for ``patience`` epochs,
global batch 128 split across replicas, dropout 0.5 on fc6/fc7, weights N(0, 1e-2), biases 0, each
conv filter's RMS capped at 0.1, random crops + flips (:func:`zfkeras.data.epochs.train_dataset`), and the
per-pixel training-set mean stored in the model's ``subtract_mean`` layer (so models take raw pixels).

One loop runs every :func:`make_strategy` strategy (Keras 3.15's ``model.fit`` fails under
``MultiWorkerMirroredStrategy``): ``strategy.run`` of one SGD step per distributed batch, losses
summed over replicas and divided by the global batch size, gradients all-reduced by the optimizer.
Keras callbacks (progress bar, TensorBoard, ``BackupAndRestore``, your own) are driven as in
``fit``. Each epoch's shuffle, crops and dropout masks depend only on ``(seed, epoch)`` and the
learning rate only on the recorded validation losses, so a killed run resumed from its backup ends
with the same weights as an uninterrupted one.

``config.precision`` is what the training step computes in (``"auto"``: :meth:`TrainConfig.resolved`);
the model's variables, its checkpoints, ``model.keras``, validation and exports stay float32
(:mod:`zfkeras.training.steps`). The run directory's layout is :class:`zfkeras.training.rundir.RunDir`'s.
"""

import dataclasses
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from zfkeras.data import Source, eval_dataset, subset
from zfkeras.data.epochs import READ_ERRORS, TrainingImages
from zfkeras.io.atomic import save_model, write_json
from zfkeras.nn.models import build_model
from zfkeras.training.callbacks import EpochCheckpoints, FirstLayerFilters, GuardedBackup
from zfkeras.training.config import TrainConfig
from zfkeras.training.rundir import HISTORY_KEYS, RunDir
from zfkeras.training.steps import Stepper, resolve_jit
from zfkeras.training.strategy import make_strategy, worker_role
from zfkeras.version import __version__

MEAN_IMAGES = 20_000  # images the training mean is computed over (a seeded sample of larger sets)


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
        train_part, val_part = subset(source, np.flatnonzero(~is_val)), subset(source, np.flatnonzero(is_val))
        return (dataclasses.replace(train_part, name=source.name), dataclasses.replace(val_part, name=source.name))
    flags = tf.constant(is_val)

    def part(keep_val):
        dataset = source.dataset.enumerate().filter(lambda i, example: tf.equal(tf.gather(flags, i), keep_val))
        return dataset.map(lambda i, example: example)

    common = dict(class_names=source.class_names, channels=source.channels, name=source.name, split=source.split, skip_corrupt=source.skip_corrupt)
    return (Source(dataset=part(False), num_examples=total - held_out, **common), Source(dataset=part(True), num_examples=held_out, **common))


def _epoch_seed(seed, epoch):
    """A seed for epoch ``epoch`` (0-based) of a run seeded ``seed``: data order, crops, dropout."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 1) % (2**31 - 1)


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


def _reset_dropout_seeds(model, seed, epoch):
    """Give every random layer an epoch-determined RNG state (Keras does not save it in backups)."""
    base = _epoch_seed(seed, epoch)
    for index, layer in enumerate(model.layers):
        for generator in getattr(layer, "_seed_generators", ()):
            generator.state.assign(np.asarray([(base + 104_729 * (index + 1)) % (2**31 - 1), 0]).astype(generator.state.dtype))


def _check_classes(config, train_source, val_source):
    for role, source in (("training", train_source), ("validation", val_source)):
        if source is not None and len(source.class_names) != config.num_classes:
            raise ValueError(f"config.num_classes is {config.num_classes} but {role} source {source.name} has {len(source.class_names)} classes")


def _prepare_model(config, strategy, images, model, compute_mean):
    """The compiled model to train, its variables made under ``strategy``'s scope.

    ``model`` None builds ``config.model_spec()``; otherwise a copy of ``model`` (architecture and
    weights) is trained, so a pretrained model passed in is never changed. ``config.frozen``
    layers are made non-trainable. With ``compute_mean`` the model's ``subtract_mean`` layer gets
    the mean image of the training images (``images``, a :class:`zfkeras.data.epochs.TrainingImages`).
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
        optimizer = keras.optimizers.SGD(config.lr, momentum=config.momentum)
        if config.precision == "mixed_float16":  # float16 gradients underflow without loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        trained.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
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
        raise ValueError(f"model {model.name!r} has no subtract_mean layer (zfkeras.nn.layers.SubtractMean) to hold the mean image")


def _callbacks(config, run, chief, model, steps, progress, extra, histograms):
    """Built-in callbacks (checkpoints, TensorBoard, filters, backup, progress) then ``extra``."""
    built_in = []
    if chief:
        built_in += [
            EpochCheckpoints(run, config.kept_epochs),
            keras.callbacks.TensorBoard(run.logs_dir, histogram_freq=int(histograms), write_graph=False, profile_batch=0),
            FirstLayerFilters(run.logs_dir),
        ]
    built_in.append(GuardedBackup(run.backup_dir, double_checkpoint=True))  # BackupAndRestore, refusing a full disk before h5py crashes on it
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
    jit_compile="auto",
):
    """Train a model as ``config`` says and write ``run_dir`` (see the module docstring).

    An unfinished run in ``run_dir`` with the same config resumes from its last completed epoch;
    the global Python/NumPy/TF seeds are set to ``config.seed``.

    Args:
        config: a :class:`TrainConfig`.
        train_source: a ``zfkeras.data.Source`` of training images (any size; resized and cropped).
        val_source: a Source for validation, or None to hold out ``config.val_split`` of the
            training source (:func:`split_source`; none if ``val_split`` is 0).
        run_dir: output directory.
        model: a Keras model to train instead of building ``config.model_spec()``: pretrained (fine-tuning;
            ``config.frozen`` layers kept fixed) or pre-built (any zfkeras-layered convnet with ``config.input_shape``
            and ``config.num_classes``). A copy is trained, ``model`` is not changed; pass it again to resume.
        compute_mean: set the model's mean image from the training set (default: only when the
            model is built here; a pretrained model keeps the mean it was trained with).
        callbacks: extra ``keras.callbacks.Callback`` objects, called after the built-in ones
            (``logs`` of ``on_epoch_end`` hold loss, accuracy, val_loss, val_accuracy, lr, seconds;
            of ``on_train_begin``, ``backup``: what :meth:`RunDir.recover_backup` did, if anything).
        progress: show Keras's progress bar for each epoch.
        strategy: a ``tf.distribute.Strategy`` (default ``make_strategy(config.strategy)``).
        metadata: extra JSON-able entries for ``config.json`` (e.g. ``{"command": ...}``).
        histograms: weight histograms in TensorBoard every epoch (~0.6 s an epoch, small model).
        cache, cache_budget: where resized training images come from (:mod:`zfkeras.data.epochs`); never
            changes the batches. A ``skip_corrupt`` source's unreadable files are skipped, counted in
            ``logs["skipped"]``, named in ``skipped_files.json``; else a CorruptImageError names the file.
        jit_compile: XLA for the training step, ``"auto"`` (GPUs only), ``"on"`` or ``"off"`` (:func:`resolve_jit`).

    Returns:
        ``(model, history)``: the trained Keras model and ``{key: [one value per epoch]}``.
    """
    strategy = strategy if strategy is not None else make_strategy(config.strategy)
    config = config.resolved(run_dir)
    # TF's global seed enters tf.data's shuffles: fix it so a run depends on config.seed alone.
    keras.utils.set_random_seed(config.seed)
    train_source, val_source = _sources(config, train_source, val_source)
    chief, run = _open_run(config, strategy, run_dir, train_source, val_source, model, metadata)
    compute_mean = model is None if compute_mean is None else compute_mean
    images = TrainingImages(train_source, config.input_shape[0], config.input_shape[2], cache=cache, cache_budget=cache_budget)
    model = _prepare_model(config, strategy, images, model, compute_mean)
    stepper = Stepper(model, strategy, config.precision, resolve_jit(jit_compile, strategy, model))
    val_dataset = _validation_batches(config, val_source)
    steps = math.ceil(train_source.num_examples / config.batch_size) if train_source.num_examples else None
    callback_list = _callbacks(config, run, chief, model, steps, progress, callbacks, histograms)

    model.stop_training, model._initial_epoch = False, None
    callback_list.on_train_begin({"backup": note} if (note := run.recover_backup()) else None)  # a backup a kill truncated: the one before
    first_epoch = model._initial_epoch or 0  # set by BackupAndRestore when resuming
    history = run.load_history(first_epoch)
    monitor = "val_loss" if val_dataset is not None else "loss"
    logs = {}
    for epoch in range(first_epoch, config.epochs):
        lr = annealed_lr(config, history[monitor])
        logs = _run_epoch(config, epoch, lr, model, stepper, images, val_dataset, callback_list)
        _record_epoch(run, chief, history, epoch, logs, images)
        callback_list.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    if chief:
        save_model(model, run.model_file)
    callback_list.on_train_end(logs)
    return model, history


def _validation_batches(config, val_source):
    """Centre-crop batches of the validation source, or None without one."""
    if val_source is None:
        return None
    size, channels = config.input_shape[0], config.input_shape[2]
    return eval_dataset(val_source, size, channels, max(config.batch_size, 256), crops="center")


def _record_epoch(run, chief, history, epoch, logs, images):
    """Append epoch ``epoch``'s logs to ``history`` and write it (and the skipped files, if any)."""
    if logs["skipped"] and chief:
        write_json(run.skipped_file, [str(f) for f in images.skipped_files()])
    history["epoch"].append(epoch + 1)
    for key in HISTORY_KEYS[1:]:
        history[key].append(logs.get(key))
    write_json(run.history_file, history)


def _sources(config, train_source, val_source):
    """The training and validation sources: ``val_source``, or ``config.val_split`` of the training one."""
    _check_classes(config, train_source, val_source)
    if val_source is None and config.val_split:
        train_source, val_source = split_source(train_source, config.val_split, config.seed)
    return train_source, val_source


def _open_run(config, strategy, run_dir, train_source, val_source, model, metadata):
    """Check ``run_dir`` (a finished run is never overwritten; an unfinished one resumes only with the
    same config) and write its ``config.json``. Returns ``(chief, RunDir)``: only the chief writes
    the run; other workers keep just what they need to resume, in ``run_dir/worker-N``."""
    chief, task_id = worker_role(strategy)
    run = RunDir(run_dir) if chief else RunDir(run_dir).worker(task_id)
    record = {
        "config": config.to_dict(),
        "model": "built from config" if model is None else f"given: {model.name}",
        "data": train_source.name,
        "val_data": val_source.name if val_source is not None else None,
        "num_train": train_source.num_examples,
        "num_val": val_source.num_examples if val_source is not None else 0,
        "class_names": list(train_source.class_names),
        "zfkeras_version": __version__,
        **(metadata or {}),
    }
    run.check_trainable(record, defaults=TrainConfig().to_dict())
    os.makedirs(run.path, exist_ok=True)
    write_json(run.config_file, record)
    return chief, run


def _run_epoch(config, epoch, lr, model, stepper, images, val_dataset, callback_list):
    """Train epoch ``epoch`` (0-based) at ``lr``, then validate; returns its logs (loss, accuracy,
    val_loss, val_accuracy, lr, seconds, skipped). A corrupt file raises a CorruptImageError naming it."""
    started = time.monotonic()
    model.optimizer.learning_rate.assign(lr)
    _reset_dropout_seeds(model, config.seed, epoch)
    callback_list.on_epoch_begin(epoch)
    epoch_data = images.epoch(config.batch_size, _epoch_seed(config.seed, epoch), with_ids=False, flip=config.flip)
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
