"""Attribute, naming and control-edge transforms (add_default_attributes, set_device, remove_attribute,
rename_attribute, rename_op, rename_node, remove_control_dependencies, obfuscate_names,
backport_concatv2, insert_logging).

They follow graph_transforms' behaviour and parameter names, with one difference throughout: an edit
that would leave a graph TensorFlow 2.21 cannot import (an op that does not exist, a node that no
longer fits its op, a name used twice) is refused with a ValueError instead of being written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tfshrink import _tf
from tfshrink.graph.ir import Graph, tensor_name
from tfshrink.names import closest
from tfshrink.transforms.basic import CONTROL_FLOW_OPS
from tfshrink.transforms.common import require
from tfshrink.transforms.registry import Context, Param, register

# TensorFlow's rule for node names (the importer rejects anything else).
_NODE_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\-/>]*\Z")
_DT_INT32 = 3  # DataType enum value (types.proto)
_REF_OFFSET = 100  # DT_FLOAT_REF == DT_FLOAT + 100


def _copy(message: Any) -> Any:
    out = type(message)()
    out.CopyFrom(message)
    return out


def _matches(node: Any, op_name: str) -> bool:
    return op_name == "*" or node.op == op_name


def _misfits(node: Any, op_def: Any) -> list[str]:
    """Why TensorFlow would not load `node` as an `op_def` (empty when it would): a required attribute
    missing, a type outside the allowed list, or the wrong number of data inputs. (Attributes the op
    does not declare are no reason: TF 2.21 imports and runs such nodes; see _undeclared.)"""
    problems = []
    declared = {a.name: a for a in op_def.attr}
    for attr in op_def.attr:
        if attr.name not in node.attr:
            if not attr.HasField("default_value"):
                problems.append(f"lacks attribute {attr.name!r}")
            continue
        value = node.attr[attr.name]
        allowed = attr.allowed_values.list.type if attr.HasField("allowed_values") else ()
        if attr.type == "type" and allowed and value.type < _REF_OFFSET and value.type not in allowed:
            problems.append(f"has {attr.name}={_tf.tf().dtypes.as_dtype(value.type).name}, "
                            f"which {op_def.name} does not allow")
    expected = 0
    for arg in op_def.input_arg:
        count_attr = arg.number_attr or arg.type_list_attr
        if not count_attr:
            expected += 1
            continue
        value = node.attr[count_attr] if count_attr in node.attr else declared[count_attr].default_value
        expected += value.i if arg.number_attr else len(value.list.type)
    given = sum(1 for ref in node.input if not ref.startswith("^"))
    if given != expected:
        problems.append(f"has {given} data input(s), {op_def.name} takes {expected}")
    return problems


def _undeclared(node: Any, op_def: Any) -> list[str]:
    """Attributes on `node` that `op_def` does not declare (internal "_" ones aside). TF 2.21 keeps and
    ignores them, though some loaders (older TensorFlow releases among them) refuse such nodes."""
    declared = {a.name for a in op_def.attr}
    return [a for a in sorted(node.attr) if a not in declared and not a.startswith("_")]


def _check_edit(transform: str, node: Any, before: list[str]) -> None:
    """Refuse an edit that made `node` stop fitting its op (problems it already had are let be)."""
    op_def = _tf.op_def(node.op)
    if op_def is None:
        return
    new = [p for p in _misfits(node, op_def) if p not in before]
    if new:
        raise ValueError(f"{transform}: node {node.name!r} ({node.op}) would no longer load: {new[0]}")


def _load_error(graph: Graph) -> str | None:
    """TensorFlow's first complaint on importing the graph (types, shapes, attributes), or None."""
    try:
        _tf.import_output_specs(graph.to_graph_def(), [])
    except ValueError as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _guarded(transform: str, graph: Graph, edit: Callable[[], None], undo: Callable[[], None]) -> None:
    """Run `edit`; if the graph loaded in TensorFlow before and no longer does, `undo` it and refuse.
    (Graphs that did not load to begin with, e.g. with custom ops, get only the per-node checks.)"""
    before = _load_error(graph)
    edit()
    if before is None:
        after = _load_error(graph)
        if after is not None:
            undo()
            raise ValueError(f"{transform}: TensorFlow could not load the result: {after}")


def _problems(node: Any) -> list[str]:
    op_def = _tf.op_def(node.op)
    return [] if op_def is None else _misfits(node, op_def)


# ---- attributes ------------------------------------------------------------------------------

@register("add_default_attributes", "write out every attribute the op registry gives a default")
def add_default_attributes(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: every node whose op TensorFlow 2.21 registers. Write: each attribute its OpDef declares
    with a default and the node leaves unset, set to that default. Nodes of ops the registry does
    not know (library functions, custom ops) are left as they are, with a warning for custom ops."""
    changed = False
    functions = {f.signature.name for f in graph.library.function}
    unknown: set[str] = set()
    for node in graph:
        op_def = _tf.op_def(node.op)
        if op_def is None:
            if node.op not in functions:
                unknown.add(node.op)
            continue
        for attr in op_def.attr:
            if attr.HasField("default_value") and attr.name not in node.attr:
                node.attr[attr.name].CopyFrom(attr.default_value)
                changed = True
    if unknown:
        ctx.warnings.append(f"add_default_attributes: ops TensorFlow does not register, left as they are: "
                            f"{', '.join(sorted(unknown))}")
    return changed


@register("set_device", "place nodes on a device",
          {"device": Param(default="", help="device to assign, e.g. /device:CPU:0"),
           "if_default": Param("bool", False, help="only nodes with no device yet")})
def set_device(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: every node (with if_default=true, only nodes whose device is empty). Write: the node's
    device field set to `device`. Refuse: a device string TensorFlow cannot parse."""
    device = params["device"] or ""
    if device:
        try:
            _tf.tf().DeviceSpec.from_string(device)
        except ValueError as exc:
            raise ValueError(f"set_device: {device!r} is not a device TensorFlow can parse ({exc})") from None
    changed = False
    for node in graph:
        if params["if_default"] and node.device:
            continue
        if node.device != device:
            node.device = device
            changed = True
    return changed


@register("remove_attribute", "delete an attribute from nodes",
          {"attribute_name": Param(help="attribute to delete"),
           "op_name": Param(default="*", help="only nodes of this op type (* for all)")})
def remove_attribute(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: nodes of op `op_name` (every node for "*") that carry `attribute_name`. Write: the
    attribute deleted. Refuse: when the op requires the attribute (it declares it with no default),
    since TensorFlow could not load the result."""
    require("remove_attribute", params, "attribute_name", example="remove_attribute(attribute_name=_class)")
    name, op_name = params["attribute_name"], params["op_name"] or "*"
    hits = [n for n in graph if _matches(n, op_name) and name in n.attr]
    for node in hits:  # check every node first, so a refusal changes nothing
        trial = _copy(node)
        del trial.attr[name]
        _check_edit("remove_attribute", trial, _problems(node))
    if not hits:
        return False
    saved = [(node, _copy(node.attr[name])) for node in hits]

    def edit() -> None:
        for node in hits:
            del node.attr[name]

    def undo() -> None:
        for node, value in saved:
            node.attr[name].CopyFrom(value)

    _guarded("remove_attribute", graph, edit, undo)
    return True


@register("rename_attribute", "rename an attribute on nodes",
          {"old_attribute_name": Param(help="attribute to rename"),
           "new_attribute_name": Param(help="its new name"),
           "op_name": Param(default="*", help="only nodes of this op type (* for all)")})
def rename_attribute(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: nodes of op `op_name` (every node for "*") that carry `old_attribute_name`. Write: its
    value moved to `new_attribute_name`. Refuse: when a node already has `new_attribute_name`, or
    when the renamed node no longer fits its op (a required attribute gone, a count behind its inputs
    gone). Warns when the new name is one the op does not declare (TF ignores it)."""
    require("rename_attribute", params, "old_attribute_name", "new_attribute_name",
             example="rename_attribute(old_attribute_name=foo, new_attribute_name=bar)")
    old, new = params["old_attribute_name"], params["new_attribute_name"]
    op_name = params["op_name"] or "*"
    if old == new:
        return False
    hits = [n for n in graph if _matches(n, op_name) and old in n.attr]
    for node in hits:
        if new in node.attr:
            raise ValueError(f"rename_attribute: node {node.name!r} already has an attribute {new!r}")
        trial = _copy(node)
        trial.attr[new].CopyFrom(trial.attr[old])
        del trial.attr[old]
        _check_edit("rename_attribute", trial, _problems(node))
    if not hits:
        return False

    def move(src: str, dst: str) -> Callable[[], None]:
        def run() -> None:
            for node in hits:
                node.attr[dst].CopyFrom(node.attr[src])
                del node.attr[src]
        return run

    _guarded("rename_attribute", graph, move(old, new), move(new, old))
    ignored = [n.name for n in hits if (d := _tf.op_def(n.op)) is not None and new in _undeclared(n, d)]
    if ignored:
        ctx.warnings.append(f"rename_attribute: {len(ignored)} node(s) now carry {new!r}, which their op "
                            f"does not declare; TensorFlow ignores it (e.g. {ignored[0]!r})")
    return True


# ---- ops -------------------------------------------------------------------------------------

@register("rename_op", "change the op type of nodes",
          {"old_op_name": Param(help="op type to change"),
           "new_op_name": Param(help="op type to change it to")})
def rename_op(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: every node of op `old_op_name`. Write: its op set to `new_op_name`, inputs and attributes
    kept. Refuse: when TensorFlow 2.21 has no op (and the graph no function) called `new_op_name`, or
    when a renamed node does not fit the new op (number of inputs, a required attribute missing, a
    type it does not allow). Warns about attributes the new op does not declare (TF ignores them)."""
    require("rename_op", params, "old_op_name", "new_op_name",
             example="rename_op(old_op_name=Mul, new_op_name=Multiply)")
    old, new = params["old_op_name"], params["new_op_name"]
    functions = {f.signature.name for f in graph.library.function}
    op_def = _tf.op_def(new)
    if op_def is None and new not in functions:
        near = closest(new, [n for n in dir(_tf.tf().raw_ops) if not n.startswith("_")] + sorted(functions))
        hint = f" (closest: {', '.join(near)})" if near else ""
        raise ValueError(f"rename_op: TensorFlow has no op named {new!r}{hint}")
    hits = [n for n in graph if n.op == old]
    if old == new:
        return False
    ignored: set[str] = set()
    if op_def is not None:
        for node in hits:
            trial = _copy(node)
            trial.op = new
            problems = _misfits(trial, op_def)
            if problems:
                raise ValueError(f"rename_op: node {node.name!r} does not fit {new}: it {problems[0]}")
            ignored.update(_undeclared(trial, op_def))
    if not hits:
        return False

    def set_op(op: str) -> Callable[[], None]:
        def run() -> None:
            for node in hits:
                node.op = op
        return run

    _guarded("rename_op", graph, set_op(new), set_op(old))
    if ignored:
        ctx.warnings.append(f"rename_op: {new} does not declare {', '.join(sorted(ignored))}; TensorFlow "
                            "ignores such attributes (remove_attribute drops them)")
    return True


@register("backport_concatv2", "rewrite ConcatV2 as the older Concat (axis first)")
def backport_concatv2(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: ConcatV2 nodes. Write: op Concat, the axis input moved from last to first, Tidx dropped
    (the values, N, T and control inputs stay). Skips, with a warning, a ConcatV2 whose axis is
    int64: Concat only takes an int32 axis."""
    changed = False
    skipped = []
    for node in graph:
        if node.op != "ConcatV2":
            continue
        if "Tidx" in node.attr and node.attr["Tidx"].type != _DT_INT32:
            skipped.append(node.name)
            continue
        data = [r for r in node.input if not r.startswith("^")]
        control = [r for r in node.input if r.startswith("^")]
        if len(data) < 2:
            continue  # not a well-formed ConcatV2 (values and an axis): leave it for TF to report
        graph.set_inputs(node.name, [data[-1], *data[:-1], *control])
        node.op = "Concat"
        if "Tidx" in node.attr:
            del node.attr["Tidx"]
        changed = True
    if skipped:
        ctx.warnings.append(f"backport_concatv2: kept {len(skipped)} ConcatV2 with an int64 axis "
                            f"(Concat takes int32 only), e.g. {skipped[0]!r}")
    return changed


# ---- names -----------------------------------------------------------------------------------




# The name the transform had in TensorFlow releases before the spelling was fixed (the README kept it).


# ---- control edges ---------------------------------------------------------------------------

def _places_in_control_flow(graph: Graph, source: str) -> bool:
    """Whether a control edge from `source` puts its consumer inside a tf.cond branch or while loop
    (TF1 style): the source is a control-flow op, or a pivot (an Identity of a Switch)."""
    node = graph.get(source)
    if node is None:
        return False
    if node.op in CONTROL_FLOW_OPS:
        return True
    if node.op == "Identity":
        data = graph.data_inputs(source)
        return bool(data) and graph.node(data[0][0]).op in ("Switch", "RefSwitch")
    return False


@register("remove_control_dependencies", "drop control inputs (those placing nodes in tf.cond/while kept)")
def remove_control_dependencies(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: every "^node" control input. Write: it removed. Keeps (with a warning) the control edges
    from control-flow ops and cond/while pivots: they put constants inside a tf.cond branch or a
    while loop frame, and without them the graph computes wrong values or fails to run."""
    removed = kept = 0
    for node in graph:
        controls = graph.control_inputs(node.name)
        if not controls:
            continue
        doomed = [c for c in controls if not _places_in_control_flow(graph, c)]
        kept += len(controls) - len(doomed)
        if doomed:
            graph.drop_control_inputs(node.name, doomed)
            removed += len(doomed)
    if kept:
        ctx.warnings.append(f"remove_control_dependencies: kept {kept} control input(s) that place nodes "
                            "inside tf.cond branches or while loops")
    return removed > 0


# ---- logging ---------------------------------------------------------------------------------

_PRINT_SUFFIX = "__print__"


@register("insert_logging", "print node outputs as the graph runs (v1 Print op)",
          {"op": Param(repeated=True, help="only nodes of this op type (repeatable)"),
           "prefix": Param(repeated=True, help="only nodes whose name starts with this (repeatable)"),
           "show_name": Param("bool", False, help="prepend ;<name>__print__; to the message"),
           "show_op": Param("bool", False, help="prepend ;<op>; to the message"),
           "message": Param(default="", help="text printed before the values"),
           "first_n": Param("int", -1, help="print only the first n runs (-1: always)"),
           "summarize": Param("int", 1024, help="print at most this many entries per tensor")})
def insert_logging(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: nodes of the listed ops (all when no op is given) whose name starts with one of the
    prefixes (all when none is given), and whose output 0 some node reads. Write: a Print node
    "<name>__print__" that passes output 0 through and prints every output that is read; the readers
    of output 0 then read the Print instead, so the values are printed whenever they are used.
    Skips, with a warning, control-flow ops (a Print over a Switch's outputs would never run) and
    reference-typed outputs. Refuse: a node named "<name>__print__" already exists."""
    ops, prefixes = set(params["op"]), list(params["prefix"])
    targets: list[tuple[str, list[int]]] = []
    skipped_flow = []
    for node in graph:
        if (ops and node.op not in ops) or (prefixes and not any(node.name.startswith(p) for p in prefixes)):
            continue
        read = sorted({index for consumer in graph.data_consumers(node.name)
                       for src, index in graph.data_inputs(consumer) if src == node.name})
        if not read or read[0] != 0:
            continue  # nothing reads output 0: a Print there would never run
        if node.op in CONTROL_FLOW_OPS:
            skipped_flow.append(node.name)
            continue
        if node.name + _PRINT_SUFFIX in graph:
            raise ValueError(f"insert_logging: a node named {node.name + _PRINT_SUFFIX!r} already exists "
                             "(was insert_logging run twice?)")
        targets.append((node.name, read))
    if skipped_flow:
        ctx.warnings.append(f"insert_logging: no Print after {len(skipped_flow)} control-flow node(s), "
                            f"e.g. {skipped_flow[0]!r}")
    if not targets:
        return False
    wanted = [(name, index) for name, read in targets for index in read]
    try:
        specs = dict(zip(wanted, _tf.import_output_specs(graph.to_graph_def(), wanted), strict=True))
    except ValueError as exc:
        raise ValueError(f"insert_logging: TensorFlow cannot load the graph to read output types: "
                         f"{str(exc).splitlines()[0]}") from None
    tf = _tf.tf()
    added: dict[str, str] = {}
    skipped_ref = []
    for name, read in targets:
        dtypes = [specs[(name, index)] for index in read]
        if any(spec is None or spec[0].endswith("_ref") for spec in dtypes):
            skipped_ref.append(name)
            continue
        types = [tf.dtypes.as_dtype(spec[0]).as_datatype_enum for spec in dtypes if spec is not None]
        node = graph.node(name)
        message = (f";{node.op};" if params["show_op"] else "") + \
                  (f";{name}{_PRINT_SUFFIX};" if params["show_name"] else "") + params["message"]
        printer = type(node)()
        printer.name, printer.op = name + _PRINT_SUFFIX, "Print"
        printer.input.extend([name] + [tensor_name(name, index) for index in read])
        printer.attr["T"].type = types[0]
        printer.attr["U"].list.type.extend(types)
        printer.attr["message"].s = message.encode()
        printer.attr["first_n"].i = params["first_n"]
        printer.attr["summarize"].i = params["summarize"]
        graph.add(printer)
        graph.replace_uses(name, printer.name, keep=[printer.name])
        added[name] = printer.name
    if skipped_ref:
        ctx.warnings.append(f"insert_logging: no Print after {len(skipped_ref)} node(s) with reference-typed "
                            f"outputs, e.g. {skipped_ref[0]!r}")
    if not added:
        return False
    # Each Print right after the node it logs, so the file reads in order.
    printers = set(added.values())
    order = []
    for name in graph.names():
        if name in printers:
            continue
        order.append(name)
        if name in added:
            order.append(added[name])
    graph.reorder(order)
    return True
