"""fold_batch_norms / fold_old_batch_norms on conv+BN in old and new forms, on the real runtime."""

from __future__ import annotations

import numpy as np
import pytest

from tests.builders import run_graph_def
from tfshrink import _tf
from tfshrink.graph.ir import Graph
from tfshrink.transforms import apply_transforms

RNG = np.random.default_rng(7)


def _bn_params(c: int) -> tuple[np.ndarray, ...]:
    return (RNG.uniform(0.5, 1.5, c).astype(np.float32), RNG.normal(size=c).astype(np.float32),
            RNG.normal(size=c).astype(np.float32), RNG.uniform(0.5, 2.0, c).astype(np.float32))


def _graph(kind: str):
    tf = _tf.tf()
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 6, 6, 3], name="x")
        gamma, beta, mean, var = _bn_params(4 if kind != "depthwise" else 6)
        if kind == "depthwise":
            y = tf.nn.depthwise_conv2d(x, tf.constant(RNG.normal(size=(3, 3, 3, 2)).astype(np.float32)),
                                       [1, 1, 1, 1], "SAME")
        elif kind == "matmul":
            x2 = tf.reshape(x, [-1, 108])
            y = tf.matmul(x2, tf.constant(RNG.normal(size=(108, 4)).astype(np.float32)))
        else:
            y = tf.nn.conv2d(x, tf.constant(RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)), 1, "SAME")
        if kind in ("fused", "depthwise"):
            y, _, _ = v1.nn.fused_batch_norm(y, gamma, beta, mean, var, epsilon=1e-3, is_training=False)
        elif kind == "keras3":  # how Keras 3 exports batch norm: bias, then Mul and Add chains
            y = tf.nn.bias_add(y, tf.constant(beta))
            y = y * tf.constant(gamma / np.sqrt(var + 1e-3)) + tf.constant(mean)
        else:  # "mul" / "matmul": the pattern fold_batch_norms was written for
            y = y * tf.constant(gamma)
        tf.identity(tf.nn.relu(y), name="out")
    return g.as_graph_def()


@pytest.mark.parametrize("kind, spec, gone", [
    ("mul", "fold_batch_norms", "Mul"),
    ("matmul", "fold_batch_norms", "Mul"),
    ("keras3", "fold_batch_norms", "Mul"),
    ("fused", "fold_old_batch_norms", "FusedBatchNormV3"),
    ("depthwise", "fold_old_batch_norms", "FusedBatchNormV3"),
])
def test_batch_norm_folds_into_weights(kind: str, spec: str, gone: str) -> None:
    original = _graph(kind)
    assert gone in {n.op for n in original.node}
    result, applied, _ = apply_transforms(original, f"{spec} strip_unused_nodes", ["x"], ["out"])
    assert applied[0] == (spec, True)
    assert gone not in {n.op for n in Graph(result)}
    x = RNG.normal(size=(2, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(run_graph_def(result, {"x:0": x}), run_graph_def(original, {"x:0": x}),
                               rtol=1e-4, atol=1e-4)


def test_a_requested_output_is_not_folded_away() -> None:
    original = _graph("mul")
    mul = next(n.name for n in original.node if n.op == "Mul")
    _, applied, _ = apply_transforms(original, "fold_batch_norms", ["x"], [mul])
    assert applied == [("fold_batch_norms", False)]
