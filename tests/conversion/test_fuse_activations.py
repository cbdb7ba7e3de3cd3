"""fuse_prelu and fuse_softmax: every PReLU spelling becomes the one TFLite fuses into PRELU (and
softmax spelled exp/sum/div becomes Softmax), with the same numbers, as transforms and inside convert."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tfshrink
from tests import builders
from tfshrink import _tf
from tfshrink.graph.ir import Graph
from tfshrink.transforms import apply_transforms
from tfshrink.transforms.activations import rewrite_prelus, rewrite_softmaxes
from tfshrink.transforms.registry import Context

ALPHA = np.array([0.25, -0.1, 0.6, 0.05], np.float32)

SPELLINGS: dict[str, Callable[[Any, Any], Any]] = {
    # facenet / MTCNN: relu(x) + alpha * (-relu(-x))
    "facenet": lambda tf, x: tf.add(tf.nn.relu(x), tf.multiply(ALPHA, -tf.nn.relu(-x))),
    # relu(x) - alpha * relu(-x)
    "sub": lambda tf, x: tf.subtract(tf.nn.relu(x), tf.multiply(tf.nn.relu(-x), ALPHA)),
    # Keras' -alpha * relu(-x), alpha of the wrong rank for TFLite's pattern, Add operands swapped
    "keras": lambda tf, x: tf.add(tf.multiply(-tf.constant(ALPHA), tf.nn.relu(tf.negative(x))), tf.nn.relu(x)),
}


def _graph(spelling: str) -> Any:
    tf = _tf.tf()
    graph = tf.Graph()
    rng = np.random.default_rng(0)
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 6, 6, 3], name="x")
        h = tf.nn.conv2d(x, rng.normal(size=(3, 3, 3, 4)).astype(np.float32), 1, "SAME")
        h = SPELLINGS[spelling](tf, h)
        logits = tf.reshape(h, [1, 144]) @ rng.normal(size=(144, 5)).astype(np.float32)
        m = tf.reduce_max(logits, axis=-1, keepdims=True)
        e = tf.exp(logits - m)
        tf.math.divide(e, tf.reduce_sum(e, axis=1, keepdims=True), name="out")
    return graph.as_graph_def()


def _tflite_ops(graph_def: Any) -> list[str]:
    from tfshrink.tflite.metadata import tensor_names

    tf = _tf.tf()
    converter = tf.compat.v1.lite.TFLiteConverter(graph_def, None, None, input_arrays_with_shape=[("x", [1, 6, 6, 3])],
                                                  output_arrays=["out"])
    with _tf.quiet_native():
        data = converter.convert()
    return [op for op, _ in tensor_names(data)]


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_every_spelling_becomes_prelu_with_the_same_numbers(spelling: str) -> None:
    graph_def = _graph(spelling)
    assert "PRELU" not in _tflite_ops(graph_def)
    graph = Graph(type(graph_def).FromString(graph_def.SerializeToString()))
    ctx = Context(["x"], ["out"])
    assert rewrite_prelus(graph, ctx) == 1
    assert rewrite_softmaxes(graph, ctx) == 1
    assert rewrite_prelus(graph, ctx) == 0  # already in TFLite's spelling
    rewritten = graph.to_graph_def()
    assert {n.op for n in rewritten.node} >= {"Softmax", "AddV2", "Mul", "Relu", "Neg"}
    assert sum(n.op == "Neg" for n in rewritten.node) == 1 and not any(n.op == "Sub" for n in rewritten.node)
    feeds = {"x:0": np.random.default_rng(1).normal(size=(1, 6, 6, 3)).astype(np.float32)}
    before = builders.run_graph_def(graph_def, feeds, "out:0")
    after = builders.run_graph_def(rewritten, feeds, "out:0")
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7)
    ops = _tflite_ops(rewritten)
    assert "PRELU" in ops and "SOFTMAX" in ops and "NEG" not in ops, ops


def test_registered_as_transforms_and_refuses_shared_nodes() -> None:
    tf = _tf.tf()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 4], name="x")
        neg_relu = tf.nn.relu(-x, name="neg_relu")
        tf.add(tf.nn.relu(x), tf.multiply(ALPHA, -neg_relu), name="out")
        tf.identity(neg_relu, name="other")  # a second reader: rewriting would change "other"
    result, applied, _ = apply_transforms(graph.as_graph_def(), "fuse_prelu fuse_softmax", ["x"], ["out", "other"])
    assert applied == [("fuse_prelu", False), ("fuse_softmax", False)]
    assert len(result.node) == len(graph.as_graph_def().node)


def test_onet_converts_with_prelu_and_says_so(onet_ckpt: Path, tmp_path: Path) -> None:
    r = tfshrink.convert(onet_ckpt, tmp_path / "onet.tflite")
    assert r.ops.get("PRELU") == 5 and "NEG" not in r.ops and r.ops.get("SOFTMAX") == 1
    assert any("rewrote 5 PReLU" in n and "fuse_prelu" in n for n in r.notes)
    assert all(o.cosine > 0.99999 for o in r.verification.outputs)
