"""fuse_bias_add (tfshrink's own, part of --optimize): a per-channel constant added after a
weight op becomes that op's BiasAdd.

Matches  Add|AddV2(y, c), Add|AddV2(c, y), Sub(y, c)  and  BiasAdd(y, c)  where y is Conv2D,
DepthwiseConv2dNative or MatMul (NHWC, float32), or a BiasAdd(W-op, b) that only this node reads,
and c is a float constant that broadcasts along the output channels only: a scalar, [C] or
[1, …, 1, C]. That is how Keras 3 leaves batch norm once its scale is folded into the weights.

Writes: when c is all zeros, consumers read y directly (x + 0 is x); when y is a BiasAdd, its bias
becomes b + c (b − c for Sub) and consumers read it; otherwise the node itself becomes
BiasAdd(y, c) under its own name. Refuses (leaves the node) for other shapes, other dtypes, and
requested outputs' producers that would be bypassed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tfshrink.graph.ir import Graph, parse_tensor
from tfshrink.transforms.batchnorm import WEIGHT_OPS
from tfshrink.transforms.common import add_const, const_value
from tfshrink.transforms.registry import Context, register

ADD_OPS = ("Add", "AddV2", "Sub", "BiasAdd")
DT_FLOAT = 1


def _channels(graph: Graph, node: Any) -> int | None:
    """Output channels of a float32 NHWC weight op, from its constant weights."""
    if node.op not in WEIGHT_OPS or node.attr["T"].type != DT_FLOAT:
        return None
    if node.op != "MatMul" and node.attr["data_format"].s not in (b"", b"NHWC"):
        return None
    weights = const_value(graph, node.input[1])
    if weights is None:
        return None
    if node.op == "DepthwiseConv2dNative":
        return int(weights.shape[2] * weights.shape[3])
    if node.op == "MatMul" and node.attr["transpose_b"].b:
        return int(weights.shape[0])
    return int(weights.shape[-1])


def _per_channel(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    if value.dtype != np.float32 or value.ndim > rank:
        return None
    if value.size == 1:
        return np.full(channels, value.reshape(()), np.float32)
    if value.shape[-1] == channels and value.size == channels:
        return value.reshape(channels)
    return None


@register("fuse_bias_add", "(tfshrink) turn a per-channel constant Add/Sub after a conv or matmul into its BiasAdd")
def fuse_bias_add(graph: Graph, params: dict, ctx: Context) -> bool:
    outputs = ctx.output_nodes()
    changed = False
    for node in graph.live(ADD_OPS):
        if node.attr["T"].type != DT_FLOAT:
            continue
        if node.op == "BiasAdd" and node.attr["data_format"].s not in (b"", b"NHWC"):
            continue
        data = [r for r in node.input if not r.startswith("^")]
        if len(data) != 2:
            continue
        orders = [(0, 1), (1, 0)] if node.op in ("Add", "AddV2") else [(0, 1)]
        for yi, ci in orders:
            if _fuse(graph, node, data[yi], data[ci], outputs):
                changed = True
                break
    return changed


def _fuse(graph: Graph, node: Any, y_ref: str, c_ref: str, outputs: set[str]) -> bool:
    y_name, y_index, _ = parse_tensor(y_ref)
    if y_index != 0:
        return False
    value = const_value(graph, c_ref)
    if value is None:
        return False
    y = graph.node(y_name)
    bias_node = None
    if y.op == "BiasAdd" and node.op != "BiasAdd" and len(graph.consumers(y_name)) == 1 \
            and y_name not in outputs and y.attr["data_format"].s in (b"", b"NHWC"):
        bias_node, weight_op = y, graph.node(parse_tensor(y.input[0])[0])
    else:
        weight_op = y
    channels = _channels(graph, weight_op)
    if channels is None:
        return False
    rank = 2 if weight_op.op == "MatMul" else 4
    c = _per_channel(value, channels, rank)
    if c is None:
        return False
    if node.op == "Sub":
        c = -c
    if node.name in outputs and (not c.any() or bias_node is not None):
        return False  # bypassing would drop a requested output
    if not c.any():
        graph.replace_uses(node.name, y_name)
        graph.remove_unused([node.name], keep=outputs, removable=_bypassed(node.name))
        return True
    if bias_node is not None:
        b = const_value(graph, bias_node.input[1])
        if b is None or b.shape != (channels,) or b.dtype != np.float32:
            return False
        new = add_const(graph, f"{bias_node.name}/bias_fused", (b + c).astype(np.float32))
        graph.set_inputs(bias_node.name, [bias_node.input[0], new])
        graph.replace_uses(node.name, bias_node.name)
        graph.remove_unused([node.name], keep=outputs, removable=_bypassed(node.name))
        return True
    if node.op == "BiasAdd":
        return False  # already a BiasAdd with a non-zero bias
    new = add_const(graph, f"{node.name}/bias", c)
    controls = [r for r in node.input if r.startswith("^")]
    node.op = "BiasAdd"
    for key in list(node.attr):
        if key != "T":
            del node.attr[key]
    node.attr["data_format"].s = b"NHWC"
    graph.set_inputs(node.name, [y_name, new, *controls])
    return True


def _bypassed(name: str) -> Callable[[Any], bool]:
    """What goes once `name` is bypassed: the node itself and the constants only it read."""
    return lambda n: n.name == name or n.op in ("Const", "Identity")
