"""Folding tf.cond (v1) on a constant predicate: structure and numbers on the real runtime."""

from __future__ import annotations

import numpy as np
import pytest

from tests.builders import run_graph_def, v1_cond_graph
from tfshrink.graph.cond import fold_constant_conds
from tfshrink.graph.ir import Graph
from tfshrink.model.freezing import replace_placeholders


def _cond_graph():
    return v1_cond_graph(lambda tf, x: x * 2.0 + 1.0, lambda tf, x: tf.nn.relu(x) - 3.0)


@pytest.mark.parametrize("value", [True, False])
def test_constant_predicate_leaves_no_switch_or_merge(value: bool) -> None:
    original = _cond_graph()
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    expected = run_graph_def(original, {"x:0": x, "flag:0": value})
    bound = replace_placeholders(original, {"flag": "true" if value else "false"}, "test")
    g = Graph(bound)
    folded = fold_constant_conds(g)
    g.prune(["out"])
    ops = {n.op for n in g}
    assert folded >= 1
    assert not ops & {"Switch", "Merge"}
    assert "flag" not in g
    np.testing.assert_allclose(run_graph_def(g.to_graph_def(sort=True), {"x:0": x}), expected, rtol=0, atol=0)


def test_nothing_to_fold_changes_nothing() -> None:
    g = Graph(_cond_graph())
    before = g.to_graph_def().SerializeToString(deterministic=True)
    assert fold_constant_conds(g) == 0
    assert g.to_graph_def().SerializeToString(deterministic=True) == before
