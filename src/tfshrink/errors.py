"""Typed errors. The CLI maps them to exit codes: UserError -> 2, CheckFailed -> 1."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable


class TfshrinkError(Exception):
    """Base of every error tfshrink raises on purpose. ``hint`` says what to do about it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UserError(TfshrinkError):
    """Bad input: a missing or corrupt file, an unknown name, a bad option. Exit 2."""

    exit_code = 2


class CheckFailed(TfshrinkError):
    """A numerical check failed (outputs differ beyond tolerance). Exit 1."""

    exit_code = 1


class LoaderNote(UserWarning):
    """Said when a model was read by a fallback loader (see `note`)."""


NOTE_SINKS: list[Callable[[str], None]] = []  # the CLI adds one that prints `note: ...` on stderr


def note(text: str) -> None:
    """Tell the user how something was read, whichever command is running: to the registered
    sinks (the CLI's stderr), else as a LoaderNote warning (Python API users)."""
    if NOTE_SINKS:
        for sink in NOTE_SINKS:
            sink(text)
    else:
        warnings.warn(text, LoaderNote, stacklevel=3)


# Lines of a TensorFlow / LiteRT message that say nothing about what went wrong.
_HEADER = re.compile(r"^(Graph execution error:?|Detected at node .*|Traceback .*|File .*|"
                     r"Stack trace for op definition:.*|Node: .*|Original stack trace.*|"
                     r"Function call stack:.*|\w+ \(defined at .*\).*)$")
_NODE = re.compile(r"\{\{node ([^}]+)\}\}")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The informative line of an exception's message, or its type.

    TensorFlow's errors start with a header ("Graph execution error:") and a Python stack; the
    reason (the op, the expected vs given type or shape) comes after. The header and the stack are
    skipped, and the node TF names (``{{node X}}``) is kept when the reason line does not name it.
    """
    text = str(getattr(exc, "message", None) or exc).strip()
    if not text:
        return type(exc).__name__
    lines = []
    in_stack = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Detected at node") or line.startswith("Traceback"):
            in_stack = True  # a Python stack follows, up to "Node: 'X'" or the first unindented line
        elif in_stack and (line.startswith("Node:") or (raw and not raw[0].isspace())):
            in_stack = False
        if in_stack or not line or _HEADER.match(line) or line.startswith("[["):
            continue
        if _NODE.fullmatch(line.removeprefix("In ").strip()):
            continue
        lines.append(line)
    reason = lines[0] if lines else next(ln.strip() for ln in text.splitlines() if ln.strip())
    node = _NODE.search(text)
    if node and node.group(1) not in reason:
        reason = _NODE.sub(lambda m: m.group(1), reason) + f" (node {node.group(1)})"
    return reason[:limit]
