"""The digits data and the float Keras CNN the QAT tests share (scikit-learn's digits, nothing
downloaded), with the TF1 example loaded as a module."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tfshrink import _tf

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "qat_tf1_digits.py"


def example_module() -> ModuleType:
    """examples/qat_tf1_digits.py, imported (registered in sys.modules for its dataclasses)."""
    name = "qat_tf1_digits_example"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class KerasDigits:
    keras: Path  # the trained float model
    train_npz: Path  # x, y
    val_npz: Path  # x, y (the 360 test digits)
    calibration_npz: Path  # image: 100 training images
    x_test: np.ndarray
    y_test: np.ndarray


def keras_digits(directory: Path, epochs: int = 15) -> KerasDigits:
    """conv(16)+BN+ReLU -> max pool -> conv(32, relu) -> flatten -> dense(64, relu) -> dense(10,
    softmax), trained in float on the example's fixed 1,437 / 360 split."""
    keras = _tf.tf().keras
    data = example_module().load_digits_split(0)
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(image)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(64, activation="relu", name="fc")(h)
    probs = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(image, probs, name="digits")
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "digits.keras"
    model.save(path)
    np.savez(directory / "train.npz", x=data.x_train, y=data.y_train)
    np.savez(directory / "val.npz", x=data.x_test, y=data.y_test)
    np.savez(directory / "calibration.npz", image=data.x_train[:100])
    return KerasDigits(path, directory / "train.npz", directory / "val.npz", directory / "calibration.npz",
                       data.x_test, data.y_test)


def accuracy(predict: Any, x: np.ndarray, y: np.ndarray) -> float:
    return 100.0 * float(np.mean(np.argmax(predict(x), axis=-1) == y))


def op_types(data: bytes) -> list[tuple[str, list[str], list[str], bool, bool]]:
    """(op, types of its non-constant inputs, output types, reads a model input, writes a model
    output) for every operator of the main subgraph, read from the flatbuffer."""
    from tfshrink.tflite.flatbuffer import opcode_names, read, type_names

    model = read(data)
    codes, types = opcode_names(model), type_names()
    sub = model.Subgraphs(0)
    inputs = {int(sub.Inputs(i)) for i in range(sub.InputsLength())}
    outputs = {int(sub.Outputs(i)) for i in range(sub.OutputsLength())}

    def const(t: int) -> bool:
        buf = sub.Tensors(t).Buffer()
        return 0 < buf < model.BuffersLength() and model.Buffers(buf).DataLength() > 0

    rows = []
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        name = codes[op.OpcodeIndex()]
        ins = [int(op.Inputs(k)) for k in range(op.InputsLength()) if op.Inputs(k) >= 0]
        outs = [int(op.Outputs(k)) for k in range(op.OutputsLength())]
        rows.append((name, [types[sub.Tensors(t).Type()] for t in ins if not const(t)],
                     [types[sub.Tensors(t).Type()] for t in outs], any(t in inputs for t in ins),
                     any(t in outputs for t in outs)))
    return rows


def assert_int8_only(data: bytes, float_io: bool = True) -> dict[str, int]:
    """Every op computes on int8 tensors (a QUANTIZE from int8 to int8 is a requantization),
    except a QUANTIZE reading a float model input and a DEQUANTIZE writing a float model output
    (only when `float_io`). Returns the op histogram."""
    histogram: dict[str, int] = {}
    edges = 0
    for name, ins, outs, reads_input, writes_output in op_types(data):
        histogram[name] = histogram.get(name, 0) + 1
        if float_io and name == "QUANTIZE" and ins == ["FLOAT32"]:
            assert reads_input and outs == ["INT8"], (name, ins, outs)
            edges += 1
        elif float_io and name == "DEQUANTIZE":
            assert writes_output and ins == ["INT8"] and outs == ["FLOAT32"], (name, ins, outs)
            edges += 1
        else:
            assert set(ins) | set(outs) <= {"INT8"}, (name, ins, outs)
    assert edges >= 2 if float_io else edges == 0
    return histogram
