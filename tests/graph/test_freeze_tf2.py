"""TF2-style graphs (tf.compat.v1 on TF 2.x): a bound predicate reached through any constant
subgraph, If inlined, switched-off v2 dropout bypassed, a loop's gradient accumulators dropped.
Each rewrite is checked on the real runtime against the graph it came from."""

from __future__ import annotations

import numpy as np
import pytest

from tests.builders import run_graph_def
from tfshrink import _tf
from tfshrink.graph.cond import constant_value
from tfshrink.graph.dropout import fold_inactive_dropout
from tfshrink.graph.inline import fold_constant_ifs
from tfshrink.graph.ir import Graph
from tfshrink.graph.loops import prune_loop_accumulators
from tfshrink.model.freezing import replace_placeholders


def _graph(build):  # noqa: ANN001
    tf = _tf.tf()
    graph = tf.Graph()
    with graph.as_default():
        build(tf, tf.compat.v1)
    return graph.as_graph_def()


def test_a_predicate_through_squeeze_cast_and_not_is_constant_once_bound() -> None:
    def build(tf, v1):  # noqa: ANN001
        flag = v1.placeholder(tf.bool, [1], name="flag")
        pred = tf.logical_not(tf.cast(tf.cast(tf.squeeze(flag), tf.int32), tf.bool), name="pred")
        tf.equal(tf.constant(3), tf.constant(3), name="same")
        tf.identity(pred, name="out")

    graph_def = _graph(build)
    assert constant_value(Graph(graph_def), "pred") is None  # still a placeholder
    bound = Graph(replace_placeholders(graph_def, {"flag": "true"}, "test"))
    assert constant_value(bound, "pred") is False
    assert constant_value(bound, "same") is True


@pytest.mark.parametrize("training", [True, False])
def test_if_on_a_squeezed_flag_is_inlined_and_computes_the_taken_branch(training: bool) -> None:
    def build(tf, v1):  # noqa: ANN001
        x = v1.placeholder(tf.float32, [None, 4], name="x")
        flag = v1.placeholder(tf.bool, [], name="flag")
        y = tf.cond(tf.squeeze(flag), lambda: x * 2.0 + 1.0, lambda: tf.nn.relu(x) - 3.0)
        tf.identity(y, name="out")

    original = _graph(build)
    assert {"If", "StatelessIf"} & {n.op for n in original.node}
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    expected = run_graph_def(original, {"x:0": x, "flag:0": training})
    graph = Graph(replace_placeholders(original, {"flag": str(training).lower()}, "test"))
    assert fold_constant_ifs(graph) == 1
    graph.prune(["out"])
    assert not {"If", "StatelessIf"} & {n.op for n in graph}
    np.testing.assert_array_equal(run_graph_def(graph.to_graph_def(), {"x:0": x}), expected)


def test_dropout_with_keep_prob_one_leaves_no_random_op() -> None:
    def build(tf, v1):  # noqa: ANN001
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        keep_prob = v1.placeholder(tf.float32, [], name="keep_prob")
        tf.identity(tf.nn.dropout(x * 3.0, rate=1 - keep_prob), name="out")

    original = _graph(build)
    graph = Graph(replace_placeholders(original, {"keep_prob": "1.0"}, "test"))
    assert fold_inactive_dropout(graph) == 1
    graph.prune(["out"])
    assert not {n.op for n in graph} & {"RandomUniform", "SelectV2", "GreaterEqual"}
    x = np.random.default_rng(1).normal(size=(2, 6)).astype(np.float32)
    np.testing.assert_array_equal(run_graph_def(graph.to_graph_def(), {"x:0": x}), x * 3.0)
    # with a rate that is not 0 the dropout stays
    kept = Graph(replace_placeholders(original, {"keep_prob": "0.5"}, "test"))
    assert fold_inactive_dropout(kept) == 0


def test_a_loops_gradient_accumulator_is_dropped_once_nothing_reads_it() -> None:
    def build(tf, v1):  # noqa: ANN001
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        w = tf.constant(np.full((3,), 0.5, np.float32))
        _, y = tf.while_loop(lambda i, t: i < 3, lambda i, t: (i + 1, tf.tanh(t * w) + t), [tf.constant(0), x])
        out = tf.identity(y, name="out")
        tf.gradients(tf.reduce_sum(out), x, name="gradients")

    original = _graph(build)
    loop = next(n for n in original.node if n.op in ("While", "StatelessWhile"))
    assert 21 in list(loop.attr["T"].list.type)  # DT_VARIANT: the accumulator
    graph = Graph(original)
    graph.prune(["out"])
    assert prune_loop_accumulators(graph) >= 1
    graph.prune(["out"])
    loop = next(n for n in graph if n.op in ("While", "StatelessWhile"))
    assert 21 not in list(loop.attr["T"].list.type)
    assert "EmptyTensorList" not in {n.op for n in graph}
    x = np.random.default_rng(2).normal(size=(2, 3)).astype(np.float32)
    expected = x
    for _ in range(3):  # (the graph with its backward pass does not import: TF's own quirk)
        expected = np.tanh(expected * np.float32(0.5)) + expected
    np.testing.assert_allclose(run_graph_def(graph.to_graph_def(), {"x:0": x}), expected, rtol=1e-6, atol=1e-6)
