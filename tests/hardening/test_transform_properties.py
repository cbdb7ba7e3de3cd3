"""Issue 16: random valid graphs through the exact transforms stay equivalent. Each graph is built
in TensorFlow from a drawn list of layers (matmul + bias, batch norm as mul/add, activations,
residual adds, concatenations, constant subgraphs); `transform` checks the result against the
input on the real runtime and raises CheckFailed if any output moved beyond 1e-4."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfshrink import _tf
from tfshrink.transformer import transform
from tfshrink.transforms import OPTIMIZE_SPEC

EXACT = ("fold_constants remove_nodes(op=Identity) fuse_bias_add merge_duplicate_nodes merge_concats "
         "hoist_activations fold_batch_norms fold_old_batch_norms strip_unused_nodes sort_by_execution_order")

LAYERS = st.lists(st.sampled_from(["dense", "bias", "bn", "relu", "relu6", "tanh", "residual", "concat",
                                   "identity", "const_branch", "duplicate"]), min_size=1, max_size=8)


def _graph(layers: list[str], seed: int):  # noqa: ANN202
    tf = _tf.tf()
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    width = 4
    with graph.as_default():
        h = tf.compat.v1.placeholder(tf.float32, [None, width], name="x")
        for i, layer in enumerate(layers):
            with tf.name_scope(f"l{i}"):
                if layer == "dense":
                    h = tf.matmul(h, tf.constant(rng.normal(size=(width, width)).astype(np.float32)))
                elif layer == "bias":
                    h = tf.nn.bias_add(h, tf.constant(rng.normal(size=width).astype(np.float32)))
                elif layer == "bn":
                    scale = tf.constant(rng.uniform(0.5, 1.5, width).astype(np.float32))
                    h = h * scale + tf.constant(rng.normal(size=width).astype(np.float32))
                elif layer in ("relu", "relu6", "tanh"):
                    h = {"relu": tf.nn.relu, "relu6": tf.nn.relu6, "tanh": tf.tanh}[layer](h)
                elif layer == "residual":
                    h = h + tf.nn.relu(h)
                elif layer == "concat":
                    h = tf.concat([h[:, :2], h[:, 2:]], axis=1)
                elif layer == "identity":
                    h = tf.identity(h)
                elif layer == "const_branch":  # a subgraph of constants only: folded away
                    c = tf.constant(rng.normal(size=width).astype(np.float32))
                    h = h + tf.sqrt(tf.abs(c) + 1.0) * 2.0
                else:  # the same op twice, summed: merge_duplicate_nodes' case
                    h = tf.nn.relu(h) + tf.nn.relu(h)
        tf.identity(h, name="out")
    return graph.as_graph_def()


@settings(max_examples=25, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(LAYERS, st.integers(0, 2**16), st.sampled_from([EXACT, OPTIMIZE_SPEC]))
def test_random_graphs_stay_equivalent(layers: list[str], seed: int, spec: str) -> None:
    graph_def = _graph(layers, seed)
    result = transform(graph_def, None, spec, inputs="x", outputs="out", samples=2, atol=1e-4, rtol=1e-4)
    assert result.checks and result.checks[-1].passed and result.checks[-1].exact
    assert len(result.graph_def.node) <= len(graph_def.node)
