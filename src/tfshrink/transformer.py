"""`tfshrink transform`: graph_transforms on a frozen GraphDef, the result checked against the input.

The rewrites themselves live in `tfshrink.transforms` (one module per transform, a registry, and
`apply_transforms`); this module reads the file, resolves names, runs the numeric checks through
`tfshrink.verification` and writes the result atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfshrink.errors import CheckFailed, UserError, first_line
from tfshrink.fileio import atomic_write, check_output, serialize_graph_def
from tfshrink.graph.io_ops import drop_io_control_inputs
from tfshrink.graph.ir import Graph
from tfshrink.model import detect_format
from tfshrink.model.graphdef import GraphDefModel, read_graph_def
from tfshrink.names import split_names
from tfshrink.transforms import OPTIMIZE_SPEC, REGISTRY, apply_transforms, resolve_case
from tfshrink.transforms.registry import Context
from tfshrink.verification import check_tolerances, compare, make_feed_list


@dataclass(frozen=True)
class StepCheck:
    after: str  # the transform (or "pipeline") after which the graph was run
    max_abs_error: float
    passed: bool
    exact: bool  # False when a transform that changes numerics by design had run by then

    def to_json(self) -> dict[str, Any]:
        return {"after": self.after, "max_abs_error": self.max_abs_error, "passed": self.passed,
                "exact": self.exact}


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
    checks: tuple[StepCheck, ...] = ()  # per step with check_each; the last is the whole pipeline
    graph_def: Any = field(default=None, repr=False, compare=False)  # the transformed GraphDef

    @property
    def max_abs_error(self) -> float | None:
        return self.checks[-1].max_abs_error if self.checks else None

    def to_json(self) -> dict[str, Any]:
        return {"checks": [c.to_json() for c in self.checks], "max_abs_error": self.max_abs_error,
                "source": self.source, "output": self.output,
                "applied": [{"name": n, "changed": c} for n, c in self.applied],
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "warnings": list(self.warnings)}



class _Checker:
    """Runs the transformed graph against the original on the same seeded random inputs."""

    def __init__(self, source: Path, reference: Any, *, samples: int, atol: float, rtol: float,
                 shapes: dict[str, tuple[int, ...]] | None):
        self.source, self.atol, self.rtol = source, atol, rtol
        self.reference = reference  # the input graph as a GraphDefModel with the requested outputs
        self.feeds = make_feed_list(self.reference, samples=samples, shapes=shapes)
        try:
            self.reference.run(self.feeds[0])
        except Exception as exc:  # the input itself doesn't run on this TF: nothing to check against
            raise UserError(f"{source}: the input graph does not run on TensorFlow "
                            f"({first_line(exc)}), so the result cannot be checked",
                            "pass --no-check to transform it unchecked") from None
        self.steps: list[StepCheck] = []
        self.inexact: list[str] = []

    def __call__(self, name: str, graph: Graph, ctx: Context) -> StepCheck:
        if name in REGISTRY and not REGISTRY[name].exact and name not in self.inexact:
            self.inexact.append(name)
        try:
            candidate = GraphDefModel(self.source, graph_def=graph.to_graph_def(), outputs=ctx.outputs)
            try:
                result = compare(self.reference, candidate, self.feeds, atol=self.atol, rtol=self.rtol)
            finally:
                candidate.close()
        except Exception as exc:  # TF raises its own errors for a graph that no longer runs
            raise UserError(f"after {name}: the transformed graph does not run ({first_line(exc)}); "
                            "nothing written", "drop that transform, or pass it ignore_errors=true") from None
        check = StepCheck(name, result.max_abs, result.passed or bool(self.inexact), not self.inexact)
        self.steps.append(check)
        return check


def transform(source: str | Path | Any, output: str | Path | None = None, transforms: str | None = None, *,
              inputs: str | list[str] | None = None, outputs: str | list[str] | None = None,
              text: bool = False, optimize: bool = False, check: bool = True, check_each: bool = False,
              samples: int = 2, atol: float = 1e-4, rtol: float = 1e-4,
              shapes: dict[str, tuple[int, ...]] | None = None) -> TransformResult:
    """Apply graph_transforms-style `transforms` (after the --optimize preset when `optimize`) to a
    frozen GraphDef, check the result against the input on seeded random inputs, and write it.

    A check beyond atol + rtol·|expected| raises CheckFailed and writes nothing, unless a transform
    that changes numerics by design (quantize_weights, round_weights, quantize_nodes) ran: then the
    error is reported only. `source` may also be a GraphDef in memory, and with `output` None nothing
    is written: the transformed GraphDef is `result.graph_def` either way."""
    check_tolerances(atol, rtol)
    spec = " ".join(s for s in (OPTIMIZE_SPEC if optimize else "", transforms or "") if s.strip())
    if not spec:
        raise UserError("no transforms given", "pass --transforms SPEC or --optimize")
    in_memory = hasattr(source, "node")
    out_path = None if output is None else check_output(output, [] if in_memory else [source], writes="graphdef")
    src = Path("<GraphDef>") if in_memory else Path(source)
    if not in_memory:
        fmt = detect_format(src)[0]  # a missing path fails here, before any work
        if fmt != "graphdef":
            raise UserError(f"{src}: a {fmt} model; transform rewrites a frozen GraphDef (.pb/.pbtxt)",
                            f"freeze it first: tfshrink freeze {src} -o model.pb")
    graph_def = source if in_memory else read_graph_def(src)
    source_graph = Graph(graph_def)
    dropped = drop_io_control_inputs(source_graph)
    if dropped:  # the outputs only waited on them: drop them before anything runs the graph
        source_graph.remove(dropped)
        graph_def = source_graph.to_graph_def()
    wanted_in, wanted_out = split_names(inputs), split_names(outputs)
    detected = None
    if not wanted_in or not wanted_out:
        detected = GraphDefModel(src, graph_def=graph_def)
        wanted_in = wanted_in or [s.name for s in detected.inputs]
        outputs_given = bool(wanted_out)
        wanted_out = wanted_out or [s.name for s in detected.outputs]
        if outputs_given:  # the detection's outputs aren't the ones asked for: not a reference
            detected.close()
            detected = None
    names = Context([], [])  # resolve names first, so the check and the transforms use the same ones
    wanted_in = resolve_case(source_graph, wanted_in, names, "input")
    wanted_out = resolve_case(source_graph, wanted_out, names, "output")
    checker = None
    if check or check_each:
        reference = detected or GraphDefModel(src, graph_def=graph_def, outputs=wanted_out)
        checker = _Checker(src, reference, samples=samples, atol=atol, rtol=rtol, shapes=shapes)
    elif detected is not None:
        detected.close()
    hook = checker if (checker is not None and check_each) else None
    result, applied, warnings = apply_transforms(graph_def, spec, wanted_in, wanted_out, on_step=hook)
    if checker is not None:
        for name, changed in applied:  # numerics-changing steps count even without --check-each
            if changed and not REGISTRY[name].exact and name not in checker.inexact:
                checker.inexact.append(name)
        final = Graph(result)
        outs = resolve_case(final, wanted_out, Context([], []), "output")
        final_check = checker("pipeline", final, Context(wanted_in, outs))
        checker.reference.close()
        if not final_check.passed:
            raise CheckFailed(f"the transformed graph differs from {src} by {final_check.max_abs_error:.3g} "
                              f"(atol={atol:g}, rtol={rtol:g}); nothing written",
                              "run with --check-each to find the step, or --no-check to write it anyway")
    data = serialize_graph_def(result, text)
    if out_path is not None:
        atomic_write(out_path, data)
    size = graph_def.ByteSize() if in_memory else src.stat().st_size
    return TransformResult(str(src), str(out_path) if out_path else "", tuple(applied), len(graph_def.node),
                           len(result.node), size, len(data), tuple(names.warnings + warnings + (
                               [f"dropped {len(dropped)} op(s) that touch files or processes and that the outputs "
                                f"only waited on: {', '.join(dropped[:4])}"] if dropped else [])),
                           tuple(checker.steps) if checker is not None else (), result)
