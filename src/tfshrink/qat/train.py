"""`tfshrink qat`: quantization-aware fine-tuning of a Keras model, then (optionally) its fully
int8 TFLite model, with float vs QAT accuracy on validation data.

Training data is an .npz (x and y, loaded whole) or a streamed dataset (tfshrink.data.stream:
TFRecord files read per a parse spec, a .toml/.json dataset file, or a `module:function` entry
point returning a tf.data.Dataset of (x, y) pairs), read record by record on every epoch.

With a `strategy` the training runs under tf.distribute: "mirrored" (MirroredStrategy, this
machine's devices) or "multi-worker" (MultiWorkerMirroredStrategy, the workers TF_CONFIG lists,
one process per worker, each running the same command). Keras 3's `fit` cannot run under
MultiWorkerMirroredStrategy (keras-team/keras#20585), so both strategies use one training loop
here: `strategy.run` of a step that takes the gradient of the loss divided by the replica count
(Keras's losses divide under a strategy; the optimizer sums the replicas' gradients), the same
Adam, and the quantizers' ranges taken over the whole global batch
(tfshrink.model.keras_layers). `batch_size` is the global batch. Arrays are split among the
replicas batch by batch (tf.data's DATA sharding); streamed TFRecords are sharded by file, one
shard per worker. `backup_dir` checkpoints after every epoch with Keras's BackupAndRestore
callback, and a rerun resumes from the last finished epoch. Only the chief writes the .keras and
the .tflite. Without a strategy, training is Keras's `fit`, as it always was.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.data import stream
from tfshrink.errors import UserError, first_line
from tfshrink.fileio import atomic_path, check_output
from tfshrink.model import detect_format
from tfshrink.model.tflite import TFLiteModel
from tfshrink.qat.convert import convert_qat
from tfshrink.qat.keras import quantize_model, quantized_layers

Progress = Callable[[int, int], None]
X_KEYS = stream.X_KEYS
Y_KEYS = ("y", "labels", "targets")
STRATEGIES = ("mirrored", "multi-worker")
SHUFFLE_BUFFER = 1024  # streamed training records held for shuffling (with the files' order, reshuffled each epoch)
EVAL_BATCH = 256
SCAN_BATCH = 1024


@dataclass(frozen=True)
class Labels:
    """What the loss is chosen from: the labels' dtype kind, rank (with the batch dim), width (of
    2-D labels), range, and whether every value is 0 or 1."""

    kind: str
    ndim: int
    width: int | None
    low: float
    high: float
    binary: bool

    @classmethod
    def of(cls, y: np.ndarray) -> Labels:
        return cls(y.dtype.kind, y.ndim, int(y.shape[1]) if y.ndim == 2 else None, float(y.min()), float(y.max()),
                   bool(np.all((y == 0) | (y == 1))))

    def merge(self, other: Labels) -> Labels:
        return Labels(self.kind, self.ndim, self.width, min(self.low, other.low), max(self.high, other.high),
                      self.binary and other.binary)


@dataclass(frozen=True)
class Dataset:
    """Training or validation arrays from an .npz, held whole."""

    path: str
    x: np.ndarray
    y: np.ndarray

    @property
    def count(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def labels(self) -> Labels:
        return Labels.of(self.y)


@dataclass(frozen=True)
class Streamed:
    """Training or validation (x, y) pairs streamed from `source`: `count` pairs, never held."""

    path: str
    source: stream.Source
    count: int
    sample_shape: tuple[int, ...]
    label_summary: Labels
    make: Callable[..., Any]  # (shard=None, shuffle_files=None) -> tf.data.Dataset of (x, y) pairs

    def labels(self) -> Labels:
        return self.label_summary

    def pairs(self, **options: Any) -> Any:
        return self.make(**options)

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        try:
            yield from self.make().batch(size).as_numpy_iterator()
        except stream.tf_errors() as exc:
            raise UserError(f"{self.path}: cannot read the dataset: {first_line(exc)}",
                            "check the files against the parse spec") from None



@dataclass
class QatResult:
    """What `qat_keras` did: training settings, losses, accuracies, the files it wrote."""

    source: str
    output: str
    tflite: str | None
    epochs: int
    batch_size: int
    learning_rate: float
    loss: str
    metric: str  # "accuracy" (classification) or "mse"
    train_samples: int
    val_samples: int
    history: list[float]
    layers: dict[str, list[str]]
    float_metric: float | None = None
    qat_metric: float | None = None  # the fake-quant Keras model
    int8_metric: float | None = None  # the converted .tflite
    convert: Any = None  # QatConvertResult
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "output": self.output, "tflite": self.tflite, "epochs": self.epochs,
                "batch_size": self.batch_size, "learning_rate": self.learning_rate, "loss": self.loss,
                "metric": self.metric, "train_samples": self.train_samples, "val_samples": self.val_samples,
                "loss_per_epoch": self.history, "layers": self.layers,
                "float": self.float_metric, "qat": self.qat_metric, "int8_tflite": self.int8_metric,
                "convert": self.convert.to_json() if self.convert is not None else None, "notes": self.notes}


def load_dataset(path: str | Path, input_name: str, what: str) -> Dataset:
    """Inputs and labels from an .npz: inputs under `x` (or the model's input name), labels under `y`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p}: no such file", "give an .npz with arrays x (inputs) and y (labels)")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception:
        raise UserError(f"{what} {p}: cannot read as .npz", "save it with numpy.savez(path, x=inputs, y=labels)") from None
    x_key = next((k for k in (input_name, *X_KEYS) if k in arrays), None)
    y_key = next((k for k in Y_KEYS if k in arrays), None)
    if x_key is None or y_key is None:
        raise UserError(f"{what} {p}: needs arrays x (inputs) and y (labels); it has {', '.join(arrays) or 'none'}",
                        "save it with numpy.savez(path, x=inputs, y=labels)")
    x, y = arrays[x_key], arrays[y_key]
    if len(x) != len(y) or not len(x):
        raise UserError(f"{what} {p}: {len(x)} inputs but {len(y)} labels", "give one label per input")
    for name, array in ((x_key, x), (y_key, y)):
        if array.dtype.kind not in "fiub":
            raise UserError(f"{what} {p}: array {name} holds {array.dtype}, not numbers", "save numeric arrays")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise UserError(f"{what} {p}: array {name} holds NaN or infinite values", "clean the data first")
    return Dataset(str(p), x.astype(np.float32) if x.dtype.kind == "f" else x, y)


def load_data(path: str | Path, input_name: str, what: str, spec: str | Path | None = None,
              sample_shape: tuple[Any, ...] | None = None) -> Dataset | Streamed:
    """Training or validation data: an .npz (load_dataset), or a streamed dataset when `path` is
    TFRecords (read per the parse `spec`), a .toml/.json dataset file or a module:function entry
    point."""
    if stream.is_streamed(path, spec):
        return load_streamed(path, input_name, what, spec, sample_shape)
    return load_dataset(path, input_name, what)


def load_streamed(path: str | Path, input_name: str, what: str, spec: str | Path | None = None,
                  sample_shape: tuple[Any, ...] | None = None) -> Streamed:
    """(x, y) pairs streamed from `path` (see load_data). One pass now counts them, checks their
    shapes and values and summarizes the labels (memory stays flat); training reads them again.
    Features or dict keys name x (the model's input name, or x/inputs/images/features) and y
    (y/labels/targets); an entry point may also yield (x, y) tuples, batched or not."""
    tf = _tf.tf()
    text = str(path)
    where = f"{what} {text}"
    source = stream.open_source(text, spec, what=what)
    ds0 = stream.dataset(source, what=what)
    element = ds0.element_spec
    if isinstance(element, dict):
        names = (input_name, input_name.split(":")[0], *X_KEYS)
        x_key = next((k for k in names if k in element), None)
        y_key = next((k for k in Y_KEYS if k in element), None)
        if x_key is None or y_key is None:
            raise UserError(f"{where}: needs x (inputs) and y (labels); it has {', '.join(element) or 'none'}",
                            'name them in the parse spec, e.g. "image=x:float32:28,28,1; label=y:int64"')

        def split(ds: Any) -> Any:
            return ds.map(lambda e: (e[x_key], e[y_key]))
    elif isinstance(element, (tuple, list)) and len(element) >= 2:
        def split(ds: Any) -> Any:
            return ds.map(lambda *e: (e[0], e[1]))
    else:
        raise UserError(f"{where}: the dataset must yield (x, y) pairs or dicts with x and y",
                        "return a dataset of (inputs, labels)")
    x_spec, y_spec = split(ds0).element_spec
    batched = sample_shape is not None and x_spec.shape.rank == len(sample_shape) + 1

    def make(shard: tuple[int, int] | None = None, shuffle_files: int | None = None) -> Any:
        ds = split(stream.dataset(source, shard=shard, shuffle_files=shuffle_files, what=what))
        if batched:
            ds = ds.unbatch()
        return ds.map(lambda x, y: (tf.cast(x, tf.float32) if x.dtype.is_floating else x, y))

    count = 0
    labels: Labels | None = None
    shape: tuple[int, ...] | None = None
    try:
        for x, y in make().batch(SCAN_BATCH).as_numpy_iterator():
            shape = shape or tuple(x.shape[1:])
            if tuple(x.shape[1:]) != shape:
                raise UserError(f"{where}: inputs change shape from {list(shape)} to {list(x.shape[1:])}",
                                "give every sample the same shape (SHAPE in the parse spec)")
            for name, array in (("x", x), ("y", y)):
                if array.dtype.kind not in "fiub":
                    raise UserError(f"{where}: {name} holds {array.dtype}, not numbers", "feed numeric tensors")
                if array.dtype.kind == "f" and not np.isfinite(array).all():
                    raise UserError(f"{where}: {name} holds NaN or infinite values", "clean the data first")
            summary = Labels.of(y)
            labels = summary if labels is None else labels.merge(summary)
            count += len(x)
    except stream.tf_errors() as exc:
        raise UserError(f"{where}: cannot read the dataset: {first_line(exc)}",
                        "check the files against the parse spec") from None
    if not count or labels is None or shape is None:
        raise UserError(f"{where}: the dataset holds no samples", "check that it holds records")
    return Streamed(text, source, count, shape, labels, make)


def _loss_for(model: Any, y: Labels, where: str) -> tuple[str, Any, str]:
    """(name, Keras loss, metric) chosen from the labels and the output layer."""
    keras = _tf.tf().keras
    out_shape = tuple(model.outputs[0].shape)
    classes = out_shape[-1] if out_shape else None
    probabilities = _ends_in_softmax(model)
    if y.kind in "iu" and y.ndim == 1 and classes and classes > 1:
        if y.high >= classes or y.low < 0:
            raise UserError(f"{where}: labels run from {y.low:g} to {y.high:g}, the model has {classes} classes",
                            "labels must be class indices 0..classes-1")
        return ("sparse_categorical_crossentropy" + ("" if probabilities else " (from logits)"),
                keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities), "accuracy")
    if y.ndim == 2 and classes and y.width == classes and classes > 1 and y.binary:
        return ("categorical_crossentropy" + ("" if probabilities else " (from logits)"),
                keras.losses.CategoricalCrossentropy(from_logits=not probabilities), "accuracy")
    return "mean_squared_error", keras.losses.MeanSquaredError(), "mse"


def _ends_in_softmax(model: Any) -> bool:
    last = model.layers[-1]
    inner = getattr(last, "layer", last)
    if type(inner).__name__ == "Softmax":
        return True
    activation = getattr(inner, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def _score(predict: Callable[[np.ndarray], np.ndarray], data: Dataset | Streamed, metric: str) -> float:
    """Accuracy (%) or mean squared error of `predict` on `data`: an .npz in one go, a stream batch
    by batch."""
    if isinstance(data, Dataset):
        out = predict(data.x)
        if metric == "accuracy":
            truth = data.y if data.y.ndim == 1 else np.argmax(data.y, axis=1)
            return 100.0 * float(np.mean(np.argmax(out, axis=-1) == truth))
        return float(np.mean((out.reshape(data.y.shape) - data.y) ** 2))
    hits = 0.0
    squared = 0.0
    count = 0
    for x, y in data.batches(EVAL_BATCH):
        out = predict(x)
        if metric == "accuracy":
            truth = y if y.ndim == 1 else np.argmax(y, axis=1)
            hits += float(np.sum(np.argmax(out, axis=-1) == truth))
            count += len(truth)
        else:
            squared += float(np.sum((out.reshape(y.shape) - y) ** 2))
            count += y.size
    if metric == "accuracy":
        return 100.0 * (hits / count)
    return squared / count


def _batched_call(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Predict by calling the model on batches: under a strategy, Keras's predict would spread the
    batches over the workers; this runs on each worker's own copy of the (same) weights."""

    def predict(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(model(x[i:i + EVAL_BATCH], training=False))
                               for i in range(0, len(x), EVAL_BATCH)])

    return predict


def tflite_predict(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """Run a single-input .tflite one sample at a time (its batch is fixed to 1) on float inputs."""

    def predict(x: np.ndarray) -> np.ndarray:
        with _tf.quiet_native():
            model = TFLiteModel(Path(path))
        try:
            name, out = model.inputs[0].name, model.outputs[0].name
            return np.concatenate([model.run({name: x[i:i + 1]})[out] for i in range(len(x))])
        finally:
            model.close()

    return predict


def qat_keras(source: str | Path, data: str | Path, output: str | Path, *, epochs: int, val: str | Path | None = None,
              learning_rate: float = 1e-4, batch_size: int = 32, tflite: str | Path | None = None,
              input_type: str = "float32", output_type: str = "float32", seed: int = 0,
              progress: Progress | None = None, data_spec: str | Path | None = None,
              strategy: str | Any | None = None, backup_dir: str | Path | None = None) -> QatResult:
    """Fine-tune the Keras model at `source` with quantization-aware training on `data` for
    `epochs`, save the QAT model to `output` (.keras) and, with `tflite`, its fully int8 TFLite
    model (ranges from training, no calibration). With `val`, measure the float model, the QAT
    model and the int8 model on it. The loss follows the labels: integer class indices -> sparse
    categorical cross-entropy, one-hot -> categorical, anything else -> mean squared error (from
    logits unless the model ends in softmax). Adam at `learning_rate`.

    `data` and `val`: an .npz with x and y, or a streamed dataset: TFRecord files (a glob) read
    per the parse spec `data_spec` (features named x and y, e.g. "image=x:float32:8,8,1;
    label=y:int64"), a .toml/.json dataset file, or a module:function entry point returning a
    tf.data.Dataset of (x, y); see tfshrink.data.stream.

    `strategy`: None (Keras's fit in this process), "mirrored" (MirroredStrategy over this
    machine's devices), "multi-worker" (MultiWorkerMirroredStrategy over the cluster in TF_CONFIG;
    start the same call in every worker, before this process has run anything in TensorFlow),
    or a tf.distribute.Strategy. `batch_size` is the global batch. Only the chief writes `output`
    and `tflite`. `backup_dir`: back up the training state after every epoch (Keras's
    BackupAndRestore; per worker under a multi-worker strategy) and resume from it when a
    previous run was interrupted; removed when training finishes.
    `progress(done, total)` counts the training samples processed.
    """

    tf = _tf.tf()
    keras = tf.keras
    src = Path(source)
    if epochs < 1:
        raise UserError(f"--epochs {epochs} must be at least 1", "e.g. --epochs 3")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size} must be at least 1", "e.g. --batch-size 32")
    if not learning_rate > 0:
        raise UserError(f"--lr {learning_rate} must be positive", "e.g. --lr 1e-4")
    out_path = check_output(output, [src])
    if out_path.suffix != ".keras":
        raise UserError(f"{out_path}: the QAT model is saved as Keras 3 .keras", "give -o NAME.keras")
    tfl_path = check_output(tflite, [src, out_path]) if tflite is not None else None
    backup = Path(backup_dir) if backup_dir is not None else None
    if backup is not None and backup.exists() and not backup.is_dir():
        raise UserError(f"--backup-dir {backup}: a file is in the way", "give a folder (it is created)")

    fmt, _ = detect_format(src)
    if fmt != "keras":
        raise UserError(f"{src}: `tfshrink qat` trains Keras models, this is a {fmt} model",
                        "TF1 graphs: use tfshrink.qat.create_training_graph / create_eval_graph in your training "
                        "script (see examples/qat_tf1_digits.py)")
    # Before anything runs in TensorFlow: MultiWorkerMirroredStrategy configures collective ops
    # at start-up.
    distribution = make_strategy(strategy) if strategy is not None else None
    try:
        model = keras.models.load_model(str(src), compile=False)
    except Exception as exc:  # Keras raises many kinds
        raise UserError(f"{src}: cannot load the Keras model: {str(exc).splitlines()[0][:200]}",
                        "the file is truncated or corrupt, or needs custom objects") from None
    if len(getattr(model, "inputs", None) or []) != 1 or len(getattr(model, "outputs", None) or []) != 1:
        raise UserError(f"{src}: `tfshrink qat` trains single-input, single-output models",
                        "use tfshrink.qat.quantize_model and your own training loop for others")
    input_name = str(model.inputs[0].name)
    expected = tuple(model.inputs[0].shape)[1:]
    train = load_data(data, input_name, "--data", data_spec, expected)
    valid = load_data(val, input_name, "--val", data_spec, expected) if val is not None else None
    for d in (train, valid):
        if d is None:
            continue
        if tuple(d.sample_shape) != expected:
            raise UserError(f"{d.path}: inputs have shape {list(d.sample_shape)} per sample, the model takes "
                            f"{list(expected)}", "give inputs shaped like the model's input")
    loss_name, loss, metric = _loss_for(model, train.labels(), str(src))
    float_metric = _score(lambda x: model.predict(x, verbose=0, batch_size=256), valid, metric) if valid else None
    notes: list[str] = []
    keras.utils.set_random_seed(seed)
    if distribution is None:
        qat = quantize_model(model)
        qat.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
        losses, chief = _fit(qat, train, epochs, batch_size, seed, backup, progress, notes), True
        predict = lambda x: qat.predict(x, verbose=0, batch_size=256)  # noqa: E731
    else:
        with distribution.scope():
            qat = quantize_model(model)
            qat.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
        losses, chief = _fit_distributed(qat, loss, train, distribution, epochs, batch_size, seed, backup, progress,
                                         notes)
        predict = _batched_call(qat)
    qat_metric = _score(predict, valid, metric) if valid else None
    if not all(np.isfinite(losses)):
        raise UserError(f"{data}: training diverged (loss per epoch: {', '.join(f'{v:.4g}' for v in losses)}); "
                        "nothing written", "lower --lr, or check the data's scale and labels")
    result = QatResult(str(src), str(out_path), str(tfl_path) if tfl_path else None, epochs, batch_size,
                       float(learning_rate), loss_name, metric, train.count, valid.count if valid else 0,
                       losses, quantized_layers(qat), float_metric, qat_metric, notes=notes)
    if not chief:
        return result  # the chief writes the files
    # All or nothing: the .keras goes into place only once its .tflite (when asked for) is written.
    with atomic_path(out_path) as saved:
        qat.save(saved)
        if tfl_path is not None:
            converted = convert_qat(saved, tfl_path, input_type=input_type, output_type=output_type)
            result.convert = dataclasses.replace(converted, source=str(out_path))
    if tfl_path is not None and valid is not None:
        result.int8_metric = _score(tflite_predict(tfl_path), valid, metric)
    return result


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


def _fit(qat: Any, train: Dataset | Streamed, epochs: int, batch_size: int, seed: int, backup: Path | None,
         progress: Progress | None, notes: list[str]) -> list[float]:
    """Keras's fit in this process (the arrays as they always were; a stream shuffled by file and
    through a buffer)."""
    callbacks: list[Any] = []
    if progress is not None:
        callbacks.append(_ProgressCallback(progress, train.count, batch_size, epochs))
    if backup is not None:
        callbacks.append(_backup(backup, notes))
    if isinstance(train, Dataset):
        history = qat.fit(train.x, train.y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks)
    else:
        tf = _tf.tf()
        pairs = train.pairs(shuffle_files=seed).apply(tf.data.experimental.assert_cardinality(train.count))
        pairs = pairs.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
        history = qat.fit(pairs.batch(batch_size).prefetch(1), epochs=epochs, verbose=0, callbacks=callbacks,
                          shuffle=False)
    _resumed(qat, epochs, backup, notes)
    return [float(v) for v in history.history.get("loss", [])]


def _backup(backup: Path, notes: list[str]) -> Any:
    keras = _tf.tf().keras
    if (backup / "training_metadata.json").is_file():
        notes.append(f"resumed from the training state backed up in {backup}")
    return keras.callbacks.BackupAndRestore(str(backup))


def _resumed(qat: Any, epochs: int, backup: Path | None, notes: list[str]) -> None:
    # BackupAndRestore tells fit where to start through the model's _initial_epoch (Keras reads
    # it the same way): the epochs that ran here are the ones after it.
    start = int(getattr(qat, "_initial_epoch", 0) or 0)
    if backup is not None and start:
        notes.append(f"epochs {start + 1}..{epochs} ran here; 1..{start} came from the backup")


def _fit_distributed(qat: Any, loss: Any, train: Dataset | Streamed, distribution: Any, epochs: int,
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
            _sharded(train, batch_size, seed, workers, notes))
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
        callbacks.append(_backup(own, notes))
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
    _resumed(qat, epochs, backup, notes)
    return losses, chief


def _sharded(train: Streamed, batch_size: int, seed: int, workers: int, notes: list[str]) -> Callable[[Any], Any]:
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


class _ProgressCallback:
    """A Keras callback (duck-typed on keras.callbacks.Callback) reporting training samples
    processed."""

    def __new__(cls, progress: Progress, samples: int, batch_size: int, epochs: int) -> Any:
        keras = _tf.tf().keras

        class Callback(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.epoch = 0

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.epoch = epoch

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                progress(self.epoch * samples + min((batch + 1) * batch_size, samples), epochs * samples)

        return Callback()
