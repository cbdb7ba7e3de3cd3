"""Steps every freeze shares: binding placeholders to constants and cleaning the result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.errors import UserError, note
from tfshrink.graph.cond import fold_constant_conds
from tfshrink.graph.dropout import fold_inactive_dropout
from tfshrink.graph.inline import fold_constant_ifs
from tfshrink.graph.io_ops import drop_io_control_inputs
from tfshrink.graph.ir import Graph, parse_tensor
from tfshrink.graph.loops import prune_loop_accumulators
from tfshrink.names import unknown_name_error

_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def parse_bind_value(text: str, dtype: str) -> Any:
    """'false' / '1.0' / '3' as a value of the placeholder's dtype."""
    t = text.strip()
    if dtype == "bool":
        if t.lower() not in _BOOL_WORDS:
            raise UserError(f"cannot bind {t!r} to a bool placeholder", "use true or false")
        return np.bool_(_BOOL_WORDS[t.lower()])
    try:
        value = float(t)
    except ValueError:
        raise UserError(f"cannot bind {t!r} to a {dtype} placeholder", "give a number") from None
    return np.array(value).astype(dtype if dtype != "string" else "float32")


def parse_binds(items: Mapping[str, Any] | list[str] | None) -> dict[str, Any]:
    """NAME=VALUE strings (or a mapping) to {name: raw value}."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {k.split(":")[0]: v for k, v in items.items()}
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--bind {item!r} is not NAME=VALUE", "e.g. --bind is_training=false")
        out[name.strip().split(":")[0]] = value
    return out


def replace_placeholders(graph_def: Any, binds: Mapping[str, Any], where: str) -> Any:
    """A copy of `graph_def` where each bound placeholder is a Const holding its value."""
    if not binds:
        return graph_def
    tf = _tf.tf()
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    by_name = {n.name: n for n in out.node}
    placeholders = [n.name for n in out.node if n.op.startswith("Placeholder")]
    for name, raw in binds.items():
        node = by_name.get(name)
        if node is None or not node.op.startswith("Placeholder"):
            raise unknown_name_error("placeholder", name, placeholders, where)
        dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
        value = parse_bind_value(raw, dtype.name) if isinstance(raw, str) else np.asarray(raw)
        shape = node.attr["shape"].shape if "shape" in node.attr else None
        if shape is not None and not shape.unknown_rank and shape.dim and all(d.size > 0 for d in shape.dim):
            value = np.broadcast_to(value, [d.size for d in shape.dim])
        tensor = tf.make_tensor_proto(np.asarray(value, dtype=dtype.as_numpy_dtype))
        controls = [r for r in node.input if r.startswith("^")]
        node.Clear()
        node.name = name
        node.op = "Const"
        node.input.extend(controls)
        node.attr["dtype"].type = dtype.as_datatype_enum
        node.attr["value"].tensor.CopyFrom(tensor)
    return out


def fold_constants(graph: Graph) -> None:
    """Inline the taken branch of every If and Switch/Merge whose predicate is constant, and
    bypass dropout whose rate is 0 (in place)."""
    fold_constant_ifs(graph)
    fold_constant_conds(graph)
    fold_inactive_dropout(graph)


def drop_io_ops(graph: Graph) -> None:
    """Drop the control edges from ops that touch files or processes (the outputs only wait on
    them), in place, and say so."""
    dropped = drop_io_control_inputs(graph)
    if dropped:
        note(f"dropped {len(dropped)} op(s) that touch files or processes and that the outputs only "
             f"waited on: {', '.join(dropped[:4])}{' ...' if len(dropped) > 4 else ''}")


def placeholder_names(graph_def: Any) -> list[str]:
    """The inputs a frozen graph still takes."""
    return [n.name for n in graph_def.node if n.op in ("Placeholder", "PlaceholderWithDefault")]


def finish_frozen(graph_def: Any, outputs: list[str]) -> Any:
    """Fold constant tf.conds (v1 and v2) and switched-off dropout, keep only what `outputs` need,
    clear devices, sort."""
    graph = Graph(graph_def)
    fold_constants(graph)
    drop_io_ops(graph)
    graph.prune(parse_tensor(o)[0] for o in outputs)
    if prune_loop_accumulators(graph):  # the backward pass that read them is gone
        graph.prune(parse_tensor(o)[0] for o in outputs)
    present = set(graph.names())
    for node in graph:
        node.device = ""
        if "_class" in node.attr:  # colocation with a node that was pruned breaks import
            keep = [c for c in node.attr["_class"].list.s
                    if not c.startswith(b"loc:@") or c[5:].decode() in present]
            if keep:
                del node.attr["_class"].list.s[:]
                node.attr["_class"].list.s.extend(keep)
            else:
                del node.attr["_class"]
    graph.drop_unused_functions()
    return graph.to_graph_def(sort=True)


def freeze_function(concrete: Any, input_names: list[str], output_names: list[str],
                    binds: Mapping[str, Any] | None = None) -> tuple[Any, list[str], list[str]]:
    """Freeze a TF2 ConcreteFunction and give its inputs and outputs the signature's names.

    `input_names` follow the function's flat input order, `output_names` its flat output order.
    """
    frozen_fn = _tf.convert_variables_to_constants_v2(concrete)
    in_nodes = [parse_tensor(t.name)[0] for t in frozen_fn.inputs[: len(input_names)]]
    outputs = [(t.name, t.dtype.as_datatype_enum) for t in frozen_fn.outputs]
    return name_signature(frozen_fn.graph.as_graph_def(), in_nodes, input_names, outputs, output_names, binds)


def name_signature(graph_def: Any, in_nodes: list[str], input_names: list[str],
                   outputs: list[tuple[str, int]], output_names: list[str],
                   binds: Mapping[str, Any] | None = None) -> tuple[Any, list[str], list[str]]:
    """A frozen signature graph whose inputs and outputs carry the signature's names, finished.

    Placeholders `in_nodes` are renamed to `input_names`, and each output tensor (ref, dtype enum)
    gets an Identity named by `output_names`, so the frozen graph reads like the model it came
    from (`input_1` -> `dense_2`), not `Identity_3:0`. A name already taken keeps the old one.
    """
    graph = Graph(graph_def)
    taken = set(graph.names())
    final_inputs = []
    for old, new in zip(in_nodes, input_names, strict=True):
        target = new if new == old or new not in taken else old
        if target != old:
            _rename(graph, old, target)
            taken.discard(old)
            taken.add(target)
        final_inputs.append(target)
    final_outputs = []
    for (ref, dtype), name in zip(outputs, output_names, strict=True):
        node, index, _ = parse_tensor(ref)
        target = name if name not in taken else f"{name}_output"
        if target in taken:
            final_outputs.append(node if index == 0 else f"{node}:{index}")
            continue
        ident = type(graph.node(node))()
        ident.name = target
        ident.op = "Identity"
        ident.input.append(node if index == 0 else f"{node}:{index}")
        ident.attr["T"].type = dtype
        graph.add(ident)
        taken.add(target)
        final_outputs.append(target)
    graph_def = graph.to_graph_def()
    graph_def = replace_placeholders(graph_def, dict(binds or {}), "the model")
    return finish_frozen(graph_def, final_outputs), final_inputs, final_outputs


def _rename(graph: Graph, old: str, new: str) -> None:
    node = type(graph.node(old))()
    node.CopyFrom(graph.node(old))
    node.name = new
    graph.add(node)
    for consumer in graph.consumers(old):
        refs = []
        for ref in graph.node(consumer).input:
            producer, index, control = parse_tensor(ref)
            if producer == old:
                ref = f"^{new}" if control else (new if index == 0 else f"{new}:{index}")
            refs.append(ref)
        graph.set_inputs(consumer, refs)
    graph.remove([old])


def select_outputs(graph_def: Any, outputs: list[str], keys: list[str], wanted: list[str],
                   where: str) -> tuple[Any, list[str]]:
    """Keep only the frozen outputs whose signature key is in `wanted` (all when empty)."""
    if not wanted:
        return graph_def, outputs
    asked = {w.split(":")[0] for w in wanted}
    for name in asked:
        if name not in keys:
            raise unknown_name_error("output", name, keys, where)
    keep = [o for o, k in zip(outputs, keys, strict=True) if k in asked]
    return finish_frozen(graph_def, keep), keep
