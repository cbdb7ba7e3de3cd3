"""tfshrink.conversion.hybrid: a float layer of an int8 model given the dynamic-range form (int8
per-channel weights, float activations), on the digits CNN in LiteRT; and the int8 default's
search that uses it (tfshrink.conversion.tuning.next_layer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tests import builders
from tfshrink.conversion.hybrid import HYBRID, MIN_WEIGHTS, hybridize
from tfshrink.conversion.tuning import next_layer
from tfshrink.model.tflite import TFLiteModel
from tfshrink.tflite.flatbuffer import opcode_names, read, type_names
from tfshrink.tflite.metadata import read_metadata


@pytest.fixture(scope="module")
def leading_float(digits: builders.Digits, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The digits CNN in int8 with conv1, the pool and conv2 left in float by the quantizer (weights
    rounded to nearest, as TFLite does: the hybrid layer's bound below was measured on those)."""
    out = tmp_path_factory.mktemp("hybrid") / "leading_float.tflite"
    tfshrink.convert(digits.keras, out, quantize="int8", calibration=digits.calibration_npz,
                     keep_float=["conv1", "pool", "conv2"], verify=False, weight_rounding="nearest")
    return out.read_bytes()


def _layers(data: bytes) -> dict[str, tuple[str, object, object]]:
    """Output tensor name -> (op, input tensor, weight tensor) of each conv / FC op."""
    model = read(data)
    sub = model.Subgraphs(0)
    codes = opcode_names(model)
    found = {}
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        if codes[op.OpcodeIndex()] in HYBRID:
            found[(sub.Tensors(op.Outputs(0)).Name() or b"").decode()] = (
                codes[op.OpcodeIndex()], sub.Tensors(op.Inputs(0)), sub.Tensors(op.Inputs(1)))
    return found


def _named(layers: dict[str, tuple[str, object, object]], scope: str) -> str:
    (name,) = [n for n in layers if f"/{scope}_1/" in n]
    return name


def _probs(data: bytes, x: np.ndarray, tmp_path: Path, tag: str) -> np.ndarray:
    path = tmp_path / f"{tag}.tflite"
    path.write_bytes(data)
    model = TFLiteModel(path)
    try:
        name, out = model.inputs[0].name, model.outputs[0].name
        return np.concatenate([model.run({name: xi[None]})[out] for xi in x])
    finally:
        model.close()


def test_hybridize_gives_conv2_int8_per_channel_weights_and_keeps_the_outputs(
        leading_float: bytes, digits: builders.Digits, tmp_path: Path) -> None:
    types = type_names()
    before = _layers(leading_float)
    conv1, conv2 = _named(before, "conv1"), _named(before, "conv2")
    hybrid = hybridize(leading_float, [conv1, conv2])
    # conv1 has 144 weights: under MIN_WEIGHTS it stays float, as dynamic-range quantization keeps it
    assert hybrid.layers == (conv2,)
    after = _layers(hybrid.data)
    op, x, w = after[conv2]
    assert op == "CONV_2D" and types[x.Type()] == "FLOAT32" and types[w.Type()] == "INT8"
    q = w.Quantization()
    assert q.ScaleLength() == 32 and q.QuantizedDimension() == 0 and not q.ZeroPointAsNumpy().any()
    assert types[after[conv1][2].Type()] == "FLOAT32" and int(np.prod(after[conv1][2].ShapeAsNumpy())) < MIN_WEIGHTS
    # the int8 weights are the float ones to within half a step, per channel
    model_in, model_out = (read(d) for d in (leading_float, hybrid.data))
    floats = before[conv2][2]
    original = model_in.Buffers(floats.Buffer()).DataAsNumpy().view(np.float32).reshape(floats.ShapeAsNumpy())
    stored = model_out.Buffers(w.Buffer()).DataAsNumpy().view(np.int8).reshape(w.ShapeAsNumpy())
    scale = q.ScaleAsNumpy().reshape(-1, 1, 1, 1)
    assert np.abs(stored.astype(np.float32) * scale - original).max() <= scale.max() / 2 + 1e-7
    assert np.abs(stored).max() == 127
    # the op's version and the model's min_runtime_version say the hybrid kernel is needed
    codes = opcode_names(model_out)
    (conv_code,) = [model_out.OperatorCodes(i) for i, c in enumerate(codes) if c == "CONV_2D"]
    assert conv_code.Version() >= HYBRID["CONV_2D"][1]
    runtime = read_metadata(hybrid.data)["min_runtime_version"].split(b"\0")[0].decode()
    assert tuple(map(int, runtime.split("."))) >= (2, 4, 0)
    # the float weights are gone, not left behind: the file shrinks by about 3 bytes a weight
    assert len(leading_float) - len(hybrid.data) >= 3 * original.size - 512
    # same predictions as the float-conv2 model on the held-out digits, in LiteRT
    x = digits.x_test[:200]
    p_float = _probs(leading_float, x, tmp_path, "float")
    p_hybrid = _probs(hybrid.data, x, tmp_path, "hybrid")
    assert np.abs(p_float - p_hybrid).max() < 0.05
    assert np.mean(p_float.argmax(1) == p_hybrid.argmax(1)) >= 0.99
    # deterministic
    assert hybridize(leading_float, [conv2]).data == hybrid.data


def test_hybridize_leaves_other_layers_and_int8_layers_alone(leading_float: bytes) -> None:
    layers = _layers(leading_float)
    fc = _named(layers, "fc")  # int8 already: nothing to do
    assert hybridize(leading_float, [fc]).data == leading_float
    assert hybridize(leading_float, []).layers == ()
    assert hybridize(leading_float, ["no/such/tensor"]).data == leading_float


def test_next_layer_walks_the_model_in_op_order(leading_float: bytes) -> None:
    layers = _layers(leading_float)
    conv1, conv2, fc = _named(layers, "conv1"), _named(layers, "conv2"), _named(layers, "fc")
    tensor, op, between = next_layer(leading_float, conv1)
    assert (tensor, op) == (conv2, "CONV_2D") and [o for _, o in between] == ["MAX_POOL_2D"]
    tensor, op, between = next_layer(leading_float, conv2)
    assert (tensor, op) == (fc, "FULLY_CONNECTED")
    assert next_layer(leading_float, "no/such/tensor") is None


def test_inspect_names_the_dynamic_range_ops(leading_float: bytes, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from tfshrink.cli import main
    from tfshrink.tflite.metadata import precision

    conv2 = _named(_layers(leading_float), "conv2")
    data = hybridize(leading_float, [conv2]).data
    prec = precision(data)
    assert prec.dynamic_range_ops == {"CONV_2D": 1} and prec.float_ops["CONV_2D"] == 2  # conv1 float, conv2 hybrid
    assert precision(leading_float).dynamic_range_ops == {}
    path = tmp_path / "hybrid.tflite"
    path.write_bytes(data)
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(path)])
    assert exc.value.code == 0
    assert "of them in dynamic-range form, int8 weights: CONV_2D x1" in capsys.readouterr().out
