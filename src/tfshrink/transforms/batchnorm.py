"""fold_batch_norms and fold_old_batch_norms: batch norm folded into the weights before it.

fold_batch_norms matches  Mul(W-op(x, W), s)  or  Mul(BiasAdd(W-op(x, W), b), s)  with W, b, s
constants and s one value per output channel (or a scalar), where W-op is Conv2D, MatMul or
DepthwiseConv2dNative, and rewrites it to  W-op(x, W·s)  (+ BiasAdd(b·s)).

fold_old_batch_norms matches  FusedBatchNorm[V2|V3](W-op(x, W), γ, β, μ, σ²)  in inference mode
and  BatchNormWithGlobalNormalization(W-op(x, W), μ, σ², β, γ), and rewrites it to
W-op(x, W·k) + BiasAdd(β − μ·k)  with  k = γ / sqrt(σ² + ε)  per output channel.

Both refuse (leave the node alone) when the weight op has other consumers, its weights or the
batch-norm parameters are not constants, or the shapes don't line up.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfshrink.graph.ir import Graph, parse_tensor
from tfshrink.transforms.common import add_const, const_value
from tfshrink.transforms.registry import Context, register

WEIGHT_OPS = ("Conv2D", "MatMul", "DepthwiseConv2dNative")


def _scaled_weights(op: Any, weights: np.ndarray, scale: np.ndarray) -> np.ndarray | None:
    """W·s along the output channels, or None when the shapes don't fit."""
    if op.op == "MatMul" and op.attr["transpose_b"].b:
        weights = weights.T
        out = weights * scale if scale.size in (1, weights.shape[-1]) else None
        return None if out is None else out.T
    if op.op == "DepthwiseConv2dNative":
        h, w, cin, mult = weights.shape
        if scale.size not in (1, cin * mult):
            return None
        return weights * (scale.reshape(cin, mult) if scale.size > 1 else scale)
    if scale.size not in (1, weights.shape[-1]):
        return None
    return weights * scale


def _weight_op(graph: Graph, ref: str) -> tuple[Any, np.ndarray] | None:
    name = parse_tensor(ref)[0]
    node = graph.get(name)
    if node is None or node.op not in WEIGHT_OPS or len(graph.consumers(name)) != 1:
        return None
    if node.op in ("Conv2D", "DepthwiseConv2dNative") and node.attr["data_format"].s not in (b"", b"NHWC"):
        return None
    weights = const_value(graph, node.input[1])
    if weights is None or weights.dtype.kind != "f":
        return None
    return node, weights


def _rewire_weights(graph: Graph, op: Any, weights: np.ndarray) -> None:
    new = add_const(graph, f"{op.name}/weights_folded", weights.astype(np.float32))
    refs = list(op.input)
    refs[1] = new
    graph.set_inputs(op.name, refs)


@register("fold_batch_norms", "fold a Mul by per-channel constants into the weights before it")
def fold_batch_norms(graph: Graph, params: dict, ctx: Context) -> bool:
    changed = False
    for node in graph:
        if node.op != "Mul" or node.name not in graph or _is_output(node.name, ctx):
            continue
        scale = const_value(graph, node.input[1])
        first = node.input[0]
        if scale is None:
            scale, first = const_value(graph, node.input[0]), node.input[1]
        if scale is None:
            continue
        scale = scale.reshape(-1) if scale.ndim <= 1 or scale.size == scale.shape[-1] else None
        if scale is None:
            continue
        bias_node = None
        producer = graph.node(parse_tensor(first)[0])
        if producer.op == "BiasAdd" and len(graph.consumers(producer.name)) == 1:
            bias = const_value(graph, producer.input[1])
            found = _weight_op(graph, producer.input[0]) if bias is not None else None
            bias_node = producer
        else:
            bias = None
            found = _weight_op(graph, first)
        if found is None:
            continue
        op, weights = found
        folded = _scaled_weights(op, weights, scale)
        if folded is None:
            continue
        _rewire_weights(graph, op, folded)
        if bias_node is not None:
            new_bias = add_const(graph, f"{bias_node.name}/bias_folded", (bias * scale).astype(np.float32))
            graph.set_inputs(bias_node.name, [bias_node.input[0], new_bias])
            graph.replace_uses(node.name, bias_node.name)
        else:
            graph.replace_uses(node.name, op.name)
        _drop_if_unused(graph, node.name, ctx)
        changed = True
    return changed


BN_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "BatchNormWithGlobalNormalization")


@register("fold_old_batch_norms", "fold FusedBatchNorm / BatchNormWithGlobalNormalization into the weights")
def fold_old_batch_norms(graph: Graph, params: dict, ctx: Context) -> bool:
    changed = False
    for node in graph.live(BN_OPS):
        if node.op == "BatchNormWithGlobalNormalization":
            mean, var, beta, gamma = (const_value(graph, r) for r in node.input[1:5])
            eps = node.attr["variance_epsilon"].f
            if gamma is not None and not node.attr["scale_after_normalization"].b:
                gamma = np.ones_like(gamma)
        else:
            if node.attr["is_training"].b or node.attr["data_format"].s not in (b"", b"NHWC"):
                continue
            gamma, beta, mean, var = (const_value(graph, r) for r in node.input[1:5])
            eps = node.attr["epsilon"].f
        if any(v is None for v in (mean, var, beta, gamma)):
            continue
        reads_stats = any(parse_tensor(r)[0] == node.name and parse_tensor(r)[1] > 0
                          for u in graph.data_consumers(node.name) for r in graph.node(u).input
                          if not r.startswith("^"))
        if reads_stats or _is_output(node.name, ctx):
            continue  # someone reads the batch statistics, or the node itself was asked for
        found = _weight_op(graph, node.input[0])
        prior_bias: np.ndarray | float = 0.0  # a BiasAdd between the weight op and the batch norm
        source = graph.node(parse_tensor(node.input[0])[0])
        if found is None and source.op == "BiasAdd" and len(graph.consumers(source.name)) == 1 \
                and source.attr["data_format"].s in (b"", b"NHWC"):
            bias_value = const_value(graph, source.input[1])
            found = _weight_op(graph, source.input[0]) if bias_value is not None else None
            prior_bias = bias_value if bias_value is not None else 0.0
        if found is None:
            continue
        op, weights = found
        k = (gamma / np.sqrt(var + eps)).astype(np.float32).reshape(-1)
        folded = _scaled_weights(op, weights, k)
        if folded is None or np.shape(prior_bias) not in ((), k.shape):
            continue
        _rewire_weights(graph, op, folded)
        bias = add_const(graph, f"{node.name}/bias_folded", ((prior_bias - mean) * k + beta).astype(np.float32))
        add = type(node)()
        add.name, add.op = f"{node.name}/BiasAdd", "BiasAdd"
        add.input.extend([op.name, bias])
        add.attr["T"].type = 1  # DT_FLOAT
        graph.add(add)
        graph.replace_uses(node.name, add.name)
        _drop_if_unused(graph, node.name, ctx)
        changed = True
    return changed


def _is_output(name: str, ctx: Context) -> bool:
    return name in ctx.output_nodes()


def _drop_if_unused(graph: Graph, name: str, ctx: Context) -> None:
    """Remove a bypassed node and the constants (and BiasAdd) only it used; requested outputs stay."""
    graph.remove_unused([name], keep=ctx.output_nodes(),
                        removable=lambda n: n.name == name or n.op in ("Const", "Identity", "BiasAdd"))
