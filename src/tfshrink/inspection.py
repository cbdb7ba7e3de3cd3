"""What is inside a model: summarize_graph for every format, from the same detection freeze uses."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfshrink.data.feeds import DEFAULT_BATCH
from tfshrink.errors import UserError
from tfshrink.fileio import disk_bytes
from tfshrink.graph.fake_quant import FAKE_QUANT_TYPES, fake_quant_ranges
from tfshrink.graph.io_ops import IO_OPS, io_nodes
from tfshrink.graph.shapes import const_elements
from tfshrink.model import Model, TensorSpec, load
from tfshrink.model.keras_layers import activation_ranges
from tfshrink.model.session import placeholder_spec
from tfshrink.model.tflite import flatbuffer_summary
from tfshrink.tflite.metadata import quantization_summary, read_metadata, read_target
from tfshrink.tflite.preprocess import METADATA_NAME, Preprocess


@dataclass(frozen=True)
class InspectResult:
    """summarize_graph for any format: the model's I/O, size, op counts and parameters, and for
    graphs, what detection considered (`candidates`, `labels`); per-format facts in `extra`."""

    path: str
    format: str
    file_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    nodes: int
    op_types: dict[str, int]
    const_parameters: int
    variable_parameters: int
    control_edges: int
    variables: tuple[TensorSpec, ...] = ()
    optional_inputs: tuple[TensorSpec, ...] = ()
    candidates: tuple[dict, ...] = ()
    labels: tuple[str, ...] = ()
    outputs_ambiguous: bool = False
    bench_command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {
            "path": self.path, "format": self.format, "file_bytes": self.file_bytes,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "nodes": self.nodes, "op_types": self.op_types,
            "const_parameters": self.const_parameters,
            "variable_parameters": self.variable_parameters,
            "control_edges": self.control_edges,
            "variables": [s.to_json() for s in self.variables],
            "optional_inputs": [s.to_json() for s in self.optional_inputs],
            "ignored_placeholders": list(self.labels),
            "outputs_ambiguous": self.outputs_ambiguous,
            "output_candidates": list(self.candidates),
            "bench_command": self.bench_command,
        }
        out.update(self.extra)
        return out


def human_count(n: int) -> str:
    """495860 -> '495.86k', summarize_graph style."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def graph_stats(graph_def: Any) -> tuple[int, dict[str, int], int, int]:
    """(nodes, op types by count, const parameters, control edges). Reads shapes, never weights."""
    ops: Counter[str] = Counter()
    params = 0
    control = 0
    for node in graph_def.node:
        op = node.op  # each read of a proto field builds a new str: read it once
        ops[op] += 1
        if op == "Const":
            params += const_elements(node)
        for ref in node.input:
            if ref[:1] == "^":
                control += 1
    for fn in graph_def.library.function:
        for node in fn.node_def:
            op = node.op
            ops[op] += 1
            if op == "Const":
                params += const_elements(node)
    ordered = dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))
    return len(graph_def.node), ordered, params, control


def bench_command(path: str, inputs: tuple[TensorSpec, ...]) -> str:
    parts = ["tfshrink", "bench", _quote(path)]
    for spec in inputs:
        if spec.shape is None:
            parts.append(f"--input-shape {spec.name}=<dims>")
        elif any(d is None for d in spec.shape):
            dims = [str(DEFAULT_BATCH if i == 0 else 224) if d is None else str(d) for i, d in enumerate(spec.shape)]
            parts.append(f"--input-shape {spec.name}={','.join(dims)}")
    return " ".join(parts)


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def inspect(path: str | Path, *, signature: str | None = None, tags: str | None = None) -> InspectResult:
    """Summarize any supported model (see InspectResult)."""
    model = load(path, signature=signature, tags=tags)
    try:
        return _inspect(model)
    finally:
        model.close()


def _inspect(model: Model) -> InspectResult:
    """One summary for every format, from what the model is made of (its runtime, the graph it
    stores or the function that serves it, its variables): a new format needs nothing here."""
    p = Path(model.path)
    common = {"path": str(p), "format": model.format, "file_bytes": disk_bytes(p),
              "inputs": tuple(model.inputs), "outputs": tuple(model.outputs),
              "bench_command": bench_command(str(p), tuple(model.inputs))}
    if not model.is_tensorflow:
        data = model.model_bytes  # type: ignore[attr-defined]
        s = flatbuffer_summary(data)
        return InspectResult(**common, nodes=sum(s["ops"].values()), op_types=s["ops"],
                             const_parameters=s["weight_parameters"], variable_parameters=0, control_edges=0,
                             extra={"tensors": s["tensors"], "custom_ops": s["custom_ops"],
                                    "weight_bytes": s["weight_bytes"], "subgraphs": s["subgraphs"],
                                    "metadata": s["metadata"], **_tflite_extra(data)})
    graph_def = model.stored_graph()
    if graph_def is None:  # Keras, TF2 SavedModel: the serving function's graph
        function_graph = model.function_graph()
        if function_graph is None:
            raise UserError(f"{p}: a {model.format} model has neither a stored graph nor a function to inspect",
                            "freeze it first")
        graph_def = _model_graph_def(function_graph.as_graph_def())
    nodes, ops, consts, control = graph_stats(graph_def)
    variables = model.variable_specs()
    det = getattr(model, "detection", None)  # graph formats whose inputs and outputs were detected
    found: dict[str, Any] = {}
    if det is not None:
        ir = model.ir  # type: ignore[attr-defined]
        found = {"optional_inputs": tuple(placeholder_spec(ir, n) for n in det.optional_inputs),
                 "candidates": tuple(c.to_json() for c in det.candidates), "labels": tuple(det.labels),
                 "outputs_ambiguous": det.ambiguous}
    extra = {**model.signature_info(), **_fake_quant(model, graph_def), **_io_ops(graph_def),
             **_declared_size(consts, common["file_bytes"])}
    return InspectResult(**common, nodes=nodes, op_types=ops, const_parameters=consts,
                         variable_parameters=sum(_prod(v.shape) for v in variables), control_edges=control,
                         variables=variables, extra=extra, **found)


def _model_graph_def(graph_def: Any) -> Any:
    """A tf.function's graph without what tf.function adds: a resource Placeholder per captured
    variable, and the NoOp that automatic control dependencies hang every variable read on."""
    captures = {n.name for n in graph_def.node if n.op == "Placeholder" and n.attr["dtype"].type == 20}
    hooks = {n.name for n in graph_def.node
             if n.op == "NoOp" and n.input and all(r.startswith("^") for r in n.input)}
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    del out.node[:]
    for node in graph_def.node:
        if node.name in captures or node.name in hooks:
            continue
        copy = out.node.add()
        copy.CopyFrom(node)
        refs = [r for r in node.input if r[1:] not in hooks]
        del copy.input[:]
        copy.input.extend(refs)
    return out


def _declared_size(parameters: int, file_bytes: int) -> dict[str, Any]:
    """{"warnings": [...]} when the constants declare far more than the file holds (a Const may
    store one value and declare any shape): a sign of a crafted file, not of a real model."""
    if parameters > 1_000_000 and parameters > 1000 * max(file_bytes, 1):
        return {"warnings": [f"the constants declare {human_count(parameters)} parameters in a "
                             f"{file_bytes:,}-byte file: most are one stored value broadcast (a crafted "
                             "or placeholder model?)"]}
    return {}


def _io_ops(graph_def: Any) -> dict[str, Any]:
    """{"io_ops": [...]}: the ops that would touch files, the network or processes, else {}."""
    found = io_nodes(graph_def, ops=IO_OPS)
    return {"io_ops": [{"node": name, "op": op} for name, op in found]} if found else {}


def _fake_quant(model: Model, graph_def: Any) -> dict[str, Any]:
    """{"fake_quant": [...]}: the FakeQuant ranges of a quantization-aware model, else {}."""
    ranges = model_ranges(model, graph_def)
    return {"fake_quant": ranges} if ranges else {}


def _tflite_extra(data: bytes) -> dict[str, Any]:
    """What `tfshrink convert` leaves to read back: "quantization" (activation types and the ops
    that stayed float, for integer models), "preprocess" (the stored preprocessing) and "target"
    (what the model was made for: {"target": "cpu" | "int8-only", "quantize", "rules",
    "plan_sha256"}, from the tfshrink.target metadata entry)."""
    import json


    out: dict[str, Any] = {}
    summary = quantization_summary(data)
    if summary is not None:
        out["quantization"] = summary
    target = read_target(data)
    if target is not None:
        out["target"] = target
    raw = read_metadata(data).get(METADATA_NAME)
    if raw:
        try:
            out["preprocess"] = Preprocess.from_json(json.loads(raw.decode("utf-8"))).to_json()
        except (ValueError, KeyError, TypeError, IndexError):
            out["preprocess"] = {"error": f"the {METADATA_NAME} metadata entry is corrupt"}
    return out


def _prod(shape: tuple | None) -> int:
    n = 1
    for d in shape or ():
        n *= int(d or 0)
    return n


def model_ranges(model: Any, graph_def: Any = None) -> list[dict[str, Any]]:
    """FakeQuant ranges of a loaded tfshrink model (for `inspect`): a graph's FakeQuant nodes (a
    checkpoint's range variables read from it), or a quantize_model Keras model's learned
    activation ranges. Empty for models without fake-quant."""
    keras_model = getattr(model, "keras_model", None)
    if keras_model is not None:
        if not any(type(layer).__module__ == "tfshrink.model.keras_layers" for layer in keras_model.layers):
            return []

        return [{"node": name, "op": "FakeQuantWithMinMaxVars", "kind": "activation", "min": [lo], "max": [hi],
                 "updates": count, "learned": count > 0} for name, lo, hi, count in activation_ranges(keras_model)]
    if graph_def is None or not any(n.op in FAKE_QUANT_TYPES for n in graph_def.node):
        return []
    values = model.checkpoint_values()
    evaluate = values is None and not model.variable_specs()  # a frozen graph: ranges are constants
    return [r.to_json() for r in fake_quant_ranges(graph_def, values, evaluate=evaluate)]
