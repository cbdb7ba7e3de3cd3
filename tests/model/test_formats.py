"""`tfshrink.load` of every format: the signature it exposes, and that it runs (real TF and LiteRT).

Acceptance (c) is at the end: a SavedModel and Keras models (.keras, .h5) freeze to a GraphDef that
verifies against its source and keeps the friendly input names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tfshrink.data.feeds import random_feeds

TWO_IO_INPUTS = [("image", "float32", (None, 12, 12, 3)), ("meta", "float32", (None, 4))]
KERAS_OUTPUTS = [("scores", "float32", (None, 5)), ("box", "float32", (None, 4))]
EXPORT_OUTPUTS = [("output_0", "float32", (None, 5)), ("output_1", "float32", (None, 4))]
ONET_INPUTS = [("onet/input", "float32", (None, 48, 48, 3))]
ONET_OUTPUTS = [("onet/prob1", "float32", (None, 2)), ("onet/conv6-2/conv6-2", "float32", (None, 4)),
                ("onet/conv6-3/conv6-3", "float32", (None, 10))]


def _sig(specs) -> list[tuple]:
    return [(s.name, s.dtype, s.shape) for s in specs]


def _onet_prefix(folder: Path) -> Path:
    (meta,) = folder.glob("*.meta")
    return meta.with_suffix("")


@pytest.fixture(scope="module")
def keras_pbtxt(tmp_path_factory: pytest.TempPathFactory, keras_file: Path) -> Path:
    out = tmp_path_factory.mktemp("pbtxt") / "two_io.pbtxt"
    tfshrink.freeze(keras_file, out, text=True)
    return out


# (fixture, how to get the path from it, format, inputs, outputs)
CASES = {
    "checkpoint-prefix": ("onet_ckpt", _onet_prefix, "checkpoint", ONET_INPUTS, ONET_OUTPUTS),
    "checkpoint-folder": ("onet_ckpt", lambda p: p, "checkpoint", ONET_INPUTS, ONET_OUTPUTS),
    "checkpoint-meta": ("onet_ckpt", lambda p: Path(f"{_onet_prefix(p)}.meta"), "checkpoint", ONET_INPUTS,
                        ONET_OUTPUTS),
    "training-checkpoint": ("train_ckpt", lambda p: p, "checkpoint",
                            [("input", "float32", (None, 8, 8, 1)), ("keep_prob", "float32", ()),
                             ("is_training", "bool", ())],
                            [("prob", "float32", (None, 4))]),
    "savedmodel": ("saved_model_dir", lambda p: p, "savedmodel", TWO_IO_INPUTS, EXPORT_OUTPUTS),
    "keras": ("keras_file", lambda p: p, "keras", TWO_IO_INPUTS, KERAS_OUTPUTS),
    "h5": ("h5_file", lambda p: p, "keras", TWO_IO_INPUTS, KERAS_OUTPUTS),
    "legacy-keras2-h5": ("legacy_h5_file", lambda p: p, "keras", TWO_IO_INPUTS, KERAS_OUTPUTS),
    "pb": ("keras_pb", lambda p: p, "graphdef", TWO_IO_INPUTS, KERAS_OUTPUTS),
    "pbtxt": ("keras_pbtxt", lambda p: p, "graphdef", TWO_IO_INPUTS, KERAS_OUTPUTS),
    "tflite": ("tflite_file", lambda p: p, "tflite", TWO_IO_INPUTS, EXPORT_OUTPUTS),
}


@pytest.mark.parametrize("case", list(CASES))
def test_load_exposes_signature_and_runs(case: str, request: pytest.FixtureRequest) -> None:
    fixture, to_path, fmt, inputs, outputs = CASES[case]
    path = to_path(request.getfixturevalue(fixture))
    with tfshrink.load(path) as model:
        assert model.format == fmt
        assert _sig(model.inputs) == inputs
        assert _sig(model.outputs) == outputs
        feeds = random_feeds(model.inputs, seed=3, shapes={s.name: (2, *s.shape[1:]) for s in model.inputs
                                                           if s.shape and s.shape[0] is None})
        result = model.run(feeds)
    assert list(result) == [name for name, _, _ in outputs]
    for name, dtype, shape in outputs:
        assert result[name].dtype == np.dtype(dtype)
        assert result[name].shape == (2, *shape[1:])
        assert np.all(np.isfinite(result[name]))
    probs = result.get("onet/prob1", result.get("scores", result.get("output_0", result.get("prob"))))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-5)


def test_graph_formats_carry_op_types(keras_pb: Path, onet_ckpt: Path) -> None:
    with tfshrink.load(keras_pb) as pb:
        assert [s.op for s in pb.inputs] == ["Placeholder", "Placeholder"]
        assert [s.op for s in pb.outputs] == ["Identity", "Identity"]
    with tfshrink.load(onet_ckpt) as ckpt:
        assert [s.op for s in ckpt.outputs] == ["RealDiv", "BiasAdd", "BiasAdd"]


def test_pbtxt_is_protobuf_text(keras_pbtxt: Path, keras_pb: Path) -> None:
    text = keras_pbtxt.read_text()
    assert text.startswith("node {") and 'name: "image"' in text
    with tfshrink.load(keras_pbtxt) as a, tfshrink.load(keras_pb) as b:
        assert len(a.graph_def.node) == len(b.graph_def.node)


KERAS_FAMILY = ["saved_model_dir", "h5_file", "legacy_h5_file", "keras_pb", "keras_pbtxt", "tflite_file"]


@pytest.mark.parametrize("fixture", KERAS_FAMILY)
def test_every_format_of_the_keras_model_computes_the_same(fixture: str, keras_file: Path,
                                                           request: pytest.FixtureRequest) -> None:
    """Outputs pair by order (scores/output_0, box/output_1) and agree with Keras itself."""
    path = request.getfixturevalue(fixture)
    with tfshrink.load(keras_file) as ref, tfshrink.load(path) as model:
        feeds = random_feeds(ref.inputs, seed=7, shapes={"image": (3, 12, 12, 3), "meta": (3, 4)})
        expected = ref.run(feeds)
        got = model.run(feeds)
    for (name_a, a), (name_b, b) in zip(expected.items(), got.items(), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5, err_msg=f"{name_a} vs {name_b} ({fixture})")


def test_checkpoint_prefix_folder_and_meta_are_the_same_model(onet_ckpt: Path) -> None:
    prefix = _onet_prefix(onet_ckpt)
    paths = [prefix, onet_ckpt, Path(f"{prefix}.meta"), Path(f"{prefix}.index")]
    feeds = random_feeds(tfshrink.load(prefix).inputs, seed=1)
    results = []
    for p in paths:
        with tfshrink.load(p) as model:
            assert model.path == prefix
            results.append(model.run(feeds))
    for other in results[1:]:
        for name, value in results[0].items():
            np.testing.assert_allclose(other[name], value, rtol=0, atol=0)


def test_detect_format_by_content_without_extension(tmp_path: Path, tflite_file: Path, keras_file: Path) -> None:
    from tfshrink.model import detect_format

    (tmp_path / "model_a").write_bytes(tflite_file.read_bytes())
    (tmp_path / "model_b").write_bytes(keras_file.read_bytes())
    assert detect_format(tmp_path / "model_a")[0] == "tflite"
    assert detect_format(tmp_path / "model_b")[0] == "keras"


def test_tflite_names_follow_its_signature_and_tensor_names_still_feed(tflite_file: Path) -> None:
    """The converter stores `serving_default_meta:0` before `serving_default_image:0`; the model
    layer names and orders I/O by the signature, and still accepts the raw tensor names."""
    with tfshrink.load(tflite_file) as model:
        tensor_names = {d["name"] for d in model.interpreter.get_input_details()}
        assert tensor_names == {"serving_default_image:0", "serving_default_meta:0"}
        feeds = random_feeds(model.inputs, seed=5)
        by_key = model.run(feeds)
        by_tensor = model.run({f"serving_default_{k}:0": v for k, v in feeds.items()})
        resized = model.run(random_feeds(model.inputs, seed=5, shapes={"image": (4, 12, 12, 3), "meta": (4, 4)}))
    for name in ("output_0", "output_1"):
        np.testing.assert_allclose(by_tensor[name], by_key[name], rtol=0, atol=0)
    assert resized["output_0"].shape == (4, 5) and resized["output_1"].shape == (4, 4)


def test_int8_tflite_quantizes_inputs_and_dequantizes_outputs(int8_tflite_file: Path, keras_file: Path) -> None:
    with tfshrink.load(int8_tflite_file) as q, tfshrink.load(keras_file) as ref:
        assert [(s.name, s.dtype) for s in q.inputs] == [("image", "int8"), ("meta", "int8")]
        assert all(s.quantization is not None and s.quantization[0] > 0 for s in q.inputs + q.outputs)
        feeds = random_feeds(ref.inputs, seed=2)
        dequantized = q.run(feeds)
        by_hand = {s.name: np.clip(np.round(feeds[s.name] / s.quantization[0] + s.quantization[1]), -128, 127)
                   .astype(np.int8) for s in q.inputs}
        raw = q.run(by_hand, raw=True)
        expected = ref.run(feeds)
    assert raw["output_0"].dtype == np.int8 and dequantized["output_0"].dtype == np.float32
    for spec in q.outputs:
        scale, zero = spec.quantization
        np.testing.assert_allclose(dequantized[spec.name], (raw[spec.name].astype(np.float32) - zero) * scale,
                                   rtol=0, atol=1e-7)
    # int8 error: a few quantization steps of the output scale
    np.testing.assert_allclose(dequantized["output_0"], expected["scores"], rtol=0, atol=0.02)
    np.testing.assert_allclose(dequantized["output_1"], expected["box"], rtol=0, atol=0.05)


def test_legacy_h5_is_a_keras2_file(legacy_h5_file: Path) -> None:
    import h5py

    with h5py.File(legacy_h5_file, "r") as f:
        assert f.attrs["keras_version"] == "2.15.0"
        assert [n.decode() if isinstance(n, bytes) else n for n in f["model_weights/conv"].attrs["weight_names"]] == ["conv/kernel:0", "conv/bias:0"]


# -- acceptance (c): freeze a SavedModel and Keras models; the frozen graph verifies ---------------------


@pytest.mark.parametrize("fixture", ["saved_model_dir", "keras_file", "h5_file", "legacy_h5_file"])
def test_freeze_savedmodel_and_keras_verifies_and_keeps_input_names(fixture: str, tmp_path: Path,
                                                                    request: pytest.FixtureRequest) -> None:
    source = request.getfixturevalue(fixture)
    out = tmp_path / "frozen.pb"
    result = tfshrink.freeze(source, out, atol=1e-5, rtol=1e-4)
    assert out.is_file() and result.bytes == out.stat().st_size
    assert result.inputs == ("image", "meta")
    expected_outputs = ("output_0", "output_1") if fixture == "saved_model_dir" else ("scores", "box")
    assert result.outputs == expected_outputs
    v = result.verification
    assert v is not None and v.passed
    assert isinstance(v.max_abs, float) and 0.0 <= v.max_abs <= 1e-5
    report = result.to_json()["verification"]
    assert report["passed"] is True and report["max_abs_error"] == v.max_abs
    with tfshrink.load(out) as frozen:
        assert _sig(frozen.inputs) == TWO_IO_INPUTS
        assert [s.name for s in frozen.outputs] == list(expected_outputs)
        assert {n.op for n in frozen.graph_def.node}.isdisjoint({"VarHandleOp", "ReadVariableOp", "VariableV2"})
    again = tfshrink.verify(source, out, atol=1e-5, rtol=0, samples=2)
    assert again.passed and again.max_abs <= 1e-5
