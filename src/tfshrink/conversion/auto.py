"""--quantize auto: the smallest, fastest-by-rule model that meets an accuracy target on held-out
data, among int8, int8 with a few float layers, dynamic-range and float16; never timed.

Given a target (--min-cosine C and/or --max-top1-drop P; cosine 0.999 when neither is given) and
held-out data (--eval, else the held-out end of --calibration: tfshrink.conversion.heldout), it
converts and scores, against the float source on that data:

1. ``int8``: the target's int8 default (tfshrink.conversion.rules, weights rounded as convert
   rounds them);
2. ``int8 + float layers``: only when int8 misses the target, --keep-float auto's search from it
   (tfshrink.conversion.keep_auto: the worst layers in float, one at a time, within
   max_size_ratio (1.5) times int8's size and no more XNNPACK partitions);
3. ``dynamic``: dynamic-range (int8 weights, float activations);
4. ``float16``: float16 weights (float32 compute on CPU).

Among the candidates that meet the target it picks, in this order: the fewest XNNPACK partitions
(the rules' speed proxy: every partition boundary costs a copy and a switch to LiteRT's own
kernels, and a model XNNPACK takes whole runs on its fastest kernels; counted by loading the
model, not timed), then the fewest bytes, where a model with int8 activations counts as no larger
than one with float activations up to `INT8_SLACK` (1.03x: issue 15's decision that int8, with
its per-channel weight scales and int32 biases, may be up to 1.03x the dynamic-range file; its
kernels are XNNPACK's fastest: ONet int8 64 us, dynamic-range 68 us, one partition each, see
tfshrink.conversion.rules), then the order above. The result lists every candidate (size, partitions, score, whether it
met the target) and why the chosen one won; when none meets the target, convert raises
CheckFailed with that list and writes nothing. The same source, data and options choose the same
model on every machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tfshrink.conversion.accuracy import Score, Target, check_top1, float_reference, score, written
from tfshrink.conversion.check import unregistered_ops
from tfshrink.conversion.choices import int8_default, keep_float_auto, phase
from tfshrink.conversion.converter import Converted, ConvertOptions, convert_graph, refine_ranges
from tfshrink.conversion.delegation import Delegation, xnnpack_delegation
from tfshrink.conversion.heldout import CheckData
from tfshrink.conversion.keep_auto import MAX_GROWTH, AutoKeep
from tfshrink.conversion.keep_auto import note as keep_note
from tfshrink.conversion.layers import debug_layers
from tfshrink.data.calibration import Calibration, InputSpec
from tfshrink.errors import CheckFailed, UserError

ORDER = ("int8", "int8 + float layers", "dynamic", "float16")
INT8_SLACK = 1.03  # an int8-activation model up to this much larger still counts as the smaller


@dataclass
class Candidate:
    """One model --quantize auto tried."""

    name: str  # one of ORDER
    mode: str  # the --quantize mode that makes it
    bytes: int = 0
    partitions: int | None = None
    score: Score | None = None
    meets: bool = False
    skipped: str = ""  # why it was not made (int8 + float layers when int8 already meets the target)
    converted: Converted | None = field(default=None, repr=False)
    default_float: dict[str, int] = field(default_factory=dict)
    delegation: Delegation | None = None
    keep: tuple[str, ...] = ()  # tensors kept float (int8 + float layers)
    auto_keep: AutoKeep | None = None
    notes: list[str] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        if self.skipped:
            return f"{self.name}: not tried ({self.skipped})"
        parts = "?" if self.partitions is None else str(self.partitions)
        verdict = "meets" if self.meets else "misses"
        return (f"{self.name}: {self.bytes:,} bytes, {parts} XNNPACK partition(s), "
                f"{self.score.text() if self.score else '?'} ({verdict})")

    def rank(self) -> tuple[int, float, int]:
        size = self.bytes / INT8_SLACK if self.mode == "int8" else float(self.bytes)
        return (self.partitions if self.partitions is not None else 1 << 30, size, ORDER.index(self.name))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "quantize": self.mode, "bytes": self.bytes, "xnnpack_partitions": self.partitions,
                "score": self.score.to_json() if self.score else None, "meets_target": self.meets,
                "kept_float": list(self.keep), "skipped": self.skipped or None}


@dataclass
class AutoChoice:
    """What --quantize auto tried and chose, and why."""

    target: Target
    checked_on: str
    candidates: list[Candidate]
    chosen: Candidate
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target.to_json(), "checked_on": self.checked_on, "chosen": self.chosen.name,
                "quantize": self.chosen.mode, "reason": self.reason,
                "candidates": [c.to_json() for c in self.candidates]}


def _float_candidate(name: str, graph_def: Any, specs: list[InputSpec], outputs: Sequence[str],
                     options: ConvertOptions, where: str) -> Candidate:
    made = convert_graph(graph_def, specs, outputs, ConvertOptions(name, "float32", "float32", options.allow_custom_ops,
                                                                   options.select_tf_ops), None, where)
    made.data = written(made.data, specs, outputs)
    split = xnnpack_delegation(made.data)
    return Candidate(name, name, len(made.data), split.partitions, converted=made, delegation=split)


def choose(graph_def: Any, specs: list[InputSpec], outputs: Sequence[str], options: ConvertOptions,
           calib: Calibration, checked: CheckData, target: Target, where_path: Path, where: str,
           progress: Callable[[str, int, int], None] | None, growth: float = MAX_GROWTH) -> AutoChoice:
    """Make and score the candidates of the module doc; the choice, or CheckFailed."""
    missing, _ = unregistered_ops(graph_def)
    if missing:
        raise UserError(f"--quantize auto compares with the source, which TensorFlow cannot run "
                        f"({', '.join(missing)} has no kernel)", "choose the mode with --quantize")
    feeds = list(checked.feeds)
    reference = float_reference(graph_def, specs, outputs, feeds, where_path)
    check_top1(target, reference, outputs)

    def judged(candidate: Candidate) -> Candidate:
        assert candidate.converted is not None
        candidate.score = score(reference, candidate.converted.data, specs, outputs, feeds)
        candidate.meets = candidate.score.meets(target)
        return candidate

    int8 = Candidate("int8", "int8")
    int8.defaults = {"target": "cpu"}
    int8.converted, int8.default_float, int8.delegation = int8_default(
        graph_def, specs, outputs, options, calib, where, int8.notes, int8.defaults, progress, "cpu", None)
    int8.converted.data = written(int8.converted.data, specs, outputs)
    int8.bytes = len(int8.converted.data)
    int8.partitions = int8.delegation.partitions if int8.delegation is not None else None
    int8.keep = tuple(int8.converted.kept_float.get("default", []))
    candidates = [judged(int8)]
    mixed = Candidate("int8 + float layers", "int8")
    if int8.meets:
        mixed.skipped = "int8 already meets the target"
    else:
        debugged = debug_layers(graph_def, specs, outputs, options, calib.samples, where,
                                progress=phase(progress, "calibrating and measuring layers"))
        debugged = replace(debugged, calibrated=refine_ranges(debugged.calibrated, specs, calib.samples, options))
        said: list[str] = []
        chosen = keep_float_auto(debugged, graph_def, specs, outputs, options, calib, target, checked, where_path,
                                 where, said, progress, growth, reference)
        if not chosen.kept:
            mixed.skipped = "no layer could be kept in float within the budget: " + chosen.tried()
        else:
            mixed.auto_keep = chosen
            mixed.keep = (*chosen.base, *(k.tensor for k in chosen.kept))
            mixed.converted = Converted(chosen.data, kept_float={"default": list(chosen.base),
                                                                  "auto": [k.tensor for k in chosen.kept]})
            mixed.bytes, mixed.partitions = chosen.bytes, chosen.partitions
            mixed.score, mixed.meets = chosen.score, chosen.reached
            mixed.notes.extend([keep_note(chosen), *said])
    candidates.append(mixed)
    for name in ("dynamic", "float16"):
        candidates.append(judged(_float_candidate(name, graph_def, specs, outputs, options, where)))
    listed = "; ".join(c.text() for c in candidates)
    meeting = sorted((c for c in candidates if c.meets and not c.skipped), key=Candidate.rank)
    if not meeting:
        raise CheckFailed(f"--quantize auto: no candidate meets {target.describe()} on {checked.description}: "
                          f"{listed}; nothing written",
                          "lower the target (--min-cosine / --max-top1-drop), or convert with --quantize none")
    best = meeting[0]
    others = meeting[1:]
    why = (f"chose {best.name}: it meets {target.describe()} on {checked.description} "
           f"({best.score.text() if best.score else '?'}) with the fewest XNNPACK partitions "
           f"({best.partitions if best.partitions is not None else '?'}) and then the fewest bytes ({best.bytes:,}; "
           f"int8 activations count as no larger up to {INT8_SLACK:g}x)")
    if others:
        why += "; also meeting it: " + ", ".join(f"{c.name} ({c.bytes:,} bytes, {c.partitions} partition(s))"
                                                   for c in others)
    return AutoChoice(target, checked.description, candidates, best, why)
