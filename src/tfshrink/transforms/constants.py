"""fold_constants and merge_duplicate_nodes.

fold_constants: every node computed only from constants (no placeholder, variable, random or
stateful op, no control flow) is evaluated once on the real TF runtime, and the nodes that feed
the rest of the graph are replaced by Const nodes holding their values.

merge_duplicate_nodes: two nodes with the same op, inputs, attributes and device compute the same
tensors (constants: the same value), so one is kept and the other's consumers read the first.
Repeated until nothing merges, so chains of duplicates collapse.
"""

from __future__ import annotations

from typing import Any

from tfshrink import _tf
from tfshrink.graph.detect import num_outputs
from tfshrink.graph.ir import Graph, parse_tensor, producer
from tfshrink.transforms.basic import CONTROL_FLOW_OPS
from tfshrink.transforms.registry import Context, Param, register

UNFOLDABLE = {"Placeholder", "PlaceholderWithDefault", "VariableV2", "VarHandleOp", "ReadVariableOp",
              "RandomUniform", "RandomStandardNormal", "TruncatedNormal", "RandomUniformInt",
              "RandomShuffle", "Multinomial", "Assert", "Print", "PrintV2", "NoOp"} | CONTROL_FLOW_OPS


def _foldable(graph: Graph) -> set[str]:
    """Nodes whose value never changes and that have no effect: Consts, and pure ops whose inputs
    (control inputs included, so a Const inside a tf.cond branch stays put) are all foldable.
    A NoOp that only waits on such nodes counts too: waiting on it waits for nothing."""
    const: set[str] = set()
    for name in graph.topological_order():
        node = graph.node(name)
        srcs = [producer(r) for r in graph.inputs(name)]
        if not all(s in const for s in srcs):
            continue
        if node.op in ("Const", "NoOp"):
            const.add(name)
            continue
        if node.op in UNFOLDABLE or node.op.startswith(("Random", "Stateful", "Stateless")):
            continue
        op_def = _tf.op_def(node.op)
        if srcs and op_def is not None and not op_def.is_stateful:
            const.add(name)
    return const


def _const_source(graph: Graph, name: str) -> str | None:
    """The Const an Identity/Snapshot chain passes on unchanged, or None."""
    for _ in range(64):
        node = graph.node(name)
        if node.op == "Const":
            return name
        if node.op not in ("Identity", "Snapshot") or len(graph.inputs(name)) != 1:
            return None
        name = producer(graph.inputs(name)[0])
    return None


@register("fold_constants", "evaluate subgraphs built only from constants, once",
          {"clear_output_shapes": Param("bool", True, help="drop _output_shapes attributes")})
def fold_constants(graph: Graph, params: dict, ctx: Context) -> bool:
    """Also drops control edges from foldable nodes: they have no effect to wait for."""
    tf = _tf.tf()
    const = _foldable(graph)
    protected = {parse_tensor(t)[0] for t in ctx.inputs}
    outputs = ctx.output_nodes()
    changed = False
    for name in graph.names():
        if name not in const and any(r[:1] == "^" and r[1:] in const for r in graph.inputs(name)):
            graph.drop_control_inputs(name, const)
            changed = True
    frontier: list[tuple[str, int]] = []
    for name in sorted(const):
        op = graph.node(name).op
        if op in ("Const", "NoOp") or name in protected:
            continue
        users = graph.data_consumers(name)
        is_output = name in outputs
        if is_output or any(u not in const for u in users):
            source = _const_source(graph, name)
            if source is not None and not is_output:  # a pass-through of a Const: read the Const
                graph.replace_uses(name, source)
                changed = True
                continue
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
        if changed:
            graph.prune(outputs)
        return changed
    # Only the constant subgraph that computes the frontier is imported and run: importing the
    # whole graph would copy every weight into TF for nothing.
    needed = graph.ancestors(name for name, _ in frontier)
    sub = graph.to_graph_def()
    del sub.node[:]
    sub.node.extend(graph.node(n) for n in graph.names() if n in needed)
    g = tf.Graph()
    with g.as_default():
        tf.graph_util.import_graph_def(sub, name="")
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
    graph.prune(ctx.output_nodes())
    return True


def _key(node: Any) -> tuple:
    """What makes two nodes interchangeable, except a Const's value (compared separately, since
    hashing every weight tensor would cost more than the whole pass)."""
    attrs = tuple((k, node.attr[k].SerializeToString(deterministic=True))
                  for k in sorted(node.attr) if not (node.op == "Const" and k == "value"))
    if node.op == "Const":
        t = node.attr["value"].tensor
        attrs += (("shape", t.tensor_shape.SerializeToString(deterministic=True)),
                  ("size", t.ByteSize()))
    return (node.op, node.device, tuple(node.input), attrs)


def _const_bytes(node: Any) -> bytes:
    return node.attr["value"].tensor.SerializeToString(deterministic=True)


@register("merge_duplicate_nodes", "merge nodes with the same op, inputs and attributes")
def merge_duplicate_nodes(graph: Graph, params: dict, ctx: Context) -> bool:
    """One pass in topological order: a node's inputs have already been merged when its key is
    taken, so chains of duplicates collapse without repeating the pass."""
    protected = {parse_tensor(t)[0] for t in ctx.inputs + ctx.outputs}
    seen: dict[tuple, list[str]] = {}
    values: dict[str, bytes] = {}
    changed = False
    for name in graph.topological_order():
        node = graph.node(name)
        if node.op in UNFOLDABLE and node.op != "NoOp":  # NoOps with equal inputs are interchangeable
            continue
        op_def = _tf.op_def(node.op)
        if op_def is not None and op_def.is_stateful:
            continue
        candidates = seen.setdefault(_key(node), [])
        keep = None
        if name not in protected:
            for other in candidates:
                if node.op != "Const":
                    keep = other
                    break
                if other not in values:
                    values[other] = _const_bytes(graph.node(other))
                if values[other] == _const_bytes(node):
                    keep = other
                    break
        if keep is None:
            candidates.append(name)
            continue
        for i in range(_outputs(graph, name)):
            graph.replace_uses(f"{name}:{i}" if i else name, f"{keep}:{i}" if i else keep)
        for consumer in graph.consumers(name):  # control edges move to the kept node
            refs = [f"^{keep}" if r == f"^{name}" else r for r in graph.node(consumer).input]
            graph.set_inputs(consumer, refs)
        graph.remove([name])
        changed = True
    return changed


def _outputs(graph: Graph, name: str) -> int:

    return num_outputs(graph.node(name))
