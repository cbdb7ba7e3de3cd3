"""The `tfshrink` click group, which every command module attaches its commands to."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tfshrink")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("--allow-io-ops", is_flag=True,
              help="Run models that hold ops touching files, the network or processes (WriteFile, PyFunc...).")
@click.option("--max-memory", metavar="SIZE",
              help="Refuse graphs whose constants declare more than this (e.g. 8G; default: half the RAM).")
def cli(debug: bool, allow_io_ops: bool, max_memory: str | None) -> None:
    """Shrink TensorFlow models for phones and edge devices.

    Freeze checkpoints, find a graph's real inputs and outputs, and check that every step keeps the
    outputs the same. Takes TF1 checkpoints, SavedModels, Keras (.keras/.h5), frozen GraphDefs
    (.pb/.pbtxt) and TFLite files.
    """
    from tfshrink.graph import io_ops  # imports no TensorFlow: cheap

    io_ops.allow_io_ops(allow_io_ops)
    from tfshrink.graph import shapes  # imports no TensorFlow until a command asks: cheap

    shapes.set_memory_limit(None if max_memory is None else _bytes(max_memory))


def _bytes(text: str) -> int:
    """"8G", "512M", "1000000" -> bytes; a click error for anything else."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in units and not value[-1:].isdigit() else ""
    number = value[: len(value) - len(unit)]
    try:
        size = float(number) * units[unit]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size", param_hint="--max-memory") from None
    if not size > 0:
        raise click.BadParameter(f"{text!r} must be positive", param_hint="--max-memory")
    return int(size)
