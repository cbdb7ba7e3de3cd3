"""quantize_weights / round_weights: 8-bit storage with Dequantize, error within half a step."""

from __future__ import annotations

import numpy as np

from tests.builders import run_graph_def
from tfshrink import _tf
from tfshrink.graph.ir import Graph
from tfshrink.transforms import apply_transforms


def _graph(weights: np.ndarray):
    tf = _tf.tf()
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, weights.shape[0]], name="x")
        small = tf.constant(np.linspace(-1, 1, weights.shape[1], dtype=np.float32), name="small_bias")
        tf.identity(tf.matmul(x, tf.constant(weights, name="w")) + small, name="out")
    return g.as_graph_def()


def test_large_weights_become_uint8_with_dequantize_small_stay_float() -> None:
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(64, 32)).astype(np.float32)  # 2048 elements
    original = _graph(weights)
    result, applied, _ = apply_transforms(original, "quantize_weights", ["x"], ["out"])
    g = Graph(result)
    assert applied == [("quantize_weights", True)]
    assert g.node("w").op == "Dequantize" and g.node("w_quantized_const").attr["dtype"].type == 12  # quint8
    assert g.node("small_bias").op == "Const"  # 32 elements < minimum_size
    # Each weight is within half a quantization step of the original.
    tf = _tf.tf()
    with tf.Graph().as_default() as tg:
        tf.graph_util.import_graph_def(result, name="")
        with tf.compat.v1.Session(graph=tg) as sess:
            dequantized = sess.run("w:0")
    step = (weights.max() - weights.min()) / 255
    assert np.abs(dequantized - weights).max() <= step / 2 + 1e-6
    x = rng.normal(size=(3, 64)).astype(np.float32)
    np.testing.assert_allclose(run_graph_def(result, {"x:0": x}), run_graph_def(original, {"x:0": x}),
                               rtol=0, atol=64 * 3 * step / 2)


def test_minimum_size_and_round_weights() -> None:
    weights = np.random.default_rng(1).normal(size=(64, 32)).astype(np.float32)
    _, applied, _ = apply_transforms(_graph(weights), "quantize_weights(minimum_size=4096)", ["x"], ["out"])
    assert applied == [("quantize_weights", False)]
    result, applied, _ = apply_transforms(_graph(weights), "round_weights(num_steps=16)", ["x"], ["out"])
    tf = _tf.tf()
    rounded = tf.make_ndarray(Graph(result).node("w").attr["value"].tensor)
    assert applied == [("round_weights", True)] and len(np.unique(rounded)) <= 16
