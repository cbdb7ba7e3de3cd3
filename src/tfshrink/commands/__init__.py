"""The commands, each declared once (tfshrink.commands.declared): the CLI, the recipe step kinds
and the package's lazy API map are built from these declarations. Imports no TensorFlow."""

from __future__ import annotations

from tfshrink.commands.declared import COMMANDS
from tfshrink.commands.spec import Command, Option, RecipeKind, resolve

__all__ = ["API_FUNCTIONS", "COMMANDS", "Command", "Option", "RecipeKind", "resolve"]

# The public API's functions by name ("convert" -> "tfshrink.conversion:convert"), for
# `tfshrink.convert` and friends; `load` is the model layer's, which no command is.
API_FUNCTIONS = {c.api.partition(":")[2]: c.api for c in COMMANDS.values() if c.api and c.name != "demo"}
API_FUNCTIONS["load"] = "tfshrink.model:load"
