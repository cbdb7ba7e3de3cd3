"""Running a recipe's independent steps at once, on Ray (`tfshrink run --workers N` or `--ray ADDRESS`).

The runner works in waves: every step whose inputs are ready (no "@step" it reads is still to run)
is keyed and looked up in the cache by the driver, and the steps to run go out together as Ray
tasks. Each task calls the step's API function and writes its artifact into the output folder,
which every worker must see (shared storage on a cluster); the driver records the cache entries and
the summary, so results and cache are the same as a serial run's.

Latency under contention is meaningless, so bench steps never run at the same time on one node:
they ask for one unit of the `tfshrink_bench` resource, which a local cluster has once (a cluster
node opts in with `ray start --resources='{"tfshrink_bench": 1}'`). On a cluster without it, bench
steps run in the driver, one at a time.

Ray is an optional extra (`pip install tfshrink[distributed]`), imported only here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfshrink.commands import COMMANDS, resolve
from tfshrink.errors import CheckFailed, TfshrinkError, UserError
from tfshrink.fileio import atomic_write
from tfshrink.graph import io_ops, shapes

__all__ = ["BENCH_RESOURCE", "Call", "Outcome", "RayPool", "call_outcome", "execute_step", "finish_shards"]

BENCH_RESOURCE = "tfshrink_bench"

Outcome = Any  # (figures, check passed), a shard's result object, or the exception the call raised
Call = tuple[str, list[Any], dict[str, Any], Mapping[str, Any], Path]  # kind, args, kwargs, options, output


def execute_step(kind: str, args: list[Any], kw: dict[str, Any], options: Mapping[str, Any],
                 output: Path) -> Any:
    """Run one step's API call, as its command declares it: (the figures the summary records,
    whether its check passed); for a call on one shard of the step's data (`kw` has "shard"), its
    result object, which the driver merges with the other shards' (`finish_shards`). The same in
    the driver (serial runs) and in a Ray worker."""
    result = COMMANDS[kind].function()(*args, **kw)
    if "shard" in kw:
        return result
    return finish_result(kind, result, options, output)


def finish_result(kind: str, result: Any, options: Mapping[str, Any], output: Path) -> tuple[dict[str, Any], bool]:
    """A step's result as the summary records it: its JSON artifact written (verify, bench), its
    figures, and whether its check passed."""
    import json

    command = COMMANDS[kind]
    assert command.recipe is not None
    if command.recipe.writes_json:
        atomic_write(output, (json.dumps(result.to_json(), indent=2) + "\n").encode())
    passed = True if command.check is None else bool(getattr(result, command.check))
    return command.recipe.figures(result, options), passed


def finish_shards(kind: str, outcomes: list[Any], options: Mapping[str, Any], output: Path) -> Outcome:
    """The shards' results merged in shard order (the declared merge function), then finished as
    one result; the first shard's error when one failed."""
    failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
    if failed is not None:
        return failed
    kind_spec = COMMANDS[kind].recipe
    assert kind_spec is not None and kind_spec.merge is not None
    try:
        return finish_result(kind, resolve(kind_spec.merge)(outcomes), options, output)
    except BaseException as exc:  # raised again by the runner, after the summary is written
        return exc


def call_outcome(call: Call) -> Outcome:
    """`execute_step` on `call` in this process, with what it raised as the outcome (the runner
    raises it again once the summary is written)."""
    try:
        return execute_step(*call)
    except BaseException as exc:
        return exc


def _task(kind: str, args: list[Any], kw: dict[str, Any], options: Mapping[str, Any], output: str,
          settings: dict[str, Any]) -> tuple[str, Any]:
    """A Ray worker's side: the driver's process-wide settings, then the step. Errors come back as
    values (their kind, message and hint) so the driver raises the same error a serial run would."""
    io_ops.allow_io_ops(settings["allow_io_ops"])
    shapes.set_memory_limit(settings["max_memory"])
    try:
        return "ok", execute_step(kind, args, kw, options, Path(output))
    except TfshrinkError as exc:
        return "error", (type(exc).__name__, exc.message, exc.hint)
    except Exception as exc:  # reported by the driver as the step's failure
        return "error", ("Exception", f"{type(exc).__name__}: {exc}", None)


def _rebuild(error: tuple[str, str, str | None]) -> BaseException:
    name, message, hint = error
    kinds: dict[str, type[TfshrinkError]] = {"UserError": UserError, "CheckFailed": CheckFailed}
    if name in kinds:
        return kinds[name](message, hint)
    if name == "Exception":
        return RuntimeError(message)
    return TfshrinkError(message, hint)


class RayPool:
    """Ray, started for this run (`workers` local CPUs) or joined (`address`)."""

    def __init__(self, workers: int | None = None, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise UserError("--workers and --ray need Ray, which is not installed",
                            "pip install 'tfshrink[distributed]'") from None
        if workers is not None and workers < 1:
            raise UserError(f"--workers must be at least 1, not {workers}", "e.g. --workers 2")
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "configure_logging": False}
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=workers, resources={BENCH_RESOURCE: 1}, **options)
        self.bench_on_workers = ray.cluster_resources().get(BENCH_RESOURCE, 0) >= 1
        self.remote = ray.remote(_task)
        self.settings = {"allow_io_ops": io_ops.io_ops_allowed(), "max_memory": shapes.memory_limit()}

    def run(self, jobs: list[Call]) -> list[Outcome]:
        """Run the jobs (kind, args, kwargs, options, output) at once; their outcomes, in order."""
        futures: list[Any] = []  # None: a bench step the driver runs (no node offers the resource)
        for kind, args, kw, options, output in jobs:
            if kind == "bench" and not self.bench_on_workers:
                futures.append(None)
                continue
            remote = self.remote.options(resources={BENCH_RESOURCE: 1}) if kind == "bench" else self.remote
            futures.append(remote.remote(kind, args, kw, dict(options), str(output), self.settings))
        outcomes: list[Outcome] = []
        for call, future in zip(jobs, futures, strict=True):
            if future is None:
                outcomes.append(call_outcome(call))
                continue
            try:
                status, value = self.ray.get(future)
            except Exception as exc:  # the worker died (out of memory, killed): the step failed
                outcomes.append(RuntimeError(f"the Ray worker running it failed: {type(exc).__name__}"))
                continue
            outcomes.append(value if status == "ok" else _rebuild(value))
        return outcomes

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
