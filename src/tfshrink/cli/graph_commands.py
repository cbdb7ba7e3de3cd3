"""Commands on TensorFlow graphs: freeze, inspect, verify, transform."""

from __future__ import annotations

from typing import Any

import click

from tfshrink.cli.common import (
    _console,
    _dynamic_range,
    _echo_json,
    _op_counts,
    _progress,
    _savedmodel_options,
    _shape_option,
    _warn,
)
from tfshrink.cli.group import cli
from tfshrink.cli.help_text import EPILOGS


@cli.command(epilog=EPILOGS["freeze"])
@click.argument("source")
@click.option("-o", "--output", required=True, help="The frozen GraphDef to write (.pb, or .pbtxt with --text).")
@click.option("--outputs", help="Output nodes or tensors, comma-separated (default: detected).")
@click.option("--bind", "binds", multiple=True, metavar="NAME=VALUE",
              help="Replace a placeholder by a constant, e.g. is_training=false (repeatable).")
@click.option("--text", is_flag=True, help="Write protobuf text instead of binary.")
@_savedmodel_options
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
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
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
@_savedmodel_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect(model: str, signature: str | None, tags: str | None, as_json: bool) -> int:
    """Summarize a model: inputs, outputs, parameters, op types, and a bench command."""
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.inspection import inspect as run_inspect

    result = run_inspect(model, signature=signature, tags=tags)
    if as_json:
        _echo_json(result)
        return 0
    _print_inspect(result)
    return 0


def _print_inspect(r: Any) -> None:
    from rich.markup import escape as esc
    from rich.table import Table

    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.inspection import human_count

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
    _print_tflite_extra(con, r.extra)
    if r.extra.get("signatures"):
        con.print(f"signatures: {esc(', '.join(r.extra['signatures']))} (showing {esc(r.extra['signature'])})")
    if r.extra.get("loader_note"):
        con.print(f"[yellow]{esc(r.extra['loader_note'])}[/]")
    con.print("op types: " + esc(", ".join(f"{op} {n}" for op, n in r.op_types.items())))
    if r.extra.get("fake_quant"):
        _print_fake_quant(con, r.extra["fake_quant"])
    for warning in r.extra.get("warnings", []):
        con.print(f"[yellow]warning:[/] {esc(warning)}")
    if r.extra.get("io_ops"):
        ops = ", ".join(f"{o['node']} ({o['op']})" for o in r.extra["io_ops"][:6])
        con.print(f"[red]ops that touch files, the network or processes: {esc(ops)}[/] "
                  "(tfshrink refuses to run them without --allow-io-ops)")
    con.print(f"bench: {esc(r.bench_command)}")


def _print_fake_quant(con: Any, ranges: list[dict]) -> None:
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
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
@_savedmodel_options
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def verify(model_a: str, model_b: str, feeds: str | None, preprocess: str | None, samples: int, atol: float,
           rtol: float, seed: int, input_shapes: tuple[str, ...], binds: tuple[str, ...], signature: str | None,
           tags: str | None, as_json: bool) -> int:
    """Run two models of any formats on the same inputs and compare every output."""
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.data.feeds import parse_shape_overrides
    from tfshrink.verification import verify as run_verify

    with _progress("running both models") as step:
        result = run_verify(model_a, model_b, inputs=feeds, samples=samples, atol=atol, rtol=rtol, seed=seed,
                            shapes=parse_shape_overrides(input_shapes), progress=step, preprocess=preprocess,
                            binds=list(binds), signature=signature, tags=tags)
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
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
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
    if source and in_graph and source != in_graph:
        raise UserError(f"two inputs given: {source} and --in_graph {in_graph}", "give one of them")
    src = source or in_graph
    if not src or not output or not (spec or optimize):
        raise UserError("transform needs a SOURCE (or --in_graph), -o/--out_graph and --transforms or --optimize",
                        "see `tfshrink transform --help`")
    # Lazy: the API imports TensorFlow, which `tfshrink --help` must not load.
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
