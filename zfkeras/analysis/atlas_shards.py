"""Large atlas scans: resumable shards of images, scanned by the replicas of a ``tf.distribute``
strategy and merged exactly (:class:`~zfkeras.analysis.atlas.AtlasScan`).

The images ``0 .. count - 1`` are cut into shards of ``shard_images`` images (a multiple of the
batch size, so every batch is the same whatever the sharding or the number of replicas). Shards
are dealt round-robin to the strategy's replicas: one process with ``MirroredStrategy`` (e.g. over
``cpu:2`` logical devices) runs its replicas in lockstep, one batch of each replica's shard per
``strategy.run``; ``MultiWorkerMirroredStrategy`` runs one process per worker, each on its own
shards. A finished shard's state goes to the store (written atomically), so a killed run continues
from its last finished shard. At the end every process gathers the others' states with
``strategy.gather`` and merges them: each shard is counted once, and as shard states merge exactly,
the result equals one process's over the same shards, bit for bit.
"""

import io

import numpy as np
import tensorflow as tf

from zfkeras.analysis.atlas import AtlasScan, Folder, unit_reducer
from zfkeras.io.validation import positive_int


def shard_ranges(count, shard_images, batch_size):
    """``[(start, count)]`` of the shards of ``count`` images: ``shard_images`` rounded up to a
    multiple of ``batch_size`` each, the last one shorter."""
    positive_int("shard_images", shard_images)
    positive_int("batch_size", batch_size)
    size = -(-int(shard_images) // int(batch_size)) * int(batch_size)
    return [(start, min(size, int(count) - start)) for start in range(0, int(count), size)]


def local_replicas(strategy):
    """Global replica ids (``replica_id_in_sync_group``) of this process's replicas, in local order."""
    ids = strategy.experimental_distribute_values_from_function(lambda context: context.replica_id_in_sync_group)
    return [int(i) for i in strategy.experimental_local_results(ids)]


def scan_sharded(probe, read, count, maps, classes, *, batch_size, shard_images=2048, strategy=None, store=None, progress=None, reducer=None):
    """The :class:`AtlasScan` of images ``0 .. count - 1``, shard by shard (module docstring).

    Args:
        probe: a :class:`~zfkeras.nn.probe.Probe`.
        read: ``read(start, count)`` -> iterable of ``(images, labels)`` numpy batches of
            ``batch_size`` images (the last may be shorter) of those images, in order.
        count: number of images.
        maps, classes: as in :class:`AtlasScan`.
        strategy: a ``tf.distribute.Strategy`` (default: the current one).
        store: where finished shards are kept and found again (:class:`zfkeras.io.shards.ShardStore`), or None.
        progress: optional callable, given the number of images done (scanned or found in the store).
        reducer: :func:`~zfkeras.analysis.atlas.unit_reducer` of ``probe`` and ``maps`` (made if None;
            pass one to reuse its trace across scans).

    Returns:
        ``(scan, info)``: the merged :class:`AtlasScan` (the same on every process) and
        ``{"shards", "found", "scanned"}``: the number of shards, those found in the store, those
        this process scanned.
    """
    strategy = strategy or tf.distribute.get_strategy()
    shards = shard_ranges(count, shard_images, batch_size)
    ids, replicas = local_replicas(strategy), strategy.num_replicas_in_sync
    found = sorted(store.done() & set(range(len(shards)))) if store is not None else []
    # Every process says which shards it found; the first replica holding a shard contributes it.
    bitmap = np.zeros(len(shards), "int32")
    bitmap[found] = 1
    held = _gather(strategy, ids, bitmap, np.zeros(len(shards), "int32")).reshape(replicas, len(shards))
    owner = np.where(held.any(axis=0), held.argmax(axis=0), -1)
    state = None
    for index in found:
        if owner[index] == ids[0]:
            state = _merged(state, AtlasScan.from_arrays(store.load(index)))
            if progress is not None:
                progress(shards[index][1])
    plan = [index for index in range(len(shards)) if owner[index] < 0]
    reducer = reducer or unit_reducer(probe, maps)
    scanned = []
    for first in range(0, len(plan), replicas):
        mine = {replica: plan[first + replica] for replica in ids if first + replica < len(plan)}
        for index, scan in _scan_round(strategy, ids, reducer, read, shards, mine, (maps, classes, probe.input_shape), progress).items():
            if store is not None:
                store.save(index, scan.to_arrays())
            state = _merged(state, scan)
            scanned.append(index)
    if len(ids) < replicas:  # other processes scanned the rest: gather their states
        state = _gather_states(strategy, ids, state)
    if state is None:
        state = AtlasScan(maps, classes)
    return state, {"shards": len(shards), "found": len(found), "scanned": sorted(scanned)}


def _merged(state, scan):
    return scan if state is None else state.merge(scan)


def _scan_round(strategy, ids, reducer, read, shards, mine, setting, progress):
    """Scan one shard per local replica (``mine`` ``{replica id: shard index}``), in lockstep;
    ``setting`` is ``(maps, classes, input_shape)``."""
    maps, classes, input_shape = setting
    iterators = {replica: iter(read(*shards[index])) for replica, index in mine.items()}
    scans = {replica: AtlasScan(maps, classes) for replica in mine}
    folders = {replica: Folder(scans[replica], shards[index][0]) for replica, index in mine.items()}
    idle = np.zeros((1, *input_shape), "float32")  # a replica without a batch runs one blank image (empty batches fail in max pools)
    while iterators:
        batches = {}
        for replica in list(iterators):
            batch = next(iterators[replica], None)
            if batch is None:
                del iterators[replica]
            else:
                batches[replica] = (np.asarray(batch[0], "float32"), np.asarray(batch[1]))
        if not batches:
            break
        values = strategy.experimental_distribute_values_from_function(
            lambda context, batches=batches: tf.constant(batches.get(context.replica_id_in_sync_group, (idle,))[0])
        )
        results = strategy.experimental_local_results(strategy.run(reducer, args=(values,)))
        for replica, result in zip(ids, results):
            if replica in batches:
                folders[replica].add({layer: tuple(np.asarray(v) for v in value) for layer, value in result.items()}, batches[replica][1])
                if progress is not None:
                    progress(len(batches[replica][1]))
    for folder in folders.values():
        folder.flush()
    return {mine[replica]: scan for replica, scan in scans.items()}


def _gather(strategy, ids, mine, others):
    """``strategy.gather`` of a 1-D int32 array per replica (``mine`` from this process's first
    replica, ``others`` from its other replicas), concatenated in replica order."""
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(mine if context.replica_id_in_sync_group == ids[0] else others)
    )
    return np.asarray(strategy.gather(values, axis=0))


def _gather_states(strategy, ids, state):
    """Every process's state, gathered as bytes and merged."""
    blob = b""
    if state is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **state.to_arrays())
        blob = buffer.getvalue()
    padded = np.frombuffer(blob + b"\0" * (-len(blob) % 4), "int32")
    lengths = _gather(strategy, ids, np.asarray([len(blob)], "int32"), np.asarray([0], "int32"))
    data = _gather(strategy, ids, padded, np.zeros(0, "int32")).tobytes()
    merged, offset = None, 0
    for length in lengths:
        if length:
            with np.load(io.BytesIO(data[offset : offset + int(length)]), allow_pickle=False) as arrays:
                merged = _merged(merged, AtlasScan.from_arrays({name: arrays[name] for name in arrays.files}))
        offset += int(length) + (-int(length) % 4)
    return merged
