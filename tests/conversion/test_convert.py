"""`tfshrink.convert`: every mode on a CNN trained on real digits, every source format, the
preprocessing stored in the model, custom/missing ops, --keep-float, determinism."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tests import builders
from tfshrink.conversion import ConvertResult, read_preprocess
from tfshrink.errors import UserError
from tfshrink.model.tflite import TFLiteModel


@dataclass
class Converted:
    path: Path
    result: ConvertResult
    accuracy: float


def _accuracy(path: Path, digits: builders.Digits) -> float:
    model = TFLiteModel(path)
    try:
        name = model.inputs[0].name
        hits = sum(int(np.argmax(model.run({name: x[None]})[model.outputs[0].name]) == y)
                   for x, y in zip(digits.x_test, digits.y_test, strict=True))
    finally:
        model.close()
    return 100.0 * hits / len(digits.y_test)


@pytest.fixture(scope="module")
def modes(digits: builders.Digits, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Converted]:
    out_dir = tmp_path_factory.mktemp("digits_tflite")
    found = {}
    for mode in ("none", "float16", "dynamic", "int8", "int16x8"):
        path = out_dir / f"digits_{mode}.tflite"
        calibration = digits.calibration_npz if mode in ("int8", "int16x8") else None
        strict = {"keep_float": ["none"]} if mode == "int8" else {}  # full int8, no timing: the same bytes
        result = tfshrink.convert(digits.keras, path, quantize=mode, calibration=calibration, **strict)
        found[mode] = Converted(path, result, _accuracy(path, digits))
    return found


def test_float_keeps_the_keras_accuracy(modes: dict[str, Converted], digits: builders.Digits) -> None:
    keras = tfshrink.load(digits.keras)
    probs = keras.run({"image": digits.x_test})["probs"]
    keras_accuracy = 100.0 * float(np.mean(np.argmax(probs, axis=1) == digits.y_test))
    assert keras_accuracy > 90  # the fixture really learned the digits
    assert modes["none"].accuracy == pytest.approx(keras_accuracy, abs=1e-9)


def test_every_mode_holds_accuracy_within_bounds(modes: dict[str, Converted]) -> None:
    base = modes["none"].accuracy
    assert abs(modes["float16"].accuracy - base) <= 0.1
    assert abs(modes["int8"].accuracy - base) <= 1.0
    assert abs(modes["dynamic"].accuracy - base) <= 1.0
    assert abs(modes["int16x8"].accuracy - base) <= 1.0


def test_sizes_are_a_quarter_and_a_half_of_float(modes: dict[str, Converted]) -> None:
    base = modes["none"].path.stat().st_size
    assert modes["none"].result.bytes == base
    int8 = modes["int8"].path.stat().st_size / base
    f16 = modes["float16"].path.stat().st_size / base
    dynamic = modes["dynamic"].path.stat().st_size / base
    assert 0.20 <= int8 <= 0.32, int8
    assert 0.45 <= f16 <= 0.55, f16
    assert 0.20 <= dynamic <= 0.32, dynamic


def test_result_reports_mode_defaults_and_verification(modes: dict[str, Converted]) -> None:
    r = modes["int8"].result
    assert r.quantize == "int8" and r.format == "keras"
    assert r.defaults["input_type"] == "float32" and r.defaults["ops"] == "TFLITE_BUILTINS_INT8"
    assert r.defaults["batch"] == {"image": 1}
    assert any("XNNPACK" in n for n in r.notes) and any("batch size fixed to 1" in n for n in r.notes)
    assert r.precision is not None and r.precision.float_ops == {}
    assert r.precision.edge_conversions == {"QUANTIZE": 1, "DEQUANTIZE": 1}
    assert [s.name for s in r.inputs] == ["image"] and [s.name for s in r.outputs] == ["probs"]
    v = r.verification
    assert v is not None and v.samples == 20 and "20 held-out calibration samples" in r.verify_inputs
    (probs,) = v.outputs
    assert probs.cosine > 0.999 and probs.max_abs < 0.1 and probs.top1 is not None and probs.top1 >= 0.95
    float_check = modes["none"].result.verification.outputs[0]
    assert float_check.cosine > 0.999999 and float_check.max_abs < 1e-5 and float_check.top1 == 1.0
    data = r.to_json()
    assert data["verification"]["outputs"][0]["top1_agreement"] == probs.top1
    assert data["precision"]["float_ops"] == {} and data["calibration"]["samples"] == 80
    assert data["verification"]["data"]["kind"] == "held-out" and data["verification"]["data"]["every"] == 5
    assert data["verification"]["min_cosine"] == 0.99
    assert any("reference kernels" in n for n in modes["int16x8"].result.notes)
    assert any("not taken by XNNPACK" in n for n in modes["dynamic"].result.notes)


def test_output_is_deterministic(modes: dict[str, Converted], digits: builders.Digits, tmp_path: Path) -> None:
    for mode in ("none", "int8"):
        again = tmp_path / f"again_{mode}.tflite"
        calibration = digits.calibration_npz if mode == "int8" else None
        strict = {"keep_float": ["none"]} if mode == "int8" else {}
        tfshrink.convert(digits.keras, again, quantize=mode, calibration=calibration, verify=False, **strict)
        assert again.read_bytes() == modes[mode].path.read_bytes(), mode


def test_int8_default_follows_the_cpu_rules(modes: dict[str, Converted], digits: builders.Digits,
                                            tmp_path: Path) -> None:
    """Without --keep-float, int8 for target cpu leaves the output softmax in float (XNNPACK has no
    int8 SOFTMAX) and the first conv too (1 input channel, 144 weights): rules, not timings. The
    model runs in one XNNPACK partition, and the notes and defaults say what and why."""
    from tfshrink.tflite.flatbuffer import opcode_names, read, type_names

    out = tmp_path / "default.tflite"
    r = tfshrink.convert(digits.keras, out, quantize="int8", calibration=digits.calibration_npz)
    assert r.target == "cpu" and r.defaults["target"] == "cpu"
    assert r.defaults["output_softmax"] == {"tensors": ["probs"], "kept_float": True}
    (softmax_note,) = [n for n in r.notes if n.startswith("target cpu: the output softmax (probs) stays float")]
    assert "XNNPACK has no int8 SOFTMAX" in softmax_note and "--target int8-only" in softmax_note
    (note,) = [n for n in r.notes if n.startswith("target cpu: the first conv")]
    first = r.defaults["first_conv"]
    assert "conv1" in first["tensor"] and first["kept_float"] and (first["channels"], first["weights"]) == (1, 144)
    assert "1-channel input, 144 weights" in note and "not timed" in note
    assert r.kept_float == {"default": ["probs", first["tensor"]]}
    assert r.precision.float_ops == {"CONV_2D": 1, "SOFTMAX": 1} and r.defaults["ops"] == "TFLITE_BUILTINS"
    assert any(n.startswith("2 op(s) stayed float as the int8 default chose") for n in r.notes), r.notes
    assert not any("stayed float" in w for w in r.warnings)
    assert "leading_layers" not in r.defaults and "xnnpack_float_ops" not in r.defaults
    assert r.partitions == 1 and r.delegation.outside == () and r.defaults["xnnpack_partitions"] == 1
    assert any(n.startswith("XNNPACK (LiteRT on CPU") and "1 XNNPACK partition(s)" in n for n in r.notes)
    data = r.to_json()
    assert data["target"] == "cpu" and data["xnnpack"]["partitions"] == 1 and data["plan_sha256"] is None
    # the first conv reads the float input directly: no QUANTIZE of the input
    model = read(out.read_bytes())
    sub = model.Subgraphs(0)
    codes = opcode_names(model)
    first_op = sub.Operators(0)
    assert codes[first_op.OpcodeIndex()] == "CONV_2D" and int(first_op.Inputs(0)) == int(sub.Inputs(0))
    # the softmax reads the dequantized int8 logits and gives the model's float output
    last = sub.Operators(sub.OperatorsLength() - 1)
    assert codes[last.OpcodeIndex()] == "SOFTMAX"
    assert type_names()[sub.Tensors(last.Inputs(0)).Type()] == "FLOAT32"
    assert int(last.Outputs(0)) == int(sub.Outputs(0))
    assert r.verification.outputs[0].cosine > 0.999 and r.verification.outputs[0].top1 >= 0.95
    assert abs(_accuracy(out, digits) - modes["none"].accuracy) <= 1.0
    assert 0.20 <= r.bytes / modes["none"].result.bytes <= 0.32
    assert modes["int8"].result.defaults["keep_float"] == "none"
    assert not any(n.startswith("target cpu:") for n in modes["int8"].result.notes)


def test_keep_float_none_is_alone(digits: builders.Digits, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--keep-float none \\(strict full int8\\) cannot be combined"):
        tfshrink.convert(digits.keras, tmp_path / "x.tflite", quantize="int8", calibration=digits.calibration_npz,
                         keep_float=["none", "fc"])


def test_int8_default_with_int8_outputs_keeps_the_output_int8(digits: builders.Digits, tmp_path: Path) -> None:
    """Integer outputs asked for: the model's output is int8. For target cpu the softmax computes in
    float between a DEQUANTIZE and a QUANTIZE (XNNPACK has no int8 SOFTMAX: rule 3 keeps the model
    in one partition); for int8-only it is the int8 softmax."""
    out = tmp_path / "digits_io8.tflite"
    r = tfshrink.convert(digits.keras, out, quantize="int8", calibration=digits.calibration_npz,
                         input_type="int8", output_type="int8", verify=False)
    assert "output_softmax" not in r.defaults and "first_conv" not in r.defaults  # rules 1 and 2: float I/O only
    assert r.defaults["xnnpack_float_ops"] == [{"op": "SOFTMAX", "tensor": "probs"}]
    assert r.precision.float_ops == {"SOFTMAX": 1} and r.partitions == 1
    assert not any("output softmax" in n for n in r.notes)
    assert r.outputs[0].dtype == "int8"
    only = tfshrink.convert(digits.keras, tmp_path / "only_io8.tflite", quantize="int8", target="int8-only",
                            calibration=digits.calibration_npz, input_type="int8", output_type="int8", verify=False)
    assert only.precision.float_ops == {} and only.outputs[0].dtype == "int8"
    assert [op for op, _ in only.delegation.outside] == ["SOFTMAX"]


def test_calibration_folder_with_preprocess_stored_and_read_back(digits: builders.Digits, tmp_path: Path) -> None:
    """uint8 input calibrated on PNGs: the stored spec says raw pixels map straight onto the input."""
    out = tmp_path / "digits_u8.tflite"
    r = tfshrink.convert(digits.keras, out, quantize="int8", calibration=digits.images,
                         preprocess="mean=0,std=255", input_type="uint8")
    assert r.calibration is not None and r.calibration.kind == "images" and len(r.calibration.samples) == 32
    assert r.check is not None and len(r.check.feeds) == 8  # every 5th image checks instead
    stored = read_preprocess(out)
    assert stored is not None and stored == r.preprocess
    assert stored.size == (8, 8) and stored.color == "gray" and stored.input == "image"
    q = stored.quantization
    assert q is not None and q.dtype == "uint8"
    assert q.pixel_scale[0] == pytest.approx(1.0, abs=0.02) and abs(q.pixel_offset[0] - q.zero_point) < 0.5
    model = TFLiteModel(out)
    try:
        assert model.inputs[0].dtype == "uint8"
        pixels = np.round(digits.x_test[:50] * 255)
        raw = np.round(pixels * q.pixel_scale[0] + q.pixel_offset[0]).clip(0, 255).astype(np.uint8)
        agree = sum(int(np.argmax(model.run({"image": p[None]}, raw=True)["probs"]) == y)
                    for p, y in zip(raw, digits.y_test[:50], strict=True))
    finally:
        model.close()
    assert agree >= 47  # raw pixels, mapped as the metadata says, classify like the float model


def test_no_preprocess_means_no_metadata_entry(modes: dict[str, Converted]) -> None:
    assert read_preprocess(modes["none"].path) is None
    from tfshrink.model.tflite import flatbuffer_summary

    assert "tfshrink.preprocess" not in flatbuffer_summary(modes["none"].path.read_bytes())["metadata"]


def test_keep_float_by_op_and_by_keras_layer(digits: builders.Digits, tmp_path: Path) -> None:
    by_op = tfshrink.convert(digits.keras, tmp_path / "op.tflite", quantize="int8",
                             calibration=digits.calibration_npz, keep_float=["fully_connected"], verify=False)
    assert by_op.precision.float_ops == {"FULLY_CONNECTED": 2}
    assert by_op.kept_float == {"fully_connected": ["FULLY_CONNECTED"]}
    by_layer = tfshrink.convert(digits.keras, tmp_path / "fc.tflite", quantize="int8",
                                calibration=digits.calibration_npz, keep_float=["fc"])
    assert by_layer.precision.float_ops == {"FULLY_CONNECTED": 1}
    assert len(by_layer.kept_float["fc"]) == 1 and "fc_1" in by_layer.kept_float["fc"][0]
    assert by_layer.verification.outputs[0].cosine > 0.999
    with pytest.raises(UserError) as exc:
        tfshrink.convert(digits.keras, tmp_path / "x.tflite", quantize="int8",
                         calibration=digits.calibration_npz, keep_float=["no_such_layer"])
    assert "no op or node" in exc.value.one_line()
    with pytest.raises(UserError):
        tfshrink.convert(digits.keras, tmp_path / "x.tflite", quantize="float16", keep_float=["fc"])
    assert not (tmp_path / "x.tflite").exists()


def test_int8_without_calibration_is_a_user_error(digits: builders.Digits, tmp_path: Path) -> None:
    for mode in ("int8", "int16x8"):
        with pytest.raises(UserError) as exc:
            tfshrink.convert(digits.keras, tmp_path / "x.tflite", quantize=mode)
        assert "--calibration" in exc.value.one_line()
    assert not (tmp_path / "x.tflite").exists()


def test_checkpoint_source(onet_ckpt: Path, tmp_path: Path) -> None:
    r = tfshrink.convert(onet_ckpt, tmp_path / "onet.tflite", quantize="dynamic")
    assert r.format == "checkpoint"
    assert [s.name for s in r.inputs] == ["onet/input"] and r.inputs[0].shape == (1, 48, 48, 3)
    assert [s.name for s in r.outputs] == ["onet/prob1", "onet/conv6-2/conv6-2", "onet/conv6-3/conv6-3"]
    assert all(o.cosine > 0.999 for o in r.verification.outputs)
    assert "against the source" in r.verify_inputs


def test_savedmodel_source_two_inputs_two_outputs(saved_model_dir: Path, tmp_path: Path) -> None:
    r = tfshrink.convert(saved_model_dir, tmp_path / "sm.tflite", quantize="float16")
    assert r.format == "savedmodel"
    assert sorted(s.name for s in r.inputs) == ["image", "meta"]
    assert len(r.outputs) == 2
    assert all(o.cosine > 0.9999 for o in r.verification.outputs)


def test_frozen_pb_source_int8_random_calibration_warns(keras_pb: Path, tmp_path: Path) -> None:
    r = tfshrink.convert(keras_pb, tmp_path / "pb.tflite", quantize="int8", calibration="random",
                         calibration_samples=10)
    assert r.format == "graphdef"
    assert any("random" in w for w in r.warnings)
    assert r.calibration.kind == "random" and len(r.calibration.samples) == 8  # 2 of 10 held out
    assert all(o.cosine > 0.99 for o in r.verification.outputs) and r.verification.samples == 2


def test_unknown_dims_need_input_shapes(tmp_path: Path) -> None:
    from tfshrink import _tf

    tf = _tf.tf()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="x")
        tf.identity(tf.nn.relu(x) * 2.0, name="out")
    pb = tmp_path / "fcn.pb"
    pb.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(UserError) as exc:
        tfshrink.convert(pb, tmp_path / "fcn.tflite")
    assert "unknown dims [?,?,?,3]" in exc.value.one_line() and "--input-shape x=1,N,N,3" in exc.value.one_line()
    r = tfshrink.convert(pb, tmp_path / "fcn.tflite", input_shapes={"x": (2, 5, 6, 3)})
    assert r.inputs[0].shape == (2, 5, 6, 3) and "batch" not in r.defaults
    r = tfshrink.convert(pb, tmp_path / "fcn2.tflite", preprocess="size=7x4,mean=127.5,std=127.5")
    assert r.inputs[0].shape == (1, 4, 7, 3) and r.defaults["batch"] == {"x": 1}
    with pytest.raises(UserError) as exc:
        tfshrink.convert(pb, tmp_path / "fcn3.tflite", input_shapes={"y": (1, 2, 2, 3)})
    assert "no input named 'y'" in exc.value.one_line()


def _missing_ops_pb(path: Path) -> Path:
    from tfshrink import _tf

    tf = _tf.tf()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 4, 4], name="x")
        tf.identity(tf.linalg.svd(tf.linalg.inv(x), compute_uv=False), name="out")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def test_ops_tflite_lacks_name_the_ops_and_the_flags(tmp_path: Path) -> None:
    pb = _missing_ops_pb(tmp_path / "linalg.pb")
    with pytest.raises(UserError) as exc:
        tfshrink.convert(pb, tmp_path / "linalg.tflite")
    text = exc.value.one_line()
    assert "TFLite has no builtin kernel for MatrixInverse, Svd" in text
    assert "--select-tf-ops" in text and "--allow-custom-ops" in text
    assert "\n" not in text
    assert not (tmp_path / "linalg.tflite").exists()
    r = tfshrink.convert(pb, tmp_path / "linalg.tflite", allow_custom_ops=True)
    assert {"MatrixInverse", "Svd"} <= set(r.ops)
    assert r.verification is None and any(n.startswith("not verified") for n in r.notes)


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_ops_without_integer_kernels_stay_float_and_are_listed(mode: str, tmp_path: Path) -> None:
    from tfshrink import _tf

    tf = _tf.tf()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 8, 8, 1], name="x")
        w = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 1, 4)).astype(np.float32))
        tf.identity(tf.reduce_mean(tf.math.sin(tf.nn.conv2d(x, w, 1, "SAME")), [1, 2]), name="out")
    pb = tmp_path / "sin.pb"
    pb.write_bytes(graph.as_graph_def().SerializeToString())
    strict = {"keep_float": ["none"]} if mode == "int8" else {}
    r = tfshrink.convert(pb, tmp_path / "sin.tflite", quantize=mode, calibration="random", calibration_samples=5,
                         **strict)
    assert r.precision.float_ops == {"SIN": 1} and r.precision.inner_conversions == 2
    assert any("1 op(s) stayed float: SIN x1" in w for w in r.warnings)
    assert r.verification.outputs[0].cosine > 0.99


def test_inputs_cut_the_graph(digits: builders.Digits, tmp_path: Path) -> None:
    with tfshrink.load(digits.keras) as model:
        nodes = [n.name for n in model.freeze().graph_def.node]
    (pool,) = [n for n in nodes if n.endswith("/MaxPool2d")]
    r = tfshrink.convert(digits.keras, tmp_path / "head.tflite", inputs=pool)
    assert r.inputs[0].shape == (1, 4, 4, 16)
    assert r.verification.outputs[0].cosine > 0.99999 and "frozen source graph" in r.verify_inputs


def test_refuses_tflite_sources_and_overwriting_the_source(modes: dict[str, Converted], tmp_path: Path,
                                                          digits: builders.Digits) -> None:
    with pytest.raises(UserError):
        tfshrink.convert(modes["none"].path, tmp_path / "x.tflite")
    with pytest.raises(UserError):
        tfshrink.convert(digits.keras, digits.keras)
    with pytest.raises(UserError):
        tfshrink.convert(digits.keras, tmp_path / "x.tflite", quantize="float16", input_type="int8")
