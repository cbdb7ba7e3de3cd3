"""What each recipe step kind takes: its options (the CLI's and the API's names), their types, and
which API keyword each becomes; built from the command declarations (tfshrink.commands)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tfshrink.commands import COMMANDS, Command

__all__ = ["KINDS", "KindSpec", "Opt", "kind_options"]

# Value kinds: str, bool, int, float, names (a string "a,b" or a list of strings), shapes ({name = [dims]}
# or ["name=1,2,3"]), binds ({name = value} or ["name=value"]), model (a path or "@step"), models (a
# list of those), path (a file, a folder or a glob, relative to the recipe), outdir (true, or a folder name
# inside the output folder), choice, any.


@dataclass(frozen=True)
class Opt:
    """One option of a step kind. `api` is the API keyword (default: the option's name); `invert`
    turns a `no_x = true` flag into `x = False`; `required` options must be given."""

    type: str
    api: str | None = None
    required: bool = False
    invert: bool = False
    choices: tuple[str, ...] = ()
    literals: tuple[str, ...] = ()  # path options: words that are not paths (calibration = "random")
    runner: bool = False  # read by the recipe runner, not passed to the API (verify's shards)

    def api_name(self, name: str) -> str:
        return self.api or name


@dataclass(frozen=True)
class KindSpec:
    """A step kind: its options, what it writes (`ext`), and whether that is a model later steps
    can take (`model`: the format it writes, or None)."""

    options: Mapping[str, Opt]
    ext: str
    model: str | None
    aliases: Mapping[str, str] = field(default_factory=dict)


def _kind(command: Command) -> KindSpec:
    """A command's recipe step kind, from its declaration: every option a recipe takes, under the
    recipe's spelling, plus the other half of each on/off pair (no_verify also as verify)."""
    assert command.recipe is not None
    options: dict[str, Opt] = {}
    for o in command.options:
        name = o.recipe_name
        if name is None:
            continue
        options[name] = Opt(o.kind, api=o.api_name if o.api_name not in (name, "") else None,
                            required=o.positional and o.kind in ("model", "models"), invert=o.invert,
                            choices=o.choices, literals=o.literals, runner=o.api == "")
        if o.invert and o.api_name not in options:  # no_verify = true, or verify = false
            options[o.api_name] = Opt("bool")
        if o.secondary:  # check = false, or no_check = true
            options["no_" + name] = Opt("bool", api=o.api_name, invert=True)
    return KindSpec(options, command.recipe.ext, command.recipe.model, command.recipe.aliases)


KINDS: dict[str, KindSpec] = {name: _kind(c) for name, c in COMMANDS.items() if c.recipe is not None}

# Options every step has (not passed to the API).
COMMON = ("kind", "name")


def _type_of_default(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "any"


# API keywords a recipe never sets: the runner passes its own.
_NOT_OPTIONS = ("progress", "on_step")


def kind_options(kind: str) -> dict[str, Opt]:
    """The options of `kind`: the listed ones, and any other keyword-only argument of its API function."""
    options = dict(KINDS[kind].options)
    function = COMMANDS[kind].function()
    taken = {o.api_name(n) for n, o in options.items()}
    for param_name, param in inspect.signature(function).parameters.items():
        if param.kind != param.KEYWORD_ONLY or param_name in taken or param_name in _NOT_OPTIONS:
            continue
        default = None if param.default is inspect.Parameter.empty else param.default
        options[param_name] = Opt(_type_of_default(default))
    return options
