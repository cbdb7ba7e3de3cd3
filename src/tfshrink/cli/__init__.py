"""The `tfshrink` command: parse arguments, call the Python API, print results, pick the exit code.

Exit codes: 0 success, 1 a failed check, 2 bad input. A traceback only with --debug.
Nothing here imports TensorFlow at module level, so `tfshrink --help` answers at once.
"""

from __future__ import annotations

import signal
import struct
import sys
import threading
import traceback

import click

from tfshrink.cli.build import click_command
from tfshrink.cli.group import cli
from tfshrink.cli.handlers import HANDLERS
from tfshrink.cli.help_text import EPILOGS
from tfshrink.commands import COMMANDS
from tfshrink.errors import NOTE_SINKS, TfshrinkError, first_line

__all__ = ["cli", "main"]

for _command in COMMANDS.values():
    cli.add_command(click_command(_command, EPILOGS.get(_command.name), HANDLERS.get(_command.name)))


def _show_notes() -> None:
    """Print tfshrink's notes (a model read by a fallback loader) as `note:` lines on stderr, each
    once per command (compare loads a model more than once)."""
    said: set[str] = set()

    def sink(text: str) -> None:
        if text not in said:
            said.add(text)
            click.echo(f"note: {text}", err=True)

    NOTE_SINKS[:] = [sink]


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that every write in progress unwinds and removes its
    temporary file or folder, as Ctrl-C (KeyboardInterrupt) does."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _show_notes()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
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
    except Terminated:
        click.echo("terminated", err=True)
        code = 143
    except struct.error as exc:  # a binary file read past its end: corrupt input, not a bug of ours
        if debug:
            traceback.print_exc()
        click.echo(f"error: a file is corrupt: {first_line(exc)} (the file is truncated or corrupt; "
                   "re-export it)", err=True)
        code = 2
    except Exception as exc:  # an unexpected failure: one line unless --debug
        if debug:
            traceback.print_exc()
        first = first_line(exc)
        rerun = "" if debug else " (rerun with --debug for a traceback)"
        click.echo(f"error: unexpected {type(exc).__name__}: {first}{rerun}", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
