"""transform_graph on pip TensorFlow: parse a spec, run registered transforms on the graph IR."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tfshrink import _tf
from tfshrink.errors import UserError
from tfshrink.graph.ir import Graph, GraphError
from tfshrink.names import closest
from tfshrink.transforms import (  # noqa: F401  (register the transforms)
    activations,
    arithmetic,
    attributes,
    basic,
    batchnorm,
    bias,
    constants,
    eightbit,
    functions,
    fusion,
    quantize,
    renaming,
)
from tfshrink.transforms.registry import REGISTRY, Context, Transform, coerce
from tfshrink.transforms.spec import TransformCall, parse_spec

__all__ = ["OPTIMIZE_SPEC", "REGISTRY", "apply_transforms", "parse_spec", "resolve_case"]


def _lookup(call: TransformCall) -> Transform:
    found = REGISTRY.get(call.name)
    if found is None:
        near = closest(call.name, REGISTRY)
        raise UserError(f"unknown transform {call.name!r}",
                        f"closest: {', '.join(near)}" if near else "see `tfshrink transform --list`")
    return found


def resolve_case(graph: Graph, names: list[str], ctx: Context, what: str) -> list[str]:
    """Exact names win; a case-insensitive match is used with a warning (transform_graph commands
    pasted from blogs arrive lower-cased)."""
    by_lower: dict[str, list[str]] = {}
    for n in graph.names():
        by_lower.setdefault(n.lower(), []).append(n)
    out = []
    for ref in names:
        node, _, suffix = ref.partition(":")
        if node in graph:
            out.append(ref)
            continue
        matches = by_lower.get(node.lower(), [])
        if len(matches) == 1:
            ctx.warnings.append(f"{what} {node!r} not found; using {matches[0]!r}")
            out.append(matches[0] + (f":{suffix}" if suffix else ""))
            continue
        near = closest(node, graph.names())
        raise UserError(f"no {what} named {node!r} in the graph",
                        f"closest: {', '.join(near)}" if near else "run `tfshrink inspect` to list names")
    return out


def _resolve_ops(graph: Graph, params: dict, ctx: Context) -> None:
    if "op" not in params:
        return
    present = {n.op for n in graph}
    by_lower = {op.lower(): op for op in present}
    fixed = []
    for op in params["op"]:
        if op not in present and op.lower() in by_lower:
            ctx.warnings.append(f"op {op!r} not found; using {by_lower[op.lower()]!r}")
            op = by_lower[op.lower()]
        fixed.append(op)
    params["op"] = fixed


# --optimize: the pipeline for graphs TF2 and Keras 3 export (function calls, Identity chains of
# ReadVariableOp, batch norm as Rsqrt/Mul/Sub/AddV2 or FusedBatchNormV3). The folds run twice so a
# scale that only becomes foldable once a bias is fused (or the other way round) is caught too.
OPTIMIZE_SPEC = ("inline_partitionedcall strip_unused_nodes fold_constants "
                 "remove_nodes(op=Identity, op=CheckNumerics, op=StopGradient, op=PreventGradient, op=Snapshot) "
                 "fold_batch_norms fold_old_batch_norms fuse_bias_add fold_batch_norms fuse_bias_add "
                 "merge_concats hoist_activations merge_duplicate_nodes strip_unused_nodes sort_by_execution_order")

StepHook = Callable[[str, Graph, Context], None]


def apply_transforms(graph_def: Any, spec: str, inputs: list[str], outputs: list[str], *,
                     on_step: StepHook | None = None) -> tuple[Any, list[tuple[str, bool]], list[str]]:
    """Run the spec's transforms in order on a copy of `graph_def`. `on_step(name, graph, ctx)`
    is called after each transform that changed something."""
    calls = parse_spec(spec)
    plan = [(_lookup(c), c) for c in calls]
    checked = [(t, coerce(t, c.params)) for t, c in plan]  # all parameters checked before any runs
    for transform, _ in checked:
        if not transform.runs_on_tf:
            raise UserError(f"{transform.name}: TensorFlow 2.21 cannot run the graph it would write",
                            "drop it from --transforms")
    graph = Graph(type(graph_def).FromString(graph_def.SerializeToString()))
    ctx = Context([], [])
    ctx.inputs = resolve_case(graph, inputs, ctx, "input")
    ctx.outputs = resolve_case(graph, outputs, ctx, "output")
    applied = []
    for transform, params in checked:
        _resolve_ops(graph, params, ctx)
        try:
            changed = transform.fn(graph, params, ctx)
            if changed:
                _check_ops(graph)
        except (GraphError, ValueError) as exc:
            if params.get("ignore_errors"):
                ctx.warnings.append(f"{transform.name} failed and was skipped: {exc}")
                applied.append((transform.name, False))
                continue
            ran = ", ".join(n for n, _ in applied) or "none"
            raise UserError(f"{transform.name} failed: {exc} (after: {ran})",
                            f"pass {transform.name}(ignore_errors=true) to skip it") from None
        applied.append((transform.name, changed))
        if changed and on_step is not None:
            on_step(transform.name, graph, ctx)
    return graph.to_graph_def(), applied, ctx.warnings


def _check_ops(graph: Graph) -> None:
    """Every op must be one this TensorFlow knows (a transform must not write a graph that won't load)."""

    library = {f.signature.name for f in graph.library.function}
    for op in sorted({n.op for n in graph}):
        if op not in library and _tf.op_def(op) is None:
            raise GraphError(f"it would write op {op!r}, which TensorFlow 2.21 does not have")
