"""Concat rewrites of tfshrink's own (part of --optimize), exact by construction.

merge_concats:  ConcatV2(a, ConcatV2(b, c, axis), d, axis)  ->  ConcatV2(a, b, c, d, axis)  when both
axes are the same constant and only the outer concat reads the inner one.

hoist_activations:  ConcatV2(f(a), f(b), …, axis)  ->  f(ConcatV2(a, b, …, axis))  for an elementwise
activation f (Relu, Relu6, Elu, Selu, Tanh, Sigmoid, with the same attributes on every input) that
only the concat reads. One activation over the joined tensor does the same arithmetic as one per
part, with fewer nodes. Both refuse requested outputs and anything with control inputs.
"""

from __future__ import annotations

from typing import Any

from tfshrink.graph.ir import Graph, parse_tensor
from tfshrink.transforms.common import const_value
from tfshrink.transforms.registry import Context, register

ACTIVATIONS = ("Relu", "Relu6", "Elu", "Selu", "Tanh", "Sigmoid")


def _parts(graph: Graph, node: Any) -> tuple[list[str], str] | None:
    """A ConcatV2's value inputs and its axis input, or None when it has control inputs."""
    refs = list(graph.inputs(node.name))
    if any(r.startswith("^") for r in refs) or len(refs) < 2:
        return None
    return refs[:-1], refs[-1]


def _sole_reader(graph: Graph, name: str, reader: str, outputs: set[str]) -> bool:
    return graph.consumers(name) == {reader} and name not in outputs and \
        not any(r.startswith("^") for r in graph.inputs(name))


@register("merge_concats", "(tfshrink) splice a ConcatV2 read only by another on the same axis into it")
def merge_concats(graph: Graph, params: dict, ctx: Context) -> bool:
    outputs = ctx.output_nodes()
    changed = False
    for node in graph.live(("ConcatV2",)):
        parts = _parts(graph, node)
        if parts is None:
            continue
        values, axis_ref = parts
        axis = const_value(graph, axis_ref)
        if axis is None:
            continue
        spliced, merged = [], []
        for ref in values:
            inner_name, index, _ = parse_tensor(ref)
            inner = graph.node(inner_name)
            inner_parts = _parts(graph, inner) if inner.op == "ConcatV2" and index == 0 else None
            inner_axis = const_value(graph, inner_parts[1]) if inner_parts else None
            if inner_parts and inner_axis is not None and int(inner_axis) == int(axis) and \
                    inner.attr["T"].type == node.attr["T"].type and \
                    _sole_reader(graph, inner_name, node.name, outputs) and values.count(ref) == 1:
                spliced.extend(inner_parts[0])
                merged.append(inner_name)
            else:
                spliced.append(ref)
        if not merged:
            continue
        graph.set_inputs(node.name, [*spliced, axis_ref])
        node.attr["N"].i = len(spliced)
        graph.remove(merged)
        changed = True
    if changed:
        graph.prune(outputs)
    return changed


@register("hoist_activations", "(tfshrink) one activation after a ConcatV2 instead of one per input")
def hoist_activations(graph: Graph, params: dict, ctx: Context) -> bool:
    outputs = ctx.output_nodes()
    changed = False
    for node in graph.live(("ConcatV2",), skip=outputs):
        parts = _parts(graph, node)
        if parts is None:
            continue
        values, axis_ref = parts
        acts = [graph.node(parse_tensor(r)[0]) for r in values]
        first = acts[0]
        if first.op not in ACTIVATIONS or len({a.name for a in acts}) != len(acts):
            continue
        key = _attrs(first)
        if any(a.op != first.op or _attrs(a) != key or parse_tensor(r)[1] != 0 or
               not _sole_reader(graph, a.name, node.name, outputs) for a, r in zip(acts, values, strict=True)):
            continue
        graph.set_inputs(node.name, [*(graph.inputs(a.name)[0] for a in acts), axis_ref])
        act = type(node)()
        act.CopyFrom(first)
        base, i = f"{node.name}/{first.op}", 1
        act.name = base
        while act.name in graph:
            act.name, i = f"{base}_{i}", i + 1
        del act.input[:]
        act.input.append(node.name)
        graph.add(act)
        graph.replace_uses(node.name, act.name, keep=[act.name])
        graph.remove([a.name for a in acts])
        changed = True
    return changed



def _attrs(node: Any) -> bytes:
    return b"".join(k.encode() + node.attr[k].SerializeToString(deterministic=True)
                    for k in sorted(node.attr) if not k.startswith("_"))
