"""Dtypes and static shapes of graph tensors, without loading the weights.

TensorFlow's shape inference runs when a GraphDef is imported, but importing copies every weight.
Here the large constants are swapped for placeholders of the same dtype and shape first, so the
cost follows the node count, not the file size. Small constants (the ones shape arguments come
from) are kept, so shapes come out the same as a full import would give.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from tfshrink import _tf
from tfshrink.errors import UserError
from tfshrink.graph.ir import Graph, parse_tensor

SMALL_CONST_ELEMENTS = 64


def dtype_name(enum_value: int) -> str:
    try:
        return _tf.tf().dtypes.as_dtype(enum_value).name
    except TypeError:  # DT_INVALID (0) or a number no dtype has: a damaged or hand-made graph
        raise UserError(f"a node has the invalid dtype {enum_value}", "the graph is corrupt; re-export it") from None


def attr_shape(shape_proto: Any) -> tuple[int | None, ...] | None:
    if shape_proto.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in shape_proto.dim)


def const_elements(node: Any) -> int:
    n = 1
    for d in node.attr["value"].tensor.tensor_shape.dim:
        n *= max(int(d.size), 0)
    return n


# Bytes per element of the dtypes a Const holds (DataType enum -> size); others count as 8.
_DTYPE_BYTES = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 9: 8, 10: 1, 14: 2, 17: 2, 19: 2, 22: 4, 23: 8}


_LIMIT: list[int | None] = [None]


def set_memory_limit(limit: int | None) -> None:
    """The most bytes of constants to allow (`tfshrink --max-memory SIZE`); None: the default."""
    _LIMIT[0] = limit


def memory_limit() -> int:
    """The most bytes of constants tfshrink will let TensorFlow allocate: `set_memory_limit`'s, else
    TFSHRINK_MAX_MEMORY bytes, else half of this machine's memory."""
    if _LIMIT[0] is not None:
        return _LIMIT[0]
    override = os.environ.get("TFSHRINK_MAX_MEMORY")
    if override and override.isdigit():
        return int(override)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def check_constants(graph_def: Any, where: str) -> None:
    """Refuse a graph whose constants declare more memory than the limit. A Const may store one
    value and declare any shape (TensorFlow fills it in), so a 163-byte file can ask for gigabytes."""
    declared = 0
    for node in graph_def.node:
        if node.op == "Const":
            declared += const_elements(node) * _DTYPE_BYTES.get(node.attr["value"].tensor.dtype, 8)
    limit = memory_limit()
    if declared > limit:
        raise UserError(f"{where}: its constants declare {declared / 2**30:.1f} GiB, more than the "
                        f"{limit / 2**30:.1f} GiB tfshrink allows (--max-memory; default half this machine's memory)",
                        "if the model is real, pass tfshrink --max-memory SIZE")


def tensor_specs(graph: Graph, tensors: Sequence[str], shapes: Mapping[str, Sequence[int]] | None = None
                 ) -> dict[str, tuple[str, tuple[int | None, ...] | None]]:
    """{tensor: (dtype, shape)} for short tensor names, by importing a weightless copy (constants
    over SMALL_CONST_ELEMENTS become placeholders of their shape), with the placeholders named in
    `shapes` given those shapes."""
    needed = graph.ancestors(parse_tensor(t)[0] for t in tensors)
    light = _tf.graph_pb2().GraphDef()
    light.library.CopyFrom(graph.library)
    light.versions.CopyFrom(graph.versions)
    for name in graph.names():
        if name not in needed:
            continue
        node = graph.node(name)
        if node.op == "Const" and const_elements(node) > SMALL_CONST_ELEMENTS:
            stub = light.node.add()
            stub.name = node.name
            stub.op = "Placeholder"
            stub.attr["dtype"].type = node.attr["dtype"].type
            stub.attr["shape"].shape.CopyFrom(node.attr["value"].tensor.tensor_shape)
            stub.input.extend(r for r in node.input if r.startswith("^"))
        else:
            copy = light.node.add()
            copy.CopyFrom(node)
            if shapes and name in shapes and node.op in ("Placeholder", "PlaceholderWithDefault"):
                copy.attr["shape"].shape.Clear()
                for d in shapes[name]:
                    copy.attr["shape"].shape.dim.add().size = int(d)
    refs = [parse_tensor(t)[:2] for t in tensors]
    try:
        # What tf.graph_util.import_graph_def(light, name="") infers, without its Python pass.
        found = _tf.import_output_specs(light, refs)
    except Exception:
        return {t: ("unknown", None) for t in tensors}
    out: dict[str, tuple[str, tuple[int | None, ...] | None]] = {}
    for t, (op_name, index), spec in zip(tensors, refs, found, strict=True):
        if spec is None:
            raise UserError(f"no tensor {t!r}: node {op_name!r} has no output {index}",
                            f"use {op_name} for its first output")
        out[t] = spec
    return out
