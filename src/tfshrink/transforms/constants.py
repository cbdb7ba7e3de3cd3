"""fold_constants and merge_duplicate_nodes.

fold_constants: every node computed only from constants (no placeholder, variable, random or
stateful op, no control flow) is evaluated once on the real TF runtime, and the nodes that feed
the rest of the graph are replaced by Const nodes holding their values.

merge_duplicate_nodes: two nodes with the same op, inputs, attributes and device compute the same
tensors (constants: the same value), so one is kept and the other's consumers read the first.
Repeated until nothing merges, so chains of duplicates collapse.
"""

from __future__ import annotations

import hashlib

from tfshrink import _tf
from tfshrink.graph.ir import Graph, parse_tensor
from tfshrink.transforms.basic import CONTROL_FLOW_OPS
from tfshrink.transforms.registry import Context, Param, register

UNFOLDABLE = {"Placeholder", "PlaceholderWithDefault", "VariableV2", "VarHandleOp", "ReadVariableOp",
              "RandomUniform", "RandomStandardNormal", "TruncatedNormal", "RandomUniformInt",
              "RandomShuffle", "Multinomial", "Assert", "Print", "PrintV2", "NoOp"} | CONTROL_FLOW_OPS


def _foldable(graph: Graph) -> set[str]:
    """Nodes whose value never changes: built only from Consts through pure ops."""
    const: set[str] = set()
    for name in graph.topological_order():
        node = graph.node(name)
        if node.op == "Const":
            const.add(name)
            continue
        if node.op in UNFOLDABLE or node.op.startswith(("Random", "Stateful", "Stateless")):
            continue
        srcs = [parse_tensor(r)[0] for r in node.input]
        op_def = _tf.op_def(node.op)
        if srcs and all(s in const for s in srcs) and op_def is not None and not op_def.is_stateful:
            const.add(name)
    return const


@register("fold_constants", "evaluate subgraphs built only from constants, once",
          {"clear_output_shapes": Param("bool", True, help="drop _output_shapes attributes")})
def fold_constants(graph: Graph, params: dict, ctx: Context) -> bool:
    tf = _tf.tf()
    const = _foldable(graph)
    protected = {parse_tensor(t)[0] for t in ctx.inputs}
    frontier: list[tuple[str, int]] = []
    for name in sorted(const):
        if graph.node(name).op == "Const" or name in protected:
            continue
        users = graph.data_consumers(name)
        is_output = any(parse_tensor(o)[0] == name for o in ctx.outputs)
        if is_output or any(u not in const for u in users):
            refs = {parse_tensor(r)[:2] for u in users for r in graph.node(u).input
                    if not r.startswith("^") and parse_tensor(r)[0] == name}
            if is_output:
                refs |= {parse_tensor(o)[:2] for o in ctx.outputs if parse_tensor(o)[0] == name}
            frontier.extend(sorted(refs))
    if params.get("clear_output_shapes"):
        for node in graph:
            if "_output_shapes" in node.attr:
                del node.attr["_output_shapes"]
    if not frontier:
        return False
    g = tf.Graph()
    with g.as_default():
        tf.graph_util.import_graph_def(graph.to_graph_def(), name="")
        with tf.compat.v1.Session(graph=g) as sess:
            values = sess.run([f"{n}:{i}" for n, i in frontier])
    for (name, index), value in zip(frontier, values, strict=True):
        node = type(graph.node(name))()
        node.name = f"{name}/folded" if index == 0 else f"{name}/folded_{index}"
        node.op = "Const"
        tensor = tf.make_tensor_proto(value)
        node.attr["dtype"].type = tensor.dtype
        node.attr["value"].tensor.CopyFrom(tensor)
        graph.add(node)
        graph.replace_uses(f"{name}:{index}" if index else name, node.name)
    graph.prune(parse_tensor(o)[0] for o in ctx.outputs)
    return True


def _key(graph: Graph, name: str) -> str:
    node = graph.node(name)
    h = hashlib.sha256()
    h.update(node.op.encode())
    h.update(node.device.encode())
    for ref in node.input:
        h.update(b"\0" + ref.encode())
    for k in sorted(node.attr):
        h.update(b"\1" + k.encode() + node.attr[k].SerializeToString(deterministic=True))
    return h.hexdigest()


@register("merge_duplicate_nodes", "merge nodes with the same op, inputs and attributes")
def merge_duplicate_nodes(graph: Graph, params: dict, ctx: Context) -> bool:
    protected = {parse_tensor(t)[0] for t in ctx.inputs + ctx.outputs}
    changed = False
    while True:
        seen: dict[str, str] = {}
        merged = False
        for name in graph.topological_order():
            node = graph.node(name)
            if node.op in UNFOLDABLE and node.op != "NoOp":  # NoOps with equal inputs are interchangeable
                continue
            op_def = _tf.op_def(node.op)
            if op_def is not None and op_def.is_stateful:
                continue
            key = _key(graph, name)
            keep = seen.get(key)
            if keep is None or name in protected:
                seen.setdefault(key, name)
                continue
            for i in range(_outputs(graph, name)):
                graph.replace_uses(f"{name}:{i}" if i else name, f"{keep}:{i}" if i else keep)
            for consumer in graph.consumers(name):  # control edges move to the kept node
                refs = [f"^{keep}" if r == f"^{name}" else r for r in graph.node(consumer).input]
                graph.set_inputs(consumer, refs)
            graph.remove([name])
            merged = changed = True
        if not merged:
            return changed


def _outputs(graph: Graph, name: str) -> int:
    from tfshrink.graph.detect import num_outputs

    return num_outputs(graph.node(name))
