"""Remove dropout that a bind switched off (TF2's `tf.nn.dropout`, which TF1's keep_prob form calls).

`tf.nn.dropout(x, rate)` computes `SelectV2(RandomUniform(shape) >= rate, x * (1 / (1 - rate)), 0)`.
After `--bind keep_prob=1.0` the rate is the constant 0: a uniform sample in [0, 1) is always >= 0,
so the select always takes `x * 1`. Rewrite: consumers of the select read `x` (or `x * scale` when
the scale is not 1), and the random mask is left for pruning. The result is exactly what the
graph computed, with no RandomUniform left behind.
"""

from __future__ import annotations

from tfshrink.graph.cond import constant_value
from tfshrink.graph.ir import Graph, parse_tensor

_RANDOM = ("RandomUniform", "StatelessRandomUniformV2", "StatelessRandomUniform")
_SELECT = ("Select", "SelectV2")


def fold_inactive_dropout(graph: Graph) -> int:
    """Bypass every dropout whose rate is a constant <= 0. Returns how many were removed."""
    folded = 0
    for node in list(graph):
        if node.op not in _SELECT or node.name not in graph or len(node.input) < 3:
            continue
        if not _always_true(graph, node.input[0]):
            continue
        kept = node.input[1]
        scaled = graph.get(parse_tensor(kept)[0])
        if scaled is not None and scaled.op == "Mul" and len(scaled.input) == 2:
            scale = constant_value(graph, scaled.input[1])
            if scale is not None and float(scale) == 1.0:
                kept = scaled.input[0]
        graph.replace_uses(node.name, kept)
        folded += 1
    return folded


def _always_true(graph: Graph, ref: str) -> bool:
    """`ref` is `uniform >= rate` with a uniform [0, 1) sample and a constant rate <= 0."""
    name, index, _ = parse_tensor(ref)
    mask = graph.get(name)
    if mask is None or index != 0 or mask.op != "GreaterEqual" or len(mask.input) < 2:
        return False
    sample = graph.get(parse_tensor(mask.input[0])[0])
    while sample is not None and sample.op == "Identity":
        sample = graph.get(parse_tensor(sample.input[0])[0])
    if sample is None or sample.op not in _RANDOM:
        return False
    rate = constant_value(graph, mask.input[1])
    return rate is not None and not isinstance(rate, bool) and float(rate) <= 0.0
