"""`tune()`: measure the int8 choices on this machine and write them to a plan file.

convert's int8 default is chosen by rules and never timed (tfshrink.conversion.rules). Where the
machine a model runs on is at hand, `tune` measures what the rules decided, one choice at a time,
in LiteRT with XNNPACK (1 thread by default), and keeps a change only when it is more than `MARGIN`
faster:

1. the small first conv (a float32 input of at most 4 channels, under 1,024 weights) in float
   against int8: on x86 without VNNI float won (digits CNN 4.8 vs 7.4 us); elsewhere it may not;
2. when it is float: the layers after it, one at a time, in dynamic-range form (float activations,
   int8 per-channel weights, as a dynamic-range model runs them; tfshrink.conversion.hybrid), with
   the ops between them, stopping at the first that is not faster, at most `MAX_LEADING` layers in
   all (digits CNN, no VNNI: conv2 2.1 us dynamic-range against 2.6 us int8);
3. the ops the rules kept float for XNNPACK (PRELU) back in int8 all together.

The models are timed in turns (`ROUNDS` rounds of at least `RUNS` runs and `MIN_TURN_S` seconds
each; the median of each model's per-round p50), so that all see the same machine load. The plan
(JSON) holds the choices (the tensors to keep float, the layers to give the dynamic-range form),
what the rules chose, every measurement, the timing settings and the machine (CPU model and flags,
core count, LiteRT and TensorFlow versions). `convert(..., plan=PATH)` applies it: the same bytes
every time, on any machine; a recipe's cache key includes the plan's hash.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfshrink import _tf
from tfshrink.benchmarking import latency_stats, measure
from tfshrink.benchmarking.runners import open_runner
from tfshrink.conversion.api import convert
from tfshrink.conversion.converter import ConvertOptions, quantize
from tfshrink.conversion.delegation import xnnpack_delegation
from tfshrink.conversion.hybrid import hybridize
from tfshrink.conversion.result import ConvertResult
from tfshrink.conversion.rules import (
    PLAN_FORMAT,
    RULES,
    TUNER,
    Int8Choice,
    check_target,
    fingerprint,
    named_ops,
    small_first_conv,
)
from tfshrink.errors import UserError, first_line
from tfshrink.fileio import atomic_write, check_output
from tfshrink.tflite.flatbuffer import read
from tfshrink.tflite.preprocess import Preprocess

MARGIN = 0.05  # keep a change only when it is more than 5% faster
ROUNDS = 3  # interleaved timing rounds ...
RUNS = 30  # ... of at least this many timed runs per model ...
MIN_TURN_S = 0.05  # ... and at least this long (a model of a few microseconds: thousands of runs)
MAX_LEADING = 3  # the first conv and at most two more layers in dynamic-range form
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass(frozen=True)
class TuneResult:
    """What tune measured and chose, and where the plan went."""

    plan: str
    target: str
    float_tensors: tuple[str, ...]
    dynamic_range: tuple[str, ...]
    rules_float: tuple[str, ...]
    measurements: tuple[dict[str, Any], ...]
    machine: dict[str, Any]
    partitions: int | None
    notes: tuple[str, ...]
    convert: ConvertResult | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"plan": self.plan, "target": self.target,
                "choices": {"float": list(self.float_tensors), "dynamic_range": list(self.dynamic_range)},
                "rules": {"float": list(self.rules_float)}, "measurements": list(self.measurements),
                "machine": self.machine, "xnnpack_partitions": self.partitions, "notes": list(self.notes)}


def machine_facts() -> dict[str, Any]:
    """The machine a plan was measured on: CPU model and the flags that decide int8 speed, cores,
    OS, and the runtime versions."""
    facts: dict[str, Any] = {"machine": platform.machine(), "system": platform.system(),
                             "release": platform.release(), "cpus": os.cpu_count(),
                             "python": platform.python_version()}
    cpu, flags = platform.processor() or "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and not cpu:
                cpu = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    facts["cpu"] = cpu or platform.processor() or "unknown"
    wanted = ("sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
              "asimd", "asimddp", "i8mm", "sve", "sve2")
    facts["cpu_flags"] = [f for f in wanted if f in flags]
    try:
        from importlib.metadata import version

        facts["litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 (the version is a fact for the record, not needed)
        facts["litert"] = "unknown"
    facts["tensorflow"] = _tf.tf().__version__
    return facts


def interleaved_latency(models: Sequence[bytes], rounds: int = ROUNDS, runs: int = RUNS,
                        threads: int = 1) -> list[float]:
    """Median p50 latency (ms) of each model in LiteRT (XNNPACK, `threads` threads), timed in
    turns (`rounds` rounds of at least `runs` runs and MIN_TURN_S seconds each) so that all see
    the same machine load."""
    with tempfile.TemporaryDirectory(prefix="tfshrink-tune-") as tmp:
        runners = []
        try:
            for i, data in enumerate(models):
                path = Path(tmp) / f"m{i}.tflite"
                path.write_bytes(data)
                with _tf.quiet_native():
                    runner = open_runner(path, threads=threads)
                runners.append(runner)
                runner.first_run()
                measure(runner.invoke, runs=3)  # warm-up
            p50s: list[list[float]] = [[] for _ in models]
            for _ in range(rounds):
                for i, runner in enumerate(runners):
                    p50s[i].append(latency_stats(measure(runner.invoke, runs=runs, min_seconds=MIN_TURN_S))["p50"])
        finally:
            for runner in runners:
                runner.close()
    return [statistics.median(p) for p in p50s]


def next_layer(data: bytes, after: str) -> tuple[str, str, list[tuple[str, str]]] | None:
    """The first CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED after the op whose output tensor is
    `after`, in the model's op order: (its output tensor, its op, [(output tensor, op)] of the ops
    between); None when there is none or a SOFTMAX comes first."""
    sub, ops = named_ops(data)
    names = [(sub.Tensors(op.Outputs(0)).Name() or b"").decode() for _, op in ops]
    if after not in names:
        return None
    start = names.index(after) + 1
    between: list[tuple[str, str]] = []
    for (name, op), tensor in zip(ops[start:], names[start:], strict=True):
        if name == "SOFTMAX" or op.OutputsLength() != 1:
            return None
        if name in WEIGHTED:
            return tensor, name, between
        between.append((tensor, name))
    return None


class _Tuner:
    """Handed to convert's int8 default (rules.TUNER): measures the choices on the calibrated model."""

    def __init__(self, threads: int, rounds: int, runs: int,
                 timer: Callable[[Sequence[bytes]], list[float]] | None = None) -> None:
        self.threads, self.rounds, self.runs = threads, rounds, runs
        self.timer = timer or (lambda models: interleaved_latency(models, self.rounds, self.runs, self.threads))
        self.measurements: list[dict[str, Any]] = []
        self.rules_float: tuple[str, ...] = ()
        self.float_tensors: tuple[str, ...] = ()
        self.dynamic_range: tuple[str, ...] = ()
        self.fingerprint = ""
        self.ops = 0
        self.called = False

    def __call__(self, calibrated: bytes, options: ConvertOptions, where: str, rules: Int8Choice) -> Int8Choice:
        self.called = True
        self.fingerprint = fingerprint(calibrated)
        self.ops = read(calibrated).Subgraphs(0).OperatorsLength()
        self.rules_float = tuple(rules.kept_float)
        floats = list(rules.kept_float)
        current = rules.data
        notes: list[str] = []

        def build(float_set: Sequence[str], hybrid: Sequence[str] = ()) -> bytes:
            data = quantize(calibrated, options, where, denylisted_nodes=list(float_set))
            return hybridize(data, hybrid).data if hybrid else data

        def trial(step: str, what: str, changed: Mapping[str, Any], candidate: bytes) -> bool:
            nonlocal current
            try:
                now_ms, cand_ms = self.timer([current, candidate])
            except Exception as exc:  # LiteRT here cannot run one of them: keep what is
                self.measurements.append({"step": step, "candidate": what, **changed, "error": first_line(exc)[:160]})
                return False
            kept = cand_ms < now_ms * (1.0 - MARGIN)
            self.measurements.append({"step": step, "candidate": what, **changed, "current_p50_ms": now_ms,
                                      "candidate_p50_ms": cand_ms, "kept": kept})
            notes.append(f"tune: {what}: p50 {cand_ms:.4g} ms vs {now_ms:.4g} ms -> "
                         + ("kept" if kept else f"not more than {MARGIN:.0%} faster, not kept"))
            if kept:
                current = candidate
            return kept

        conv = small_first_conv(calibrated) if options.input_type == "float32" else None
        if conv is not None:
            if conv.tensor in floats:
                alt = [t for t in floats if t != conv.tensor]
                if trial("first_conv", f"first conv {conv.tensor} in int8", {"int8": [conv.tensor]}, build(alt)):
                    floats = alt
            else:
                alt = [*floats, conv.tensor]
                if trial("first_conv", f"first conv {conv.tensor} in float", {"float": [conv.tensor]}, build(alt)):
                    floats = alt
        hybrid: list[str] = []
        if conv is not None and conv.tensor in floats:
            floats, hybrid = self._leading(calibrated, conv.tensor, floats, build, trial)
        islands = [t for _, t in rules.islands if t in floats]
        if islands:
            alt = [t for t in floats if t not in islands]
            try:
                candidate = build(alt, hybrid)
            except UserError:
                candidate = None
            if candidate is not None and trial("xnnpack_float_ops", f"{len(islands)} op(s) kept float for XNNPACK "
                                               "back in int8", {"int8": islands}, candidate):
                floats = alt
        self.float_tensors, self.dynamic_range = tuple(floats), tuple(hybrid)
        split = xnnpack_delegation(current)
        notes.append(f"tune: chose {len(floats)} float tensor(s) and {len(hybrid)} dynamic-range layer(s); "
                     f"{split.describe()}")
        return Int8Choice(current, rules.target, extra_float=tuple(floats), dynamic_range=tuple(hybrid),
                          delegation=split, notes=tuple(notes))

    def _leading(self, calibrated: bytes, conv: str, floats: list[str], build: Callable[..., bytes],
                 trial: Callable[..., bool]) -> tuple[list[str], list[str]]:
        """After a float first conv: the next layers in dynamic-range form, one at a time."""
        hybrid: list[str] = []
        last, steps = conv, 1
        while steps < MAX_LEADING:
            found = next_layer(calibrated, last)
            if found is None:
                break
            tensor, op, between = found
            newly = [t for t, _ in between if t not in floats]
            alt = [*floats, *newly, tensor]
            try:
                candidate = build(alt, [*hybrid, tensor])
            except UserError:  # the quantizer refused this split
                break
            steps += 1
            if not trial("leading_layer", f"{op} {tensor} in dynamic-range form"
                         + (f" with the {len(between)} op(s) before it" if between else ""),
                         {"dynamic_range": [tensor], "float": newly}, candidate):
                break
            floats, last = alt, tensor
            hybrid.append(tensor)
        return floats, hybrid


def tune(source: str | Path, plan: str | Path, *, calibration: str | Path, calibration_samples: int = 100,
         preprocess: str | Preprocess | None = None, input_type: str | None = None, output_type: str | None = None,
         input_shapes: Mapping[str, Sequence[int]] | Sequence[str] | None = None,
         inputs: Sequence[str] | str | None = None, outputs: Sequence[str] | str | None = None,
         allow_custom_ops: bool = False, select_tf_ops: bool = False, signature: str | None = None,
         tags: str | None = None, binds: Mapping[str, Any] | Sequence[str] | None = None, seed: int = 0,
         activation_ranges: str = "mse", target: str = "cpu", threads: int = 1, rounds: int = ROUNDS,
         runs: int = RUNS, progress: Callable[[str, int, int], None] | None = None) -> TuneResult:
    """Measure the int8 default's choices for `source` on this machine (LiteRT, XNNPACK, `threads`
    threads) and write them to the JSON file `plan`, which `convert(..., plan=plan)` applies.
    Takes convert's options for the int8 model (the same ones must be given to convert); see the
    module docstring for what is measured. Raises UserError for bad input; nothing is written then."""

    if check_target(target) != "cpu":
        raise UserError(f"--target {target} has nothing to tune: every op is int8 where a kernel exists",
                        "tune is for --target cpu")
    if threads < 1 or rounds < 1 or runs < 1:
        raise UserError("--threads, --rounds and --runs must be at least 1", "e.g. --threads 1")
    plan_path = check_output(plan, [source])
    if plan_path.suffix.lower() == ".tflite":
        raise UserError(f"{plan_path}: a plan is JSON, not a model", f"name it {plan_path.stem}.json")
    tuner = _Tuner(threads, rounds, runs)
    token = TUNER.set(tuner)
    try:
        with tempfile.TemporaryDirectory(prefix="tfshrink-tune-") as tmp:
            result = convert(source, Path(tmp) / "tuned.tflite", quantize="int8", calibration=calibration,
                             calibration_samples=calibration_samples, preprocess=preprocess, input_type=input_type,
                             output_type=output_type, input_shapes=input_shapes, inputs=inputs, outputs=outputs,
                             allow_custom_ops=allow_custom_ops, select_tf_ops=select_tf_ops, signature=signature,
                             tags=tags, binds=binds, verify=False, seed=seed, activation_ranges=activation_ranges,
                             target="cpu", progress=progress)
    finally:
        TUNER.reset(token)
    if not tuner.called:
        raise UserError(f"{source}: its int8 is not chosen by tfshrink's rules (a quantization-aware trained "
                        "graph takes its ranges from training): nothing to tune", "convert it without --plan")
    machine = machine_facts()
    options = {"quantize": "int8", "input_type": result.defaults.get("input_type", input_type or "float32"),
               "output_type": result.defaults.get("output_type", output_type or "float32"),
               "activation_ranges": activation_ranges, "calibration": str(calibration),
               "calibration_samples": calibration_samples,
               "preprocess": result.preprocess.to_json() if result.preprocess else None}
    doc = {
        "format": "tfshrink-plan", "version": PLAN_FORMAT, "target": "cpu", "source": str(source),
        "model": {"fingerprint": tuner.fingerprint, "ops": tuner.ops},
        "options": options,
        "rules": {"version": RULES, "float": list(tuner.rules_float)},
        "choices": {"float": list(tuner.float_tensors), "dynamic_range": list(tuner.dynamic_range)},
        "measurements": tuner.measurements,
        "timing": {"runtime": "LiteRT with XNNPACK", "threads": threads, "rounds": rounds, "runs": runs,
                   "min_turn_s": MIN_TURN_S, "margin": MARGIN,
                   "statistic": "median over rounds of each model's p50, models timed in turns"},
        "machine": machine,
        "created": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
    }
    atomic_write(plan_path, (json.dumps(doc, indent=1) + "\n").encode())
    partitions = result.delegation.partitions if result.delegation is not None else None
    notes = tuple(n for n in result.notes if n.startswith("tune:"))
    return TuneResult(str(plan_path), "cpu", tuner.float_tensors, tuner.dynamic_range, tuner.rules_float,
                      tuple(tuner.measurements), machine, partitions, notes, result)
