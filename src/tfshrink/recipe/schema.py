"""What each recipe step kind takes: its options (the CLI's and the API's names), their types, and
which API keyword each becomes."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tfshrink.conversion.modes import MODES

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


_CHECK = {"atol": Opt("float"), "rtol": Opt("float"), "samples": Opt("int"), "seed": Opt("int")}
_SHAPES = {"input_shapes": Opt("shapes", api="shapes")}
_ALIASES = {"input_shape": "input_shapes", "bind": "binds"}

KINDS: dict[str, KindSpec] = {
    "freeze": KindSpec({
        "input": Opt("model", api="source", required=True), "outputs": Opt("names"), "binds": Opt("binds"),
        "text": Opt("bool"), "signature": Opt("str"), "tags": Opt("str"), "inputs": Opt("path"), "verify": Opt("bool"),
        "no_verify": Opt("bool", api="verify", invert=True), **_CHECK, **_SHAPES,
    }, ".pb", "graphdef", _ALIASES),
    "transform": KindSpec({
        "input": Opt("model", api="source", required=True), "transforms": Opt("str"), "inputs": Opt("names"),
        "outputs": Opt("names"), "text": Opt("bool"), "optimize": Opt("bool"), "check": Opt("bool"),
        "no_check": Opt("bool", api="check", invert=True), "check_each": Opt("bool"),
        "samples": Opt("int"), "atol": Opt("float"), "rtol": Opt("float"), **_SHAPES,
    }, ".pb", "graphdef", _ALIASES),
    "convert": KindSpec({
        "input": Opt("model", api="source", required=True),
        "quantize": Opt("choice", choices=MODES),
        "calibration": Opt("path", literals=("random",)), "calibration_samples": Opt("int"),
        "preprocess": Opt("str"),
        "input_type": Opt("choice", choices=("float32", "int8", "uint8", "int16")),
        "output_type": Opt("choice", choices=("float32", "int8", "uint8", "int16")),
        "input_shapes": Opt("shapes"), "inputs": Opt("names"), "outputs": Opt("names"),
        "allow_custom_ops": Opt("bool"), "select_tf_ops": Opt("bool"), "keep_float": Opt("names"),
        "signature": Opt("str"), "tags": Opt("str"), "verify": Opt("bool"), "no_verify": Opt("bool", api="verify", invert=True),
        "verify_samples": Opt("int"), "seed": Opt("int"),
        "report": Opt("outdir"),  # per-layer int8 error: true (NAME-report/) or a folder in the out folder
    }, ".tflite", "tflite", _ALIASES),
    "verify": KindSpec({
        "a": Opt("model", required=True), "b": Opt("model", required=True), "inputs": Opt("path"),
        **_CHECK, **_SHAPES,
    }, ".json", None, _ALIASES),
    "bench": KindSpec({
        "input": Opt("model", api="model_path", required=True), "runs": Opt("int"),
        "min_seconds": Opt("float"),
        "warmup": Opt("int"), "threads": Opt("int"), "batch": Opt("int"),
        "input_shapes": Opt("shapes"), "binds": Opt("binds"), "xnnpack": Opt("bool"),
        "no_xnnpack": Opt("bool", api="xnnpack", invert=True), "profile": Opt("bool"),
    }, ".json", None, _ALIASES),
    "report": KindSpec({
        "models": Opt("models", required=True), "names": Opt("names"), "quant_errors": Opt("path"),
        "inputs": Opt("path"), "samples": Opt("int"), "seed": Opt("int"), "runs": Opt("int"),
        "bench": Opt("bool"), "title": Opt("str"), **_SHAPES,
    }, ".html", None, _ALIASES),
}

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


# The API function behind each kind; keyword arguments it has beyond the listed options are accepted
# too (typed by their defaults), so a recipe takes what the API takes.
API = {"freeze": ("tfshrink.freezer", "freeze"), "transform": ("tfshrink.transformer", "transform"),
       "convert": ("tfshrink.conversion", "convert"), "verify": ("tfshrink.verification", "verify"),
       "bench": ("tfshrink.benchmarking", "bench"), "report": ("tfshrink.reporting.html", "report")}
_NOT_OPTIONS = ("progress", "on_step")


def kind_options(kind: str) -> dict[str, Opt]:
    """The options of `kind`: the listed ones, and any other keyword-only argument of its API function."""
    options = dict(KINDS[kind].options)
    module, name = API[kind]
    import importlib

    function = getattr(importlib.import_module(module), name)
    taken = {o.api_name(n) for n, o in options.items()}
    for param_name, param in inspect.signature(function).parameters.items():
        if param.kind != param.KEYWORD_ONLY or param_name in taken or param_name in _NOT_OPTIONS:
            continue
        default = None if param.default is inspect.Parameter.empty else param.default
        options[param_name] = Opt(_type_of_default(default))
    return options
