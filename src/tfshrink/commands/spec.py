"""What a command is made of: its options, the API function it calls, how the CLI shows its result
and what a recipe step of it records. Plain data: the CLI, the recipe schema and runner, and the
package's lazy API map are all built from these declarations (tfshrink.commands.declared)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Command", "Option", "RecipeKind"]

# Option kinds (Option.kind). The CLI reads each as a string (path: a click.Path; outdir: a click.Path that
# is not a file), except int/float (numbers, with a range when min/max are given), bool (a flag) and choice.
# Recipes type them more finely: names ("a,b" or a list), shapes ({name = [dims]} or
# ["name=1,2,3"]), binds ({name = value} or ["name=value"]), model (a path or "@step"), models (a
# list of those), path (relative to the recipe), outdir (true or a folder inside the output folder).


@dataclass(frozen=True)
class Option:
    """One option or argument of a command.

    `key` is the CLI's parameter name and the recipe's spelling; `api` the API keyword it becomes
    (default: `key`; "" for options only the CLI uses, such as --json). `flags` are the CLI's
    spellings; none makes it a positional argument (`nargs=-1`: any number). `invert` turns a
    `--no-x` flag into `x=False`; `secondary` is the off switch of an on/off flag (--check/--no-check).
    `recipe` is False for options a recipe does not take (the output: the runner names it), or a
    string for the recipe's own spelling (the source argument is `input` there)."""

    key: str
    flags: tuple[str, ...] = ()
    kind: str = "str"
    help: str | None = None
    default: Any = None
    show_default: bool = False
    choices: tuple[str, ...] = ()
    case_sensitive: bool = True
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    metavar: str | None = None
    multiple: bool = False
    nargs: int = 1
    required: bool = False
    hidden: bool = False
    api: str | None = None
    invert: bool = False
    secondary: str | None = None
    recipe: bool | str = True
    cli: bool = True  # False: a recipe-only option (verify's shards)
    literals: tuple[str, ...] = ()  # path options: words that are not paths (calibration = "random")

    @property
    def positional(self) -> bool:
        return not self.flags

    @property
    def api_name(self) -> str:
        return self.key if self.api is None else self.api

    @property
    def recipe_name(self) -> str | None:
        if self.recipe is False:
            return None
        return self.recipe if isinstance(self.recipe, str) else self.key


@dataclass(frozen=True)
class RecipeKind:
    """A command as a recipe step: what it writes (`ext`), whether that is a model later steps can
    take (`model`: the format written, or None), its positional API arguments in order (the output
    included), whether the runner writes the result's JSON as the artifact, the figures the
    summary records (`figures(result, options)`) and the one-line text `tfshrink run` prints of them.
    A kind with `merge` runs on shards of a streamed dataset when its step sets `shards`: one call
    per shard (a Ray task each under --workers), results merged in shard order."""

    ext: str
    model: str | None
    figures: Callable[[Any, Mapping[str, Any]], dict[str, Any]]
    text: Callable[[dict[str, Any]], str]
    positional: tuple[str, ...] = ()
    writes_json: bool = False
    merge: str | None = None  # "module:function" joining the results of one step run on shards of its data
    aliases: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    """One command: `api` is "module:function" (imported on first use, so declaring commands loads
    no TensorFlow); `printer` is "module:function" taking (result, cli_values); `progress` the bar
    the CLI shows ("phase", or "plain:LABEL" / "late:LABEL"); `check` the result attribute that
    decides the exit code (verify: passed); `warns` whether the result's warnings go to stderr."""

    name: str
    summary: str
    options: tuple[Option, ...]
    api: str | None = None
    printer: str | None = None
    progress: str | None = None
    check: str | None = None
    warns: bool = False
    recipe: RecipeKind | None = None

    def function(self) -> Callable[..., Any]:
        if self.api is None:
            raise LookupError(f"{self.name} has no API function")
        return resolve(self.api)


def resolve(target: str) -> Any:
    """"module:attribute" -> the attribute, importing the module (lazily: it may load TensorFlow)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
