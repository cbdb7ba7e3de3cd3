"""`tfshrink qat`: quantization-aware fine-tuning of a Keras model on arrays from an .npz, then
(optionally) its fully int8 TFLite model, with float vs QAT accuracy on validation data."""

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
from tfshrink.qat.keras import quantize_model, quantized_layers

Progress = Callable[[int, int], None]
X_KEYS = ("x", "inputs", "images", "features")
Y_KEYS = ("y", "labels", "targets")


@dataclass(frozen=True)
class Dataset:
    path: str
    x: np.ndarray
    y: np.ndarray


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


def _loss_for(model: Any, y: np.ndarray, where: str) -> tuple[str, Any, str]:
    """(name, Keras loss, metric) chosen from the labels and the output layer."""
    keras = _tf.tf().keras
    out_shape = tuple(model.outputs[0].shape)
    classes = out_shape[-1] if out_shape else None
    probabilities = _ends_in_softmax(model)
    if y.dtype.kind in "iu" and y.ndim == 1 and classes and classes > 1:
        if y.max() >= classes or y.min() < 0:
            raise UserError(f"{where}: labels run from {y.min()} to {y.max()}, the model has {classes} classes",
                            "labels must be class indices 0..classes-1")
        return ("sparse_categorical_crossentropy" + ("" if probabilities else " (from logits)"),
                keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities), "accuracy")
    if y.ndim == 2 and classes and y.shape[1] == classes and classes > 1 and np.all((y == 0) | (y == 1)):
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


def _score(predict: Callable[[np.ndarray], np.ndarray], data: Dataset, metric: str) -> float:
    out = predict(data.x)
    if metric == "accuracy":
        truth = data.y if data.y.ndim == 1 else np.argmax(data.y, axis=1)
        return 100.0 * float(np.mean(np.argmax(out, axis=-1) == truth))
    return float(np.mean((out.reshape(data.y.shape) - data.y) ** 2))


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
              progress: Progress | None = None) -> QatResult:
    """Fine-tune the Keras model at `source` with quantization-aware training on `data` (.npz with
    x and y) for `epochs`, save the QAT model to `output` (.keras) and, with `tflite`, its fully
    int8 TFLite model (ranges from training, no calibration). With `val`, measure the float model,
    the QAT model and the int8 model on it. The loss follows the labels: integer class indices ->
    sparse categorical cross-entropy, one-hot -> categorical, anything else -> mean squared error
    (from logits unless the model ends in softmax). Adam at `learning_rate`.
    `progress(done, total)` is called after every training batch.
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

    fmt, _ = detect_format(src)
    if fmt != "keras":
        raise UserError(f"{src}: `tfshrink qat` trains Keras models, this is a {fmt} model",
                        "TF1 graphs: use tfshrink.qat.create_training_graph / create_eval_graph in your training "
                        "script (see examples/qat_tf1_digits.py)")
    try:
        model = keras.models.load_model(str(src), compile=False)
    except Exception as exc:  # Keras raises many kinds
        raise UserError(f"{src}: cannot load the Keras model: {str(exc).splitlines()[0][:200]}",
                        "the file is truncated or corrupt, or needs custom objects") from None
    if len(getattr(model, "inputs", None) or []) != 1 or len(getattr(model, "outputs", None) or []) != 1:
        raise UserError(f"{src}: `tfshrink qat` trains single-input, single-output models",
                        "use tfshrink.qat.quantize_model and your own training loop for others")
    input_name = str(model.inputs[0].name)
    train = load_dataset(data, input_name, "--data")
    valid = load_dataset(val, input_name, "--val") if val is not None else None
    for d in (train, valid):
        if d is None:
            continue
        expected = tuple(model.inputs[0].shape)[1:]
        if tuple(d.x.shape[1:]) != expected:
            raise UserError(f"{d.path}: inputs have shape {list(d.x.shape[1:])} per sample, the model takes "
                            f"{list(expected)}", "give inputs shaped like the model's input")
    loss_name, loss, metric = _loss_for(model, train.y, str(src))
    float_metric = _score(lambda x: model.predict(x, verbose=0, batch_size=256), valid, metric) if valid else None
    keras.utils.set_random_seed(seed)
    qat = quantize_model(model)
    qat.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    steps = -(-len(train.x) // batch_size)
    callbacks = [_ProgressCallback(progress, steps * epochs)] if progress is not None else []
    history = qat.fit(train.x, train.y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks)
    qat_metric = _score(lambda x: qat.predict(x, verbose=0, batch_size=256), valid, metric) if valid else None
    losses = [float(v) for v in history.history.get("loss", [])]
    if not all(np.isfinite(losses)):
        raise UserError(f"{data}: training diverged (loss per epoch: {', '.join(f'{v:.4g}' for v in losses)}); "
                        "nothing written", "lower --lr, or check the data's scale and labels")
    result = QatResult(str(src), str(out_path), str(tfl_path) if tfl_path else None, epochs, batch_size,
                       float(learning_rate), loss_name, metric, len(train.x), len(valid.x) if valid else 0,
                       losses, quantized_layers(qat), float_metric, qat_metric)
    # All or nothing: the .keras goes into place only once its .tflite (when asked for) is written.
    with atomic_path(out_path) as saved:
        qat.save(saved)
        if tfl_path is not None:
            converted = convert_qat(saved, tfl_path, input_type=input_type, output_type=output_type)
            result.convert = dataclasses.replace(converted, source=str(out_path))
    if tfl_path is not None and valid is not None:
        result.int8_metric = _score(tflite_predict(tfl_path), valid, metric)
    return result


class _ProgressCallback:
    """A Keras callback (duck-typed on keras.callbacks.Callback) reporting batches done."""

    def __new__(cls, progress: Progress, total: int) -> Any:
        keras = _tf.tf().keras

        class Callback(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.done = 0

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                self.done += 1
                progress(self.done, total)

        return Callback()
