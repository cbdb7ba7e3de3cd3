"""Run a validated recipe: each step in order, its artifact in the output folder, cached by content."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfshrink import __version__
from tfshrink.commands import COMMANDS
from tfshrink.errors import CheckFailed, TfshrinkError, UserError
from tfshrink.fileio import atomic_write
from tfshrink.recipe.cache import (
    CACHE_DIR,
    cache_key,
    content_hash,
    load_entry,
    recorded_outputs,
    store_entry,
)
from tfshrink.recipe.parallel import Call, Outcome, RayPool, call_outcome, finish_shards
from tfshrink.recipe.parse import Recipe, Ref, Step, load_recipe
from tfshrink.recipe.schema import KINDS, kind_options
from tfshrink.reporting.compare import default_names

__all__ = ["SUMMARY", "RunResult", "StepRecord", "run_recipe"]

SUMMARY = "summary.json"
CACHE_FORMAT = 1


@dataclass
class StepRecord:
    """What happened to one step. status: ok, cached, failed or not run."""

    name: str
    kind: str
    line: int
    inputs: dict[str, Any] = field(default_factory=dict)
    output: str | None = None  # the artifact, relative to the output folder
    status: str = "not run"
    duration_s: float = 0.0
    numbers: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def cached(self) -> bool:
        return self.status == "cached"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "line": self.line, "inputs": self.inputs,
                "output": self.output, "status": self.status, "cached": self.cached,
                "duration_s": round(self.duration_s, 3), "numbers": self.numbers, "error": self.error}


@dataclass
class RunResult:
    """A recipe run: the output folder, every step's record and the summary file."""

    recipe: str
    out: Path
    steps: list[StepRecord]
    duration_s: float

    @property
    def summary_path(self) -> Path:
        return self.out / SUMMARY

    @property
    def passed(self) -> bool:
        return all(s.status in ("ok", "cached") for s in self.steps)

    def to_json(self) -> dict[str, Any]:

        return {"recipe": self.recipe, "out": str(self.out), "tfshrink": __version__, "passed": self.passed,
                "duration_s": round(self.duration_s, 3), "ran": sum(s.status == "ok" for s in self.steps),
                "cached": sum(s.cached for s in self.steps), "steps": [s.to_json() for s in self.steps]}


OnStep = Callable[[StepRecord, str], None]  # (record, "start" | "done")


def _output_name(step: Step) -> str:
    ext = KINDS[step.kind].ext
    if step.kind in ("freeze", "transform") and step.options.get("text"):
        ext = ".pbtxt"
    return step.name + ext


def _shown(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


class _Runner:
    def __init__(self, recipe: Recipe, out: Path, force: bool, on_step: OnStep | None, pool: RayPool | None = None):
        self.pool = pool
        self.recipe = recipe
        self.out = out
        self.force = force
        self.on_step = on_step
        self.outputs: dict[str, Path] = {}  # step name -> the model it wrote
        self.reports: dict[str, Path] = {}  # convert step name -> its per-layer report folder

    def resolve(self, value: Any) -> Any:
        """Recipe values to API values: Refs and Paths to path strings, lists element-wise."""
        if isinstance(value, Ref):
            return str((self.reports if value.what == "report" else self.outputs)[value.step])
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def fingerprint(self, value: Any) -> Any:
        """Recipe values for the cache key: files by the hash of their contents."""
        if isinstance(value, Ref | Path):
            return {"sha256": content_hash(self.resolve(value))}
        if isinstance(value, list):
            return [self.fingerprint(v) for v in value]
        if isinstance(value, dict):
            return {str(k): self.fingerprint(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return list(value)
        return value

    def shown_inputs(self, step: Step) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in step.options.items():
            items = value if isinstance(value, list) else [value]
            if not any(isinstance(v, Ref | Path) for v in items):
                continue
            base = self.recipe.path.parent
            shown = [(f"@{v.step}" + (" (report)" if v.what == "report" else "")) if isinstance(v, Ref)
                     else _shown(v, base) for v in items]
            out[key] = shown if isinstance(value, list) else shown[0]
        return out

    def api_kwargs(self, step: Step) -> dict[str, Any]:
        known = kind_options(step.kind)
        kwargs: dict[str, Any] = {}
        for key, value in step.options.items():
            opt = known[key]
            if opt.runner:
                continue
            if opt.type == "outdir":
                value = None if value is None else str(self.out / value)
            kwargs[opt.api_name(key)] = (not value) if opt.invert else self.resolve(value)
        return kwargs

    def run(self) -> RunResult:
        """Run the steps in waves (see tfshrink.recipe.parallel): serially one step a wave, with a
        pool every step whose inputs are ready. The first failure (in recipe order) stops the run
        once its wave is done; the summary is written either way."""
        records = {s.name: StepRecord(s.name, s.kind, s.line) for s in self.recipe.steps}
        start = time.perf_counter()
        failed: list[tuple[StepRecord, BaseException]] = []
        pending = list(self.recipe.steps)
        while pending and not failed:
            wave = self.ready(pending) if self.pool is not None else pending[:1]
            pending = [s for s in pending if s not in wave]
            jobs: list[_Job] = []
            for step in wave:
                record = records[step.name]
                try:
                    job = self.begin(step, record)
                except BaseException as exc:  # recorded in the summary, then raised again
                    failed.append(_failed(record, exc))
                    self.done(record)
                    break
                if job is None:
                    self.done(record)
                else:
                    jobs.append(job)
            calls = [c for j in jobs for c in j.calls]
            outcomes = self.pool.run(calls) if self.pool is not None and len(calls) > 1 else [call_outcome(c) for c in calls]
            for job in jobs:
                mine, outcomes = outcomes[:len(job.calls)], outcomes[len(job.calls):]
                outcome = mine[0] if len(mine) == 1 else finish_shards(job.step.kind, mine, job.step.options, job.path)
                try:
                    self.finish(job, outcome)
                except BaseException as exc:
                    failed.append(_failed(job.record, exc))
                finally:
                    self.done(job.record)
        ordered = [records[s.name] for s in self.recipe.steps]
        result = RunResult(self.recipe.display, self.out, ordered, time.perf_counter() - start)
        atomic_write(result.summary_path, (json.dumps(result.to_json(), indent=2) + "\n").encode())
        if failed:
            record, failure = min(failed, key=lambda f: ordered.index(f[0]))
            if isinstance(failure, TfshrinkError):
                raise type(failure)(f"{self.recipe.display}:{record.line}: step {record.name!r} ({record.kind}): "
                                    f"{failure.message}", failure.hint) from failure
            raise failure
        return result

    def ready(self, pending: list[Step]) -> list[Step]:
        """The pending steps that read no pending step's output, in recipe order."""
        waiting = {s.name for s in pending}

        def refs(value: Any) -> list[str]:
            items = value if isinstance(value, list) else [value]
            return [v.step for v in items if isinstance(v, Ref)]

        return [s for s in pending if not any(r in waiting for v in s.options.values() for r in refs(v))]

    def done(self, record: StepRecord) -> None:
        if self.on_step is not None and record.status != "not run":
            self.on_step(record, "done")

    def begin(self, step: Step, record: StepRecord) -> _Job | None:
        """Key the step and look it up in the cache: None when it is cached (its record filled),
        else the job that runs it."""
        record.inputs = self.shown_inputs(step)
        output = _output_name(step)
        record.output = output
        key = cache_key({"format": CACHE_FORMAT, "tfshrink": __version__, "kind": step.kind, "output": output,
                         "options": {k: self.fingerprint(v) for k, v in sorted(step.options.items())}})
        entry = None if self.force else load_entry(self.out, key)
        if entry is not None:
            record.status = "cached"
            record.numbers = entry.get("numbers", {})
            self.remember(step)
            return None
        if self.on_step is not None:
            self.on_step(record, "start")
        path = self.out / output
        args, kwargs = self.call_arguments(step, path)
        shards = int(step.options.get("shards") or 1)
        if shards > 1 and COMMANDS[step.kind].recipe.merge:  # type: ignore[union-attr]
            calls = [(step.kind, args, {**kwargs, "shard": (i, shards)}, step.options, path) for i in range(shards)]
        else:
            calls = [(step.kind, args, kwargs, step.options, path)]
        return _Job(step, record, key, path, calls, time.perf_counter())

    def finish(self, job: _Job, outcome: Outcome) -> None:
        """Record a step that ran: its figures, its cache entry; raise what it raised, or
        CheckFailed for a failed verify (its numbers are in the summary, the step is not cached)."""
        job.record.duration_s = time.perf_counter() - job.t0
        if isinstance(outcome, BaseException):
            raise outcome
        numbers, passed = outcome
        job.record.numbers = numbers
        output = job.path.name
        if not passed:
            worst = numbers["max_abs_error"]
            raise CheckFailed(f"outputs differ beyond tolerance (max abs error {worst:.3g})",
                              f"see {output}; loosen atol/rtol in the recipe if that is expected")
        report_dir = _report_dir(job.step)
        store_entry(self.out, job.key, {"name": job.step.name, "kind": job.step.kind, "output": output,
                                        "extra": [report_dir] if report_dir else [], "numbers": numbers,
                                        "ran_in_s": round(job.record.duration_s, 3)})
        job.record.status = "ok"
        self.remember(job.step)

    def remember(self, step: Step) -> None:
        """Where later steps find this step's model and report."""
        if KINDS[step.kind].model is not None:
            self.outputs[step.name] = self.out / _output_name(step)
        report_dir = _report_dir(step)
        if report_dir:
            self.reports[step.name] = self.out / report_dir

    def call_arguments(self, step: Step, output: Path) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments of the step's API call, as its command declares."""
        kind = COMMANDS[step.kind].recipe
        assert kind is not None
        kw = self.api_kwargs(step)
        if step.kind == "report" and "names" not in kw:
            kw["names"] = _report_names(step.options["models"])
        # The runner names each artifact; kinds whose API takes no output (verify, bench) have it
        # written from their JSON result.
        args = [output if name == "output" else kw.pop(name) for name in kind.positional]
        return args, kw


@dataclass
class _Job:
    step: Step
    record: StepRecord
    key: str
    path: Path
    calls: list[Call]  # one, or one per shard of the step's data
    t0: float


def _failed(record: StepRecord, exc: BaseException) -> tuple[StepRecord, BaseException]:
    record.status = "failed"
    record.error = exc.one_line() if isinstance(exc, TfshrinkError) else f"{type(exc).__name__}: {exc}"
    return record, exc


def _report_dir(step: Step) -> str | None:
    """A convert step's per-layer report folder (relative to the output folder), if it writes one."""
    return step.options.get("report") if step.kind == "convert" else None


def _report_names(models: list[Any]) -> list[str]:

    files = default_names([m for m in models if isinstance(m, Path)])
    names, i = [], 0
    for m in models:
        if isinstance(m, Ref):
            names.append(m.step)
        else:
            names.append(files[i])
            i += 1
    for j, n in enumerate(names):  # the same file or step listed twice
        if names.count(n) > 1:
            names[j] = f"{n}#{j + 1}"
    return names


def _summary_outputs(out_dir: Path) -> set[str]:
    """The files the last run's summary.json lists (a failed step's output is written, not cached)."""
    try:
        summary = json.loads((out_dir / SUMMARY).read_text(encoding="utf-8"))
        return {str(s["output"]) for s in summary.get("steps", []) if isinstance(s, dict) and s.get("output")}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def _check_outputs(r: Recipe, out_dir: Path, force: bool) -> None:
    """Refuse, before any work, a step whose output would replace summary.json or a file that no
    earlier run of a recipe wrote into this folder (a user's own model, say); --force replaces the
    latter."""
    written = recorded_outputs(out_dir) | _summary_outputs(out_dir)
    outputs = {_output_name(s): s for s in r.steps}
    for step in r.steps:
        name = _output_name(step)
        where = f"{r.display}:{step.line}"
        report = _report_dir(step)
        if report and Path(report).parts[0] in outputs:
            raise UserError(f"{r.display}:{step.line_of('report')}: step {step.name!r}'s report folder {report!r} "
                            f"is step {outputs[Path(report).parts[0]].name!r}'s output", "give it another name")
        if name == SUMMARY:
            raise UserError(f"{where}: step {step.name!r} would write {SUMMARY}, which the run writes",
                            "give the step another name")
        target = out_dir / name
        if target.exists() and name not in written and not force:
            raise UserError(f"{where}: step {step.name!r} would replace {target}, which no recipe run wrote",
                            "rename the step, choose another folder with --out, or pass --force to replace it")


def run_recipe(recipe: str | Path | Recipe, *, out: str | Path | None = None, force: bool = False,
               workers: int | None = None, ray: str | None = None, on_step: OnStep | None = None) -> RunResult:
    """Validate (when given a path) and run a recipe; artifacts and summary.json go to `out` (default:
    the recipe's `out`, else RECIPE-out beside it). Steps whose inputs and options are unchanged are
    taken from the cache unless `force`. `on_step(record, "start" | "done")` follows the work.
    `workers` (a local Ray cluster of that many CPUs, started for the run) or `ray` (the address of
    an existing cluster) run independent steps at once (tfshrink.recipe.parallel); the artifacts,
    cache and summary figures are those of a serial run.

    Raises UserError for a bad recipe (nothing written) and, after writing summary.json, the error
    of a failing step (CheckFailed for a verify step whose outputs differ)."""
    r = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out_dir = Path(out) if out is not None else r.out
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: the output folder is a file", "give a folder with --out")
    inputs = {v.resolve() for s in r.steps for val in s.options.values()
              for v in (val if isinstance(val, list) else [val]) if isinstance(v, Path)}
    if out_dir.resolve() in inputs or any(i in out_dir.resolve().parents for i in inputs if i.is_dir()):
        raise UserError(f"{out_dir}: the output folder would be inside an input of the recipe",
                        "choose another folder with --out")
    if r.out != out_dir and not out_dir.parent.exists():
        raise UserError(f"{out_dir}: its parent folder does not exist", "create it first")
    if (out_dir / CACHE_DIR).exists() and not (out_dir / CACHE_DIR).is_dir():
        raise UserError(f"{out_dir / CACHE_DIR}: a file where the recipe cache folder goes",
                        "remove it, or choose another folder with --out")
    _check_outputs(r, out_dir, force)
    os.makedirs(out_dir, exist_ok=True)
    pool = RayPool(workers, ray) if workers is not None or ray is not None else None
    try:
        return _Runner(r, out_dir, force, on_step, pool).run()
    finally:
        if pool is not None:
            pool.close()
