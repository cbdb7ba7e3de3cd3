"""tfshrink's int8 for a target, chosen by rules: the same bytes on every machine, under any load.

Nothing here is timed. Each choice follows from the model's structure and from what the target
runtime's kernels cover, and each rule below says what measurement it stands on. Measuring on a
machine is a separate, explicit step (`tfshrink.conversion.tuning.tune` writes a plan file;
`convert(..., plan=PATH)` applies one, with the same bytes every time).

Targets (`convert(..., target=...)`, stored in the model's `tfshrink.target` metadata entry, which
`inspect` shows):

* ``cpu`` (the default): LiteRT on CPU with its default XNNPACK delegate. Every op int8 where that
  runs fastest, float where XNNPACK has no int8 kernel, so the model runs in one XNNPACK partition:
  1. **Output softmax in float.** XNNPACK has no int8 SOFTMAX: in an all-int8 classifier the
     softmax runs outside the delegate, which splits the graph in two, and its int8 output has
     steps of 1/256. Dequantizing the logits into a float softmax keeps one partition and gives
     probabilities as exact as float's (digits CNN: 3.5% faster, median over 6 processes;
     MobileNetV2: no change, 24 bytes smaller). Only with float32 outputs.
  2. **A small first conv in float.** The CONV_2D that reads a float32 model input of at most
     `MAX_CHANNELS` channels (gray, RGB, RGBA) with under `MIN_WEIGHTS` weights stays float, as a
     dynamic-range model keeps it. XNNPACK's int8 conv is slow for so few input channels, and
     the float conv reads the float input directly (no QUANTIZE of the input, no rounding of the
     pixels): measured faster in float on every model timed, on x86 with AVX2 (digits CNN 4.8
     vs 7.4 us with it int8; MobileNetV2 10.7 vs 12.7 ms, LiteRT 2.x, 1 thread) and the same on
     AVX-512 VNNI (ONet 63.5 vs 64.1 us). Its weights are under 1,024 numbers: the size does not
     change measurably.
  3. **Ops XNNPACK takes only in float stay float.** The int8 model is loaded in LiteRT with its
     XNNPACK delegate (tfshrink.conversion.delegation: counted, not timed); each op it leaves
     outside is tried in float (the quantizer wraps it in DEQUANTIZE / QUANTIZE, which XNNPACK
     runs), and kept float when XNNPACK then takes it; a layer whose weights a dynamic-range model
     stores in int8 (conv, fully-connected, ... with `MIN_WEIGHTS` or more) stays int8 rather
     than grow 4x (a PReLU's alphas stay float in a dynamic-range model too). In ai-edge-litert 2.3 that is PRELU (also
     RELU alone, MINIMUM, MAXIMUM and SOFTMAX). MTCNN's ONet, 5 PReLUs, 1 thread, AVX-512 VNNI:
     int8 PRELU splits it into 7 partitions, 540 us (float32 147 us, dynamic-range 68 us); float
     PReLUs between int8 convs give 1 partition, 64 us, and move the face probability on
     held-out crops no more than int8 PRELU does. Spelling PReLU in ops XNNPACK takes in int8
     (alpha*x + relu((1-alpha)*x): MUL, MUL with a fused RELU, ADD) also gives 1 partition but
     measured 100 us and twice the probability error (three requantizations instead of one), so
     the rule keeps the float op.
  Then convert reports the partition count, and says when the float model splits less than the
  int8 one (dynamic-range or float is then expected to be faster under these rules).
* ``int8-only``: integer-only hardware (Edge TPUs, NPUs, microcontrollers). Every op int8 where an
  int8 kernel exists, the output softmax too; float only in QUANTIZE / DEQUANTIZE at float32 I/O
  edges (--input-type/--output-type int8 or uint8 remove those). The same model as
  keep_float=["none"].

`keep_float` names, ``["auto"]`` and ``["none"]`` replace the rules (strict full int8 for "none").
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink.conversion.converter import ConvertOptions, quantize
from tfshrink.conversion.delegation import Delegation, xnnpack_delegation
from tfshrink.conversion.hybrid import MIN_WEIGHTS, hybridize
from tfshrink.conversion.modes import TARGETS
from tfshrink.errors import UserError
from tfshrink.tflite.flatbuffer import opcode_names, read
from tfshrink.tflite.metadata import TARGET_METADATA, tensor_names

DEFAULT_TARGET = "cpu"
RULES = 1  # the version of the rules above, stored in the model's metadata
MAX_CHANNELS = 4  # an image input: gray, RGB, RGBA
# Layers whose weights TFLite's dynamic-range quantizer stores in int8: rule 3 never makes them float.
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL",
            "EMBEDDING_LOOKUP", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "SVDF",
            "UNIDIRECTIONAL_SEQUENCE_RNN", "RNN")
PLAN_FORMAT = 1


@dataclass(frozen=True)
class FirstConv:
    """The conv reading a model input directly, with few channels and few weights."""

    tensor: str  # its output tensor's name (the quantizer's denylist key)
    channels: int
    weights: int


@dataclass(frozen=True)
class Int8Choice:
    """What the int8 default made: the bytes, the target, what stayed float and why (the output
    softmaxes, the small first conv, the ops XNNPACK takes only in float), the layers in
    dynamic-range form (a plan's), XNNPACK's split of the result, the notes; `plan` is the sha256
    of the plan applied (None: the rules)."""

    data: bytes
    target: str
    softmax: tuple[str, ...] = ()
    conv: FirstConv | None = None  # kept float
    islands: tuple[tuple[str, str], ...] = ()  # (op, tensor) kept float so that XNNPACK takes them
    extra_float: tuple[str, ...] = ()  # a plan's other float tensors
    dynamic_range: tuple[str, ...] = ()
    delegation: Delegation | None = None
    notes: tuple[str, ...] = ()
    plan: str | None = None

    @property
    def kept_float(self) -> list[str]:
        """The tensors left with float activations (the quantizer's denylist)."""
        conv = [self.conv.tensor] if self.conv else []
        return [*self.softmax, *conv, *(t for _, t in self.islands), *self.extra_float]

    def kept_ops(self, calibrated: bytes) -> dict[str, int]:
        """Op -> how many of them were left with float activations."""
        ops = dict((t, op) for op, t in tensor_names(calibrated))
        return dict(Counter(ops.get(t, "?") for t in self.kept_float))


def named_ops(data: bytes) -> tuple[Any, list[tuple[str, Any]]]:
    """(main subgraph, [(op name, operator)] in order) of a TFLite model."""
    model = read(data)
    sub = model.Subgraphs(0)
    codes = opcode_names(model)
    return sub, [(codes[op.OpcodeIndex()], op) for op in map(sub.Operators, range(sub.OperatorsLength()))]


def output_softmaxes(data: bytes) -> list[str]:
    """Output tensor names of the SOFTMAX ops of a TFLite model that give a model output, directly
    (a float or calibrated model) or through a DEQUANTIZE (an int8 model with float outputs)."""
    sub, ops = named_ops(data)
    outputs = {int(sub.Outputs(i)) for i in range(sub.OutputsLength())}
    outputs |= {int(op.Inputs(0)) for name, op in ops if name == "DEQUANTIZE" and int(op.Outputs(0)) in outputs}
    return [(sub.Tensors(op.Outputs(0)).Name() or b"").decode() for name, op in ops
            if name == "SOFTMAX" and int(op.Outputs(0)) in outputs]


def small_first_conv(data: bytes) -> FirstConv | None:
    """The CONV_2D of a TFLite model that reads a model input (directly, or through the QUANTIZE
    of an int8 model's float input) with at most `MAX_CHANNELS` channels and has fewer than
    `MIN_WEIGHTS` weights; None when there is none."""
    sub, ops = named_ops(data)
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


def constant_elements(data: bytes) -> dict[str, int]:
    """Output tensor name -> how many constant numbers (weights, alphas) the op producing it reads."""
    model = read(data)
    sub, ops = named_ops(data)
    out: dict[str, int] = {}
    for _, op in ops:
        if not op.OutputsLength():
            continue
        total = 0
        for k in range(op.InputsLength()):
            t = int(op.Inputs(k))
            if t < 0:
                continue
            tensor = sub.Tensors(t)
            buf = tensor.Buffer()
            if 0 < buf < model.BuffersLength() and model.Buffers(buf).DataLength() > 0:
                shape = tensor.ShapeAsNumpy()
                total += int(np.prod(shape)) if isinstance(shape, np.ndarray) else 1
        out[(sub.Tensors(op.Outputs(0)).Name() or b"").decode()] = total
    return out


def float_islands(calibrated: bytes, options: ConvertOptions, where: str, denied: Sequence[str],
                  data: bytes | None = None) -> tuple[bytes, tuple[tuple[str, str], ...], Delegation]:
    """Rule 3: quantize with `denied` in float (or take `data`, already that), load it with
    XNNPACK, and leave in float each op XNNPACK left outside that it takes once float, unless it
    is a layer whose weights a dynamic-range model stores in int8 (`WEIGHTED`, `MIN_WEIGHTS` or
    more): those would grow 4x, so they stay int8 and the partition count says so. Returns (the model, the (op, tensor) kept float for this,
    XNNPACK's split of the model)."""
    if data is None:
        data = quantize(calibrated, options, where, denylisted_nodes=denied)
    split = xnnpack_delegation(data)
    if split.partitions is None or not split.outside:
        return data, (), split
    known = {t for _, t in tensor_names(calibrated)}
    weights = constant_elements(data)
    candidates = tuple((op, t) for op, t in split.outside
                       if op not in ("QUANTIZE", "DEQUANTIZE") and t in known and t not in denied
                       and not (op in WEIGHTED and weights.get(t, 0) >= MIN_WEIGHTS))
    if not candidates:
        return data, (), split
    try:
        trial = quantize(calibrated, options, where, denylisted_nodes=[*denied, *(t for _, t in candidates)])
    except UserError:  # the quantizer refused this split: stay all int8
        return data, (), split
    trial_split = xnnpack_delegation(trial)
    still = {t for _, t in trial_split.outside}
    taken = tuple(c for c in candidates if c[1] not in still)
    if not taken:
        return data, (), split
    if len(taken) < len(candidates):  # the rest gains nothing in float: back to int8
        trial = quantize(calibrated, options, where, denylisted_nodes=[*denied, *(t for _, t in taken)])
        trial_split = xnnpack_delegation(trial)
    if trial_split.partitions is None or (trial_split.partitions, len(trial_split.outside)) >= \
            (split.partitions, len(split.outside)):
        return data, (), split
    return trial, taken, trial_split


def rules_int8(calibrated: bytes, options: ConvertOptions, where: str, target: str) -> Int8Choice:
    """The int8 model of `target` by the rules of the module docstring, quantized from one
    calibrated model (tfshrink.conversion.converter.calibrate)."""
    if target == "int8-only":
        data = quantize(calibrated, options, where)
        split = xnnpack_delegation(data)
        note = ("target int8-only: every op int8 where an int8 kernel exists, the output softmax too "
                "(--target cpu for LiteRT with XNNPACK)")
        slower = _split_note(calibrated, split)
        notes = (note, f"target int8-only: on CPU, {slower}") if slower else (note,)
        return Int8Choice(data, target, delegation=split, notes=notes)
    notes: list[str] = []
    softmax = tuple(output_softmaxes(calibrated)) if options.output_type == "float32" else ()
    if softmax:
        notes.append(f"target cpu: the output softmax ({', '.join(softmax)}) stays float: XNNPACK has no int8 "
                     "SOFTMAX, so an int8 one runs outside the delegate and its probabilities come in steps of "
                     "1/256; the int8 logits are dequantized into a float softmax instead (--target int8-only "
                     "makes it int8 too)")
    conv = small_first_conv(calibrated) if options.input_type == "float32" else None
    if conv is not None:
        notes.append(f"target cpu: the first conv ({conv.tensor}: CONV_2D on a {conv.channels}-channel input, "
                     f"{conv.weights} weights) stays float, as dynamic-range quantization keeps it: XNNPACK's int8 "
                     "conv is slow for so few input channels, and the float conv reads the input unrounded "
                     "(rule, not timed: `tfshrink tune` measures it on a machine)")
    denied = [*softmax, *([conv.tensor] if conv else [])]
    data, islands, split = float_islands(calibrated, options, where, denied)
    if islands:
        ops = ", ".join(f"{op} x{n}" for op, n in Counter(op for op, _ in islands).items())
        notes.append(f"target cpu: {ops} stay float between int8 ops (DEQUANTIZE/QUANTIZE around them): XNNPACK "
                     "has no int8 kernel for them, so in int8 they run outside the delegate and split the model; "
                     "in float XNNPACK takes them")
    slower = _split_note(calibrated, split)
    if slower:
        notes.append(f"target cpu: {slower}")
    return Int8Choice(data, "cpu", softmax, conv, islands, delegation=split, notes=tuple(notes))


def _split_note(calibrated: bytes, split: Delegation) -> str:
    """When XNNPACK splits the int8 model more than the float one: say that dynamic-range or float
    is expected to be faster (every partition boundary costs a copy and a switch of kernels)."""
    if split.partitions is None or split.whole:
        return ""
    float_split = xnnpack_delegation(calibrated)
    if float_split.partitions is None or float_split.partitions >= split.partitions:
        return ""
    return (f"the int8 model runs in {split.describe()}, the float model in {float_split.partitions}: "
            "dynamic-range (--quantize dynamic) or float32 is expected to be faster for this model on CPU "
            "(rule: fewer XNNPACK partitions; `tfshrink tune` / `tfshrink bench` measure it)")


# ---- plans (written by tfshrink.conversion.tuning, applied by convert(plan=...)) ------------------
@dataclass(frozen=True)
class Plan:
    """A tune plan: the tensors to keep float and to give the dynamic-range form, for one model
    (its `fingerprint`) and target; `sha256` of the file it was read from."""

    target: str
    float_tensors: tuple[str, ...]
    dynamic_range: tuple[str, ...]
    fingerprint: str
    sha256: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)


def fingerprint(calibrated: bytes) -> str:
    """sha256 of a calibrated model's ops and tensor names in order (not its ranges or weights):
    which model a plan was made for."""
    text = "\n".join(f"{op} {name}" for op, name in tensor_names(calibrated))
    return hashlib.sha256(text.encode()).hexdigest()


def read_plan(path: str | Path) -> Plan:
    """A plan file, checked; a UserError says what is wrong with it."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--plan {p}: no such file", "write one with `tfshrink tune`")
    raw = p.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8"))
        if doc.get("format") != "tfshrink-plan" or int(doc.get("version", 0)) != PLAN_FORMAT:
            raise ValueError("not a tfshrink plan of version 1")
        choices = doc["choices"]
        plan = Plan(str(doc["target"]), tuple(str(t) for t in choices.get("float", [])),
                    tuple(str(t) for t in choices.get("dynamic_range", [])), str(doc["model"]["fingerprint"]),
                    hashlib.sha256(raw).hexdigest(), str(p), dict(doc.get("options", {})),
                    dict(doc.get("machine", {})))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise UserError(f"--plan {p}: not a tfshrink plan ({exc})", "write one with `tfshrink tune`") from None
    if plan.target not in TARGETS:
        raise UserError(f"--plan {p}: unknown target {plan.target!r}", f"targets: {', '.join(TARGETS)}")
    return plan


def planned_int8(calibrated: bytes, options: ConvertOptions, where: str, plan: Plan) -> Int8Choice:
    """The int8 model a plan describes: its float tensors denylisted, its dynamic-range layers
    given int8 weights. The plan must be for this model (the same ops and tensor names)."""
    known = {t for _, t in tensor_names(calibrated)}
    missing = [t for t in (*plan.float_tensors, *plan.dynamic_range) if t not in known]
    if plan.fingerprint != fingerprint(calibrated) or missing:
        raise UserError(f"--plan {plan.path} was made for another model"
                        + (f" (it names {', '.join(missing[:3])}, which this one does not have)" if missing else
                           " (its ops or tensor names differ)"),
                        "run `tfshrink tune` on this model with the same options")
    denied = [*plan.float_tensors, *plan.dynamic_range]
    data = quantize(calibrated, options, where, denylisted_nodes=denied)
    hybrid: tuple[str, ...] = ()
    if plan.dynamic_range:
        made = hybridize(data, plan.dynamic_range)
        data, hybrid = made.data, made.layers
    split = xnnpack_delegation(data)
    where_made = ", ".join(str(plan.machine[k]) for k in ("cpu", "machine") if plan.machine.get(k))
    note = (f"plan {plan.path} (sha256 {plan.sha256[:12]}, tuned on {where_made or 'an unnamed machine'}): "
            f"{len(plan.float_tensors)} tensor(s) float, {len(hybrid)} layer(s) in dynamic-range form; "
            f"{split.describe()}")
    return Int8Choice(data, plan.target, extra_float=tuple(t for t in denied if t not in hybrid),
                      dynamic_range=tuple(hybrid), delegation=split, notes=(note,), plan=plan.sha256)


# tune() sets this while it converts: the int8 default then hands its calibrated model and rule
# choice to the tuner, which measures candidates. Plain convert never sets it: nothing is timed.
Tuner = Callable[[bytes, ConvertOptions, str, Int8Choice], Int8Choice]
TUNER: ContextVar[Tuner | None] = ContextVar("tfshrink_tuner", default=None)


def target_entry(target: str, quantize_mode: str, plan: str | None) -> dict[str, bytes]:
    """The metadata entry (tfshrink.tflite.metadata.TARGET_METADATA) that says which target and
    rules (or plan) made the file."""
    doc = {"target": target, "quantize": quantize_mode, "rules": RULES, "plan_sha256": plan}
    return {TARGET_METADATA: json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()}


def check_target(target: str | None) -> str:
    name = (target or DEFAULT_TARGET).lower()
    if name not in TARGETS:
        raise UserError(f"--target {target} is not one of {', '.join(TARGETS)}", "e.g. --target cpu")
    return name
