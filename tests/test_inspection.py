"""`tfshrink inspect` (acceptance d): a multi-input, multi-output frozen graph, float and int8 TFLite
files, and the real ONet checkpoint. Expected numbers are computed independently of inspection.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tfshrink.cli import main
from tfshrink.inspection import human_count

GRAPH_KEYS = {"format", "inputs", "outputs", "nodes", "op_types", "const_parameters", "variable_parameters",
              "control_edges"}


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", *argv, "--json"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    return json.loads(out)


def cli_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", *argv])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    return out


def test_inspect_multi_io_graph(keras_pb: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tfshrink import _tf

    report = cli_json(capsys, str(keras_pb))
    assert set(report) >= GRAPH_KEYS
    assert report["format"] == "graphdef"
    assert report["file_bytes"] == keras_pb.stat().st_size
    for spec in report["inputs"]:
        assert {"name", "dtype", "shape"} <= set(spec)
    assert [(s["name"], s["dtype"], s["shape"]) for s in report["inputs"]] == [
        ("image", "float32", [None, 12, 12, 3]), ("meta", "float32", [None, 4])]
    assert report["outputs"] == [
        {"name": "scores", "op": "Identity", "dtype": "float32", "shape": [None, 5]},
        {"name": "box", "op": "Identity", "dtype": "float32", "shape": [None, 4]}]
    # (unknown dims came back as None above: they are JSON null, not -1 or "?")

    graph_def = _tf.graph_pb2().GraphDef()
    graph_def.ParseFromString(keras_pb.read_bytes())
    tf = _tf.tf()
    assert report["nodes"] == len(graph_def.node)
    assert sum(report["op_types"].values()) == len(graph_def.node)
    assert report["op_types"]["Placeholder"] == 2 and report["op_types"]["Conv2D"] == 1
    assert report["op_types"]["MatMul"] == 2 and report["op_types"]["Softmax"] == 1
    counts = list(report["op_types"].values())
    assert counts == sorted(counts, reverse=True)  # most frequent first
    consts = sum(tf.make_ndarray(n.attr["value"].tensor).size for n in graph_def.node if n.op == "Const")
    assert report["const_parameters"] == consts
    keras_params = 3 * 3 * 3 * 4 + 4 + 4 * 4 + (8 * 5 + 5) + (8 * 4 + 4)  # conv, bn, scores, box
    assert report["const_parameters"] >= keras_params
    assert report["variable_parameters"] == 0
    assert report["control_edges"] == sum(1 for n in graph_def.node for r in n.input if r.startswith("^"))
    assert report["outputs_ambiguous"] is False
    assert "--input-shape image=1,12,12,3" in report["bench_command"]


def test_inspect_float_tflite(tflite_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    report = cli_json(capsys, str(tflite_file))
    assert set(report) >= GRAPH_KEYS
    assert report["format"] == "tflite"
    assert report["inputs"] == [{"name": "image", "dtype": "float32", "shape": [None, 12, 12, 3]},
                                {"name": "meta", "dtype": "float32", "shape": [None, 4]}]
    assert report["outputs"] == [{"name": "output_0", "dtype": "float32", "shape": [None, 5]},
                                 {"name": "output_1", "dtype": "float32", "shape": [None, 4]}]
    ops = report["op_types"]
    assert ops["CONV_2D"] == 1 and ops["FULLY_CONNECTED"] == 2 and ops["SOFTMAX"] == 1
    assert ops["CONCATENATION"] == 1
    assert report["nodes"] == sum(ops.values())
    interpreter = Interpreter(model_path=str(tflite_file))
    assert report["tensors"] == len(interpreter.get_tensor_details())
    assert report["subgraphs"] == 1 and report["custom_ops"] == []
    weights = report["weight_bytes"]
    assert set(weights) <= {"float32", "int32"}
    kernels = 3 * 3 * 3 * 4 + 8 * 5 + 8 * 4  # float32 kernels of conv and both dense layers
    assert 4 * kernels <= weights["float32"] <= tflite_file.stat().st_size
    assert weights["float32"] % 4 == 0
    assert report["variable_parameters"] == 0 and report["control_edges"] == 0

    text = cli_text(capsys, str(tflite_file))
    assert "weight bytes: float32" in text and f"tensors: {report['tensors']}" in text
    assert "CONV_2D 1" in text


def test_inspect_int8_tflite_shows_quantization(int8_tflite_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = cli_json(capsys, str(int8_tflite_file))
    assert [(s["name"], s["dtype"], s["shape"]) for s in report["inputs"]] == [
        ("image", "int8", [None, 12, 12, 3]), ("meta", "int8", [None, 4])]
    for spec in report["inputs"] + report["outputs"]:
        assert spec["dtype"] == "int8"
        q = spec["quantization"]
        assert set(q) == {"scale", "zero_point"}
        assert q["scale"] > 0 and -128 <= q["zero_point"] <= 127 and isinstance(q["zero_point"], int)
    # TFLite's int8 softmax always outputs with scale 1/256 and zero point -128
    softmax = report["outputs"][0]["quantization"]
    assert softmax["zero_point"] == -128
    assert softmax["scale"] == pytest.approx(1 / 256, rel=0, abs=1e-9)
    assert report["weight_bytes"].get("int8", 0) >= 3 * 3 * 3 * 4 + 8 * 5 + 8 * 4
    assert "float32" not in report["weight_bytes"]

    text = cli_text(capsys, str(int8_tflite_file))
    assert "scale=0.00390625 zero_point=-128" in text
    rows = [line for line in text.splitlines() if line.startswith(("input ", "output "))]
    assert len(rows) == 4 and all("scale=" in r and "zero_point=" in r for r in rows)


def test_inspect_onet_checkpoint(onet_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tfshrink.zoo.mtcnn import onet_weights

    result = tfshrink.inspect(onet_ckpt)
    assert result.format == "checkpoint"
    assert [(s.name, s.dtype, s.shape) for s in result.inputs] == [("onet/input", "float32", (None, 48, 48, 3))]
    assert [s.name for s in result.outputs] == ["onet/prob1", "onet/conv6-2/conv6-2", "onet/conv6-3/conv6-3"]
    assert [s.shape for s in result.outputs] == [(None, 2), (None, 4), (None, 10)]
    real = sum(w.size for w in onet_weights())  # the mtcnn package's own ONet arrays
    assert real == 389040
    assert result.variable_parameters == 389040
    assert len(result.variables) == 21
    assert ("onet/conv1/weights", (3, 3, 3, 32)) in [(v.name, v.shape) for v in result.variables]
    assert result.outputs_ambiguous is False and result.labels == ()

    report = cli_json(capsys, str(onet_ckpt))
    assert report["variable_parameters"] == 389040
    assert report["inputs"][0]["shape"] == [None, 48, 48, 3]
    assert len(report["outputs"]) == 3
    text = cli_text(capsys, str(onet_ckpt))
    assert "variable parameters: 389040 (389.04k)" in text
    assert "onet/input" in text and "onet/prob1" in text


def test_inspect_keras_and_savedmodel_count_variables(keras_file: Path, saved_model_dir: Path) -> None:
    from tfshrink import _tf

    params = _tf.tf().keras.models.load_model(keras_file, compile=False).count_params()
    assert params == 209
    keras = tfshrink.inspect(keras_file)
    assert keras.format == "keras" and keras.variable_parameters == params
    assert {v.dtype for v in keras.variables} == {"float32"}
    saved = tfshrink.inspect(saved_model_dir)
    assert saved.format == "savedmodel" and saved.variable_parameters == params
    assert saved.extra["signature"] == "serving_default"
    assert [s.name for s in saved.inputs] == ["image", "meta"]


@pytest.mark.parametrize(("count", "text"), [(495860, "495.86k"), (389040, "389.04k"), (999, "999"),
                                             (0, "0"), (1000, "1.00k"), (1_234_567, "1.23M"),
                                             (2_500_000_000, "2.50B")])
def test_human_count(count: int, text: str) -> None:
    assert human_count(count) == text


def test_inspect_json_is_plain_json(keras_pb: Path) -> None:
    """Every value in to_json() survives a JSON round trip unchanged (no numpy scalars, tuples)."""
    data = tfshrink.inspect(keras_pb).to_json()
    assert json.loads(json.dumps(data)) == data
    assert all(isinstance(v, int) and not isinstance(v, np.integer) for v in data["op_types"].values())
