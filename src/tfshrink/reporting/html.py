"""`tfshrink report`: one self-contained HTML file showing what each stage bought.

    result = report(["model.pb", "model_fp16.tflite", "model_int8.tflite"], "report.html",
                    names=["float", "fp16", "int8"], quant_errors="int8_report/layers.csv")

The file has inline CSS and inline SVG charts and refers to no external resource, so it can be
mailed or attached to a CI run. It shows, per stage (model): format, size on disk, nodes or ops,
parameters, inputs and outputs; bar charts of size and of latency p50; the agreement of every stage
with the first (cosine, max abs error, top-1, per output); the op types; and, when given, a chart of
per-layer quantization error (RMSE / scale, see tfshrink.reporting.quant).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from tfshrink.errors import UserError
from tfshrink.fileio import atomic_write, check_output
from tfshrink.inspection import inspect
from tfshrink.model import detect_format, runtime_of
from tfshrink.reporting.charts import Bar, bar_chart
from tfshrink.reporting.compare import DEFAULT_RUNS, CompareResult, measure_models
from tfshrink.reporting.quant import FLAG_ABOVE, HEALTHY_RMSE_SCALE, LayerError, read_quant_errors

__all__ = ["ReportResult", "human_bytes", "render_html", "report"]

Progress = Callable[[str, int, int], None]
CHART_WIDTH = 520  # two charts side by side in the page's 1100 px

CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222;background:#fff;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .55rem;text-align:left;vertical-align:top}th{background:#f4f6f8}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.ref{color:#666;font-style:italic}
.bad{color:#b00020;font-weight:600}.good{color:#1b7f3b}code{font-size:.85rem}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}.chart text{font-size:12px;fill:#222}
.chart .chart-title{font-size:14px;font-weight:600}.chart .chart-note{fill:#555}
.note{color:#555;font-size:.85rem}footer{margin-top:2.5rem;color:#888;font-size:.8rem}
"""


@dataclass(frozen=True)
class ReportResult:
    """What `report` wrote and the data it was built from."""

    output: str
    bytes: int
    names: tuple[str, ...]
    comparison: CompareResult
    inspections: tuple[Any, ...]  # tfshrink.inspection.InspectResult per model
    quant_errors: tuple[LayerError, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "bytes": self.bytes, "names": list(self.names),
                "comparison": self.comparison.to_json(),
                "quant_errors": [e.to_json() for e in self.quant_errors]}


def human_bytes(n: int) -> str:
    """1234567 -> '1.18 MiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{n} B"


def _num(v: float | None, fmt: str = ".4g") -> str:
    return "–" if v is None else format(v, fmt)


def _specs(specs: Sequence[Any]) -> str:
    return "<br>".join(f"<code>{escape(s.name)}</code> {escape(s.dtype)}{escape(s.shape_text())}"
                       + (f" <span class='note'>q({s.quantization[0]:.3g}, {s.quantization[1]})</span>"
                          if getattr(s, "quantization", None) else "")
                       for s in specs) or "–"


def _stage_table(comparison: CompareResult, inspections: Sequence[Any]) -> str:
    ref_bytes = comparison.reference.bytes
    rows = []
    for m, info in zip(comparison.models, inspections, strict=True):
        ratio = "" if m is comparison.reference or not m.bytes else f" ({m.bytes / ref_bytes:.2f}×)"
        params = info.const_parameters + info.variable_parameters
        unit = "nodes" if runtime_of(info.format) == "tensorflow" else "ops"
        lat = "–" if m.latency_p50_ms is None else f"{m.latency_p50_ms:.3f} ms"
        rows.append(f"<tr><td>{escape(m.name)}</td><td>{escape(m.format)}</td>"
                    f"<td class='num'>{m.bytes:,} B<br>{human_bytes(m.bytes)}{ratio}</td>"
                    f"<td class='num'>{info.nodes:,} {unit}</td><td class='num'>{params:,}</td>"
                    f"<td class='num'>{lat}</td><td>{_specs(info.inputs)}</td>"
                    f"<td>{_specs(info.outputs)}</td></tr>")
    head = ("<tr><th>stage</th><th>format</th><th>size on disk</th><th>graph</th><th>parameters</th>"
            "<th>latency p50</th><th>inputs</th><th>outputs</th></tr>")
    return f"<table id='stages'>{head}{''.join(rows)}</table>"


def _agreement_table(comparison: CompareResult) -> str:
    ref = comparison.reference
    rows = [f"<tr><td>{escape(ref.name)}</td><td colspan='5' class='ref'>reference</td></tr>"]
    for m in comparison.models[1:]:
        outs = m.agreement.outputs if m.agreement is not None else ()
        span = max(1, len(outs))
        first = True
        for o in outs or (None,):
            cells = ("<td colspan='4'>–</td>" if o is None else
                     f"<td><code>{escape(o.name_b)}</code></td><td class='num'>{o.cosine:.6f}</td>"
                     f"<td class='num'>{o.max_abs:.4g}</td><td class='num'>{_num(o.top1, '.1%')}</td>")
            lead = (f"<td rowspan='{span}'>{escape(m.name)}</td><td rowspan='{span}' class='num'>"
                    f"{_num(m.cosine, '.6f')}</td>") if first else ""
            rows.append(f"<tr>{lead}{cells}</tr>")
            first = False
    head = ("<tr><th>stage</th><th>min cosine</th><th>output</th><th>cosine</th><th>max abs error</th>"
            "<th>top-1 agreement</th></tr>")
    return f"<table id='agreement'>{head}{''.join(rows)}</table>"


def _ops_table(names: Sequence[str], inspections: Sequence[Any], top: int = 12) -> str:
    rows = []
    for name, info in zip(names, inspections, strict=True):
        ops = sorted(info.op_types.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{escape(op)} {n}" for op, n in ops[:top])
        more = f", … {len(ops) - top} more" if len(ops) > top else ""
        rows.append(f"<tr><td>{escape(name)}</td><td>{shown}{more}</td></tr>")
    return f"<table id='ops'><tr><th>stage</th><th>op types (count)</th></tr>{''.join(rows)}</table>"


QUANT_LINES = ((HEALTHY_RMSE_SCALE, "0.289 rounding only"), (FLAG_ABOVE, f"{FLAG_ABOVE} suspect"))


def _quant_section(errors: Sequence[LayerError], source: str) -> str:
    bars = [Bar(e.layer, e.rmse_scale, "#9e9e9e" if e.kept_float else "#e45756" if e.flagged else "#4c78a8",
                e.op + (", kept in float" if e.kept_float else "")) for e in errors]
    chart = bar_chart(bars, title="Quantization error per layer (RMSE / scale)", width=900,
                      value_text=lambda v: f"{v:.3f}", references=QUANT_LINES)
    flagged = [e for e in errors if e.flagged]
    kept = [e for e in errors if e.kept_float]
    kept_text = (f" {len(kept)} layer(s) kept in float (grey): "
                 + ", ".join(f"<code>{escape(e.layer)}</code>" for e in kept) + ".") if kept else ""
    if flagged:
        items = ", ".join(f"<code>{escape(e.layer)}</code> ({e.rmse_scale:.3f})" for e in flagged)
        verdict = (f"<p class='bad'>{len(flagged)} of {len(errors)} layer(s) above {FLAG_ABOVE}: {items}. "
                   "Consider keeping them in float (<code>tfshrink convert --keep-float</code>)."
                   f"{kept_text}</p>")
    else:
        verdict = (f"<p class='good'>No layer above {FLAG_ABOVE} ({len(errors)} layers; RMSE in quantization "
                   f"steps).{kept_text}</p>")
    return (f"<h2>Per-layer quantization error</h2><p class='note'>From <code>{escape(source)}</code>. "
            "RMSE / scale is the error in quantization steps; about 0.289 is the rounding error of a "
            f"uniform quantizer; above {FLAG_ABOVE} a layer is suspect.</p>{verdict}{chart}")


def render_html(comparison: CompareResult, inspections: Sequence[Any], *, title: str = "tfshrink report",
                quant_errors: Sequence[LayerError] = (), quant_source: str = "",
                versions: Mapping[str, str] | None = None) -> str:
    """The report as one HTML string (see the module docstring); `inspections` follow `comparison.models`."""
    from importlib.metadata import version

    __version__ = version("tfshrink")

    models = comparison.models
    names = [m.name for m in models]
    unit, scale = ("MiB", 2**20) if max(m.bytes for m in models) >= 2**20 else ("KiB", 2**10)
    size_bars = [Bar(m.name, m.bytes / scale, note=f"{m.bytes:,} bytes") for m in models]
    size_chart = bar_chart(size_bars, title=f"Size on disk ({unit})", width=CHART_WIDTH,
                           value_text=lambda v: f"{v:.3f} {unit}" if v < 10 else f"{v:.1f} {unit}")
    runs = {m.bench.runs for m in models if m.bench is not None}
    lat_title = "Latency p50 (ms" + (f", {runs.pop()} runs each)" if len(runs) == 1 else ")")
    lat_bars = [Bar(m.name, m.latency_p50_ms, note="" if m.bench is None
                    else f"p90 {m.bench.latency_ms['p90']:.3f} ms, {m.bench.runs} runs") for m in models]
    lat_chart = bar_chart(lat_bars, title=lat_title, width=CHART_WIDTH, value_text=lambda v: f"{v:.3f} ms")
    version_text = " · ".join(f"{k} {escape(v)}" for k, v in sorted((versions or {}).items()))
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p class='sub'>{len(models)} stage(s)"
        + (f", compared with <b>{escape(names[0])}</b> on {escape(comparison.inputs)}"
           if len(models) > 1 else "")
        + f".{(' ' + version_text) if version_text else ''}</p>",
        "<h2>Stages</h2>", _stage_table(comparison, inspections),
        "<h2>Size and latency</h2>", f"<div class='charts'>{size_chart}{lat_chart}</div>",
        "<p class='note'>Latency: wall time of one run on this machine (TensorFlow for TF formats, LiteRT "
        "for TFLite), after a first run and warmup; see <code>tfshrink bench</code> for more runs and "
        "statistics.</p>",
    ]
    if len(models) > 1:
        parts += ["<h2>Agreement with the reference</h2>", _agreement_table(comparison)]
    if quant_errors:
        parts.append(_quant_section(quant_errors, quant_source))
    parts += ["<h2>Op types</h2>", _ops_table(names, inspections),
              "<h2>Files</h2><table id='files'><tr><th>stage</th><th>path</th></tr>"
              + "".join(f"<tr><td>{escape(m.name)}</td><td><code>{escape(m.path)}</code></td></tr>"
                        for m in models)
              + "</table>",
              f"<footer>Written by tfshrink {escape(__version__)} (<code>tfshrink report</code>).</footer>",
              "</body></html>", ""]
    return "\n".join(parts)


def _versions(comparison: CompareResult) -> dict[str, str]:
    out = {}
    for m in comparison.models:
        if m.bench is not None:
            out["LiteRT" if m.bench.runtime == "litert" else "TensorFlow"] = m.bench.runtime_version
    return out


def report(models: Sequence[str | Path], output: str | Path, *, names: Sequence[str] | None = None,
           quant_errors: str | Path | None = None, inputs: str | Path | None = None, preprocess: Any = None,
           samples: int = 3,
           seed: int = 0, runs: int | None = DEFAULT_RUNS, bench: bool = True, title: str | None = None,
           shapes: Mapping[str, Sequence[int]] | None = None,
           progress: Progress | None = None) -> ReportResult:
    """Measure `models` (the first is the reference) and write the HTML report to `output`.

    With one model there is no agreement to show, only its summary, size and latency.
    `quant_errors`: a per-layer quantization error CSV (or a folder holding one, see
    tfshrink.reporting.quant). `inputs`, `preprocess`, `samples`, `seed`, `runs`, `bench`, `shapes`: as for
    `compare_models`. Nothing is written unless everything succeeded.
    """

    paths = [str(p) for p in models]
    if not paths:
        raise UserError("report needs at least one model",
                        "e.g. tfshrink report model.pb model.tflite -o report.html")
    for p in paths:
        detect_format(p)
    out_path = check_output(output, paths + ([str(quant_errors)] if quant_errors else []))
    errors = read_quant_errors(quant_errors) if quant_errors is not None else []
    comparison = measure_models(paths, names=names, inputs=inputs, preprocess=preprocess, samples=samples,
                                seed=seed, runs=runs, bench=bench, shapes=shapes, progress=progress)
    if progress is not None:
        progress("inspecting", 0, len(paths))
    inspections = tuple(inspect(p) for p in paths)
    html = render_html(comparison, inspections, title=title or "tfshrink report", quant_errors=errors,
                       quant_source=str(quant_errors or ""), versions=_versions(comparison))
    data = html.encode("utf-8")
    atomic_write(out_path, data)
    return ReportResult(str(out_path), len(data), tuple(m.name for m in comparison.models), comparison,
                        inspections, tuple(errors))
