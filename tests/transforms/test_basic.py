"""remove_nodes, strip_unused_nodes, sort_by_execution_order, remove_device: structure and numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfshrink
import tfshrink.transforms
from tests.builders import run_graph_def, v1_cond_graph
from tfshrink.cli import main
from tfshrink.errors import UserError
from tfshrink.graph.ir import Graph
from tfshrink.transforms import apply_transforms


def _cond_graph():
    return v1_cond_graph(lambda tf, x: tf.identity(x * 2.0), lambda tf, x: tf.identity(tf.nn.relu(x)))


def test_remove_identity_keeps_cond_structure_and_numbers() -> None:
    original = _cond_graph()
    result, applied, _ = apply_transforms(original, "remove_nodes(op=Identity)", ["x", "flag"], ["out"])
    g = Graph(result)
    assert applied == [("remove_nodes", True)]
    assert "out" in g  # a requested output is never removed
    remaining = [n.name for n in g if n.op == "Identity"]
    assert remaining and all(g.node(g.data_inputs(n)[0][0]).op in ("Switch", "Merge") or n == "out" for n in remaining)
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    for flag in (True, False):
        np.testing.assert_array_equal(run_graph_def(result, {"x:0": x, "flag:0": flag}),
                                      run_graph_def(original, {"x:0": x, "flag:0": flag}))


def test_transform_graph_command_on_onet(onet_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pb = tmp_path / "onet.pb"
    tfshrink.freeze(onet_ckpt, pb, verify=False)
    out = tmp_path / "small.pb"
    with pytest.raises(SystemExit) as exc:
        main(["transform", f"--in_graph={pb}", f"--out_graph={out}", "--inputs=onet/input",
              "--outputs=onet/prob1,onet/conv6-2/conv6-2,onet/conv6-3/conv6-3",
              "--transforms=remove_nodes(op=identity, op=checknumerics)\nstrip_unused_nodes\nremove_device\n"
              "sort_by_execution_order"])
    assert exc.value.code == 0
    assert "using 'Identity'" in capsys.readouterr().err
    assert not [n for n in Graph(tfshrink.load(out).graph_def) if n.op == "Identity"]
    check = tfshrink.verify(pb, out, samples=2, atol=0.0, rtol=0.0)
    assert check.passed
    order = Graph(tfshrink.load(out).graph_def)
    assert order.topological_order() == order.names()


@pytest.mark.parametrize("spec, words", [
    ("fold_constnts", "unknown transform 'fold_constnts'"),
    ("remove_nodes(opp=Identity)", "unknown parameter 'opp'"),
    ("remove_nodes(op=Identity, ignore_errors=maybe)", "not a valid bool"),
])
def test_bad_transforms_exit_2_and_write_nothing(onet_ckpt: Path, tmp_path: Path, spec: str, words: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pb = tmp_path / "onet.pb"
    tfshrink.freeze(onet_ckpt, pb, verify=False)
    before = pb.read_bytes()
    out = tmp_path / "x.pb"
    with pytest.raises(SystemExit) as exc:
        main(["transform", str(pb), "-o", str(out), "--transforms", spec])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and words in err and err.count("\n") == 1
    assert not out.exists() and pb.read_bytes() == before


def test_unknown_output_name_names_the_closest(onet_ckpt: Path, tmp_path: Path) -> None:
    pb = tmp_path / "onet.pb"
    tfshrink.freeze(onet_ckpt, pb, verify=False)
    with pytest.raises(UserError, match="no output named 'onet/prob'") as exc:
        tfshrink.transform(pb, tmp_path / "y.pb", "strip_unused_nodes", outputs="onet/prob")
    assert "onet/prob1" in (exc.value.hint or "")
