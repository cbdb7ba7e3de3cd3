"""The `tfshrink` command: parse arguments, call the Python API, print results, pick the exit code.

Exit codes: 0 success, 1 a failed check, 2 bad input. A traceback only with --debug.
Nothing here imports TensorFlow at module level, so `tfshrink --help` answers at once.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import click

from tfshrink.conversion.modes import MODES

EPILOGS = {
    "freeze": """\b
Examples:
  tfshrink freeze ckpt_dir/ -o model.pb
  tfshrink freeze model.ckpt-100 -o model.pb --outputs prob,boxes
  tfshrink freeze model.ckpt-100 -o model.pb --bind is_training=false --bind keep_prob=1.0
  tfshrink freeze saved_model/ -o model.pb --signature serving_default
  tfshrink freeze model.keras -o model.pbtxt --text""",
    "inspect": """\b
Examples:
  tfshrink inspect model.pb
  tfshrink inspect ckpt_dir/ --json
  tfshrink inspect model.tflite""",
    "verify": """\b
Examples:
  tfshrink verify ckpt_dir/ model.pb
  tfshrink verify model.keras model.tflite --samples 10 --atol 1e-3
  tfshrink verify model.pb model_int8.tflite --inputs faces.npz --json""",
    "transform": """\b
Examples:
  tfshrink transform model.pb -o small.pb --transforms 'remove_nodes(op=Identity) strip_unused_nodes sort_by_execution_order'
  tfshrink transform --in_graph=model.pb --out_graph=small.pb --inputs=input --outputs=prob --transforms='remove_device'
  tfshrink transform --list""",
    "bench": """\b
Examples:
  tfshrink bench model.pb
  tfshrink bench model.tflite --threads 4 --runs 200
  tfshrink bench model.tflite --no-xnnpack --min-seconds 5
  tfshrink bench saved_model/ --batch 8 --profile
  tfshrink bench model.pb --input-shape input=1,224,224,3 --json
  tfshrink bench ckpt_dir/ --bind is_training=false --bind keep_prob=1.0

\b
Runs: --runs N exactly N timed runs; --min-seconds S until S seconds have passed;
neither: at least 50 runs and 1 s (at most 60 s). The first run is timed apart,
then --warmup untimed runs.
FLOPs are benchmark_model --show_flops' count: 2 x the multiply-adds of Conv2D,
DepthwiseConv2dNative and MatMul (TFLite: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED).
--profile: per-op times from TF step stats; ai-edge-litert's Python interpreter
has no op profiler, so for .tflite the output says so.

\b
--json keys: path, format, runtime, runtime_version, threads, xnnpack, batch, inputs,
init_ms, first_run_ms, warmup, runs, seconds, latency_ms {min, p50, p90, p99, mean, std},
throughput_per_s, model_bytes, peak_rss_bytes, peak_rss_method, flops, macs, flops_by_op,
flops_ops_counted, flops_ops_unknown, profile, notes (see `pydoc tfshrink.benchmarking`).""",
    "convert": """\b
Examples:
  tfshrink convert model.keras -o model.tflite
  tfshrink convert model.pb -o model_fp16.tflite --quantize float16
  tfshrink convert saved_model/ -o model_int8.tflite --quantize int8 --calibration photos/ \\
      --preprocess size=224x224,mean=127.5,std=127.5,color=rgb
  tfshrink convert ckpt_dir/ -o model_int8.tflite --quantize int8 --calibration samples.npz \\
      --input-shape input=1,48,48,3 --keep-float FULLY_CONNECTED
  tfshrink convert tflite_graph.pb -o ssd.tflite --allow-custom-ops --preprocess mean=128,std=128 \\
      --inputs normalized_input_image_tensor --input-shape normalized_input_image_tensor=1,300,300,3 \\
      --outputs TFLite_Detection_PostProcess,TFLite_Detection_PostProcess:1,TFLite_Detection_PostProcess:2,TFLite_Detection_PostProcess:3
  tfshrink convert model.keras -o model_int8.tflite --quantize int8 --calibration samples.npz \\
      --keep-float auto --min-cosine 0.999 --report int8_report/

\b
--preprocess SPEC: size=WIDTHxHEIGHT, mean=M or M1/M2/M3, std=S or S1/S2/S3,
color=rgb|bgr|gray, input=NAME; the model input is (pixel - mean) / std on 0..255
pixels. Calibration images are decoded, converted and resized with it, and it is
stored in the .tflite (read it back with tfshrink.conversion.read_preprocess).
--calibration: a folder or glob of JPEG/PNG images, an .npy/.npz keyed by input
name, or `random` (poor ranges; a warning says so).
--keep-float auto: measure every layer's int8 error (TF's QuantizationDebugger,
RMSE/scale; 0.289 is rounding alone), then keep the worst layers in float one at
a time until --min-cosine (default 0.999) / --max-top1-drop holds; the output
says what was kept and what it cost in size and latency. --report DIR writes the
per-layer errors as layer_errors.csv/.png/.svg.
int8 default: an output softmax stays float (XNNPACK has no int8 SOFTMAX); a first
conv on an image input (<= 4 channels, < 1024 weights) is timed in float against
int8 in LiteRT here and kept in float only if more than 5% faster (a note gives
both latencies); --keep-float none: strict full int8.
int8 activation ranges: each calibrated min/max is narrowed to the range with the
least squared int8 error on the calibration samples (finer steps; rare extremes
clip; model inputs and outputs keep theirs); --activation-ranges minmax keeps
TFLite's min/max.
A quantization-aware trained graph (FakeQuant nodes, e.g. a frozen create_eval_graph
checkpoint) converts to int8 with its trained ranges and needs no --calibration.""",
    "compare": """\b
Examples:
  tfshrink compare model.pb model_fp16.tflite model_int8.tflite
  tfshrink compare ckpt_dir/ model.pb model.tflite --inputs faces.npz --runs 50
  tfshrink compare model.keras model.tflite --names float,int8 --json

\b
The first model is the reference: the others run on the same inputs and are compared with it
(lowest cosine and top-1 agreement, largest abs error over the outputs). Latency is bench's p50
over --runs timed runs after a first run and one warmup run; `tfshrink bench` for more.""",
    "run": """\b
Examples:
  tfshrink run recipe.toml
  tfshrink run recipe.toml --out build/ --json
  tfshrink run recipe.toml --force

\b
A recipe (see examples/recipe.toml) is TOML with [[step]] tables, each with kind = freeze |
transform | convert | verify | bench | report, an optional name, and the step's options under the
CLI's names. Inputs are paths (relative to the recipe) or "@name" for an earlier step's model.
Artifacts and summary.json go to --out (default: the recipe's `out`, else RECIPE-out). Steps whose
options and input contents are unchanged are not run again (cache in OUT/.tfshrink-cache).""",
    "report": """\b
Examples:
  tfshrink report model.pb model_fp16.tflite model_int8.tflite -o report.html
  tfshrink report ckpt_dir/ model.pb model_int8.tflite -o report.html --names ckpt,frozen,int8 \\
      --quant-errors int8_report/

\b
One self-contained HTML file (inline CSS and SVG, no external resources): per model its format,
size, nodes/ops, parameters, inputs and outputs; size and latency bar charts; agreement with the
first model; op types; and with --quant-errors a per-layer RMSE/scale chart: the folder that
`tfshrink convert --report DIR` writes, or a CSV with a layer column and rmse/scale (or
QuantizationDebugger's mean_squared_error and scale columns).""",
    "view": """\b
Examples:
  tfshrink view model.tflite
  tfshrink view ckpt_dir/ --port 8080 --no-browser

\b
Serves the graph in Netron on localhost until Ctrl-C. A TF1 checkpoint is frozen to a temporary
.pb first; other formats are served as they are.""",
    "qat": """\b
Examples:
  tfshrink qat digits.keras --data train.npz --epochs 3 -o digits_qat.keras
  tfshrink qat digits.keras --data train.npz --val val.npz --epochs 3 --lr 1e-4 -o digits_qat.keras \\
      --tflite digits_int8.tflite
  tfshrink qat model.keras --data train.npz --epochs 2 -o qat.keras --tflite qat.tflite --input-type int8 --json

\b
--data/--val: .npz with x (inputs, or the input's name) and y (labels). Integer labels train with
sparse categorical cross-entropy, one-hot with categorical, anything else with mean squared error.
The model gets fake-quant ops (Conv2D/DepthwiseConv2D/Dense + folded BatchNormalization + ReLU,
Add/Concatenate/pooling outputs, inputs) with ranges learned while training; --tflite converts
the result to a fully int8 model with those ranges (no calibration data).
TF1 graphs: tfshrink.qat.create_training_graph / create_eval_graph in the training script
(examples/qat_tf1_digits.py), then tfshrink.qat.convert_qat.""",
    "demo": """\b
Example:
  tfshrink demo --out tfshrink-demo""",
}


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _echo_json(result: Any) -> None:
    """--json: the result object's to_json(), alone on stdout."""
    click.echo(json.dumps(result.to_json(), indent=2))


def _warn(warnings: Any) -> None:
    """Warnings go to stderr, with or without --json, so stdout stays the result."""
    err = _console(stderr=True)
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tfshrink")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
def cli(debug: bool) -> None:
    """Shrink TensorFlow models for phones and edge devices.

    Freeze checkpoints, find a graph's real inputs and outputs, and check that every step keeps the
    outputs the same. Takes TF1 checkpoints, SavedModels, Keras (.keras/.h5), frozen GraphDefs
    (.pb/.pbtxt) and TFLite files.
    """


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (only on a terminal); yields a `step(done, total)` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = _console(stderr=True)
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=True, disable=not console.is_terminal)
    with bar:
        task = bar.add_task(label, total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield step


def _shape_option(f: Any) -> Any:
    return click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=D1,D2,...",
                        help="Shape for an input with unknown dims (repeatable).")(f)


@cli.command(epilog=EPILOGS["freeze"])
@click.argument("source")
@click.option("-o", "--output", required=True, help="The frozen GraphDef to write (.pb, or .pbtxt with --text).")
@click.option("--outputs", help="Output nodes or tensors, comma-separated (default: detected).")
@click.option("--bind", "binds", multiple=True, metavar="NAME=VALUE",
              help="Replace a placeholder by a constant, e.g. is_training=false (repeatable).")
@click.option("--text", is_flag=True, help="Write protobuf text instead of binary.")
@click.option("--signature", help="SavedModel signature (default: serving_default).")
@click.option("--tags", help="SavedModel MetaGraph tag set, comma-separated (default: serve, or the only one).")
@click.option("--inputs", "feeds", type=click.Path(), help="Verify on these inputs (.npz keyed by input name).")
@click.option("--no-verify", is_flag=True, help="Skip running the frozen graph against the source.")
@click.option("--atol", type=float, default=1e-5, show_default=True)
@click.option("--rtol", type=float, default=1e-4, show_default=True)
@_shape_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def freeze(source: str, output: str, outputs: str | None, binds: tuple[str, ...], text: bool,
           signature: str | None, tags: str | None, feeds: str | None, no_verify: bool, atol: float, rtol: float,
           input_shapes: tuple[str, ...], as_json: bool) -> int:
    """Freeze a checkpoint, SavedModel or Keras model into one GraphDef, then verify it."""
    from tfshrink.data.feeds import parse_shape_overrides
    from tfshrink.freezer import freeze as run_freeze

    result = run_freeze(source, output, outputs=outputs, binds=list(binds), text=text,
                        verify=not no_verify, inputs=feeds, signature=signature, tags=tags, atol=atol, rtol=rtol,
                        shapes=parse_shape_overrides(input_shapes))
    if as_json:
        _echo_json(result)
        return 0
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
        source = "the given inputs" if feeds else f"{v.samples} seeded random input set(s)"
        con.print(f"  verified against the source on {source}: max abs difference {v.max_abs:.3g} [green]ok[/]")
    else:
        con.print("  not verified (--no-verify)")
    return 0


@cli.command(epilog=EPILOGS["inspect"])
@click.argument("model")
@click.option("--signature", help="SavedModel signature (default: serving_default).")
@click.option("--tags", help="SavedModel MetaGraph tag set, comma-separated (default: serve, or the only one).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect(model: str, signature: str | None, tags: str | None, as_json: bool) -> int:
    """Summarize a model: inputs, outputs, parameters, op types, and a bench command."""
    from tfshrink.inspection import inspect as run_inspect

    result = run_inspect(model, signature=signature, tags=tags)
    if as_json:
        _echo_json(result)
        return 0
    _print_inspect(result)
    return 0


def _print_inspect(r: Any) -> None:
    from rich.table import Table

    from tfshrink.inspection import human_count

    con = _console()
    con.print(f"[bold]{r.path}[/] ({r.format}, {r.file_bytes:,} bytes)")
    table = Table(title=None, box=None, pad_edge=False, show_header=True, header_style="bold")
    for col in ("", "name", "dtype", "shape", "op / quantization"):
        table.add_column(col)
    for kind, specs in (("input", r.inputs), ("optional", r.optional_inputs), ("output", r.outputs)):
        for s in specs:
            q = f"scale={s.quantization[0]:.6g} zero_point={s.quantization[1]}" if s.quantization else (s.op or "")
            table.add_row(kind, s.name, s.dtype, s.shape_text(), q)
    con.print(table)
    if r.outputs_ambiguous:
        con.print("[yellow]outputs are ambiguous[/]; candidates, best first: "
                  + ", ".join(c["name"] for c in r.candidates[:8]))
    if r.labels:
        con.print(f"ignored training placeholders: {', '.join(r.labels)}")
    con.print(f"nodes: {r.nodes}   control edges: {r.control_edges}")
    con.print(f"const parameters: {r.const_parameters} ({human_count(r.const_parameters)})   "
              f"variable parameters: {r.variable_parameters} ({human_count(r.variable_parameters)})")
    if r.variables:
        shown = ", ".join(f"{v.name}{v.shape_text()}" for v in r.variables[:6])
        more = f" and {len(r.variables) - 6} more" if len(r.variables) > 6 else ""
        con.print(f"variables ({len(r.variables)}): {shown}{more}")
    for key in ("tensors", "subgraphs"):
        if key in r.extra:
            con.print(f"{key}: {r.extra[key]}")
    if r.extra.get("custom_ops"):
        con.print(f"custom ops: {', '.join(r.extra['custom_ops'])}")
    if r.extra.get("weight_bytes"):
        con.print("weight bytes: " + ", ".join(f"{k} {v:,}" for k, v in r.extra["weight_bytes"].items()))
    if r.extra.get("metadata"):
        con.print("metadata: " + ", ".join(f"{k}={v[:60]}" for k, v in r.extra["metadata"].items()))
    _print_tflite_extra(con, r.extra)
    if r.extra.get("signatures"):
        con.print(f"signatures: {', '.join(r.extra['signatures'])} (showing {r.extra['signature']})")
    if r.extra.get("loader_note"):
        con.print(f"[yellow]{r.extra['loader_note']}[/]")
    con.print("op types: " + ", ".join(f"{op} {n}" for op, n in r.op_types.items()))
    if r.extra.get("fake_quant"):
        _print_fake_quant(con, r.extra["fake_quant"])
    con.print(f"bench: {r.bench_command}")


def _print_fake_quant(con: Any, ranges: list[dict]) -> None:
    from tfshrink.graph.fake_quant import range_text

    con.print(f"fake-quant ranges ({len(ranges)}):")
    for q in ranges:
        mark = "" if q.get("learned", True) else "  [yellow]never learned[/]"
        con.print(f"  {q['kind']:<10} {q['node']}: {range_text(q.get('min'), q.get('max'))}{mark}")


def _print_tflite_extra(con: Any, extra: dict[str, Any]) -> None:
    """inspect's lines for what `convert` stores: the preprocessing, and the ops left in float."""
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


def _op_counts(counts: dict[str, int]) -> str:
    """'CONV_2D x2, SOFTMAX x1' ('' for none)."""
    return ", ".join(f"{op} x{n}" for op, n in counts.items())


def _dynamic_range(counts: dict[str, int] | None) -> str:
    """' (of them in dynamic-range form, int8 weights: CONV_2D x1)' when some float ops read int8 weights."""
    return f" (of them in dynamic-range form, int8 weights: {_op_counts(counts)})" if counts else ""


@cli.command(epilog=EPILOGS["verify"])
@click.argument("model_a")
@click.argument("model_b")
@click.option("--inputs", "feeds", type=click.Path(),
              help="Inputs: .npz keyed by input name, or images (folder, glob, file) per --preprocess (default: random).")
@click.option("--preprocess", metavar="SPEC",
              help="How image pixels become the input (default: what a .tflite among the two stores).")
@click.option("--samples", type=int, default=3, show_default=True, help="Random input sets (or images at most) to try.")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Absolute tolerance.")
@click.option("--rtol", type=float, default=1e-3, show_default=True, help="Relative tolerance (of A's values).")
@click.option("--seed", type=int, default=0, show_default=True)
@_shape_option
@click.option("--bind", "binds", multiple=True, metavar="NAME=VALUE",
              help="Feed a constant to whichever model has this input (is_training=false); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def verify(model_a: str, model_b: str, feeds: str | None, preprocess: str | None, samples: int, atol: float,
           rtol: float, seed: int, input_shapes: tuple[str, ...], binds: tuple[str, ...], as_json: bool) -> int:
    """Run two models of any formats on the same inputs and compare every output."""
    from tfshrink.data.feeds import parse_shape_overrides
    from tfshrink.verification import verify as run_verify

    with _progress("running both models") as step:
        result = run_verify(model_a, model_b, inputs=feeds, samples=samples, atol=atol, rtol=rtol, seed=seed,
                            shapes=parse_shape_overrides(input_shapes), progress=step, preprocess=preprocess,
                            binds=list(binds))
    _warn(result.warnings)
    if as_json:
        _echo_json(result)
    else:
        _print_verify(result)
    return 0 if result.passed else 1


def _print_verify(v: Any) -> None:
    from rich.table import Table

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


@cli.command(epilog=EPILOGS["transform"])
@click.argument("source", required=False)
@click.option("--in_graph", "in_graph", hidden=True, help="transform_graph's spelling of SOURCE.")
@click.option("-o", "--output", "--out_graph", "output", help="The GraphDef to write.")
@click.option("--inputs", help="Input nodes, comma-separated (default: detected).")
@click.option("--outputs", help="Output nodes, comma-separated (default: detected).")
@click.option("--transforms", "spec", help="graph_transforms spec: names, name(k=v, k=\"a,b\").")
@click.option("--text", "--output_as_text", "text", is_flag=True, help="Write protobuf text.")
@click.option("--optimize", is_flag=True, help="Run the TF2/Keras 3 preset first (inline, fold, fuse BN, strip).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run the result against the input and fail (writing nothing) if they differ.")
@click.option("--check-each", is_flag=True, help="Check after every transform that changed the graph.")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Check: absolute tolerance.")
@click.option("--rtol", type=float, default=1e-4, show_default=True, help="Check: relative tolerance.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS",
              help="Check: shape for an input with unknown dims, e.g. input=1,224,224,3 (repeatable).")
@click.option("--list", "list_only", is_flag=True, help="List every transform and its parameters.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def transform(source: str | None, in_graph: str | None, output: str | None, inputs: str | None,
              outputs: str | None, spec: str | None, text: bool, optimize: bool, check: bool,
              check_each: bool, atol: float, rtol: float, input_shapes: tuple[str, ...], list_only: bool,
              as_json: bool) -> int:
    """Rewrite a frozen GraphDef with graph_transforms' transforms, on pip TensorFlow."""
    from tfshrink.errors import UserError
    from tfshrink.transformer import transform as run_transform
    from tfshrink.transforms import OPTIMIZE_SPEC, REGISTRY

    if list_only:
        for name in sorted(REGISTRY):
            t = REGISTRY[name]
            params = ", ".join(f"{k}{'...' if p.repeated else ''}" for k, p in t.params.items())
            note = "" if t.runs_on_tf else " [refuses: TF 2.21 cannot run its output]"
            note += "" if t.exact else " [changes numerics by design]"
            click.echo(f"{name}({params})\n    {t.summary}{note}")
        click.echo(f"\n--optimize runs: {OPTIMIZE_SPEC}")
        return 0
    src = source or in_graph
    if not src or not output or not (spec or optimize):
        raise UserError("transform needs a SOURCE (or --in_graph), -o/--out_graph and --transforms or --optimize",
                        "see `tfshrink transform --help`")
    from tfshrink.data.feeds import parse_shape_overrides

    result = run_transform(src, output, spec, inputs=inputs, outputs=outputs, text=text, optimize=optimize,
                           check=check, check_each=check_each, atol=atol, rtol=rtol,
                           shapes=parse_shape_overrides(list(input_shapes)) or None)
    _warn(result.warnings)
    if as_json:
        _echo_json(result)
        return 0
    con = _console()
    for name, changed in result.applied:
        con.print(f"  {name}: {'changed' if changed else 'no change'}")
    for step in result.checks:
        label = "whole pipeline" if step.after == "pipeline" else f"after {step.after}"
        note = "" if step.exact else " (numerics change by design: reported, not checked)"
        con.print(f"  check {label}: max abs error {step.max_abs_error:.3g}{note}")
    con.print(f"[bold]wrote[/] {result.output}: {result.nodes_before} -> {result.nodes_after} nodes, "
              f"{result.bytes_before:,} -> {result.bytes_after:,} bytes")
    return 0


@contextlib.contextmanager
def _late_progress(label: str, after: float = 2.0) -> Iterator[Callable[[int, int], None]]:
    """Like _progress for a loop reporting `step(done, total)`, but the bar shows only when the loop
    takes (or is on course to take) over `after` seconds, and only when stdout is a terminal too
    (so `--json > file` stays quiet)."""
    import time

    with contextlib.ExitStack() as stack:
        shown: list[Callable[[int, int], None]] = []
        first: list[tuple[float, int]] = []

        def step(done: int, total: int) -> None:
            if not shown:
                now = time.monotonic()
                if not first:
                    first.append((now, done))
                t0, d0 = first[0]
                per_run = (now - t0) / (done - d0) if done > d0 else 0.0
                if not sys.stdout.isatty() or (now - t0 < after and total * per_run < after):
                    return
                shown.append(stack.enter_context(_progress(label)))
            shown[0](done, total)

        yield step


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
@click.option("--no-xnnpack", is_flag=True, help="TFLite: run without LiteRT's default XNNPACK delegate.")
@click.option("--profile", is_flag=True, help="Per-op times: the top ops and a summary by op type.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Ops listed by --profile.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (keys below).")
def bench(model: str, runs: int | None, min_seconds: float | None, warmup: int, threads: int | None, batch: int,
          input_shapes: tuple[str, ...], binds: tuple[str, ...], no_xnnpack: bool, profile: bool, top: int,
          as_json: bool) -> int:
    """Time a model of any format: latency, throughput, size, memory and FLOPs (benchmark_model on pip)."""
    from tfshrink.benchmarking import bench as run_bench
    from tfshrink.data.feeds import parse_shape_overrides
    from tfshrink.errors import UserError

    if runs is not None and min_seconds is not None:
        raise UserError("give --runs or --min-seconds, not both", "--runs N for a count, --min-seconds S for a time")
    with _late_progress("timing runs") as step:
        result = run_bench(model, runs=runs, min_seconds=min_seconds, warmup=warmup, threads=threads,
                           batch=batch, input_shapes=parse_shape_overrides(input_shapes),
                           xnnpack=not no_xnnpack, profile=profile, binds=list(binds), progress=step)
    if as_json:
        _echo_json(result)
    else:
        _print_bench(result, top)
    return 0


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _print_bench(r: Any, top: int) -> None:
    from rich.table import Table

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


@contextlib.contextmanager
def _phase_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on stderr (only on a terminal) whose label follows the work's phase;
    yields a `step(phase, done, total)` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = _console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=True, disable=not console.is_terminal)
    with bar:
        task = bar.add_task("", total=None)

        def step(phase: str, done: int, total: int) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        yield step


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
@click.option("--signature", help="SavedModel signature (default: serving_default).")
@click.option("--tags", help="SavedModel MetaGraph tag set, comma-separated (default: serve, or the only one).")
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


def _names_option(f: Any) -> Any:
    return click.option("--names", help="Display names, comma-separated, one per model (default: file names).")(f)


def _split(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",")] if text else None


@cli.command(epilog=EPILOGS["compare"])
@click.argument("models", nargs=-1, required=True)
@click.option("--inputs", "feeds", type=click.Path(),
              help="Inputs: .npz keyed by input name, or images (default: random).")
@click.option("--samples", type=click.IntRange(min=1), default=3, show_default=True,
              help="Random input sets / images.")
@click.option("--preprocess", metavar="SPEC",
              help="Image --inputs: size=WxH,mean=M,std=S,color=rgb (default: the one a .tflite stores).")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Timed runs per model.")
@click.option("--no-bench", is_flag=True, help="Skip the timing (agreement and size only).")
@click.option("--seed", type=int, default=0, show_default=True)
@_names_option
@_shape_option
@click.option("--bind", "binds", multiple=True, metavar="NAME=VALUE",
              help="Feed a constant to whichever model has this input (is_training=false); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(models: tuple[str, ...], feeds: str | None, samples: int, preprocess: str | None, runs: int,
            no_bench: bool, seed: int, names: str | None, input_shapes: tuple[str, ...], binds: tuple[str, ...],
            as_json: bool) -> int:
    """Put models side by side: format, size, latency p50 and agreement with the first (A B [C ...])."""
    from tfshrink.data.feeds import parse_shape_overrides
    from tfshrink.reporting.compare import compare_models

    with _phase_progress() as step:
        result = compare_models(list(models), names=_split(names), inputs=feeds, preprocess=preprocess,
                                samples=samples, seed=seed,
                                runs=runs, bench=not no_bench, shapes=parse_shape_overrides(input_shapes) or None,
                                binds=list(binds), progress=step)
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
@click.option("--inputs", "feeds", type=click.Path(),
              help="Inputs: .npz keyed by input name, or images (default: random).")
@click.option("--samples", type=click.IntRange(min=1), default=3, show_default=True,
              help="Random input sets / images.")
@click.option("--preprocess", metavar="SPEC",
              help="Image --inputs: size=WxH,mean=M,std=S,color=rgb (default: the one a .tflite stores).")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Timed runs per model.")
@click.option("--no-bench", is_flag=True, help="Skip the timing.")
@click.option("--title", help="The report's title.")
@_shape_option
@click.option("--json", "as_json", is_flag=True, help="Print what was measured as JSON.")
def report(models: tuple[str, ...], output: str, names: str | None, quant_errors: str | None, feeds: str | None,
           samples: int, preprocess: str | None, runs: int, no_bench: bool, title: str | None,
           input_shapes: tuple[str, ...], as_json: bool) -> int:
    """Write one self-contained HTML report: stages, size and latency charts, agreement, quantization error."""
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
    from tfshrink.demo import run_demo

    return run_demo(out_dir, _console())


def _show_notes() -> None:
    """Print tfshrink's notes (a model read by a fallback loader) as `note:` lines on stderr, each
    once per command (compare loads a model more than once)."""
    from tfshrink.errors import NOTE_SINKS

    said: set[str] = set()

    def sink(text: str) -> None:
        if text not in said:
            said.add(text)
            click.echo(f"note: {text}", err=True)

    NOTE_SINKS[:] = [sink]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    from tfshrink.errors import TfshrinkError, first_line

    _show_notes()
    try:
        code = cli.main(args=args, prog_name="tfshrink", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        code = 2
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        code = 130
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except TfshrinkError as exc:
        if debug:  # the traceback, and still the exit code of the error's kind
            traceback.print_exc()
        click.echo(f"error: {exc.one_line()}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = 130
    except Exception as exc:  # an unexpected failure: one line unless --debug
        if debug:
            traceback.print_exc()
        first = first_line(exc)
        rerun = "" if debug else " (rerun with --debug for a traceback)"
        click.echo(f"error: unexpected {type(exc).__name__}: {first}{rerun}", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
