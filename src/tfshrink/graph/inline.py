"""Inline tf.cond v2 (If / StatelessIf) whose predicate is a constant.

TF2's graph-mode tf.cond emits an If node that calls a then- and an else-function. After
`--bind is_training=false` the predicate is constant, so the If is replaced by the nodes of the
branch it would always take, under `<if name>/then|else/`: the branch's arguments become the If's
inputs, its results become the If's outputs, and the If's control inputs guard the inlined nodes.
"""

from __future__ import annotations

from tfshrink import _tf
from tfshrink.graph.cond import constant_value
from tfshrink.graph.ir import Graph, parse_tensor

IF_OPS = ("If", "StatelessIf")
CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
MAX_DEPTH = 64


def inline_calls(graph: Graph, keep_names: set[str] | frozenset[str] = frozenset()) -> bool:
    """Inline every PartitionedCall / StatefulPartitionedCall (nested ones too) whose function is in
    the library; a call in `keep_names` keeps its name as an IdentityN. Drops functions no node
    calls any more. True when anything changed; ValueError for a call to a missing function."""
    changed = False
    for _ in range(MAX_DEPTH):
        calls = [n.name for n in graph if n.op in CALL_OPS]
        if not calls:
            break
        for name in calls:
            node = graph.node(name)
            fname = node.attr["f"].func.name
            args = [r for r in node.input if not r.startswith("^")]
            if not inline_call(graph, name, fname, args, name, keep_name=name in keep_names):
                raise ValueError(f"{name} calls {fname!r}, which is not in the graph's function library")
            changed = True
    else:
        raise ValueError(f"function calls nested deeper than {MAX_DEPTH} levels")
    if changed:
        graph.drop_unused_functions()
    return changed


def fold_constant_ifs(graph: Graph) -> int:
    """Inline every If whose predicate is constant (nested ones too). Returns how many."""
    folded = 0
    while True:
        todo = [(n.name, constant_value(graph, n.input[0])) for n in graph if n.op in IF_OPS and n.input]
        todo = [(name, value) for name, value in todo if value is not None]
        if not todo:
            return folded
        for name, value in todo:
            _inline(graph, name, bool(value))
            folded += 1


def _inline(graph: Graph, name: str, value: bool) -> None:
    node = graph.node(name)
    branch = "then" if value else "else"
    args = [r for r in node.input if not r.startswith("^")][1:]
    inline_call(graph, name, node.attr[f"{branch}_branch"].func.name, args, f"{name}/{branch}")


def inline_call(graph: Graph, name: str, fname: str, args: list[str], prefix: str, *,
                keep_name: bool = False) -> bool:
    """Replace node `name`, which calls library function `fname` on `args`, by the function's body
    under `prefix/`. Its results feed the node's consumers; its control inputs guard the inlined
    nodes; whatever waited on it waits on the results. With `keep_name` an IdentityN under the old
    name passes the results on (for a node that was asked for by name). False when `fname` is not
    in the library (nothing changes)."""
    node = graph.node(name)
    fdef = next((f for f in graph.library.function if f.signature.name == fname), None)
    if fdef is None:
        return False
    body, flat = _tf.function_to_graph_def(fdef, graph.library)
    guards = [r for r in node.input if r.startswith("^")]
    arg_names = [a.name for a in fdef.signature.input_arg]
    arg_ref = dict(zip(arg_names, args, strict=False))

    def remap(ref: str) -> str:
        producer, index, control = parse_tensor(ref)
        if producer in arg_ref:
            src = parse_tensor(arg_ref[producer])[0]
            return f"^{src}" if control else arg_ref[producer]
        target = f"{prefix}/{producer}"
        if control:
            return f"^{target}"
        return target if index == 0 else f"{target}:{index}"

    inner = Graph(body)
    for inner_name in inner.topological_order():
        if inner_name in arg_ref:
            continue
        proto = type(node)()
        proto.CopyFrom(inner.node(inner_name))
        proto.name = f"{prefix}/{inner_name}"
        refs = [remap(r) for r in proto.input]
        if not [r for r in refs if not r.startswith("^")]:
            refs += guards
        del proto.input[:]
        proto.input.extend(refs)
        proto.device = ""
        graph.add(proto)
    results = [remap(flat.get(fdef.ret[o.name], fdef.ret[o.name])) for o in fdef.signature.output_arg]
    for k, result in enumerate(results):
        graph.replace_uses(f"{name}:{k}", result)
    for consumer in graph.consumers(name):  # what waited on the call now waits on its results
        refs = [r for r in graph.node(consumer).input if r != f"^{name}"]
        refs += [f"^{parse_tensor(r)[0]}" for r in results]
        graph.set_inputs(consumer, refs)
    types = [a.type for a in fdef.signature.output_arg]
    graph.remove([name])
    if keep_name and results:
        passthrough = type(node)()
        passthrough.name, passthrough.op = name, "IdentityN"
        passthrough.input.extend(results)
        passthrough.attr["T"].list.type.extend(types)
        graph.add(passthrough)
    return True
