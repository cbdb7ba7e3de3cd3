"""Quantization-aware training under tf.distribute: the strategy from its name, each process's role in a
multi-worker cluster (TF_CONFIG), the training loop Keras' fit cannot run under
MultiWorkerMirroredStrategy (keras-team/keras#20585), sharding streamed data by file per worker,
and BackupAndRestore's resume."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfshrink import _tf
from tfshrink.errors import UserError, first_line
from tfshrink.qat.data import SHUFFLE_BUFFER, Dataset, Streamed

STRATEGIES = ("mirrored", "multi-worker")
Progress = Callable[[int, int], None]


def make_strategy(strategy: str | Any) -> Any:
    """The tf.distribute strategy `strategy` names ("mirrored", "multi-worker"), or `strategy`
    itself when it is one."""
    tf = _tf.tf()
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if strategy == "multi-worker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError, KeyError) as exc:  # a bad TF_CONFIG, or TF already running
            raise UserError(f"--strategy multi-worker: {first_line(exc)}",
                            "set TF_CONFIG as TensorFlow documents it (cluster: worker addresses; task: this "
                            "worker's type and index), and start training in a fresh process") from None
    raise UserError(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}", "or leave it out")


def cluster_role(distribution: Any) -> tuple[str, int, int, bool]:
    """(task type, task index, number of workers, is chief) of this process: the chief is the
    "chief" task, else worker 0, as TF_CONFIG sets them; a single process is its own chief."""
    resolver = getattr(distribution, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return "worker", 0, 1, True
    kind, index = str(resolver.task_type), int(resolver.task_id or 0)
    workers = len(spec.get("chief", [])) + len(spec.get("worker", []))
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in spec)
    return kind, index, workers, chief


def backup_callback(backup: Path, notes: list[str]) -> Any:
    keras = _tf.tf().keras
    if (backup / "training_metadata.json").is_file():
        notes.append(f"resumed from the training state backed up in {backup}")
    return keras.callbacks.BackupAndRestore(str(backup))


def resumed(qat: Any, epochs: int, backup: Path | None, notes: list[str]) -> None:
    # BackupAndRestore tells fit where to start through the model's _initial_epoch (Keras reads
    # it the same way): the epochs that ran here are the ones after it.
    start = int(getattr(qat, "_initial_epoch", 0) or 0)
    if backup is not None and start:
        notes.append(f"epochs {start + 1}..{epochs} ran here; 1..{start} came from the backup")


def fit_distributed(qat: Any, loss: Any, train: Dataset | Streamed, distribution: Any, epochs: int,
                     batch_size: int, seed: int, backup: Path | None, progress: Progress | None,
                     notes: list[str]) -> tuple[list[float], bool]:
    """Train `qat` (built and compiled under `distribution`) with `strategy.run`; returns the loss
    per epoch and whether this process is the chief."""
    tf = _tf.tf()
    keras = tf.keras
    kind, index, workers, chief = cluster_role(distribution)
    replicas = int(distribution.num_replicas_in_sync)
    name = ("MultiWorkerMirroredStrategy" if isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy)
            else type(distribution).__name__)
    notes.append(f"trained under {name}: {replicas} replica(s) on {workers} worker(s); this process is "
                 f"{kind} {index}" + (" (the chief: it writes the files)" if chief else " (the chief writes the files)"))
    if isinstance(train, Dataset):
        steps = -(-train.count // batch_size)
        arrays = tf.data.Dataset.from_tensor_slices((train.x, train.y))
        batches = arrays.shuffle(train.count, seed=seed, reshuffle_each_iteration=True).batch(batch_size)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        distributed = distribution.experimental_distribute_dataset(batches.with_options(options))
        epoch_samples = train.count
        per_epoch = True
    else:
        if batch_size % replicas:
            raise UserError(f"--batch-size {batch_size} is the global batch: it must split evenly among "
                            f"{replicas} replicas", f"e.g. --batch-size {max(replicas, batch_size - batch_size % replicas)}")
        steps = train.count // batch_size
        if steps < 1:
            raise UserError(f"{train.path}: {train.count} samples do not fill one global batch of {batch_size}",
                            "lower --batch-size")
        distributed = distribution.distribute_datasets_from_function(
            sharded(train, batch_size, seed, workers, notes))
        epoch_samples = steps * batch_size
        per_epoch = False
        if steps * batch_size < train.count:
            notes.append(f"{train.count - steps * batch_size} sample(s) beyond the last full global batch are left "
                         "out of each epoch (every worker takes the same number of steps)")
    optimizer = qat.optimizer
    variables = qat.trainable_variables

    def replica_step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            # Keras's losses already divide their batch mean by the replica count under a
            # strategy (keras.losses.Loss, "sum_over_batch_size"); the layers' own losses do not.
            scaled = loss(y, qat(x, training=True))
            if qat.losses:
                scaled = scaled + tf.add_n(qat.losses) / replicas
        optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables, strict=True))
        return scaled * replicas

    @tf.function
    def train_step(x: Any, y: Any) -> Any:
        return distribution.reduce(tf.distribute.ReduceOp.MEAN, distribution.run(replica_step, args=(x, y)),
                                   axis=None)

    callbacks: list[Any] = []
    if backup is not None:
        own = backup / f"{kind}-{index}" if workers > 1 else backup
        callbacks.append(backup_callback(own, notes))
    hooks = keras.callbacks.CallbackList(callbacks, model=qat)
    with distribution.scope():
        optimizer.build(variables)  # its slots mirrored too, before a backup restores them
        hooks.on_train_begin()
    start = int(getattr(qat, "_initial_epoch", 0) or 0)  # set by BackupAndRestore when it restored
    losses: list[float] = []
    iterator = None if per_epoch else iter(distributed)
    for epoch in range(start, epochs):
        hooks.on_epoch_begin(epoch)
        if per_epoch:
            iterator = iter(distributed)
        total = 0.0
        for step in range(steps):
            x, y = next(iterator)
            total += float(train_step(x, y))
            if progress is not None:
                progress(epoch * epoch_samples + min((step + 1) * batch_size, epoch_samples), epochs * epoch_samples)
        losses.append(total / steps)
        hooks.on_epoch_end(epoch, {"loss": losses[-1]})
    hooks.on_train_end()  # BackupAndRestore removes its backup
    if backup is not None and workers > 1:
        with contextlib.suppress(OSError):
            backup.rmdir()  # once every worker has removed its own
    resumed(qat, epochs, backup, notes)
    return losses, chief


def sharded(train: Streamed, batch_size: int, seed: int, workers: int, notes: list[str]) -> Callable[[Any], Any]:
    """The per-worker input pipeline of a stream: TFRecords sharded by file (every count-th file),
    else (an entry point, or fewer files than workers) by record; shuffled, repeated, batched to
    the per-replica batch."""

    def pipeline(context: Any) -> Any:
        pipelines, index = context.num_input_pipelines, context.input_pipeline_id
        if pipelines > 1 and train.source.kind == "tfrecord" and len(train.source.files) >= pipelines:
            pairs = train.pairs(shard=(index, pipelines), shuffle_files=seed)
        else:
            pairs = train.pairs(shuffle_files=seed if train.source.kind == "tfrecord" else None)
            if pipelines > 1:
                pairs = pairs.shard(pipelines, index)
        pairs = pairs.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True).repeat()
        return pairs.batch(context.get_per_replica_batch_size(batch_size), drop_remainder=True).prefetch(1)

    source = train.source
    if workers > 1 and source.kind == "tfrecord" and len(source.files) >= workers:
        notes.append(f"{len(source.files)} TFRecord file(s), sharded by file among {workers} workers")
    elif workers > 1:
        notes.append(f"{'the entry point' if source.kind != 'tfrecord' else 'fewer TFRecord files than workers'}: "
                     f"sharded by record among {workers} workers (every worker reads all of it)")
    return pipeline
