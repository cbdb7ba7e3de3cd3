"""Commands that make or time deployable models: convert, bench."""

from __future__ import annotations

from typing import Any

import click

from tfshrink.cli.common import (
    _console,
    _dynamic_range,
    _echo_json,
    _late_progress,
    _ms,
    _op_counts,
    _phase_progress,
    _savedmodel_options,
    _shape_option,
    _warn,
)
from tfshrink.cli.group import cli
from tfshrink.cli.help_text import EPILOGS
from tfshrink.conversion.modes import MODES


@cli.command(epilog=EPILOGS["bench"])
@click.argument("model")
@click.option("--runs", type=click.IntRange(min=1), help="Timed runs (exactly this many).")
@click.option("--min-seconds", type=click.FloatRange(min=0, min_open=True), help="Time runs for at least this long.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed runs after the first run.")
@click.option("--threads", type=click.IntRange(min=1), help="Runtime threads (default: the runtime's choice).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch for inputs whose first dim is unknown.")
@_shape_option
@click.option("--bind", "binds", multiple=True, metavar="NAME=VALUE",
              help="TF models: replace a placeholder by a constant, e.g. is_training=false (repeatable).")
@_savedmodel_options
@click.option("--no-xnnpack", is_flag=True, help="TFLite: run without LiteRT's default XNNPACK delegate.")
@click.option("--profile", is_flag=True, help="Per-op times: the top ops and a summary by op type.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Ops listed by --profile.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (keys below).")
def bench(model: str, runs: int | None, min_seconds: float | None, warmup: int, threads: int | None, batch: int,
          input_shapes: tuple[str, ...], binds: tuple[str, ...], signature: str | None, tags: str | None,
          no_xnnpack: bool, profile: bool, top: int, as_json: bool) -> int:
    """Time a model of any format: latency, throughput, size, memory and FLOPs (benchmark_model on pip)."""
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.benchmarking import bench as run_bench
    from tfshrink.data.feeds import parse_shape_overrides
    from tfshrink.errors import UserError

    if runs is not None and min_seconds is not None:
        raise UserError("give --runs or --min-seconds, not both", "--runs N for a count, --min-seconds S for a time")
    with _late_progress("timing runs") as step:
        result = run_bench(model, runs=runs, min_seconds=min_seconds, warmup=warmup, threads=threads,
                           batch=batch, input_shapes=parse_shape_overrides(input_shapes),
                           xnnpack=not no_xnnpack, profile=profile, binds=list(binds), signature=signature,
                           tags=tags, progress=step)
    if as_json:
        _echo_json(result)
    else:
        _print_bench(result, top)
    return 0


def _print_bench(r: Any, top: int) -> None:
    from rich.table import Table

    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.inspection import human_count

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
        _print_profile(con, r.profile, top)


def _print_profile(con: Any, p: Any, top: int) -> None:
    from rich.table import Table

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


@cli.command(epilog=EPILOGS["convert"])
@click.argument("source")
@click.option("-o", "--output", required=True, help="The .tflite file to write.")
@click.option("--quantize", type=click.Choice(list(MODES), case_sensitive=False),
              default="none", show_default=True, help="Weights/activations precision.")
@click.option("--calibration", metavar="PATH|GLOB|random",
              help="Calibration data for int8/int16x8: image folder or glob, .npy/.npz, or random.")
@click.option("--calibration-samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Calibration samples to use (the first ones, in file-name order).")
@click.option("--preprocess", metavar="SPEC", help="How pixels become the input, e.g. size=224x224,mean=127.5,std=127.5.")
@click.option("--input-type", type=click.Choice(["float32", "int8", "uint8", "int16"], case_sensitive=False),
              help="Model input type (int8/int16x8 only; default float32).")
@click.option("--output-type", type=click.Choice(["float32", "int8", "uint8", "int16"], case_sensitive=False),
              help="Model output type (int8/int16x8 only; default float32).")
@_shape_option
@click.option("--inputs", help="Input tensors to convert from, comma-separated (default: the placeholders).")
@click.option("--outputs", help="Output tensors, comma-separated (default: detected or the signature's).")
@click.option("--allow-custom-ops", is_flag=True, help="Keep ops TFLite lacks as custom ops (the app registers them).")
@click.option("--select-tf-ops", is_flag=True, help="Run ops TFLite lacks with TF kernels (LiteRT's Flex delegate).")
@click.option("--keep-float", "keep_float", multiple=True, metavar="NODE|OP|auto|none",
              help="With --quantize int8: leave this TFLite op (CONV_2D) or TF node/scope in float (repeatable); "
                   "auto: keep the worst layers, one at a time, until --min-cosine/--max-top1-drop holds; "
                   "none: strict full int8, every op that has an int8 kernel in int8 (by default an output "
                   "softmax stays float, and a small first conv and the layers after it too where that measures "
                   "faster); an op with no int8 kernel stays float and convert warns naming it.")
@click.option("--min-cosine", type=float, help="--keep-float auto's target: every output's cosine to the source "
              "(default 0.999).")
@click.option("--max-top1-drop", type=float, metavar="POINTS",
              help="--keep-float auto's target: largest drop in top-1 agreement, in percentage points.")
@click.option("--report", "report_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Write per-layer int8 error (RMSE/scale, QuantizationDebugger) to DIR as CSV and a chart.")
@click.option("--activation-ranges", type=click.Choice(["mse", "minmax"]), default="mse", show_default=True,
              help="int8 activation ranges: mse narrows each calibrated min/max to its least squared int8 error on "
                   "the calibration samples; minmax keeps TFLite's min/max.")
@_savedmodel_options
@click.option("--bind", "binds", multiple=True, metavar="NAME=VALUE",
              help="Replace a placeholder by a constant before converting (is_training=false); repeatable.")
@click.option("--no-verify", is_flag=True, help="Skip comparing the result with the source.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def convert(source: str, output: str, quantize: str, calibration: str | None, calibration_samples: int,
            preprocess: str | None, input_type: str | None, output_type: str | None, input_shapes: tuple[str, ...],
            inputs: str | None, outputs: str | None, allow_custom_ops: bool, select_tf_ops: bool,
            keep_float: tuple[str, ...], min_cosine: float | None, max_top1_drop: float | None,
            report_dir: str | None, activation_ranges: str, signature: str | None, tags: str | None,
            binds: tuple[str, ...], no_verify: bool,
            as_json: bool) -> int:
    """Convert a model to TFLite (float, float16, dynamic-range, int8, int16x8) and check it against the source."""
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.conversion import convert as run_convert
    from tfshrink.data.feeds import parse_shape_overrides

    with _phase_progress() as step:
        result = run_convert(source, output, quantize=quantize, calibration=calibration,
                             calibration_samples=calibration_samples, preprocess=preprocess, input_type=input_type,
                             output_type=output_type, input_shapes=parse_shape_overrides(input_shapes),
                             inputs=inputs, outputs=outputs, allow_custom_ops=allow_custom_ops,
                             select_tf_ops=select_tf_ops, keep_float=keep_float, signature=signature, tags=tags, binds=list(binds),
                             verify=not no_verify, min_cosine=min_cosine, max_top1_drop=max_top1_drop,
                             report=report_dir, activation_ranges=activation_ranges, progress=step)
    _warn(result.warnings)
    if as_json:
        _echo_json(result)
        return 0
    _print_convert(result)
    return 0


def _print_convert(r: Any) -> None:
    from rich.table import Table

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
