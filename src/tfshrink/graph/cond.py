"""Remove tf.cond (v1 Switch/Merge) whose predicate is a constant.

After `--bind is_training=false`, every Switch on that predicate has one live and one dead output.
Rewrite: consumers of the live output read the Switch's data input directly; everything reachable
only through the dead output (data or control) is dead and removed; a Merge with one live input is
replaced by that input (its value_index output by a constant). Control edges that only carried the
branch's liveness (from the cond's switch_t/switch_f/pred_id Identities) are dropped. The result
computes exactly what the taken branch computed, with no Switch or Merge left on that predicate.
"""

from __future__ import annotations

from typing import Any

from tfshrink import _tf
from tfshrink.graph.ir import Graph, parse_tensor

# Stateless ops a predicate typically reaches a bound placeholder through. A subgraph made only of
# these over Const nodes always computes the same value, so it can be evaluated once at freeze time.
PURE_OPS = frozenset({
    "Const", "Identity", "IdentityN", "StopGradient", "Squeeze", "Reshape", "ExpandDims", "Cast",
    "LogicalNot", "LogicalAnd", "LogicalOr", "Equal", "NotEqual", "Less", "LessEqual", "Greater",
    "GreaterEqual", "Select", "SelectV2", "All", "Any", "Pack", "Unpack", "GatherV2", "StridedSlice",
    "Slice", "Add", "AddV2", "Sub", "Mul", "RealDiv", "Neg", "Abs", "Maximum", "Minimum", "Sum",
    "Prod", "Max", "Min", "Mean", "Fill", "ZerosLike", "OnesLike", "Size", "Rank", "Transpose",
})


def constant_value(graph: Graph, tensor: str) -> Any | None:
    """The Python scalar a tensor always holds; None if not constant.

    Looks through Identity and self-predicated Switches at once; any other subgraph of stateless
    ops (Squeeze, Cast, LogicalNot, comparisons...) whose leaves are all Const is evaluated in
    TensorFlow, so `--bind is_training=false` folds however the predicate was derived.
    """
    name, index, _ = parse_tensor(tensor)
    seen = set()
    while name not in seen:
        seen.add(name)
        node = graph.get(name)
        if node is None:
            return None
        if node.op == "Identity" or (node.op == "Switch" and index in (0, 1) and _pred_is_self(graph, name)):
            name, index, _ = parse_tensor(node.input[0])
            continue
        if node.op == "Const" and index == 0:
            return _scalar(node.attr["value"].tensor)
        if node.op in PURE_OPS:
            return _evaluate(graph, name, index)
        return None
    return None


def _scalar(t: Any) -> Any | None:
    if t.tensor_shape.dim and any(d.size != 1 for d in t.tensor_shape.dim):
        return None
    if t.bool_val:
        return bool(t.bool_val[0])
    if t.int_val:
        return int(t.int_val[0])
    if t.float_val:
        return float(t.float_val[0])
    if t.tensor_content and t.dtype == 10:  # DT_BOOL packed
        return bool(t.tensor_content[0])
    return None


def _evaluate(graph: Graph, name: str, index: int) -> Any | None:
    """Run the constant subgraph behind `name:index` when every node of it is pure; its value if
    it is a single element, else None."""
    needed = graph.ancestors([name])
    if len(needed) > 200 or any(graph.node(n).op not in PURE_OPS for n in needed):
        return None
    value = _tf.evaluate_constant(graph.subgraph_def(needed), f"{name}:{index}")
    if value is None or value.size != 1:
        return None
    item = value.reshape(()).item()
    return item if isinstance(item, bool | int | float) else None


def _pred_is_self(graph: Graph, switch: str) -> bool:
    ins = graph.data_inputs(switch)
    return len(ins) == 2 and ins[0] == ins[1]


def fold_constant_conds(graph: Graph) -> int:
    """Fold every Switch whose predicate is constant. Returns how many Switch nodes went away."""
    folded = 0
    while True:
        switches = []
        for node in graph:
            if node.op in ("Switch", "RefSwitch") and len(node.input) >= 2:
                value = constant_value(graph, node.input[1])
                if value is not None:
                    switches.append((node.name, bool(value)))
        if not switches:
            return folded
        dead_tensors: set[tuple[str, int]] = set()
        for name, value in switches:
            dead_tensors.add((name, 0 if value else 1))
        dead = _propagate_dead(graph, dead_tensors)
        # Rewire live Switch outputs and single-live-input Merges before removing the dead.
        liveness_carriers = set()
        for name, value in switches:
            live = f"{name}:1" if value else name
            data = graph.node(name).input[0]
            for consumer in graph.data_consumers(name):
                if consumer not in dead and graph.node(consumer).op == "Identity":
                    liveness_carriers.add(consumer)  # the cond's switch_t / switch_f
            graph.replace_uses(live, data)
        rewired_merges = set()
        for node in list(graph):
            if node.name in dead or node.op not in ("Merge", "RefMerge"):
                continue
            live_inputs = [r for r in node.input if not r.startswith("^")
                           and parse_tensor(r)[0] not in dead
                           and (parse_tensor(r)[0], parse_tensor(r)[1]) not in dead_tensors]
            if len(live_inputs) == 1:
                index = [r for r in node.input if not r.startswith("^")].index(live_inputs[0])
                graph.replace_uses(f"{node.name}:0", live_inputs[0])
                if graph.data_consumers(node.name):  # someone reads value_index
                    _replace_with_const(graph, node.name, index)
                if not graph.consumers(node.name):
                    rewired_merges.add(node.name)
        for name in list(graph.names()):
            if name not in dead:
                ctrl = [c for c in graph.control_inputs(name) if c in dead or c in liveness_carriers]
                if ctrl:
                    graph.drop_control_inputs(name, ctrl)
        removable = dead | rewired_merges | {n for n, _ in switches}
        # Nodes still reading a removable node (only possible through stale Merges) keep it.
        users = set()
        for name in removable:
            users |= graph.consumers(name) - removable
        graph.remove(_closure_without(graph, removable, users))
        folded += len(switches)


def _closure_without(graph: Graph, nodes: set[str], users: set[str]) -> set[str]:
    if not users:
        return nodes
    keep = graph.ancestors(users) & nodes
    return nodes - keep


def _propagate_dead(graph: Graph, dead_tensors: set[tuple[str, int]]) -> set[str]:
    """Nodes that can never run: they read a dead tensor, or depend on a dead node by control.
    A Merge dies only when all its data inputs are dead."""
    dead: set[str] = set()
    order = graph.topological_order()
    for name in order:
        node = graph.node(name)
        refs = [parse_tensor(r) for r in node.input]
        data = [(p, i) for p, i, c in refs if not c]
        ctrl = [p for p, _, c in refs if c]
        def is_dead(p: str, i: int) -> bool:
            return p in dead or (p, i) in dead_tensors
        if node.op in ("Merge", "RefMerge"):
            if data and all(is_dead(p, i) for p, i in data):
                dead.add(name)
        elif any(is_dead(p, i) for p, i in data) or any(p in dead for p in ctrl):
            dead.add(name)
    return dead


def _replace_with_const(graph: Graph, merge: str, index: int) -> None:
    tf_node = type(graph.node(merge))()
    tf_node.name = f"{merge}/value_index"
    tf_node.op = "Const"
    tf_node.attr["dtype"].type = 3  # DT_INT32
    tf_node.attr["value"].tensor.dtype = 3
    tf_node.attr["value"].tensor.int_val.append(index)
    graph.add(tf_node)
    graph.replace_uses(f"{merge}:1", tf_node.name)
