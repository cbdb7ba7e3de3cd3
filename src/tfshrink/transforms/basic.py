"""Structural transforms: strip_unused_nodes, sort_by_execution_order, remove_device,
remove_nodes. Each says what it matches, when it refuses, and what it writes."""

from __future__ import annotations

from tfshrink import _tf
from tfshrink.graph.ir import Graph, parse_tensor
from tfshrink.transforms.registry import Context, Param, register

# Nodes whose outputs carry control-flow liveness or loop frames: never bypassed.
CONTROL_FLOW_OPS = {"Switch", "RefSwitch", "Merge", "RefMerge", "Enter", "RefEnter", "Exit",
                    "RefExit", "NextIteration", "RefNextIteration", "LoopCond"}


@register("strip_unused_nodes", "keep only what the outputs need",
          {"type": Param(help="dtype for the input placeholders"),
           "shape": Param(help="shape for the input placeholders, e.g. 1,224,224,3"),
           "name": Param(repeated=True), "type_for_name": Param(repeated=True),
           "shape_for_name": Param(repeated=True)})
def strip_unused_nodes(graph: Graph, params: dict, ctx: Context) -> bool:
    before = len(graph)
    graph.prune(ctx.output_nodes())
    changed = len(graph) != before
    overrides = {n: (t, s) for n, t, s in zip(params["name"], params["type_for_name"] or [None] * len(params["name"]),
                                              params["shape_for_name"] or [None] * len(params["name"]), strict=False)}
    for name in (parse_tensor(i)[0] for i in ctx.inputs):
        node = graph.get(name)
        if node is None or not node.op.startswith("Placeholder"):
            continue
        dtype, shape = overrides.get(name, (params["type"], params["shape"]))
        if dtype:

            node.attr["dtype"].type = _tf.tf().dtypes.as_dtype(dtype).as_datatype_enum
            changed = True
        if shape:
            del node.attr["shape"].shape.dim[:]
            node.attr["shape"].shape.unknown_rank = False
            for d in shape.split(","):
                node.attr["shape"].shape.dim.add().size = int(d)
            changed = True
    return changed


@register("sort_by_execution_order", "order nodes so every node follows its inputs")
def sort_by_execution_order(graph: Graph, params: dict, ctx: Context) -> bool:
    order = graph.topological_order()
    if order == graph.names():
        return False
    graph.reorder(order)
    return True


@register("remove_device", "clear every node's device placement")
def remove_device(graph: Graph, params: dict, ctx: Context) -> bool:
    changed = False
    for node in graph:
        if node.device:
            node.device = ""
            changed = True
    return changed


@register("remove_nodes", "bypass nodes of the given ops (single data input only)",
          {"op": Param(repeated=True, help="op type to remove (repeatable)")})
def remove_nodes(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: a node whose op is listed, with exactly one data input.
    Refuse (skip) when it is a requested output or input, reads a control-flow node, or has
    several data inputs. Write: consumers read its input; its control inputs move to them."""
    ops = {op for op in params["op"]}
    protected = {parse_tensor(t)[0] for t in ctx.outputs + ctx.inputs}
    changed = False
    for node in graph:
        if node.op not in ops or node.name in protected:
            continue
        data = graph.data_inputs(node.name)
        if len(data) != 1:
            continue
        src, index = data[0]
        if graph.node(src).op in CONTROL_FLOW_OPS:
            continue
        source = src if index == 0 else f"{src}:{index}"
        controls = [f"^{c}" for c in graph.control_inputs(node.name)]
        for consumer in graph.consumers(node.name):
            refs = []
            for ref in graph.node(consumer).input:
                producer, idx, is_control = parse_tensor(ref)
                if producer != node.name:
                    refs.append(ref)
                elif is_control:
                    refs.append(f"^{src}")
                else:
                    refs.append(source if idx == 0 else ref)
            graph.set_inputs(consumer, refs + controls)
        if not graph.consumers(node.name):
            graph.remove([node.name])
            changed = True
    return changed
