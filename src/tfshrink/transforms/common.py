"""Editing helpers the transforms share: reading and adding constants, adding nodes, setting
attributes. (Removing what a rewrite left unused is Graph.remove_unused.)"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.errors import UserError
from tfshrink.graph.ir import Graph, parse_tensor
from tfshrink.transforms.registry import Context


def const_value(graph: Graph, ref: str) -> np.ndarray | None:
    """The value of a Const (looking through Identity), or None."""
    name = parse_tensor(ref)[0]
    for _ in range(16):
        node = graph.get(name)
        if node is None:
            return None
        if node.op == "Identity":
            name = parse_tensor(node.input[0])[0]
            continue
        if node.op == "Const":
            return _tf.tf().make_ndarray(node.attr["value"].tensor)
        return None
    return None


def unique_name(graph: Graph, name: str) -> str:
    """`name`, or `name_1`, `name_2`, ... whichever is free."""
    base, i = name, 1
    while base in graph:
        base, i = f"{name}_{i}", i + 1
    return base


def new_node(graph: Graph, name: str, op: str, inputs: Iterable[str] = (), **attrs: Any) -> str:
    """Add a node (under a free variant of `name`) and return its name. Attribute values: a
    tf.DType sets `type`, bool `b`, int `i`, float `f`, str/bytes `s`, list of ints `list.i`."""
    tf = _tf.tf()
    node = tf.compat.v1.NodeDef()
    node.name, node.op = unique_name(graph, name), op
    node.input.extend(inputs)
    for key, value in attrs.items():
        set_attr(node, key, value, tf)
    graph.add(node)
    return node.name


def set_attr(node: Any, key: str, value: Any, tf: Any = None) -> None:
    """Set one attribute of a NodeDef from a Python value (see new_node for the mapping)."""
    tf = tf or _tf.tf()
    attr = node.attr[key]
    if isinstance(value, tf.DType):
        attr.type = value.as_datatype_enum
    elif isinstance(value, bool):
        attr.b = value
    elif isinstance(value, int):
        attr.i = value
    elif isinstance(value, float):
        attr.f = value
    elif isinstance(value, str | bytes):
        attr.s = value.encode() if isinstance(value, str) else value
    elif isinstance(value, list | tuple):
        del attr.list.i[:]
        attr.list.i.extend(int(v) for v in value)
    else:
        raise TypeError(f"attribute {key}: unsupported value {value!r}")


def add_const(graph: Graph, name: str, value: Any, dtype: Any = None, controls: Iterable[str] = ()) -> str:
    """Add a Const node holding `value` (optionally of `dtype`); returns its name."""
    tf = _tf.tf()
    tensor = tf.make_tensor_proto(value, dtype=dtype)
    node = tf.compat.v1.NodeDef()
    node.name, node.op = unique_name(graph, name), "Const"
    node.input.extend(controls)
    node.attr["dtype"].type = tensor.dtype
    node.attr["value"].tensor.CopyFrom(tensor)
    graph.add(node)
    return node.name


def only_feeds(graph: Graph, name: str, consumer: str, ctx: Context) -> bool:
    """True when node `name` is used by `consumer` alone (no other data or control consumer),
    once, and is not a requested output: the precondition for folding it into `consumer`."""
    if name in ctx.output_nodes() or graph.consumers(name) != {consumer}:
        return False
    return sum(1 for src, _ in graph.data_inputs(consumer) if src == name) == 1


def require(name: str, params: dict, *keys: str, example: str) -> None:
    """Parameters graph_transforms made mandatory: missing ones are a spec error, not a failure."""
    missing = [k for k in keys if not params.get(k)]
    if missing:
        raise UserError(f"{name} needs {' and '.join(missing)}", f"e.g. {example}")
