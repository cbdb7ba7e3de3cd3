"""`tfshrink bench`: benchmark_model for every format, on pip TensorFlow and LiteRT.

``bench(path)`` loads a model, times it and returns a BenchResult. TensorFlow formats (GraphDef,
checkpoint, SavedModel, Keras) run as a frozen GraphDef in a tf.compat.v1.Session; TFLite runs in
the LiteRT interpreter, with its default XNNPACK delegate or without it (``xnnpack=False``, which
loads the model with ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``). Inputs are seeded random
values built once; a timed run is the runtime's run call alone (see tfshrink.benchmarking.runners).

Order of work: load (``init_ms``), the first run (``first_run_ms``), ``warmup`` untimed runs, the
timed runs, then (outside the timings) the optional profile and the FLOP count.

How many timed runs: ``runs=N`` runs exactly N; ``min_seconds=S`` runs until S seconds have passed
(at least once); both: until both are met; neither: at least 50 runs and at least 1 s, stopping
after 60 s (benchmark_model's defaults, capped).

JSON keys (``BenchResult.to_json()``, ``tfshrink bench --json``):

* ``path``, ``format`` (graphdef, checkpoint, savedmodel, keras, tflite), ``runtime`` ("tensorflow"
  or "litert"), ``runtime_version``
* ``threads``: the thread count asked for, or null for the runtime's default
* ``xnnpack``: true/false for TFLite (default delegate on or off), null for TensorFlow
* ``batch``: the batch the inputs carry; ``inputs``: [{name, dtype, shape}] as benched
* ``init_ms``: loading (and for non-GraphDef TF formats, freezing) until ready to run
* ``first_run_ms``: the first run, which includes one-time work (Grappler, XNNPACK weight packing)
* ``warmup``: untimed runs after the first; ``runs``: timed runs; ``seconds``: their total time
* ``latency_ms``: {min, p50, p90, p99, mean, std} over the timed runs, in milliseconds
  (percentiles interpolated linearly; std is the population standard deviation)
* ``throughput_per_s``: batch / mean latency (samples per second)
* ``model_bytes``: size on disk (the folder for a SavedModel, all of a checkpoint's files)
* ``peak_rss_bytes``: peak resident memory growth from before loading to the end of the timed runs
  (null when the platform cannot tell); ``peak_rss_method`` says how it was measured
* ``flops``: 2 x multiply-adds of Conv2D / DepthwiseConv2dNative / MatMul (TFLite: CONV_2D /
  DEPTHWISE_CONV_2D / FULLY_CONNECTED), benchmark_model --show_flops' convention; ``macs`` the
  multiply-adds; ``flops_by_op`` per op type; ``flops_ops_counted`` / ``flops_ops_unknown``
  (ops skipped because a shape was unknown). See tfshrink.benchmarking.flops.
* ``profile``: null unless asked; else {available, runs, total_node_ms, ops: [{name, op_type, ms,
  share}], by_op_type: [{op_type, ms, share, nodes}], note}. For TFLite ``available`` is false and
  ``note`` says why (ai-edge-litert's Python Interpreter exposes no op profiler).
* ``notes``: anything worth knowing about how the numbers were taken
"""

from __future__ import annotations

import array
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.benchmarking.flops import FlopCount
from tfshrink.benchmarking.memory import PeakRSS
from tfshrink.benchmarking.profile import Profile
from tfshrink.benchmarking.runners import Runner, open_runner
from tfshrink.errors import UserError
from tfshrink.fileio import disk_bytes
from tfshrink.model import TensorSpec, detect_format, runtime_of

__all__ = ["BenchResult", "bench", "bench_runner", "latency_stats", "measure", "open_runner"]

DEFAULT_WARMUP = 2
DEFAULT_RUNS = 50
DEFAULT_MIN_SECONDS = 1.0
DEFAULT_MAX_SECONDS = 60.0
PROFILE_RUNS = 10
PROFILE_MAX_SECONDS = 10.0
_PROGRESS_EVERY_NS = 100_000_000

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BenchResult:
    """What one benchmark measured (JSON keys in the module docstring)."""

    path: str
    format: str
    runtime: str
    runtime_version: str
    threads: int | None
    xnnpack: bool | None
    batch: int
    inputs: tuple[TensorSpec, ...]
    init_ms: float
    first_run_ms: float
    warmup: int
    runs: int
    seconds: float
    latency_ms: dict[str, float]
    throughput_per_s: float
    model_bytes: int
    peak_rss_bytes: int | None
    peak_rss_method: str
    flops: FlopCount
    profile: Profile | None = None
    notes: tuple[str, ...] = ()
    samples_ms: tuple[float, ...] = field(default=(), repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path, "format": self.format, "runtime": self.runtime,
            "runtime_version": self.runtime_version, "threads": self.threads, "xnnpack": self.xnnpack,
            "batch": self.batch,
            "inputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape or ())} for s in self.inputs],
            "init_ms": self.init_ms, "first_run_ms": self.first_run_ms, "warmup": self.warmup,
            "runs": self.runs, "seconds": self.seconds, "latency_ms": dict(self.latency_ms),
            "throughput_per_s": self.throughput_per_s, "model_bytes": self.model_bytes,
            "peak_rss_bytes": self.peak_rss_bytes, "peak_rss_method": self.peak_rss_method,
        }
        out.update(self.flops.to_json())
        out["profile"] = None if self.profile is None else self.profile.to_json()
        out["notes"] = list(self.notes)
        return out


def measure(invoke: Callable[[], Any], *, runs: int | None = None, min_seconds: float | None = None,
            progress: Progress | None = None, max_seconds: float = DEFAULT_MAX_SECONDS) -> Sequence[int]:
    """Call `invoke` repeatedly and return each call's wall time in nanoseconds.

    Stops as the module docstring says (`runs`, `min_seconds`, or the defaults). Only the call is
    inside the timed span; `progress(done, expected_total)` is called at most every 0.1 s. The
    times are kept in an int64 array (8 bytes a run, so that a fast model's many runs don't show
    up as the model's memory growth).
    """
    default = runs is None and min_seconds is None
    want_runs = DEFAULT_RUNS if default else (runs or 1)
    want_ns = (DEFAULT_MIN_SECONDS if default else (min_seconds or 0.0)) * 1e9
    cap_ns = max_seconds * 1e9 if default else math.inf
    clock = time.perf_counter_ns
    samples = array.array("q")
    append = samples.append
    start = clock()
    next_report = start + _PROGRESS_EVERY_NS
    while True:
        t0 = clock()
        invoke()
        t1 = clock()
        append(t1 - t0)
        elapsed = t1 - start
        n = len(samples)
        if (n >= want_runs and elapsed >= want_ns) or elapsed >= cap_ns:
            break
        if progress is not None and t1 >= next_report:
            next_report = t1 + _PROGRESS_EVERY_NS
            by_time = math.ceil(want_ns * n / elapsed) if want_ns and elapsed else 0
            total = max(want_runs, by_time, n)
            if default:
                total = min(total, max(n, math.ceil(cap_ns * n / max(elapsed, 1))))
            progress(n, total)
    if progress is not None:
        progress(len(samples), len(samples))
    return samples


def latency_stats(samples_ns: Sequence[int]) -> dict[str, float]:
    """min, p50, p90, p99, mean, std (population) of run times, in milliseconds."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"min": float(ms.min()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "mean": float(ms.mean()), "std": float(ms.std())}


def _check(runs: int | None, min_seconds: float | None, warmup: int, threads: int | None, batch: int) -> None:
    if runs is not None and min_seconds is not None:
        raise UserError("give --runs or --min-seconds, not both", "--runs N for a count, --min-seconds S for a time")
    if runs is not None and runs < 1:
        raise UserError(f"runs must be at least 1, not {runs}", "e.g. --runs 100")
    if min_seconds is not None and not min_seconds > 0:
        raise UserError(f"min_seconds must be positive, not {min_seconds}", "e.g. --min-seconds 2")
    if warmup < 0:
        raise UserError(f"warmup must be 0 or more, not {warmup}", "e.g. --warmup 2")
    if threads is not None and threads < 1:
        raise UserError(f"threads must be at least 1, not {threads}", "leave --threads out for the default")
    if batch < 1:
        raise UserError(f"batch must be at least 1, not {batch}", "e.g. --batch 8")


def bench(model_path: str | Path, *, runs: int | None = None, min_seconds: float | None = None,
          warmup: int = DEFAULT_WARMUP, threads: int | None = None, batch: int = 1,
          input_shapes: Mapping[str, Sequence[int]] | None = None, xnnpack: bool = True,
          profile: bool = False, binds: Mapping[str, Any] | Sequence[str] | None = None,
          signature: str | None = None, tags: str | None = None,
          progress: Progress | None = None) -> BenchResult:
    """Benchmark any supported model; see the module docstring for what is measured and how.

    `threads`: LiteRT's num_threads, or TensorFlow's intra- and inter-op pool sizes (for TF this
    takes effect when no TensorFlow device was created earlier in the process, as in the CLI).
    `batch` fills an unknown first input dim; `input_shapes` ({name: dims}) sets whole shapes.
    `binds` ({name: value} or ["is_training=false"]) replace placeholders of a TF model by
    constants before it is frozen, as `tfshrink freeze --bind` does.
    `progress(done, total)` is called during the timed runs.
    """
    _check(runs, min_seconds, warmup, threads, batch)
    fmt, path = detect_format(model_path)  # a missing or unknown file fails here, before any import
    if runtime_of(fmt) == "litert":
        import ai_edge_litert.interpreter  # noqa: F401  (imported before the memory baseline)
    else:
        if threads:
            import os

            os.environ.setdefault("TF_OVERRIDE_GLOBAL_THREADPOOL", "1")

        _tf.tf()
    memory = PeakRSS().start()
    runner = open_runner(path, threads=threads, batch=batch, input_shapes=input_shapes, xnnpack=xnnpack,
                         binds=binds, signature=signature, tags=tags)
    try:
        return bench_runner(runner, runs=runs, min_seconds=min_seconds, warmup=warmup, profile=profile,
                            progress=progress, memory=memory)
    finally:
        memory.stop()
        runner.close()


def bench_runner(runner: Runner, *, runs: int | None = None, min_seconds: float | None = None,
                 warmup: int = DEFAULT_WARMUP, profile: bool = False, progress: Progress | None = None,
                 memory: PeakRSS | None = None) -> BenchResult:
    """Benchmark an open runner (see `open_runner`): a timed first run, `warmup` untimed runs, the
    timed runs, then the optional profile and the FLOP count. `memory`, when given, is stopped
    after the timed runs. The runner stays open."""
    _check(runs, min_seconds, warmup, runner.threads, runner.batch)
    first_ms = runner.first_run()
    for _ in range(warmup):
        runner.invoke()
    samples = measure(runner.invoke, runs=runs, min_seconds=min_seconds, progress=progress)
    if memory is not None:
        memory.stop()
    prof = runner.profile(PROFILE_RUNS, PROFILE_MAX_SECONDS) if profile else None
    flops = runner.flops()
    stats = latency_stats(samples)
    notes = list(runner.notes)
    if flops.unknown:
        notes.append(f"FLOPs leave out {len(flops.unknown)} op(s) whose shapes are not known statically: "
                     + ", ".join(flops.unknown[:5]) + (" ..." if len(flops.unknown) > 5 else ""))
    return BenchResult(
        path=str(runner.path), format=runner.format, runtime=runner.runtime, runtime_version=runner.version,
        threads=runner.threads, xnnpack=runner.xnnpack, batch=runner.batch, inputs=tuple(runner.inputs),
        init_ms=runner.init_ms, first_run_ms=first_ms, warmup=warmup, runs=len(samples),
        seconds=sum(samples) / 1e9, latency_ms=stats,
        throughput_per_s=runner.batch / (stats["mean"] / 1e3) if stats["mean"] > 0 else math.inf,
        model_bytes=disk_bytes(runner.path),
        peak_rss_bytes=None if memory is None else memory.growth,
        peak_rss_method="not measured" if memory is None else memory.method, flops=flops,
        profile=prof, notes=tuple(notes), samples_ms=tuple(s / 1e6 for s in samples))
