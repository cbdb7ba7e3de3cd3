"""The commands that do more on the command line than call their API and print the result:
transform (--list, --in_graph), run (a line per step as it goes), view (serves until Ctrl-C) and
demo. Their options are declared with every other command's (tfshrink.commands.declared)."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from tfshrink.cli.build import Handler, api_kwargs, run_command
from tfshrink.cli.common import _console, _echo_json
from tfshrink.commands import COMMANDS, Command
from tfshrink.errors import UserError


def transform(command: Command, values: dict[str, Any]) -> int:
    if values["list_only"]:
        # Lazy: the transforms import TensorFlow, which `tfshrink --help` must not load.
        from tfshrink.transforms import OPTIMIZE_SPEC, REGISTRY

        for name in sorted(REGISTRY):
            t = REGISTRY[name]
            params = ", ".join(f"{k}{'...' if p.repeated else ''}" for k, p in t.params.items())
            note = "" if t.runs_on_tf else " [refuses: TF 2.21 cannot run its output]"
            note += "" if t.exact else " [changes numerics by design]"
            click.echo(f"{name}({params})\n    {t.summary}{note}")
        click.echo(f"\n--optimize runs: {OPTIMIZE_SPEC}")
        return 0
    source, in_graph = values["source"], values["in_graph"]
    if source and in_graph and source != in_graph:
        raise UserError(f"two inputs given: {source} and --in_graph {in_graph}", "give one of them")
    values = {**values, "source": source or in_graph}
    if not values["source"] or not values["output"] or not (values["transforms"] or values["optimize"]):
        raise UserError("transform needs a SOURCE (or --in_graph), -o/--out_graph and --transforms or --optimize",
                        "see `tfshrink transform --help`")
    return run_command(command, values)


def run(command: Command, values: dict[str, Any]) -> int:
    # Lazy: the recipe runner imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.recipe import load_recipe

    values = {**values, "recipe": load_recipe(values["recipe"])}
    con = _console(stderr=values["as_json"])

    def on_step(record: Any, phase: str) -> None:
        if phase == "start":
            con.print(f"[dim]running {record.name} ({record.kind}) ...[/]")
            return
        status = {"ok": "[green]ran[/]", "cached": "[cyan]cached[/]", "failed": "[red]failed[/]"}[record.status]
        text = ""
        kind = COMMANDS[record.kind].recipe
        if record.numbers and kind is not None:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                text = kind.text(record.numbers)
        timing = "" if record.cached else f" {record.duration_s:.2f} s"
        con.print(f"{status} {record.name} ({record.kind}){timing} -> {record.output}"
                  + (f": {text}" if text else ""))

    result = command.function()(**api_kwargs(command, values), on_step=on_step)
    if values["as_json"]:
        _echo_json(result)
        return 0
    ran = sum(s.status == "ok" for s in result.steps)
    con.print(f"[bold]{len(result.steps)} step(s)[/]: {ran} ran, {len(result.steps) - ran} cached, "
              f"{result.duration_s:.1f} s; summary in {result.summary_path}")
    return 0


def view(command: Command, values: dict[str, Any]) -> int:
    server = command.function()(**api_kwargs(command, values))
    note = f" ({server.note})" if server.note else ""
    click.echo(f"Netron serving {server.served}{note} at {server.url}  (Ctrl-C to stop)")
    server.wait()
    return 0


def demo(command: Command, values: dict[str, Any]) -> int:
    return int(command.function()(values["out_dir"], _console()))


HANDLERS: dict[str, Handler] = {"transform": transform, "run": run, "view": view, "demo": demo}
