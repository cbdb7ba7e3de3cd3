"""Drop the gradient accumulators TF2 adds to a tf.while_loop once nothing reads them.

When a training graph takes gradients through a TF2 `While`, TensorFlow rewrites the forward loop
to carry one extra loop variable per intermediate the backward pass needs: a TensorList
(`EmptyTensorList` outside, `TensorListPushBack(acc, x)` in the body). A frozen inference graph no
longer has the backward pass, but the loop still carries the lists; TFLite's converter refuses
them ("'tf.EmptyTensorList' op requires element_shape to be static").

Rewrite, for a loop variable k that is a variant, whose result nothing outside reads, that the
condition ignores, and whose body result is only `TensorListPushBack(arg_k, ...)` with arg_k read
by nothing else: remove k from the loop's inputs, types and output shapes, and from copies of the
body (without the push) and the condition; results after k move down by one. The loop computes
exactly what it did for every other variable.
"""

from __future__ import annotations

from typing import Any

from tfshrink.graph.ir import Graph, parse_tensor

WHILE_OPS = ("While", "StatelessWhile")
DT_VARIANT = 21


def prune_loop_accumulators(graph: Graph) -> int:
    """Remove every unread accumulator loop variable (see the module docstring). Returns how many."""
    removed = 0
    changed = True
    while changed:
        changed = False
        for node in list(graph):
            if node.op in WHILE_OPS and _prune_one(graph, node.name):
                removed += 1
                changed = True
    if removed:
        graph.drop_unused_functions()
    return removed


def _functions(graph: Graph) -> dict[str, Any]:
    return {f.signature.name: f for f in graph.library.function}


def _used_outputs(graph: Graph, name: str) -> set[int]:
    used = set()
    for consumer in graph.consumers(name):
        for ref in graph.node(consumer).input:
            producer, index, control = parse_tensor(ref)
            if producer == name and not control:
                used.add(index)
    return used


def _reads(fdef: Any, arg: str) -> list[Any]:
    """Nodes of `fdef` that read `arg` (a function argument or a node's output)."""
    return [n for n in fdef.node_def if any(r.split(":")[0].lstrip("^") == arg for r in n.input)]


def _accumulator(body: Any, cond: Any, k: int) -> Any | None:
    """The TensorListPushBack node of loop variable k, when k is an accumulator to drop."""
    arg = body.signature.input_arg[k].name
    out = body.signature.output_arg[k].name
    readers = _reads(body, arg)
    if len(readers) != 1 or readers[0].op != "TensorListPushBack" or readers[0].input[0] != arg:
        return None
    push = readers[0]
    if body.ret[out].split(":")[0] != push.name or _reads(body, push.name):
        return None
    if any(r.split(":")[0] == push.name for key, r in body.ret.items() if key != out):
        return None
    cond_arg = cond.signature.input_arg[k].name
    if _reads(cond, cond_arg) or any(r.split(":")[0] == cond_arg for r in cond.ret.values()):
        return None
    return push


def _prune_one(graph: Graph, name: str) -> bool:
    node = graph.node(name)
    functions = _functions(graph)
    body = functions.get(node.attr["body"].func.name)
    cond = functions.get(node.attr["cond"].func.name)
    if body is None or cond is None:
        return False
    types = list(node.attr["T"].list.type)
    used = _used_outputs(graph, name)
    for k in reversed(range(len(types))):
        if types[k] != DT_VARIANT or k in used:
            continue
        push = _accumulator(body, cond, k)
        if push is None:
            continue
        _drop_variable(graph, node, body, cond, push, k)
        return True
    return False


def _without(fdef: Any, k: int, drop_node: str | None, suffix: str) -> Any:
    new = type(fdef)()
    new.CopyFrom(fdef)
    new.signature.name = f"{fdef.signature.name}{suffix}"
    del new.signature.input_arg[k]
    if drop_node is not None:
        out = fdef.signature.output_arg[k].name
        del new.signature.output_arg[k]
        del new.ret[out]
        keep = [n for n in new.node_def if n.name != drop_node]
        del new.node_def[:]
        new.node_def.extend(keep)
    if "_input_shapes" in new.attr and len(new.attr["_input_shapes"].list.shape) > k:
        del new.attr["_input_shapes"].list.shape[k]
    for attr in ("arg_attr",):  # per-argument attributes are keyed by position
        table = getattr(new, attr)
        moved = {i - (i > k): table[i] for i in list(table) if i != k}
        table.clear()
        for i, value in moved.items():
            table[i].CopyFrom(value)
    return new


def _drop_variable(graph: Graph, node: Any, body: Any, cond: Any, push: Any, k: int) -> None:
    name = node.name
    n = len(node.attr["T"].list.type)
    new_body = _without(body, k, push.name, f"_pruned{k}")
    new_cond = _without(cond, k, None, f"_pruned{k}")
    graph.library.function.extend([new_body, new_cond])
    data = [r for r in node.input if not r.startswith("^")]
    controls = [r for r in node.input if r.startswith("^")]
    del data[k]
    graph.set_inputs(name, data + controls)
    node = graph.node(name)
    types = list(node.attr["T"].list.type)
    del types[k]
    del node.attr["T"].list.type[:]
    node.attr["T"].list.type.extend(types)
    if "output_shapes" in node.attr and len(node.attr["output_shapes"].list.shape) == n:
        del node.attr["output_shapes"].list.shape[k]
    if "_read_only_resource_inputs" in node.attr:
        kept = [i - (i > k) for i in node.attr["_read_only_resource_inputs"].list.i if i != k]
        del node.attr["_read_only_resource_inputs"].list.i[:]
        node.attr["_read_only_resource_inputs"].list.i.extend(kept)
    if "_num_original_outputs" in node.attr:
        node.attr["_num_original_outputs"].i = min(node.attr["_num_original_outputs"].i, n - 1)
    node.attr["body"].func.name = new_body.signature.name
    node.attr["cond"].func.name = new_cond.signature.name
    for j in range(k + 1, n):
        graph.replace_uses(f"{name}:{j}", f"{name}:{j - 1}")
