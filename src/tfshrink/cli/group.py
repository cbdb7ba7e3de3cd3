"""The `tfshrink` click group, which every command module attaches its commands to."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tfshrink")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("--allow-io-ops", is_flag=True,
              help="Run models that hold ops touching files, the network or processes (WriteFile, PyFunc...).")
def cli(debug: bool, allow_io_ops: bool) -> None:
    """Shrink TensorFlow models for phones and edge devices.

    Freeze checkpoints, find a graph's real inputs and outputs, and check that every step keeps the
    outputs the same. Takes TF1 checkpoints, SavedModels, Keras (.keras/.h5), frozen GraphDefs
    (.pb/.pbtxt) and TFLite files.
    """
    from tfshrink.graph import io_ops  # imports no TensorFlow: cheap

    io_ops.allow_io_ops(allow_io_ops)
