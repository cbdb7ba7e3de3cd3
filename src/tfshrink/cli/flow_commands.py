"""Commands over several models or steps: compare, run (recipes), report, view, qat, demo."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import click

from tfshrink.cli.common import (
    _console,
    _echo_json,
    _measure_options,
    _ms,
    _names_option,
    _op_counts,
    _phase_progress,
    _progress,
    _savedmodel_options,
    _shape_option,
    _split,
    _warn,
)
from tfshrink.cli.group import cli
from tfshrink.cli.help_text import EPILOGS


@cli.command(epilog=EPILOGS["compare"])
@click.argument("models", nargs=-1, required=True)
@_measure_options
@click.option("--no-bench", is_flag=True, help="Skip the timing (agreement and size only).")
@click.option("--seed", type=int, default=0, show_default=True)
@_names_option
@_shape_option
@click.option("--bind", "binds", multiple=True, metavar="NAME=VALUE",
              help="Feed a constant to whichever model has this input (is_training=false); repeatable.")
@_savedmodel_options
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(models: tuple[str, ...], feeds: str | None, samples: int, preprocess: str | None, runs: int,
            no_bench: bool, seed: int, names: str | None, input_shapes: tuple[str, ...], binds: tuple[str, ...],
            signature: str | None, tags: str | None, as_json: bool) -> int:
    """Put models side by side: format, size, latency p50 and agreement with the first (A B [C ...])."""
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.data.feeds import parse_shape_overrides
    from tfshrink.reporting.compare import compare_models

    with _phase_progress() as step:
        result = compare_models(list(models), names=_split(names), inputs=feeds, preprocess=preprocess,
                                samples=samples, seed=seed,
                                runs=runs, bench=not no_bench, shapes=parse_shape_overrides(input_shapes) or None,
                                binds=list(binds), signature=signature, tags=tags, progress=step)
    if as_json:
        _echo_json(result)
        return 0
    from rich.table import Table

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
    runs_text = "" if no_bench else f"; latency: p50 of {runs} runs"
    con.print(f"compared with [bold]{ref.name}[/] on {result.inputs}{runs_text}")
    if not con.is_terminal:  # piped: never cut a name short
        con.width = 200
    con.print(table)
    return 0


_STEP_NUMBERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "freeze": lambda n: f"{n['nodes']} nodes, {n['bytes']:,} bytes",
    "transform": lambda n: f"{n['nodes_before']} -> {n['nodes_after']} nodes, {n['bytes_after']:,} bytes",
    "convert": lambda n: f"{'float32' if n['quantize'] == 'none' else n['quantize']}, {n['bytes']:,} bytes"
    + ("" if n.get("cosine") is None else f", cosine {n['cosine']:.6f}"),
    "verify": lambda n: f"max abs error {n['max_abs_error']:.3g}, cosine {n['cosine']:.6f}",
    "bench": lambda n: f"p50 {_ms(n['latency_ms']['p50'])} ms over {n['runs']} runs",
    "report": lambda n: f"{n['bytes']:,} bytes, {len(n['models'])} model(s)",
}


@cli.command(name="run", epilog=EPILOGS["run"])
@click.argument("recipe")
@click.option("--out", "out_dir", help="Output folder (default: the recipe's `out`, else RECIPE-out beside it).")
@click.option("--force", is_flag=True, help="Run every step, even those whose inputs and options are unchanged.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run_cmd(recipe: str, out_dir: str | None, force: bool, as_json: bool) -> int:
    """Run a recipe: freeze, transform, convert, verify, bench and report steps, cached by content."""
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.recipe import load_recipe, run_recipe

    parsed = load_recipe(recipe)
    con = _console(stderr=as_json)

    def on_step(record: Any, phase: str) -> None:
        if phase == "start":
            con.print(f"[dim]running {record.name} ({record.kind}) ...[/]")
            return
        status = {"ok": "[green]ran[/]", "cached": "[cyan]cached[/]", "failed": "[red]failed[/]"}[record.status]
        text = ""
        if record.numbers:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                text = _STEP_NUMBERS[record.kind](record.numbers)
        timing = "" if record.cached else f" {record.duration_s:.2f} s"
        con.print(f"{status} {record.name} ({record.kind}){timing} -> {record.output}"
                  + (f": {text}" if text else ""))

    result = run_recipe(parsed, out=out_dir, force=force, on_step=on_step)
    if as_json:
        _echo_json(result)
        return 0
    ran = sum(s.status == "ok" for s in result.steps)
    con.print(f"[bold]{len(result.steps)} step(s)[/]: {ran} ran, {len(result.steps) - ran} cached, "
              f"{result.duration_s:.1f} s; summary in {result.summary_path}")
    return 0


@cli.command(epilog=EPILOGS["report"])
@click.argument("models", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="The HTML file to write.")
@_names_option
@click.option("--quant-errors", type=click.Path(), metavar="CSV",
              help="Per-layer quantization errors: convert --report's folder, or a CSV (layer, rmse/scale).")
@_measure_options
@click.option("--no-bench", is_flag=True, help="Skip the timing.")
@click.option("--title", help="The report's title.")
@_shape_option
@click.option("--json", "as_json", is_flag=True, help="Print what was measured as JSON.")
def report(models: tuple[str, ...], output: str, names: str | None, quant_errors: str | None, feeds: str | None,
           samples: int, preprocess: str | None, runs: int, no_bench: bool, title: str | None,
           input_shapes: tuple[str, ...], as_json: bool) -> int:
    """Write one self-contained HTML report: stages, size and latency charts, agreement, quantization error."""
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.data.feeds import parse_shape_overrides
    from tfshrink.reporting.html import report as run_report

    with _phase_progress() as step:
        result = run_report(list(models), output, names=_split(names), quant_errors=quant_errors, inputs=feeds,
                            preprocess=preprocess, samples=samples, runs=runs, bench=not no_bench, title=title,
                            shapes=parse_shape_overrides(input_shapes) or None, progress=step)
    if as_json:
        _echo_json(result)
        return 0
    _console().print(f"[bold]wrote[/] {result.output} ({result.bytes:,} bytes): {', '.join(result.names)}")
    return 0


@cli.command(epilog=EPILOGS["view"])
@click.argument("model")
@click.option("--port", type=click.IntRange(1, 65535), help="Port on localhost (default: 8080, else a free one).")
@click.option("--no-browser", is_flag=True, help="Only serve; print the address.")
@click.option("--outputs", help="Checkpoints: output nodes for freezing, comma-separated (default: detected).")
def view(model: str, port: int | None, no_browser: bool, outputs: str | None) -> int:
    """Open a model's graph in Netron on localhost (any format; checkpoints are frozen first)."""
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.reporting.view import view as run_view

    server = run_view(model, port=port, browse=not no_browser, outputs=_split(outputs))
    note = f" ({server.note})" if server.note else ""
    click.echo(f"Netron serving {server.served}{note} at {server.url}  (Ctrl-C to stop)")
    server.wait()
    return 0


@cli.command(epilog=EPILOGS["qat"])
@click.argument("model")
@click.option("--data", required=True, type=click.Path(), help="Training data: .npz with x and y.")
@click.option("--epochs", type=click.IntRange(min=1), required=True, help="Epochs of quantization-aware training.")
@click.option("--val", type=click.Path(), help="Validation data (.npz): float vs QAT (vs int8) accuracy.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("-o", "--output", required=True, help="The QAT Keras model to write (.keras).")
@click.option("--tflite", help="Also write its fully int8 TFLite model (ranges from training).")
@click.option("--input-type", type=click.Choice(["float32", "int8", "uint8"], case_sensitive=False),
              default="float32", show_default=True, help="TFLite input type.")
@click.option("--output-type", type=click.Choice(["float32", "int8", "uint8"], case_sensitive=False),
              default="float32", show_default=True, help="TFLite output type.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def qat(model: str, data: str, epochs: int, val: str | None, lr: float, batch_size: int, output: str,
        tflite: str | None, input_type: str, output_type: str, seed: int, as_json: bool) -> int:
    """Quantization-aware training of a Keras model, then (--tflite) its fully int8 TFLite model."""
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.qat.train import qat_keras

    with _progress("quantization-aware training") as step:
        result = qat_keras(model, data, output, epochs=epochs, val=val, learning_rate=lr, batch_size=batch_size,
                           tflite=tflite, input_type=input_type, output_type=output_type, seed=seed, progress=step)
    if as_json:
        _echo_json(result)
        return 0
    _print_qat(result)
    return 0


def _print_qat(r: Any) -> None:
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
    c = r.convert
    if c is not None:
        floats = _op_counts(c.float_ops) or "none"
        con.print(f"  tflite: {c.output} ({c.bytes:,} bytes), int8 with {c.input_type} input and {c.output_type} "
                  f"output; ops left in float: {floats}")
        con.print("  ops: " + ", ".join(f"{op} {n}" for op, n in c.ops.items()))
        for note in c.notes:
            con.print(f"  [dim]note:[/] {note}")
        _warn(c.warnings)


@cli.command(epilog=EPILOGS["demo"])
@click.option("--out", "out_dir", default="tfshrink-demo", show_default=True, help="Folder for the demo's files.")
def demo(out_dir: str) -> int:
    """MTCNN's ONet with its real weights: TF1 checkpoint -> freeze -> inspect -> verify."""
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.demo import run_demo

    return run_demo(out_dir, _console())
