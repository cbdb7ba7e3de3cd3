"""The click commands, built from the command declarations (tfshrink.commands): each option's
click type, flags and help come from its declaration; running a command turns the command line's
values into API keywords, calls the API under the declared progress bar, and prints the result
(its printer, or --json). Commands that do more than that have a handler (tfshrink.cli.handlers)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import click

from tfshrink.cli.common import _echo_json, _late_progress, _phase_progress, _progress, _split, _warn
from tfshrink.commands import Command, Option, resolve

__all__ = ["api_kwargs", "click_command", "run_command"]


def _click_type(o: Option) -> Any:
    if o.kind == "int":
        return click.IntRange(min=o.min, max=o.max) if o.min is not None or o.max is not None else int
    if o.kind == "float":
        return click.FloatRange(min=o.min, max=o.max, min_open=o.min_open) if o.min is not None else float
    if o.kind == "choice":
        return click.Choice(list(o.choices), case_sensitive=o.case_sensitive)
    if o.kind == "path":
        return click.Path()
    if o.kind == "outdir":
        return click.Path(file_okay=False)
    return None


def _param(o: Option) -> click.Parameter:
    if o.positional:
        return click.Argument([o.key], required=o.required, nargs=o.nargs, metavar=o.metavar)
    decls = [f"{o.flags[0]}/{o.secondary}"] if o.secondary else list(o.flags)
    kwargs: dict[str, Any] = {"help": o.help, "hidden": o.hidden, "required": o.required, "metavar": o.metavar,
                              "show_default": o.show_default}
    if o.kind == "bool":
        kwargs["default"] = bool(o.default)
        if o.secondary is None:
            kwargs["is_flag"] = True
    else:
        kwargs.update(type=_click_type(o), multiple=o.multiple)
        if o.default is not None:  # click 8.3+: an explicit None is a value, so `required` would never fire
            kwargs["default"] = o.default
    return click.Option([*decls, o.key], **kwargs)


def api_kwargs(command: Command, values: dict[str, Any]) -> dict[str, Any]:
    """The command line's values as API keywords: --no-x flags inverted, shapes and names parsed,
    and options left out (None, or none of a repeatable one) left to the API's defaults."""
    # Lazy: the data layer imports TensorFlow, which `tfshrink --help` must not load.
    from tfshrink.data.feeds import parse_shape_overrides

    kw: dict[str, Any] = {}
    for o in command.options:
        value = values.get(o.key)
        if not o.api_name:
            continue
        if o.invert:
            kw[o.api_name] = not value
            continue
        if value is None or (o.multiple and not value):
            continue
        if o.kind == "shapes":
            value = parse_shape_overrides(list(value))
        elif o.kind in ("binds", "models"):
            value = list(value)
        elif o.kind == "names" and not o.multiple:
            value = _split(value)
        kw[o.api_name] = value
    return kw


@contextlib.contextmanager
def _progress_bar(kind: str | None) -> Iterator[Callable[..., None] | None]:
    """The declared progress bar: "phase", "plain:LABEL", "late:LABEL" (shown only when slow) or none."""
    style, _, label = (kind or "").partition(":")
    bars: dict[str, Callable[[], Any]] = {"phase": _phase_progress, "plain": lambda: _progress(label),
                                          "late": lambda: _late_progress(label)}
    if style not in bars:
        yield None
        return
    with bars[style]() as step:
        yield step


def run_command(command: Command, values: dict[str, Any]) -> int:
    """Call the command's API with the command line's values, then print its result; the exit code
    is 1 when the declared check failed."""
    kw = api_kwargs(command, values)
    with _progress_bar(command.progress) as step:
        if step is not None:
            kw["progress"] = step
        result = command.function()(**kw)
    if command.warns:
        _warn(result.warnings)
    if values.get("as_json"):
        _echo_json(result)
    elif command.printer:
        resolve(command.printer)(result, values)
    return 0 if command.check is None or getattr(result, command.check) else 1


Handler = Callable[[Command, dict[str, Any]], int]


def click_command(command: Command, epilog: str | None, handler: Handler | None = None) -> click.Command:
    """The click command of a declaration; `handler(command, values)` runs it instead of run_command."""

    def callback(**values: Any) -> int:
        return (handler or run_command)(command, values)

    return click.Command(command.name, callback=callback, params=[_param(o) for o in command.options if o.cli],
                         help=command.summary, epilog=epilog)
