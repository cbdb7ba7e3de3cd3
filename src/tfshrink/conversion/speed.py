"""tfshrink's default int8: the output softmax in float, and the first conv kept in float where
that measures faster; everything else int8.

XNNPACK has no int8 SOFTMAX: in an all-int8 classifier the softmax runs outside the delegate, which
splits the delegated graph in two, and its int8 output has steps of 1/256. Dequantizing the logits
and taking a float softmax keeps the whole model in one XNNPACK partition and gives probabilities as
exact as float's (digits CNN: 3.5% faster, median over 6 processes; MobileNetV2: no change, 24 bytes
smaller). So the default leaves a SOFTMAX that gives a float model output in float.

On x86 CPUs without VNNI, XNNPACK's int8 convolution is slower than its float one when a conv has
very few input channels: the first conv of an image model (1 to 4 channels: gray, RGB, RGBA). A
dynamic-range model keeps that conv in float anyway (its weights are under 1,024 elements), which
is why plain full int8 measured slower than dynamic there (digits CNN 7.4 vs 4.8 µs; MobileNetV2
12.7 vs 10.7 ms, LiteRT 2.x, 1 thread). So the int8 default converts both, times them in LiteRT
on this machine, and keeps the first conv in float only when that is more than `MARGIN` faster.
Both choices are said in convert's notes. `--keep-float none` (keep_float=("none",)) skips this:
strict full int8, every op that has an int8 kernel in int8.

When the float first conv won, the same reasoning may hold one layer further: XNNPACK's int8 conv
can also lose to its dynamic-range kernel on the small convs right after it (digits CNN, no VNNI:
conv2, 16->32 channels on a 4x4 map, 2.6 us int8 against 2.1 us dynamic-range). So the default then
times the next weighted layer (CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED), and the ops between,
in the form a dynamic-range model runs them: float activations, int8 per-channel weights
(tfshrink.conversion.hybrid). It keeps each step that is more than `MARGIN` faster and stops at
the first that is not, after at most `MAX_LEADING` layers in all: the rest stays int8.
"""

from __future__ import annotations

import statistics
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.benchmarking import latency_stats, measure
from tfshrink.benchmarking.runners import open_runner
from tfshrink.conversion.converter import ConvertOptions, calibrate, quantize
from tfshrink.conversion.hybrid import MIN_WEIGHTS, hybridize
from tfshrink.data.calibration import InputSpec
from tfshrink.errors import UserError
from tfshrink.tflite.flatbuffer import opcode_names, read

MARGIN = 0.05  # keep the first conv in float only when that is more than 5% faster
ROUNDS = 3  # interleaved timing rounds ...
RUNS = 30  # ... of at least this many timed runs per model ...
MIN_TURN_S = 0.05  # ... and at least this long (a model of a few microseconds: thousands of runs)
MAX_CHANNELS = 4  # an image input: gray, RGB, RGBA
MAX_LEADING = 3  # the first conv and at most two more layers in dynamic-range form
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass(frozen=True)
class FirstConv:
    """The conv reading a model input directly, with few channels and few weights."""

    tensor: str  # its output tensor's name (the quantizer's denylist key)
    channels: int
    weights: int


@dataclass(frozen=True)
class Leading:
    """One layer after the first conv, timed in dynamic-range form: its output tensor and op, the
    ops between it and the layers before (output tensor -> op), the latencies of the model without
    and with it, and whether it was kept."""

    tensor: str
    op: str
    between: tuple[tuple[str, str], ...]
    hybrid: bool  # its weights became int8 (False: under MIN_WEIGHTS, float as dynamic-range keeps them)
    before_ms: float
    after_ms: float
    kept: bool


@dataclass(frozen=True)
class Int8Choice:
    """What the int8 default chose: the bytes, the output softmaxes left in float, the small first
    conv (None: there is none) and whether it was kept in float, the latencies timed, the notes."""

    data: bytes
    softmax: tuple[str, ...]
    conv: FirstConv | None
    kept: bool
    int8_ms: float | None
    kept_ms: float | None
    notes: tuple[str, ...]
    leading: tuple[Leading, ...] = ()  # the layers after the first conv that were timed

    @property
    def kept_leading(self) -> list[Leading]:
        return [step for step in self.leading if step.kept]

    @property
    def kept_float(self) -> list[str]:
        """The tensors left with float activations (the quantizer's denylist)."""
        first = [self.conv.tensor] if self.kept and self.conv else []
        rest = [t for step in self.kept_leading for t in (*(b for b, _ in step.between), step.tensor)]
        return [*self.softmax, *first, *rest]

    @property
    def kept_ops(self) -> dict[str, int]:
        """Op -> how many of them were left with float activations."""
        return dict(Counter([*(["SOFTMAX"] * len(self.softmax)), *(["CONV_2D"] if self.kept and self.conv else []),
                             *(op for step in self.kept_leading for op in (*(o for _, o in step.between), step.op))]))


def _ops(data: bytes) -> tuple[Any, list[tuple[str, Any]]]:
    """(main subgraph, [(op name, operator)] in order) of a TFLite model."""

    model = read(data)
    sub = model.Subgraphs(0)
    codes = opcode_names(model)
    return sub, [(codes[op.OpcodeIndex()], op) for op in map(sub.Operators, range(sub.OperatorsLength()))]


def output_softmaxes(data: bytes) -> list[str]:
    """Output tensor names of the SOFTMAX ops of a TFLite model that give a model output, directly
    (a float or calibrated model) or through a DEQUANTIZE (an int8 model with float outputs)."""
    sub, ops = _ops(data)
    outputs = {int(sub.Outputs(i)) for i in range(sub.OutputsLength())}
    outputs |= {int(op.Inputs(0)) for name, op in ops if name == "DEQUANTIZE" and int(op.Outputs(0)) in outputs}
    return [(sub.Tensors(op.Outputs(0)).Name() or b"").decode() for name, op in ops
            if name == "SOFTMAX" and int(op.Outputs(0)) in outputs]


def small_first_conv(data: bytes) -> FirstConv | None:
    """The CONV_2D of a TFLite model that reads a model input (directly, or through the QUANTIZE
    of an int8 model's float input) with at most `MAX_CHANNELS` channels and has fewer than
    `MIN_WEIGHTS` weights; None when there is none."""
    sub, ops = _ops(data)
    inputs = {int(sub.Inputs(i)) for i in range(sub.InputsLength())}
    inputs |= {int(op.Outputs(0)) for name, op in ops if name == "QUANTIZE" and int(op.Inputs(0)) in inputs}
    for name, op in ops:
        if name != "CONV_2D" or op.InputsLength() < 2 or int(op.Inputs(0)) not in inputs:
            continue
        x = sub.Tensors(op.Inputs(0)).ShapeAsNumpy()
        w = sub.Tensors(op.Inputs(1)).ShapeAsNumpy()
        if not isinstance(x, np.ndarray) or not isinstance(w, np.ndarray) or not len(x):
            continue
        channels, weights = int(x[-1]), int(np.prod(w))
        if 0 < channels <= MAX_CHANNELS and weights < MIN_WEIGHTS:
            return FirstConv((sub.Tensors(op.Outputs(0)).Name() or b"").decode(), channels, weights)
    return None


def next_layer(data: bytes, after: str) -> tuple[str, str, list[tuple[str, str]]] | None:
    """The first CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED after the op whose output tensor is
    `after`, in the model's op order: (its output tensor, its op, [(output tensor, op)] of the ops
    between); None when there is none or a SOFTMAX comes first."""
    sub, ops = _ops(data)
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


def interleaved_latency(models: Sequence[bytes], rounds: int = ROUNDS, runs: int = RUNS) -> list[float]:
    """Median p50 latency (ms) of each model in LiteRT (XNNPACK, 1 thread), timed in turns
    (`rounds` rounds of at least `runs` runs and MIN_TURN_S seconds each) so that all see the
    same machine load."""

    with tempfile.TemporaryDirectory(prefix="tfshrink-int8-") as tmp:
        runners = []
        try:
            for i, data in enumerate(models):
                path = Path(tmp) / f"m{i}.tflite"
                path.write_bytes(data)
                with _tf.quiet_native():
                    runner = open_runner(path, threads=1)
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


def fastest_int8(graph_def: Any, specs: Sequence[InputSpec], outputs: Sequence[str], options: ConvertOptions,
                 samples: Sequence[dict[str, np.ndarray]], where: str,
                 progress: Callable[[int, int], None] | None = None) -> Int8Choice:
    """The int8 default, quantized from one calibration: its output softmaxes in float (float
    outputs only), then the small first conv in float too if that measures faster by more than
    `MARGIN`; all int8 when the model has neither."""
    notes: list[str] = []
    calibrated = calibrate(graph_def, specs, outputs, options, samples, where, progress, notes)
    softmax = tuple(output_softmaxes(calibrated)) if options.output_type == "float32" else ()
    base = quantize(calibrated, options, where, denylisted_nodes=softmax)
    if softmax:
        notes.append(f"int8 default: the output softmax ({', '.join(softmax)}) stays float: XNNPACK has no int8 "
                     "SOFTMAX, so an int8 one runs outside the delegate and its probabilities come in steps of "
                     "1/256; the int8 logits are dequantized into a float softmax instead (--keep-float none "
                     "makes it int8 too)")
    conv = small_first_conv(calibrated)
    if conv is None:
        return Int8Choice(base, softmax, None, False, None, None, tuple(notes))
    kept = quantize(calibrated, options, where, denylisted_nodes=[*softmax, conv.tensor])
    what = (f"the first conv ({conv.tensor}: CONV_2D on a {conv.channels}-channel input, {conv.weights} weights, "
            "as dynamic-range quantization keeps it)")
    rest = "int8 but the output softmax" if softmax else "all int8"
    try:
        int8_ms, kept_ms = interleaved_latency([base, kept])
    except Exception as exc:  # LiteRT here cannot run one of them (custom ops): int8 first conv
        notes.append(f"int8 default: {rest}; {what} was not timed in float ({str(exc).splitlines()[0][:120]})")
        return Int8Choice(base, softmax, conv, False, None, None, tuple(notes))
    timing = (f"LiteRT XNNPACK, 1 thread, median of {ROUNDS} interleaved rounds of >= {RUNS} runs and >= {MIN_TURN_S:g} s "
              "on this machine; "
              "--keep-float none skips this timing: all int8")
    if kept_ms < int8_ms * (1.0 - MARGIN):
        notes.append(f"int8 default: kept {what} in float, measured faster: p50 {kept_ms:.4g} ms vs "
                     f"{int8_ms:.4g} ms with it in int8 (XNNPACK's int8 conv is slow for so few input channels on "
                     f"CPUs without VNNI; {timing})")
        data, leading = _leading_layers(calibrated, options, where, softmax, conv, kept, notes)
        return Int8Choice(data, softmax, conv, True, int8_ms, kept_ms, tuple(notes), leading)
    notes.append(f"int8 default: {rest} (p50 {int8_ms:.4g} ms); keeping {what} in float measured "
                 f"{kept_ms:.4g} ms, not more than {MARGIN:.0%} faster ({timing})")
    return Int8Choice(base, softmax, conv, False, int8_ms, kept_ms, tuple(notes))


def _leading_layers(calibrated: bytes, options: ConvertOptions, where: str, softmax: tuple[str, ...],
                    conv: FirstConv, data: bytes, notes: list[str]) -> tuple[bytes, tuple[Leading, ...]]:
    """After the float first conv won: time the next layer in dynamic-range form, one layer at a
    time, keeping each that is more than MARGIN faster (at most MAX_LEADING layers in all)."""
    steps: list[Leading] = []
    denied = [*softmax, conv.tensor]
    last = conv.tensor
    while len(steps) < MAX_LEADING - 1:
        found = next_layer(calibrated, last)
        if found is None:
            break
        tensor, op, between = found
        trial = [*denied, *(t for t, _ in between), tensor]
        try:
            hybrid = hybridize(quantize(calibrated, options, where, denylisted_nodes=trial), [tensor])
        except UserError:  # the quantizer refused this split: the default is what was already timed
            break
        try:
            before_ms, after_ms = interleaved_latency([data, hybrid.data])
        except Exception:  # LiteRT here cannot run it: stay with what was timed
            break
        step = Leading(tensor, op, tuple(between), bool(hybrid.layers), before_ms, after_ms,
                       after_ms < before_ms * (1.0 - MARGIN))
        steps.append(step)
        form = "dynamic-range (float activations, int8 per-channel weights)" if step.hybrid else "float"
        passing = f" with the {len(between)} op(s) before it" if between else ""
        if not step.kept:
            notes.append(f"int8 default: {op} {tensor}{passing} in {form} measured p50 {after_ms:.4g} ms vs "
                         f"{before_ms:.4g} ms in int8, not more than {MARGIN:.0%} faster: it and the rest stay int8")
            break
        notes.append(f"int8 default: {op} {tensor}{passing} runs in {form}, as a dynamic-range model runs it: "
                     f"measured faster, p50 {after_ms:.4g} ms vs {before_ms:.4g} ms in int8 (XNNPACK's "
                     "dynamic-range kernel beats its int8 one on this small layer here)")
        data, denied, last = hybrid.data, trial, tensor
    return data, tuple(steps)
