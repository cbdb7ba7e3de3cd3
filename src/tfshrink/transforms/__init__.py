"""transform_graph on pip TensorFlow: parse a spec, run registered transforms on the graph IR."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfshrink.errors import UserError
from tfshrink.fileio import atomic_write, check_output, serialize_graph_def
from tfshrink.graph.ir import Graph, GraphError
from tfshrink.names import closest, split_names
from tfshrink.transforms import basic, batchnorm, constants, quantize  # noqa: F401  (register the transforms)
from tfshrink.transforms.registry import REGISTRY, Context, Transform, coerce
from tfshrink.transforms.spec import TransformCall, parse_spec

__all__ = ["REGISTRY", "TransformResult", "apply_transforms", "parse_spec", "transform"]


@dataclass(frozen=True)
class TransformResult:
    source: str
    output: str
    applied: tuple[tuple[str, bool], ...]  # (transform, changed anything)
    nodes_before: int
    nodes_after: int
    bytes_before: int
    bytes_after: int
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "output": self.output,
                "applied": [{"name": n, "changed": c} for n, c in self.applied],
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "warnings": list(self.warnings)}


def _lookup(call: TransformCall) -> Transform:
    found = REGISTRY.get(call.name)
    if found is None:
        near = closest(call.name, REGISTRY)
        raise UserError(f"unknown transform {call.name!r}",
                        f"closest: {', '.join(near)}" if near else "see `tfshrink transform --list`")
    return found


def _resolve_case(graph: Graph, names: list[str], ctx: Context, what: str) -> list[str]:
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


def apply_transforms(graph_def: Any, spec: str, inputs: list[str], outputs: list[str]
                     ) -> tuple[Any, list[tuple[str, bool]], list[str]]:
    """Run the spec's transforms in order on a copy of `graph_def`."""
    calls = parse_spec(spec)
    plan = [(_lookup(c), c) for c in calls]
    checked = [(t, coerce(t, c.params)) for t, c in plan]  # all parameters checked before any runs
    graph = Graph(type(graph_def).FromString(graph_def.SerializeToString()))
    ctx = Context([], [])
    ctx.inputs = _resolve_case(graph, inputs, ctx, "input")
    ctx.outputs = _resolve_case(graph, outputs, ctx, "output")
    applied = []
    for transform, params in checked:
        if not transform.runs_on_tf:
            raise UserError(f"{transform.name}: TensorFlow 2.21 cannot run the graph it would write",
                            "drop it from --transforms")
        _resolve_ops(graph, params, ctx)
        try:
            changed = transform.fn(graph, params, ctx)
        except (GraphError, ValueError) as exc:
            if params.get("ignore_errors"):
                ctx.warnings.append(f"{transform.name} failed and was skipped: {exc}")
                applied.append((transform.name, False))
                continue
            ran = ", ".join(n for n, _ in applied) or "none"
            raise UserError(f"{transform.name} failed: {exc} (after: {ran})",
                            f"pass {transform.name}(ignore_errors=true) to skip it") from None
        applied.append((transform.name, changed))
    return graph.to_graph_def(), applied, ctx.warnings


def transform(source: str | Path, output: str | Path, transforms: str, *, inputs: str | list[str] | None = None,
              outputs: str | list[str] | None = None, text: bool = False) -> TransformResult:
    """Apply graph_transforms-style `transforms` to a frozen GraphDef and write the result."""
    from tfshrink.model.graphdef import GraphDefModel, read_graph_def

    out_path = check_output(output, [source])
    src = Path(source)
    graph_def = read_graph_def(src)
    wanted_in, wanted_out = split_names(inputs), split_names(outputs)
    if not wanted_in or not wanted_out:
        detected = GraphDefModel(src, graph_def=graph_def)
        wanted_in = wanted_in or [s.name for s in detected.inputs]
        wanted_out = wanted_out or [s.name for s in detected.outputs]
    result, applied, warnings = apply_transforms(graph_def, transforms, wanted_in, wanted_out)
    data = serialize_graph_def(result, text)
    atomic_write(out_path, data)
    return TransformResult(str(src), str(out_path), tuple(applied), len(graph_def.node), len(result.node),
                           src.stat().st_size, len(data), tuple(warnings))
