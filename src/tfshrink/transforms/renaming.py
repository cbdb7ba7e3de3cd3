"""rename_node and obfuscate_names: change node names, and every reference to them (inputs,
colocation, the requested inputs and outputs)."""

from __future__ import annotations

import re
import string

from tfshrink.graph.ir import Graph, parse_tensor, tensor_name
from tfshrink.names import closest
from tfshrink.transforms.common import require
from tfshrink.transforms.registry import Context, Param, register

# TensorFlow's rule for node names (the importer rejects anything else).
_NODE_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\-/>]*\Z")
_DT_INT32 = 3  # DataType enum value (types.proto)
_REF_OFFSET = 100  # DT_FLOAT_REF == DT_FLOAT + 100



_NAME_CHARS = string.digits + string.ascii_lowercase + string.ascii_uppercase

def _follow_renames(ctx: Context, mapping: dict[str, str]) -> None:
    """Keep the requested inputs and outputs pointing at the same nodes after a rename."""
    for names, what in ((ctx.inputs, "input"), (ctx.outputs, "output")):
        for i, ref in enumerate(names):
            node, index, _ = parse_tensor(ref)
            if node in mapping:
                names[i] = tensor_name(mapping[node], index)
                ctx.warnings.append(f"{what} {node!r} is now named {mapping[node]!r}")


@register("rename_node", "rename one node and every reference to it",
          {"old_node_name": Param(help="node to rename"), "new_node_name": Param(help="its new name")})
def rename_node(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: the node named `old_node_name`. Write: it renamed to `new_node_name`, with every data
    input, control input and colocation entry that named it updated (and the requested inputs or
    outputs, if it was one). Refuse: no such node, a node already called `new_node_name`, or a name
    TensorFlow does not accept."""
    require("rename_node", params, "old_node_name", "new_node_name",
             example="rename_node(old_node_name=super/deep/output, new_node_name=output)")
    old, new = params["old_node_name"], params["new_node_name"]
    if old not in graph:
        near = closest(old, graph.names())
        hint = f" (closest: {', '.join(near)})" if near else ""
        raise ValueError(f"rename_node: no node named {old!r}{hint}")
    if old == new:
        return False
    if new in graph:
        raise ValueError(f"rename_node: a node named {new!r} already exists")
    if not _NODE_NAME.match(new):
        raise ValueError(f"rename_node: {new!r} is not a valid node name (letters, digits, and _ . - / >)")
    graph.rename(old, new)
    _follow_renames(ctx, {old: new})
    return True


def _short_name(index: int) -> str:
    """0 -> "0", 61 -> "Z", 62 -> "10": the index written in base 62."""
    out = ""
    while True:
        index, digit = divmod(index, len(_NAME_CHARS))
        out = _NAME_CHARS[digit] + out
        if index == 0:
            return out


@register("obfuscate_names", "replace node names with short generated ids (inputs and outputs kept)")
def obfuscate_names(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: every node that is not a requested input or output. Write: names "0", "1", ... "Z",
    "10", ... in graph order (skipping any an input or output already uses), with all references and
    colocation entries updated. The same graph always gets the same names."""
    keep = {parse_tensor(ref)[0] for ref in ctx.inputs + ctx.outputs}
    mapping: dict[str, str] = {}
    index = 0
    for name in graph.names():
        if name in keep:
            continue
        new = _short_name(index)
        while new in keep:
            index += 1
            new = _short_name(index)
        index += 1
        mapping[name] = new
    graph.rename_many(mapping)
    return any(old != new for old, new in mapping.items())


register("obsfucate_names", "old spelling of obfuscate_names")(obfuscate_names)
