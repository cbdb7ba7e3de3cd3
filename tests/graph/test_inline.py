"""Inlining tf.cond v2 (If/StatelessIf) on a constant predicate, checked on the real runtime."""

from __future__ import annotations

import numpy as np
import pytest

from tests.builders import run_graph_def
from tfshrink import _tf
from tfshrink.graph.inline import fold_constant_ifs
from tfshrink.graph.ir import Graph
from tfshrink.model.freezing import finish_frozen, replace_placeholders


def _if_graph():
    tf = _tf.tf()
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 4], name="x")
        flag = v1.placeholder(tf.bool, [], name="flag")
        w = tf.constant(np.arange(16, dtype=np.float32).reshape(4, 4) / 10.0)

        def then():
            inner = tf.cond(flag, lambda: tf.matmul(x, w), lambda: x)  # nested
            return tf.nn.relu(inner) + 1.0

        y = tf.cond(flag, then, lambda: tf.nn.sigmoid(x) * 2.0, name="c")
        tf.identity(y, name="out")
    graph_def = g.as_graph_def()
    assert {n.op for n in graph_def.node} & {"If", "StatelessIf"}
    return graph_def


@pytest.mark.parametrize("value", [True, False])
def test_bound_predicate_inlines_the_taken_branch(value: bool) -> None:
    original = _if_graph()
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    expected = run_graph_def(original, {"x:0": x, "flag:0": value})
    bound = replace_placeholders(original, {"flag": str(value).lower()}, "test")
    g = Graph(bound)
    assert fold_constant_ifs(g) >= 1
    frozen = finish_frozen(g.to_graph_def(), ["out"])
    assert not {n.op for n in frozen.node} & {"If", "StatelessIf", "Switch", "Merge"}
    assert "flag" not in {n.name for n in frozen.node}
    assert not frozen.library.function  # the branches were inlined; nothing calls them
    np.testing.assert_allclose(run_graph_def(frozen, {"x:0": x}), expected, rtol=1e-6, atol=1e-6)


def test_unbound_if_is_left_alone() -> None:
    g = Graph(_if_graph())
    assert fold_constant_ifs(g) == 0
