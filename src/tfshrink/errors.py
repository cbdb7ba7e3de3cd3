"""Typed errors. The CLI maps them to exit codes: UserError -> 2, CheckFailed -> 1."""

from __future__ import annotations


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


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (TF's `message` when it has one), or its type."""
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
