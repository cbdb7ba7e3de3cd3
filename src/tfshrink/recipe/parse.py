"""Read and validate a recipe: every error names the recipe line, and everything is checked (kinds,
names, options and their types, references to earlier steps, input files) before anything runs.

tomllib gives no positions, so the lines come from scanning the text for the ``[[step]]`` headers
and the ``key =`` lines under them.
"""

from __future__ import annotations

import difflib
import glob
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfshrink.data.feeds import parse_shape_overrides
from tfshrink.errors import UserError
from tfshrink.model import detect_format, runtime_of
from tfshrink.recipe.schema import COMMON, KINDS, Opt, kind_options
from tfshrink.transforms import REGISTRY, parse_spec

__all__ = ["Recipe", "Step", "load_recipe", "parse_recipe"]

TOP_LEVEL = ("out", "title", "description", "step")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_STEP_HEADER = re.compile(r"^\s*\[\[\s*(?:step|\"step\"|'step')\s*\]\]")
_TABLE_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")
_KEY = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_\-]+))\s*=""")
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Ref:
    """A reference to an earlier step's output (``"@freeze"``): its model, or (``what="report"``) the
    per-layer report folder of a convert step with ``report``."""

    step: str
    what: str = "model"


@dataclass(frozen=True)
class Step:
    """One validated step. `options` hold the recipe's spellings (aliases resolved) with values
    checked and normalized: Path for files, Ref for "@step", lists for names, dicts for shapes."""

    index: int
    name: str
    kind: str
    line: int
    options: dict[str, Any]
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, option: str) -> int:
        return self.lines.get(option, self.line)


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: where it is, its default output folder and its steps in order."""

    path: Path
    display: str  # the path as the user gave it, for messages
    out: Path
    steps: tuple[Step, ...]
    title: str = ""

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


@dataclass
class _Lines:
    top: dict[str, int] = field(default_factory=dict)
    steps: list[tuple[int, dict[str, int]]] = field(default_factory=list)


def _scan(text: str) -> _Lines:
    """Line numbers (1-based) of top-level keys, of each [[step]] header and of each step's keys."""
    found = _Lines()
    current: dict[str, int] | None = None
    in_string: str | None = None
    depth = 0  # open brackets of a multi-line array
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        stripped = line.strip()
        if depth == 0 and _STEP_HEADER.match(line):
            current = {}
            found.steps.append((number, current))
            continue
        table = _TABLE_HEADER.match(line) if depth == 0 and not stripped.startswith("[[") else None
        if table is not None:
            parts = [p.strip().strip("\"'") for p in table.group(1).split(".")]
            if parts[0] == "step" and len(parts) > 1 and current is not None:
                current.setdefault(parts[1], number)
            else:
                found.top.setdefault(parts[0], number)
                current = None if parts[0] != "step" else current
            continue
        code = _code(line)
        if depth > 0:  # inside a multi-line array
            depth = max(0, depth + code.count("[") - code.count("]"))
            continue
        key = _KEY.match(line)
        if key is not None:
            name = next(g for g in key.groups() if g is not None).split(".")[0]
            (current if current is not None else found.top).setdefault(name, number)
            value = code.split("=", 1)[1]
            depth = max(0, value.count("[") - value.count("]"))
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                in_string = quote
    return found


def _code(line: str) -> str:
    """A line without its comment and without the text of its quoted strings."""
    out = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', '""', line)
    return out.split("#", 1)[0]


def _closest(word: str, choices: Any) -> str:
    near = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"closest: {near[0]}" if near else ""


class _Errors:
    def __init__(self, display: str):
        self.display = display

    def at(self, line: int | None, message: str, hint: str | None = None) -> UserError:
        where = f"{self.display}:{line}" if line else self.display
        return UserError(f"{where}: {message}", hint or None)


def _as_names(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [p.strip() for v in value for p in v.split(",") if p.strip()]
    return None


def _as_shapes(value: Any) -> dict[str, tuple[int, ...]] | None:
    if isinstance(value, Mapping):
        out = {}
        for k, dims in value.items():
            if not isinstance(dims, list) or not all(type(d) is int for d in dims):
                return None
            out[str(k).split(":")[0]] = tuple(dims)
        return out
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        return None

    try:
        return parse_shape_overrides(items)
    except UserError:
        return None


def _as_binds(value: Any) -> dict[str, Any] | list[str] | None:
    if isinstance(value, Mapping):
        return {str(k): (str(v).lower() if isinstance(v, bool) else v) for k, v in value.items()}
    items = [value] if isinstance(value, str) else value
    if isinstance(items, list) and all(isinstance(v, str) and "=" in v for v in items):
        return list(items)
    return None


_TYPE_TEXT = {"str": "a string", "bool": "true or false", "int": "an integer", "float": "a number",
              "names": 'a string "a,b" or a list of strings',
              "shapes": '{ name = [1, 224, 224, 3] } or ["name=1,224,224,3"]',
              "binds": '{ is_training = false } or ["is_training=false"]', "model": 'a path or "@step"',
              "models": 'a list of paths or "@step"s', "path": "a path (relative to the recipe)",
              "outdir": "true or a folder name (inside the output folder)",
              "choice": "one of", "any": "a value"}


_PARSERS = {"names": _as_names, "shapes": _as_shapes, "binds": _as_binds}


class _Validator:
    def __init__(self, path: Path, display: str, lines: _Lines):
        self.base = path.parent
        self.err = _Errors(display)
        self.lines = lines
        self.models: dict[str, str] = {}  # step name -> format of the model it writes
        self.earlier: dict[str, str] = {}  # step name -> kind, for the steps before the current one
        self.reports: set[str] = set()  # earlier convert steps that write a per-layer report folder
        self.later: set[str] = set()

    def step(self, index: int, raw: Any) -> Step:
        header, key_lines = self.lines.steps[index] if index < len(self.lines.steps) else (None, {})
        err = self.err
        if not isinstance(raw, Mapping):
            raise err.at(header, "a step must be a table", "write steps as [[step]] tables")
        kind = raw.get("kind")
        if kind is None:
            raise err.at(header, "step without a kind", f"add kind = one of {', '.join(KINDS)}")
        if not isinstance(kind, str) or kind not in KINDS:
            close = _closest(str(kind), KINDS)
            raise err.at(key_lines.get("kind", header), f"unknown step kind {kind!r}",
                         close or f"one of {', '.join(KINDS)}")
        name = raw.get("name", kind)
        if not isinstance(name, str) or not _NAME.match(name):
            raise err.at(key_lines.get("name", header), f"step name {name!r} is not a plain name",
                         "use letters, digits, '_', '-' and '.'")
        return Step(index, name, kind, header or 0, {}, dict(key_lines))

    def options(self, step: Step, raw: Mapping[str, Any]) -> dict[str, Any]:
        spec = KINDS[step.kind]
        known = kind_options(step.kind)
        where = f"step {step.name!r} ({step.kind})"
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key in COMMON:
                continue
            opt_name = key.replace("-", "_")
            opt_name = spec.aliases.get(opt_name, opt_name)
            line = step.lines.get(key, step.line)
            if key != opt_name and key in step.lines:
                step.lines.setdefault(opt_name, step.lines[key])
            opt = known.get(opt_name)
            if opt is None:
                close = _closest(opt_name, [*known, *spec.aliases])
                raise self.err.at(line, f"{where}: unknown option {key!r}",
                                  close or f"options: {', '.join(sorted(known))}")
            if opt_name in out:
                raise self.err.at(line, f"{where}: option {opt_name!r} given twice", "keep one spelling")
            out[opt_name] = self.value(step, where, opt_name, opt, value, line)
        for opt_name, opt in known.items():
            if opt.required and opt_name not in out:
                raise self.err.at(step.line, f"{where}: missing option {opt_name!r}",
                                  f"add {opt_name} = {_TYPE_TEXT[opt.type]}")
        self.check_step(step, where, out)
        return out

    def value(self, step: Step, where: str, name: str, opt: Opt, value: Any, line: int) -> Any:
        bad = self.err.at(line, f"{where}: {name} must be {_TYPE_TEXT[opt.type]}"
                          + (f" {', '.join(opt.choices)}" if opt.choices else "") + f", not {value!r}")
        t = opt.type
        if t == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if t == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad
            return value
        if t == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad
            return float(value)
        if t == "str":
            if not isinstance(value, str):
                raise bad
            return value
        if t == "choice":
            if not isinstance(value, str) or value.lower() not in opt.choices:
                close = _closest(str(value).lower(), opt.choices)
                raise self.err.at(line, f"{where}: {name} {value!r} is not one of {', '.join(opt.choices)}",
                                  close or None)
            return value.lower()
        if t in _PARSERS:  # names, shapes, binds: None when the value is neither spelling
            parsed = _PARSERS[t](value)
            if parsed is None:
                raise bad
            return parsed
        if t == "model":
            if not isinstance(value, str):
                raise bad
            return self.model(step, where, name, value, line)
        if t == "models":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
                raise bad
            return [self.model(step, where, name, v, line) for v in items]
        if t == "path":
            if not isinstance(value, str):
                raise bad
            return self.path(where, name, value, line, opt)
        if t == "outdir":
            if value is False:
                return None
            folder = f"{step.name}-report" if value is True else value
            inside = isinstance(folder, str) and folder and not Path(folder).is_absolute()
            if not inside or ".." in Path(folder).parts:
                raise bad
            if Path(folder).parts[0] in ("summary.json", ".tfshrink-cache"):
                raise self.err.at(line, f"{where}: {name} {folder!r} is where the run writes its "
                                  f"{'summary' if folder.startswith('summary') else 'cache'}",
                                  "give the report folder another name")
            return folder
        return value  # "any": passed on as written

    def model(self, step: Step, where: str, name: str, value: str, line: int) -> Ref | Path:
        if value.startswith("@"):
            target = value[1:]
            if target in self.models:
                return Ref(target)
            if target == step.name:
                raise self.err.at(line, f"{where}: {name} = {value!r} refers to the step itself",
                                  "refer to an earlier step")
            if target in self.earlier:
                raise self.err.at(line, f"{where}: {name} = {value!r}: step {target!r} "
                                  f"({self.earlier[target]}) writes no model",
                                  "refer to a freeze, transform or convert step")
            if target in self.later:
                raise self.err.at(line, f"{where}: {name} = {value!r} refers to a later step",
                                  "steps run in order; move that step up")
            close = _closest(target, self.models)
            hint = f"closest: @{close.split(': ')[1]}" if close else (
                f"earlier steps writing models: {', '.join('@' + m for m in self.models)}" if self.models
                else "no earlier step writes a model")
            raise self.err.at(line, f"{where}: {name} = {value!r}: no earlier step writing a model is named "
                              f"{target!r}", hint)
        path = self._resolve(value)

        try:
            detect_format(path)
        except UserError as exc:
            hint = f"{exc.hint}; relative paths are relative to the recipe's folder" if exc.hint else None
            why = exc.message.split(": ", 1)[-1]
            raise self.err.at(line, f"{where}: {name} = {value!r}: {why}", hint) from None
        return path

    def path(self, where: str, name: str, value: str, line: int, opt: Opt) -> Path | str:
        if value in opt.literals:
            return value
        if value.startswith("@"):
            if name == "quant_errors" and value[1:] in self.reports:
                return Ref(value[1:], "report")
            raise self.err.at(line, f"{where}: {name} = {value!r} is not a file",
                              "give a path" + (", or \"@NAME\" of a convert step with report = true"
                                               if name == "quant_errors" else ""))
        path = self._resolve(value)
        if _GLOB.search(value):
            if not glob.glob(str(path)):
                raise self.err.at(line, f"{where}: {name} = {value!r} matches no files",
                                  "relative paths are relative to the recipe's folder")
        elif not path.exists():
            raise self.err.at(line, f"{where}: {name} = {value!r} does not exist",
                              "check the path; relative paths are relative to the recipe's folder")
        return path

    def _resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base / p

    def check_step(self, step: Step, where: str, opts: dict[str, Any]) -> None:
        """Cross-option checks that need no model: input formats, transform specs, bench/transform needs."""
        for key in ("input", "a", "b", "models"):
            values = opts.get(key)
            for v in values if isinstance(values, list) else [values] if values is not None else []:
                fmt = self.models.get(v.step) if isinstance(v, Ref) else None
                if fmt is None and isinstance(v, Path):

                    fmt = detect_format(v)[0]
                if step.kind in ("freeze", "convert") and fmt is not None and runtime_of(fmt) == "litert":
                    raise self.err.at(step.line_of(key), f"{where}: {key} is a TFLite model",
                                      f"{step.kind} takes a checkpoint, SavedModel, Keras model or GraphDef")
                if step.kind == "transform" and fmt != "graphdef":
                    raise self.err.at(step.line_of(key), f"{where}: transform takes a frozen GraphDef, "
                                      f"and {key} is a {fmt} model", "freeze it first (a freeze step)")
        if step.kind == "transform":
            if not opts.get("transforms") and not opts.get("optimize"):
                raise self.err.at(step.line, f"{where}: no transforms",
                                  "add transforms = \"...\" or optimize = true")
            if opts.get("transforms"):

                line = step.line_of("transforms")
                try:
                    calls = parse_spec(opts["transforms"])
                except UserError as exc:
                    raise self.err.at(line, f"{where}: {exc.message}", exc.hint) from None
                for call in calls:
                    if call.name not in REGISTRY:
                        raise self.err.at(line, f"{where}: unknown transform {call.name!r}",
                                          _closest(call.name, REGISTRY) or "see `tfshrink transform --list`")
        if step.kind == "convert" and opts.get("report") and opts.get("quantize") != "int8":
            raise self.err.at(step.line_of("report"), f"{where}: report measures per-layer int8 error",
                              "add quantize = \"int8\" (with calibration), or drop report")
        if step.kind == "bench" and "runs" in opts and "min_seconds" in opts:
            raise self.err.at(step.line_of("min_seconds"), f"{where}: give runs or min_seconds, not both")
        if step.kind == "report" and "names" in opts and len(opts["names"]) != len(opts["models"]):
            raise self.err.at(step.line_of("names"), f"{where}: {len(opts['names'])} names for "
                              f"{len(opts['models'])} models", "give one name per model")


def parse_recipe(text: str, path: str | Path, display: str | None = None) -> Recipe:
    """Validate recipe `text` (read from `path`; relative paths in it are relative to its folder)."""
    path = Path(path)
    err = _Errors(display or str(path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = int(m.group(1)) if m else None
        raise err.at(line, f"not valid TOML: {re.sub(r' ?[(]at line.*[)]', '', msg)}",
                     "check the TOML syntax there") from None
    lines = _scan(text)
    for key in data:
        if key not in TOP_LEVEL:
            raise err.at(lines.top.get(key), f"unknown top-level key {key!r}",
                         _closest(key, TOP_LEVEL)
                         or f"allowed: {', '.join(TOP_LEVEL)}; steps go in [[step]] tables")
    for key in ("out", "title", "description"):
        if key in data and not isinstance(data[key], str):
            raise err.at(lines.top.get(key), f"{key} must be a string")
    raw_steps = data.get("step")
    if not raw_steps:
        raise err.at(None, "the recipe has no steps", "add [[step]] tables with kind = \"freeze\", ...")
    if not isinstance(raw_steps, list):
        raise err.at(lines.top.get("step"), "step must be an array of tables", "write each step as [[step]]")
    v = _Validator(path, err.display, lines)
    heads = [v.step(i, raw) for i, raw in enumerate(raw_steps)]
    seen: dict[str, Step] = {}
    for s in heads:
        if s.name in seen:
            first = seen[s.name]
            raise err.at(s.line, f"two steps named {s.name!r} (lines {first.line} and {s.line})",
                         "give each step its own name = \"...\"")
        seen[s.name] = s
    v.later = set(seen)
    steps = []
    for s, raw in zip(heads, raw_steps, strict=True):
        v.later.discard(s.name)
        options = v.options(s, raw)
        steps.append(Step(s.index, s.name, s.kind, s.line, options, s.lines))
        v.earlier[s.name] = s.kind
        if s.kind == "convert" and options.get("report"):
            v.reports.add(s.name)
        fmt = KINDS[s.kind].model
        if fmt is not None:
            v.models[s.name] = fmt
    out = path.parent / data["out"] if "out" in data else path.parent / f"{path.stem}-out"
    return Recipe(path, err.display, out, tuple(steps), data.get("title", ""))


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate the recipe file at `path` (a UserError, naming the line, says what is wrong)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such recipe file",
                        "give the path of a .toml recipe, e.g. examples/recipe.toml")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the recipe ({exc})", "give a UTF-8 .toml file") from None
    return parse_recipe(text, p, str(path))
