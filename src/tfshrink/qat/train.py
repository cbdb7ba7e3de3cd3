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

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.errors import UserError
from tfshrink.fileio import atomic_path, check_output
from tfshrink.model import detect_format
from tfshrink.model.tflite import TFLiteModel
from tfshrink.qat.convert import convert_qat
from tfshrink.qat.data import SHUFFLE_BUFFER, Dataset, Labels, Streamed, load_data
from tfshrink.qat.distributed import backup_callback, fit_distributed, make_strategy, resumed
from tfshrink.qat.keras import quantize_model, quantized_layers

Progress = Callable[[int, int], None]
EVAL_BATCH = 256


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
    float_metric = _score(lambda x: model.predict(x, verbose=0, batch_size=EVAL_BATCH), valid, metric) if valid else None
    notes: list[str] = []
    keras.utils.set_random_seed(seed)
    if distribution is None:
        qat = quantize_model(model)
        qat.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
        losses, chief = _fit(qat, train, epochs, batch_size, seed, backup, progress, notes), True
        predict = lambda x: qat.predict(x, verbose=0, batch_size=EVAL_BATCH)  # noqa: E731
    else:
        with distribution.scope():
            qat = quantize_model(model)
            qat.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
        losses, chief = fit_distributed(qat, loss, train, distribution, epochs, batch_size, seed, backup, progress,
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


def _fit(qat: Any, train: Dataset | Streamed, epochs: int, batch_size: int, seed: int, backup: Path | None,
         progress: Progress | None, notes: list[str]) -> list[float]:
    """Keras's fit in this process (the arrays as they always were; a stream shuffled by file and
    through a buffer)."""
    callbacks: list[Any] = []
    if progress is not None:
        callbacks.append(_ProgressCallback(progress, train.count, batch_size, epochs))
    if backup is not None:
        callbacks.append(backup_callback(backup, notes))
    if isinstance(train, Dataset):
        history = qat.fit(train.x, train.y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks)
    else:
        tf = _tf.tf()
        pairs = train.pairs(shuffle_files=seed).apply(tf.data.experimental.assert_cardinality(train.count))
        pairs = pairs.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
        history = qat.fit(pairs.batch(batch_size).prefetch(1), epochs=epochs, verbose=0, callbacks=callbacks,
                          shuffle=False)
    resumed(qat, epochs, backup, notes)
    return [float(v) for v in history.history.get("loss", [])]


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
