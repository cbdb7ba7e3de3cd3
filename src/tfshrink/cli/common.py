"""What every command shares: consoles, --json output, warnings, progress bars, number formats."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click


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


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _op_counts(counts: dict[str, int]) -> str:
    """'CONV_2D x2, SOFTMAX x1' ('' for none)."""
    return ", ".join(f"{op} x{n}" for op, n in counts.items())


def _dynamic_range(counts: dict[str, int] | None) -> str:
    """' (of them in dynamic-range form, int8 weights: CONV_2D x1)' when some float ops read int8 weights."""
    return f" (of them in dynamic-range form, int8 weights: {_op_counts(counts)})" if counts else ""


def _split(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",")] if text else None
