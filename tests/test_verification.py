"""`tfshrink verify` (acceptance e): a perturbed model fails with exit 1, the real one passes; Keras vs
float and int8 TFLite; --json and --inputs FEEDS.npz. Real TF sessions and the LiteRT interpreter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tfshrink.cli import main

PERTURBED_CONST = "onet/conv1/weights"
DELTA = 0.05


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def perturbed_onet_pb(tmp_path_factory: pytest.TempPathFactory, onet_pb: Path) -> Path:
    """A copy of the frozen ONet where one weight Const has +0.05 added to every element."""
    from tfshrink import _tf

    tf = _tf.tf()
    graph_def = _tf.graph_pb2().GraphDef()
    graph_def.ParseFromString(onet_pb.read_bytes())
    (node,) = [n for n in graph_def.node if n.name == PERTURBED_CONST]
    assert node.op == "Const"
    value = tf.make_ndarray(node.attr["value"].tensor)
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value + np.float32(DELTA)))
    out = tmp_path_factory.mktemp("perturbed") / "onet_perturbed.pb"
    out.write_bytes(graph_def.SerializeToString())
    return out


@pytest.fixture(scope="module")
def face_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real face and real non-face patches, MTCNN-normalized, keyed by ONet's input name."""
    from tfshrink.zoo.mtcnn import face_crop, non_face_crops, normalize

    batch = normalize(np.concatenate([face_crop()[None], non_face_crops(count=2)]))
    out = tmp_path_factory.mktemp("feeds") / "faces.npz"
    np.savez(out, **{"onet/input": batch})
    return out


def test_perturbed_copy_differs_in_one_const_only(onet_pb: Path, perturbed_onet_pb: Path) -> None:
    from tfshrink import _tf

    tf = _tf.tf()
    a, b = _tf.graph_pb2().GraphDef(), _tf.graph_pb2().GraphDef()
    a.ParseFromString(onet_pb.read_bytes())
    b.ParseFromString(perturbed_onet_pb.read_bytes())
    changed = [x.name for x, y in zip(a.node, b.node, strict=True) if x != y]
    assert changed == [PERTURBED_CONST]
    (x,) = [n for n in a.node if n.name == PERTURBED_CONST]
    (y,) = [n for n in b.node if n.name == PERTURBED_CONST]
    diff = tf.make_ndarray(y.attr["value"].tensor) - tf.make_ndarray(x.attr["value"].tensor)
    np.testing.assert_allclose(diff, DELTA, rtol=0, atol=1e-6)


def test_verify_checkpoint_vs_perturbed_pb_exits_1(onet_ckpt: Path, perturbed_onet_pb: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "verify", str(onet_ckpt), str(perturbed_onet_pb), "--atol", "1e-4",
                             "--rtol", "1e-3")
    assert code == 1, err
    assert "FAIL" in out and "outputs differ beyond tolerance" in out
    assert "error:" not in err and "Traceback" not in err


def test_verify_checkpoint_vs_frozen_pb_exits_0(onet_ckpt: Path, onet_pb: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "verify", str(onet_ckpt), str(onet_pb), "--atol", "1e-5", "--rtol", "0")
    assert code == 0, out + err
    assert "outputs match" in out and "FAIL" not in out
    assert out.count("ok") >= 3  # one row per ONet output


def test_verify_api_reports_the_perturbation(onet_ckpt: Path, onet_pb: Path, perturbed_onet_pb: Path) -> None:
    good = tfshrink.verify(onet_ckpt, onet_pb, samples=2, atol=1e-5, rtol=0)
    assert good.passed and good.max_abs <= 1e-5
    assert [(o.name_a, o.name_b) for o in good.outputs] == [
        ("onet/prob1", "onet/prob1"), ("onet/conv6-2/conv6-2", "onet/conv6-2/conv6-2"),
        ("onet/conv6-3/conv6-3", "onet/conv6-3/conv6-3")]
    bad = tfshrink.verify(onet_ckpt, perturbed_onet_pb, samples=2, atol=1e-4, rtol=1e-3)
    assert not bad.passed
    assert bad.max_abs > 1e-3
    assert all(o.shape[0] == 2 for o in bad.outputs)  # 2 samples of batch 1, concatenated


def test_verify_keras_vs_float_tflite_passes(keras_file: Path, tflite_file: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    result = tfshrink.verify(keras_file, tflite_file, samples=3, atol=1e-4, rtol=0)
    assert result.passed, result.to_json()
    assert [(o.name_a, o.name_b) for o in result.outputs] == [("scores", "output_0"), ("box", "output_1")]
    assert result.max_abs <= 1e-4
    assert all(o.cosine > 0.999999 and o.top1 == 1.0 for o in result.outputs if o.top1 is not None)
    code, out, err = run_cli(capsys, "verify", str(keras_file), str(tflite_file), "--atol", "1e-4")
    assert code == 0, out + err
    assert "outputs match" in out


def test_verify_keras_vs_int8_tflite(keras_file: Path, int8_tflite_file: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Float feeds are quantized for the int8 inputs and the int8 outputs dequantized by tfshrink."""
    result = tfshrink.verify(keras_file, int8_tflite_file, samples=4, atol=0.05, rtol=0)
    for o in result.outputs:
        assert o.cosine > 0.9, o
        assert o.max_abs < 0.05, o
    assert result.outputs[0].top1 is not None and result.outputs[0].top1 >= 0.75
    assert result.passed
    # and the other way round: random inputs are made from the int8 model's specs
    reverse = tfshrink.verify(int8_tflite_file, keras_file, samples=2, atol=0.05, rtol=0)
    assert all(o.cosine > 0.9 for o in reverse.outputs)

    code, out, _ = run_cli(capsys, "verify", str(keras_file), str(int8_tflite_file), "--atol", "1e-6",
                           "--rtol", "0")
    assert code == 1 and "FAIL" in out  # int8 is not bit-exact
    code, out, err = run_cli(capsys, "verify", str(keras_file), str(int8_tflite_file), "--atol", "0.05",
                             "--rtol", "0")
    assert code == 0, out + err


def test_verify_json_output(keras_file: Path, tflite_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "verify", str(keras_file), str(tflite_file), "--json", "--samples", "2",
                             "--atol", "1e-4", "--seed", "5")
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == {"a", "b", "samples", "atol", "rtol", "passed", "max_abs_error", "outputs", "warnings"}
    assert report["a"] == str(keras_file) and report["b"] == str(tflite_file)
    assert report["samples"] == 2 and report["atol"] == 1e-4 and report["passed"] is True
    assert len(report["outputs"]) == 2
    for o in report["outputs"]:
        assert set(o) == {"name_a", "name_b", "shape", "max_abs_error", "mean_abs_error", "cosine",
                          "top1_agreement", "passed", "constant_reference"}
        assert o["max_abs_error"] <= report["max_abs_error"] <= 1e-4
    assert report["outputs"][0]["shape"] == [2, 5] and report["outputs"][1]["shape"] == [2, 4]
    assert report["outputs"][0]["top1_agreement"] == 1.0


def test_verify_json_on_failure_still_exits_1(onet_ckpt: Path, perturbed_onet_pb: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "verify", str(onet_ckpt), str(perturbed_onet_pb), "--json", "--samples", "1")
    assert code == 1
    report = json.loads(out)
    assert report["passed"] is False and any(not o["passed"] for o in report["outputs"])


def test_verify_on_inputs_npz(onet_ckpt: Path, onet_pb: Path, perturbed_onet_pb: Path, face_npz: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    result = tfshrink.verify(onet_ckpt, onet_pb, inputs=face_npz, atol=1e-5, rtol=0)
    assert result.passed and result.samples == 1
    assert [o.shape for o in result.outputs] == [(3, 2), (3, 4), (3, 10)]
    # the real face scores as a face, the patches do not
    with tfshrink.load(onet_pb) as model, np.load(face_npz) as data:
        prob = model.run({"onet/input": data["onet/input"]})["onet/prob1"]
    assert prob[0, 1] > 0.9 and np.all(prob[1:, 1] < 0.5)

    code, out, err = run_cli(capsys, "verify", str(onet_ckpt), str(perturbed_onet_pb), "--inputs", str(face_npz),
                             "--json")
    assert code == 1, err
    report = json.loads(out)
    assert report["samples"] == 1 and report["outputs"][0]["shape"] == [3, 2]


def test_verify_on_inputs_npz_keyed_by_tensor_name(keras_file: Path, tflite_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    feeds = tmp_path / "two.npz"
    np.savez(feeds, **{"image:0": rng.uniform(-1, 1, (4, 12, 12, 3)).astype(np.float32),
                       "meta:0": rng.uniform(-1, 1, (4, 4)).astype(np.float32)})
    result = tfshrink.verify(keras_file, tflite_file, inputs=feeds, atol=1e-4, rtol=0)
    assert result.passed and [o.shape for o in result.outputs] == [(4, 5), (4, 4)]


def test_verify_inputs_npz_missing_an_input_is_a_user_error(keras_file: Path, tflite_file: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    feeds = tmp_path / "partial.npz"
    np.savez(feeds, image=np.zeros((1, 12, 12, 3), np.float32))
    code, _, err = run_cli(capsys, "verify", str(keras_file), str(tflite_file), "--inputs", str(feeds))
    assert code == 2
    assert err.startswith("error:") and "meta" in err and len(err.strip().splitlines()) == 1


def test_verify_inputs_of_the_wrong_shape_is_a_user_error(keras_file: Path, tflite_file: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    feeds = tmp_path / "wrong.npz"
    np.savez(feeds, image=np.zeros((1, 12, 12, 3), np.float32), meta=np.zeros((1, 7), np.float32))
    code, _, err = run_cli(capsys, "verify", str(tflite_file), str(keras_file), "--inputs", str(feeds))
    assert code == 2, err
    assert err.startswith("error:") and "Traceback" not in err and len(err.strip().splitlines()) == 1
