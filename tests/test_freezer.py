"""Freeze: acceptance (a) ONet with detected outputs, (b) a training checkpoint with binds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tfshrink.cli import main
from tfshrink.model.graphdef import read_graph_def


def test_onet_checkpoint_freezes_with_detected_outputs(onet_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "onet.pb"
    result = tfshrink.freeze(onet_ckpt, out)
    assert result.outputs_from == "detected"
    assert sorted(result.outputs) == ["onet/conv6-2/conv6-2", "onet/conv6-3/conv6-3", "onet/prob1"]
    assert result.inputs == ("onet/input",)
    assert result.verification is not None and result.verification.passed
    assert result.verification.max_abs <= 1e-6
    ops = Counter(n.op for n in read_graph_def(out).node)
    assert not ops.keys() & {"VariableV2", "Assign", "SaveV2", "RestoreV2", "NoOp"}
    assert all(not n.device for n in read_graph_def(out).node)
    # verify (CLI) against the checkpoint exits 0
    with pytest.raises(SystemExit) as exc:
        main(["verify", str(onet_ckpt), str(out)])
    assert exc.value.code == 0


def test_freeze_is_byte_identical_on_rerun(onet_ckpt: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.pb", tmp_path / "b.pb"
    tfshrink.freeze(onet_ckpt, a, verify=False)
    tfshrink.freeze(onet_ckpt, b, verify=False)
    assert a.read_bytes() == b.read_bytes()


def test_training_checkpoint_with_binds(train_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.pb"
    result = tfshrink.freeze(train_ckpt, out, binds=["is_training=false", "keep_prob=1.0"])
    graph_def = read_graph_def(out)
    ops = Counter(n.op for n in graph_def.node)
    placeholders = [n.name for n in graph_def.node if n.op.startswith("Placeholder")]
    assert placeholders == ["input"]
    assert not ops.keys() & {"Switch", "Merge", "If", "StatelessIf"}
    assert result.outputs == ("prob",)
    # Same numbers as the checkpoint run with keep_prob=1.0 and is_training=False.
    x = np.random.default_rng(3).normal(size=(5, 8, 8, 1)).astype(np.float32)
    with tfshrink.load(train_ckpt) as ckpt, tfshrink.load(out) as frozen:
        want = ckpt.run({"input": x, "keep_prob": np.float32(1.0), "is_training": False})["prob"]
        got = frozen.run({"input": x})["prob"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_tensor_names_are_accepted(train_ckpt: Path, tmp_path: Path) -> None:
    result = tfshrink.freeze(train_ckpt, tmp_path / "t.pb", outputs="prob:0,logits",
                             binds={"is_training": "false", "keep_prob": "1"})
    assert result.outputs == ("prob", "logits")
    assert result.outputs_from == "given"


def test_text_output(onet_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "onet.pbtxt"
    tfshrink.freeze(onet_ckpt, out, text=True, verify=False)
    assert out.read_text().startswith("node {")
    assert len(read_graph_def(out).node) > 50


def test_training_flag_left_unbound_says_which_bind_to_pass(train_ckpt: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "unbound.pb"
    with pytest.raises(SystemExit) as exc:
        main(["freeze", str(train_ckpt), "-o", str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "--bind is_training=false" in err and err.count("\n") == 1
    assert not out.exists()
