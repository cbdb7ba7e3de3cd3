"""How the CLI shows each command's result (`--json` aside): one printer per command, named in
its declaration (tfshrink.commands.declared), each taking the result and the command line's values.
Imported only once a command has run (its API has loaded TensorFlow already)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape as esc
from rich.table import Table

from tfshrink.cli.common import _console, _dynamic_range, _ms, _op_counts, _warn
from tfshrink.graph.fake_quant import range_text
from tfshrink.inspection import human_count


def print_freeze(result: Any, values: dict[str, Any]) -> None:
    con = _console()
    how = {"given": "as given", "signature": "from the signature"}.get(result.outputs_from, "detected")
    con.print(f"[bold]froze[/] {result.source} ({result.format}) -> {result.output}: "
              f"{result.nodes} nodes, {result.bytes:,} bytes")
    con.print(f"  inputs:  {', '.join(result.inputs) or '(none)'}")
    con.print(f"  outputs: {', '.join(result.outputs)} ({how})")
    for note in result.notes:
        con.print(f"  note: {note}")
    if result.verification is not None:
        v = result.verification
        source = "the given inputs" if values.get("inputs") else f"{v.samples} seeded random input set(s)"
        con.print(f"  verified against the source on {source}: max abs difference {v.max_abs:.3g} [green]ok[/]")
    else:
        con.print("  not verified (--no-verify)")


def print_inspect(r: Any, values: dict[str, Any]) -> None:


    con = _console()
    con.print(f"[bold]{esc(r.path)}[/] ({r.format}, {r.file_bytes:,} bytes)")
    table = Table(title=None, box=None, pad_edge=False, show_header=True, header_style="bold")
    for col in ("", "name", "dtype", "shape", "op / quantization"):
        table.add_column(col)
    for kind, specs in (("input", r.inputs), ("optional", r.optional_inputs), ("output", r.outputs)):
        for s in specs:
            q = f"scale={s.quantization[0]:.6g} zero_point={s.quantization[1]}" if s.quantization else (s.op or "")
            table.add_row(kind, esc(s.name), s.dtype, s.shape_text(), esc(q))
    con.print(table)
    if r.outputs_ambiguous:
        con.print("[yellow]outputs are ambiguous[/]; candidates, best first: "
                  + ", ".join(esc(c["name"]) for c in r.candidates[:8]))
    if r.labels:
        con.print(f"ignored training placeholders: {esc(', '.join(r.labels))}")
    con.print(f"nodes: {r.nodes}   control edges: {r.control_edges}")
    con.print(f"const parameters: {r.const_parameters} ({human_count(r.const_parameters)})   "
              f"variable parameters: {r.variable_parameters} ({human_count(r.variable_parameters)})")
    if r.variables:
        shown = ", ".join(f"{esc(v.name)}{v.shape_text()}" for v in r.variables[:6])
        more = f" and {len(r.variables) - 6} more" if len(r.variables) > 6 else ""
        con.print(f"variables ({len(r.variables)}): {shown}{more}")
    for key in ("tensors", "subgraphs"):
        if key in r.extra:
            con.print(f"{key}: {r.extra[key]}")
    if r.extra.get("custom_ops"):
        con.print(f"custom ops: {esc(', '.join(r.extra['custom_ops']))}")
    if r.extra.get("weight_bytes"):
        con.print("weight bytes: " + ", ".join(f"{k} {v:,}" for k, v in r.extra["weight_bytes"].items()))
    if r.extra.get("metadata"):
        con.print("metadata: " + esc(", ".join(f"{k}={v[:60]}" for k, v in r.extra["metadata"].items())))
    print_tflite_extra(con, r.extra)
    if r.extra.get("signatures"):
        con.print(f"signatures: {esc(', '.join(r.extra['signatures']))} (showing {esc(r.extra['signature'])})")
    if r.extra.get("loader_note"):
        con.print(f"[yellow]{esc(r.extra['loader_note'])}[/]")
    con.print("op types: " + esc(", ".join(f"{op} {n}" for op, n in r.op_types.items())))
    if r.extra.get("fake_quant"):
        print_fake_quant(con, r.extra["fake_quant"])
    for warning in r.extra.get("warnings", []):
        con.print(f"[yellow]warning:[/] {esc(warning)}")
    if r.extra.get("io_ops"):
        ops = ", ".join(f"{o['node']} ({o['op']})" for o in r.extra["io_ops"][:6])
        con.print(f"[red]ops that touch files, the network or processes: {esc(ops)}[/] "
                  "(tfshrink refuses to run them without --allow-io-ops)")
    con.print(f"bench: {esc(r.bench_command)}")


def print_fake_quant(con: Any, ranges: list[dict]) -> None:

    con.print(f"fake-quant ranges ({len(ranges)}):")
    for q in ranges:
        mark = "" if q.get("learned", True) else "  [yellow]never learned[/]"
        con.print(f"  {q['kind']:<10} {q['node']}: {range_text(q.get('min'), q.get('max'))}{mark}")


def print_tflite_extra(con: Any, extra: dict[str, Any]) -> None:
    """inspect's lines for what `convert` stores: the target, the preprocessing, and the ops left in float."""
    made = extra.get("target")
    if made:
        plan = f", plan {str(made['plan_sha256'])[:12]}" if made.get("plan_sha256") else ""
        con.print(f"made for: {esc(str(made.get('target')))} ({esc(str(made.get('quantize')))}{plan})")
    pre = extra.get("preprocess")
    if pre and "spec" in pre:
        con.print(f"preprocess: {pre['spec']} (x = (pixel - mean) / std on 0..255 pixels in {pre.get('color')} order; "
                  "applied by verify and calibration to images)")
        q = pre.get("quantization")
        if q:
            pairs = ", ".join(f"{a:.6g}*p{b:+.6g}" for a, b in zip(q["pixel_scale"], q["pixel_offset"], strict=True))
            con.print(f"  {q['dtype']} input: scale={q['scale']:.6g} zero_point={q['zero_point']}; "
                      f"raw pixel p -> q = round({pairs})")
    elif pre:
        con.print(f"[yellow]preprocess:[/] {pre.get('error')}")
    quant = extra.get("quantization")
    if quant:
        acts = ", ".join(f"{t.lower()} {n}" for t, n in quant["activation_types"].items())
        floats = _op_counts(quant["float_ops"]) or "none"
        con.print(f"activations: {acts} tensors; ops left in float: {floats}"
                  f"{_dynamic_range(quant.get('dynamic_range_ops'))}")
        if quant["float_nodes"]:
            shown = ", ".join(quant["float_nodes"][:6]) + (" ..." if len(quant["float_nodes"]) > 6 else "")
            con.print(f"  float ops: {shown}")


def print_verify(v: Any, values: dict[str, Any]) -> None:

    con = _console()
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("output", "shape", "max abs", "mean abs", "cosine", "top-1", ""):
        table.add_column(col)
    for o in v.outputs:
        name = o.name_a if o.name_a == o.name_b else f"{o.name_a} ~ {o.name_b}"
        top1 = "" if o.top1 is None else f"{o.top1:.1%}"
        mark = "[green]ok[/]" if o.passed else "[red]FAIL[/]"
        table.add_row(name, "x".join(map(str, o.shape)), f"{o.max_abs:.3g}", f"{o.mean_abs:.3g}",
                      f"{o.cosine:.6f}", top1, mark)
    con.print(f"[bold]{v.a}[/] vs [bold]{v.b}[/] on {v.samples} input set(s), atol={v.atol:g} rtol={v.rtol:g}")
    con.print(table)
    con.print("[green]outputs match[/]" if v.passed else "[red]outputs differ beyond tolerance[/]")


def print_transform(result: Any, values: dict[str, Any]) -> None:
    con = _console()
    for name, changed in result.applied:
        con.print(f"  {name}: {'changed' if changed else 'no change'}")
    for step in result.checks:
        label = "whole pipeline" if step.after == "pipeline" else f"after {step.after}"
        note = "" if step.exact else " (numerics change by design: reported, not checked)"
        con.print(f"  check {label}: max abs error {step.max_abs_error:.3g}{note}")
    con.print(f"[bold]wrote[/] {result.output}: {result.nodes_before} -> {result.nodes_after} nodes, "
              f"{result.bytes_before:,} -> {result.bytes_after:,} bytes")


def print_bench(r: Any, values: dict[str, Any]) -> None:


    con = _console()
    if r.runtime == "litert":
        how = f"LiteRT {r.runtime_version}, XNNPACK {'on' if r.xnnpack else 'off'}"
    else:
        how = f"TensorFlow {r.runtime_version}"
    threads = "default" if r.threads is None else str(r.threads)
    con.print(f"[bold]{r.path}[/] ({r.format}; {how}; threads {threads}; batch {r.batch})")
    con.print("  inputs: " + ", ".join(f"{s.name}{s.shape_text()} {s.dtype}" for s in r.inputs))
    lat = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("latency (ms)", "min", "p50", "p90", "p99", "mean", "std"):
        lat.add_column(col, justify="right" if col != "latency (ms)" else "left")
    s = r.latency_ms
    spent = f"{r.seconds:.2f} s" if r.seconds >= 1 else f"{r.seconds * 1e3:.1f} ms"
    lat.add_row(f"{r.runs} runs in {spent}", *(_ms(s[k]) for k in ("min", "p50", "p90", "p99", "mean", "std")))
    con.print(lat)
    mem = "unknown" if r.peak_rss_bytes is None else f"{r.peak_rss_bytes / 2**20:,.1f} MiB"
    fl = r.flops
    by_op = ", ".join(f"{op} {human_count(2 * m)}" for op, m in sorted(fl.by_op.items(), key=lambda kv: -kv[1]))
    flops = f"{human_count(fl.flops)} (2 x {human_count(fl.macs)} multiply-adds{': ' + by_op if by_op else ''})"
    if s["mean"] > 0 and fl.flops:
        flops += f", {human_count(int(fl.flops / (s['mean'] / 1e3)))} FLOPs/s"
    rows = [("init", f"{_ms(r.init_ms)} ms"),
            ("first run", f"{_ms(r.first_run_ms)} ms (then {r.warmup} warmup run(s))"),
            ("throughput", f"{r.throughput_per_s:,.1f} samples/s"),
            ("model size", f"{r.model_bytes:,} bytes"),
            ("peak memory growth", mem),
            ("FLOPs", flops)]
    for key, value in rows:
        con.print(f"[bold]{key:<19}[/] {value}")
    for note in r.notes:
        con.print(f"  [dim]note:[/] {note}")
    if r.profile is not None:
        _print_profile(con, r.profile, values.get("top") or 10)


def _print_profile(con: Any, p: Any, top: int) -> None:

    if not p.available:
        con.print(f"[yellow]profile:[/] {p.note}")
        return
    con.print(f"[bold]profile[/] ({p.runs} traced runs; node times sum to {_ms(p.total_ms)} ms per run)")
    ops = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("node", "op", "ms", "%"):
        ops.add_column(col, justify="right" if col in ("ms", "%") else "left")
    for o in p.ops[:top]:
        ops.add_row(o.name, o.op_type, f"{o.ms:.4f}", f"{o.share:.1%}")
    con.print(ops)
    kinds = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("op type", "nodes", "ms", "%"):
        kinds.add_column(col, justify="left" if col == "op type" else "right")
    for t in p.by_type:
        kinds.add_row(t.op_type, str(t.nodes), f"{t.ms:.4f}", f"{t.share:.1%}")
    con.print(kinds)


def print_convert(r: Any, values: dict[str, Any]) -> None:

    con = _console()
    mode = {"none": "float32"}.get(r.quantize, r.quantize)
    con.print(f"[bold]converted[/] {r.source} ({r.format}) -> {r.output}: {mode}, {r.bytes:,} bytes "
              f"(source {r.source_bytes:,} bytes)")
    for kind, specs in (("inputs: ", r.inputs), ("outputs:", r.outputs)):
        shown = ", ".join(f"{s.name} {s.dtype}{s.shape_text()}"
                          + (f" scale={s.quantization[0]:.6g} zero_point={s.quantization[1]}" if s.quantization else "")
                          for s in specs)
        con.print(f"  {kind} {shown}")
    if r.calibration is not None:
        con.print(f"  calibration: {r.calibration.summary()}")
    if r.preprocess is not None:
        p = r.preprocess
        con.print(f"  preprocess: {p.spec()} (stored in the model as tfshrink.preprocess)")
        if p.quantization is not None:
            q = p.quantization
            pairs = ", ".join(f"{a:.6g}*p{b:+.6g}" for a, b in zip(q.pixel_scale, q.pixel_offset, strict=True))
            con.print(f"  {q.dtype} input: scale={q.scale:.6g} zero_point={q.zero_point}; raw pixel p -> q = round({pairs})")
    if r.precision is not None:
        floats = _op_counts(r.precision.float_ops) or "none"
        edges = _op_counts(r.precision.edge_conversions)
        con.print(f"  ops left in float: {floats}{_dynamic_range(r.precision.dynamic_range_ops)}"
                  + (f"; at the edges: {edges}" if edges else ""))
    for item, hits in r.kept_float.items():
        con.print(f"  kept in float for --keep-float {item}: {', '.join(hits[:4])}{' ...' if len(hits) > 4 else ''}")
    if r.layers:
        worst = sorted(r.layers, key=lambda x: -x.rmse_scale)[:5]
        con.print("  worst layers (RMSE/scale; 0.289 is rounding alone): "
                  + ", ".join(f"{x.layer} {x.op} {x.rmse_scale:.3g}{' (flagged)' if x.flagged else ''}"
                              f"{' (kept in float)' if x.kept_float else ''}" for x in worst))
    if r.report_files:
        con.print(f"  report: {', '.join(r.report_files)}")
    con.print("  ops: " + ", ".join(f"{op} {n}" for op, n in r.ops.items()))
    if r.quantize in ("int8", "int16x8"):
        con.print(f"  target: {r.target}" + (f" (plan {r.plan[:12]})" if r.plan else ""))
    if r.delegation is not None:
        con.print(f"  delegation: {r.delegation.describe()}")
    for note in r.notes:
        con.print(f"  [dim]note:[/] {note}")
    v = r.verification
    if v is None:
        if not any(n.startswith("not verified") for n in r.notes):
            con.print("  not verified (--no-verify)")
        return
    con.print(f"  verified on {r.verify_inputs}:")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("    output", "cosine", "max abs error", "top-1 agreement"):
        table.add_column(col)
    for o in v.outputs:
        top1 = "" if o.top1 is None else f"{o.top1:.1%}"
        table.add_row(f"    {o.name_b}", f"{o.cosine:.6f}", f"{o.max_abs:.3g}", top1)
    con.print(table)


def print_compare(result: Any, values: dict[str, Any]) -> None:

    con = _console()
    ref = result.reference
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("model", "format", "bytes", "size", "p50 ms", "cosine", "max abs error", "top-1"):
        table.add_column(col, justify="left" if col in ("model", "format") else "right", no_wrap=True)
    for m in result.models:
        agree = ("reference", "", "") if m.agreement is None else (
            f"{m.cosine:.6f}", f"{m.max_abs:.3g}", "" if m.top1 is None else f"{m.top1:.1%}")
        table.add_row(m.name, m.format, f"{m.bytes:,}", f"{m.bytes / ref.bytes:.2f}x" if ref.bytes else "",
                      "" if m.latency_p50_ms is None else _ms(m.latency_p50_ms), *agree)
    runs_text = "" if values.get("no_bench") else f"; latency: p50 of {values.get('runs')} runs"
    con.print(f"compared with [bold]{ref.name}[/] on {result.inputs}{runs_text}")
    if not con.is_terminal:  # piped: never cut a name short
        con.width = 200
    con.print(table)


def print_report(result: Any, values: dict[str, Any]) -> None:
    _console().print(f"[bold]wrote[/] {result.output} ({result.bytes:,} bytes): {', '.join(result.names)}")


def print_qat(r: Any, values: dict[str, Any]) -> None:
    con = _console()
    con.print(f"[bold]qat[/] {r.source} -> {r.output}: {r.epochs} epoch(s) on {r.train_samples} samples "
              f"(batch {r.batch_size}, Adam lr {r.learning_rate:g}, loss {r.loss})")
    layers = r.layers
    con.print(f"  quantized: {', '.join(layers['quantized']) or 'none'}"
              + (f"; outputs of {', '.join(layers['output'])}" if layers["output"] else "")
              + (f"; inputs {', '.join(layers['inputs'])}" if layers["inputs"] else ""))
    if r.history:
        con.print("  loss per epoch: " + ", ".join(f"{v:.4g}" for v in r.history))
    if r.float_metric is not None:
        fmt = (lambda v: f"{v:.2f}%") if r.metric == "accuracy" else (lambda v: f"{v:.4g}")
        parts = [f"float {fmt(r.float_metric)}", f"QAT {fmt(r.qat_metric)}"]
        if r.int8_metric is not None:
            parts.append(f"int8 TFLite {fmt(r.int8_metric)}")
        con.print(f"  {r.metric} on {r.val_samples} validation samples: " + ", ".join(parts))
    for note in getattr(r, "notes", ()):
        con.print(f"  [dim]note:[/] {note}")
    c = r.convert
    if c is not None:
        floats = _op_counts(c.float_ops) or "none"
        con.print(f"  tflite: {c.output} ({c.bytes:,} bytes), int8 with {c.input_type} input and {c.output_type} "
                  f"output; ops left in float: {floats}")
        con.print("  ops: " + ", ".join(f"{op} {n}" for op, n in c.ops.items()))
        for note in c.notes:
            con.print(f"  [dim]note:[/] {note}")
        _warn(c.warnings)


def print_tune(r: Any, values: dict[str, Any]) -> None:
    con = _console()
    con.print(f"[bold]plan[/] {r.plan} (target {r.target}; {r.machine.get('cpu') or r.machine.get('machine', '')})")
    floats = ", ".join(r.float_tensors) or "none"
    dynamic = ", ".join(r.dynamic_range) or "none"
    con.print(f"  kept in float: {floats}; dynamic-range: {dynamic} (the rules alone: "
              f"{', '.join(r.rules_float) or 'none'})")
    for m in r.measurements:
        shown = ", ".join(f"{k} {v}" for k, v in m.items())
        con.print(f"  measured: {shown}")
    if r.partitions is not None:
        con.print(f"  XNNPACK partitions of the planned model: {r.partitions}")
    for note in r.notes:
        con.print(f"  [dim]note:[/] {note}")
    con.print(f"  apply it: tfshrink convert SOURCE -o OUT.tflite --quantize int8 --plan {r.plan} (same options)")
