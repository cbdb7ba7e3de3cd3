"""fold_constants and merge_duplicate_nodes: structure and numbers on the real runtime."""

from __future__ import annotations

import numpy as np

from tests.builders import run_graph_def
from tfshrink import _tf
from tfshrink.graph.ir import Graph
from tfshrink.transforms import apply_transforms


def _graph():
    tf = _tf.tf()
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        w = tf.constant([[1.0, 2.0, 3.0]] * 3, name="w")
        scale = tf.sqrt(tf.constant(4.0, name="four"), name="scale")  # constant subgraph
        a = tf.nn.relu(tf.matmul(x, w * scale), name="a")
        b = tf.nn.relu(tf.matmul(x, w * scale), name="b")  # duplicates a's whole chain
        c1 = tf.constant(0.5, name="half_1")
        c2 = tf.constant(0.5, name="half_2")  # same value, different name
        tf.identity(a * c1 + b * c2, name="out")
    return g.as_graph_def()


def test_fold_constants_evaluates_constant_subgraphs() -> None:
    original = _graph()
    result, applied, _ = apply_transforms(original, "fold_constants", ["x"], ["out"])
    ops = [n.op for n in result.node]
    assert applied == [("fold_constants", True)]
    assert "Sqrt" not in ops
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(run_graph_def(result, {"x:0": x}), run_graph_def(original, {"x:0": x}),
                               rtol=1e-6, atol=1e-6)


def test_merge_duplicate_nodes_collapses_chains_and_equal_constants() -> None:
    original = _graph()
    result, applied, _ = apply_transforms(original, "fold_constants merge_duplicate_nodes", ["x"], ["out"])
    g = Graph(result)
    assert applied[-1] == ("merge_duplicate_nodes", True)
    assert sum(1 for n in g if n.op == "Relu") == 1
    assert sum(1 for n in g if n.op == "MatMul") == 1
    halves = [n.name for n in g if n.op == "Const" and n.attr["value"].tensor.float_val == [0.5]]
    assert len(halves) == 1
    x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(run_graph_def(result, {"x:0": x}), run_graph_def(original, {"x:0": x}),
                               rtol=1e-6, atol=1e-6)


def test_nothing_to_do_reports_no_change() -> None:
    once, _, _ = apply_transforms(_graph(), "fold_constants merge_duplicate_nodes", ["x"], ["out"])
    _, applied, _ = apply_transforms(once, "fold_constants merge_duplicate_nodes", ["x"], ["out"])
    assert applied == [("fold_constants", False), ("merge_duplicate_nodes", False)]
