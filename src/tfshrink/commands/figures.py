"""What a recipe step records of each command's result (the summary's `numbers`), and the one line
`tfshrink run` prints of them. Results are read by attribute: nothing here imports the API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def agreement(v: Any) -> dict[str, Any]:
    """The worst cosine, max abs error and top-1 agreement of a verification (None: not verified)."""
    if v is None:
        return {"cosine": None, "max_abs_error": None, "top1_agreement": None}
    top1 = [o.top1 for o in v.outputs if o.top1 is not None]
    return {"cosine": min((o.cosine for o in v.outputs), default=1.0), "max_abs_error": v.max_abs,
            "top1_agreement": min(top1) if top1 else None}


def freeze(r: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    v = r.verification
    return {"nodes": r.nodes, "bytes": r.bytes, "inputs": list(r.inputs), "outputs": list(r.outputs),
            "max_abs_error": None if v is None else v.max_abs}


def transform(r: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    return {"nodes_before": r.nodes_before, "nodes_after": r.nodes_after, "bytes_before": r.bytes_before,
            "bytes_after": r.bytes_after, "max_abs_error": r.max_abs_error, "warnings": list(r.warnings)}


def convert(r: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    numbers: dict[str, Any] = {"quantize": r.quantize, "bytes": r.bytes, "source_bytes": r.source_bytes}
    numbers.update(agreement(r.verification))
    layers = getattr(r, "layers", ())
    if layers:
        numbers["layers_flagged"] = [x.layer for x in layers if x.flagged]
    if options.get("report"):
        numbers["report"] = options["report"]
    numbers["warnings"] = list(r.warnings)
    return numbers


def verify(r: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    return {"passed": r.passed, **agreement(r)}


def bench(r: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    return {"latency_ms": {k: round(v, 4) for k, v in r.latency_ms.items()}, "runs": r.runs,
            "throughput_per_s": round(r.throughput_per_s, 2), "model_bytes": r.model_bytes,
            "flops": r.flops.flops, "runtime": r.runtime}


def report(r: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    return {"bytes": r.bytes, "models": list(r.names),
            "latency_p50_ms": {m.name: m.latency_p50_ms for m in r.comparison.models},
            "model_bytes": {m.name: m.bytes for m in r.comparison.models}}


TEXT = {
    "freeze": lambda n: f"{n['nodes']} nodes, {n['bytes']:,} bytes",
    "transform": lambda n: f"{n['nodes_before']} -> {n['nodes_after']} nodes, {n['bytes_after']:,} bytes",
    "convert": lambda n: f"{'float32' if n['quantize'] == 'none' else n['quantize']}, {n['bytes']:,} bytes"
    + ("" if n.get("cosine") is None else f", cosine {n['cosine']:.6f}"),
    "verify": lambda n: f"max abs error {n['max_abs_error']:.3g}, cosine {n['cosine']:.6f}",
    "bench": lambda n: f"p50 {_ms(n['latency_ms']['p50'])} ms over {n['runs']} runs",
    "report": lambda n: f"{n['bytes']:,} bytes, {len(n['models'])} model(s)",
}
