"""Distribution strategies by name (``auto``, ``mirrored``, ``multiworker``, ``cpu:N``) and each process's role."""

import json
import os

import tensorflow as tf

STRATEGY_FORMS = "'auto', 'mirrored', 'multiworker' or 'cpu:N'"


def make_strategy(name="auto"):
    """A ``tf.distribute.Strategy`` from a name.

    ``auto``: MirroredStrategy over every visible GPU (:func:`auto_strategy`), or the default (one
    device) strategy without GPUs. ``mirrored``: MirroredStrategy over all visible devices. ``multiworker``:
    MultiWorkerMirroredStrategy over the cluster in ``TF_CONFIG``. ``cpu:N``: MirroredStrategy over N
    logical CPU devices (so the distributed path runs on a CPU machine).

    ``cpu:N`` and ``multiworker`` must be chosen before TensorFlow runs anything in this process
    (before any data set or model is made); otherwise a ValueError says so.
    """
    if not isinstance(name, str):
        raise ValueError(f"strategy must be a string ({STRATEGY_FORMS}), got {name!r}")
    key = name.strip().lower()
    if key == "auto":
        return auto_strategy(tf.config.list_logical_devices("GPU"))
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


def auto_strategy(gpus):
    """The ``auto`` strategy for the logical devices ``gpus`` (``tf.config.list_logical_devices("GPU")``):
    MirroredStrategy over every one of them, or the default (one device) strategy when there are none."""
    if not gpus:
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy([device.name for device in gpus])


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
