"""--keep-float auto: keep the layers with the worst int8 error in float, one at a time, until a
target holds on held-out data, within a size budget; never timed.

1. Start from the target's int8 (tfshrink.conversion.rules; for ``cpu`` the output softmax, a small
   first conv and the ops XNNPACK takes only in float already stay float): those stay float in
   every step, so the result honours the target's defaults.
2. Candidates: the layers with arithmetic (not EXACT_OPS), worst RMSE/scale first, as TF's
   QuantizationDebugger measured them (tfshrink.conversion.layers).
3. Each step denylists one more layer, quantizes, rounds the weights as convert does (`finish`) and
   scores the model on the held-out data against the float source (tfshrink.conversion.accuracy).
   A layer whose float form would split XNNPACK's graph into more partitions than the int8 model
   is skipped (the latency budget, by rule: every partition boundary costs a copy and a switch of
   kernels; counted by loading the model, not timed); so is a layer that would take the model over
   `growth` (convert's max_size_ratio, default `MAX_GROWTH` = 1.5) times the int8 model's size (the
   size budget: a float layer stores its weights in float32, 4x their int8 size).
4. It stops when the target holds, or when the candidates or MAX_AUTO_STEPS tries run out. Not
   reaching the target is the caller's to report: convert raises CheckFailed listing every step.

Sizes are of the models as convert packs them (accuracy.written), before it adds its metadata
entries (the same few hundred bytes to each): the growth they show is the written file's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tfshrink.conversion.accuracy import Score, Target, check_top1, score, written
from tfshrink.conversion.converter import ConvertOptions, quantize
from tfshrink.conversion.delegation import xnnpack_delegation
from tfshrink.conversion.layers import EXACT_OPS, MAX_AUTO_STEPS, Debugged, LayerError
from tfshrink.data.calibration import InputSpec
from tfshrink.errors import UserError

MAX_GROWTH = 1.5  # the kept model may be at most this many times the target's int8 model


@dataclass
class Step:
    """One layer --keep-float auto tried: kept (with the score after it) or skipped (why)."""

    layer: LayerError
    kept: bool
    score: Score | None = None
    bytes: int = 0
    partitions: int | None = None
    reason: str = ""

    def text(self) -> str:
        if not self.kept:
            return f"{self.layer.layer} skipped ({self.reason})"
        return f"+ {self.layer.layer} ({self.layer.op}): {self.score.text() if self.score else '?'}, {self.bytes:,} bytes"

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer.layer, "op": self.layer.op, "tensor": self.layer.tensor,
                "rmse_scale": self.layer.rmse_scale, "kept": self.kept,
                "score_after": self.score.to_json() if self.score else None, "bytes": self.bytes,
                "partitions": self.partitions, "skipped_because": self.reason or None}


@dataclass
class AutoKeep:
    """What --keep-float auto did: the target's own float tensors (`base`), every step, the sizes
    and XNNPACK partitions, and the chosen model (`data`)."""

    target: Target
    reached: bool
    base: tuple[str, ...] = ()
    steps: list[Step] = field(default_factory=list)
    int8_score: Score | None = None
    int8_bytes: int = 0
    int8_partitions: int | None = None
    bytes: int = 0
    partitions: int | None = None
    budget_bytes: int = 0
    data: bytes = b""
    checked_on: str = ""

    @property
    def kept(self) -> list[LayerError]:
        return [s.layer for s in self.steps if s.kept]

    @property
    def score(self) -> Score | None:
        kept = [s.score for s in self.steps if s.kept]
        return kept[-1] if kept else self.int8_score

    def tried(self) -> str:
        first = f"int8 ({self.int8_score.text() if self.int8_score else '?'}, {self.int8_bytes:,} bytes)"
        return "; ".join([first, *(s.text() for s in self.steps)])

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target.describe(), "reached": self.reached, "target_float": list(self.base),
                "kept": [s.to_json() for s in self.steps if s.kept],
                "skipped": [s.to_json() for s in self.steps if not s.kept],
                "all_int8_score": self.int8_score.to_json() if self.int8_score else None,
                "int8_bytes": self.int8_bytes, "bytes": self.bytes, "budget_bytes": self.budget_bytes,
                "int8_partitions": self.int8_partitions, "partitions": self.partitions,
                "checked_on": self.checked_on}


def candidates(debugged: Debugged, base: Sequence[str]) -> list[LayerError]:
    """The layers to try, worst RMSE/scale first (ops with arithmetic, not already float)."""
    return sorted((x for x in debugged.layers if x.op not in EXACT_OPS and x.rmse_scale == x.rmse_scale
                   and x.rmse_scale > 0 and x.tensor not in base), key=lambda x: (-x.rmse_scale, x.index))


def auto_keep_float(debugged: Debugged, options: ConvertOptions, inputs: Sequence[InputSpec], outputs: Sequence[str],
                    reference: Sequence[dict[str, np.ndarray]], feeds: Sequence[dict[str, np.ndarray]],
                    target: Target, where: str, base: tuple[str, ...], int8: bytes,
                    finish: Callable[[bytes], bytes], checked_on: str = "", *, growth: float = MAX_GROWTH,
                    progress: Callable[[int, int], None] | None = None) -> AutoKeep:
    """The search of the module doc. `int8` is the target's int8 model (its float tensors `base`),
    not yet finished; `reference` holds the float source's outputs on `feeds`."""
    check_top1(target, reference, outputs)

    def made(data: bytes) -> bytes:
        return written(finish(data), inputs, outputs)

    first = made(int8)
    split = xnnpack_delegation(first)
    result = AutoKeep(target, False, base, int8_bytes=len(first), int8_partitions=split.partitions,
                      budget_bytes=int(growth * len(first)), checked_on=checked_on)
    result.int8_score = score(reference, first, inputs, outputs, feeds)
    current, current_split = first, split.partitions
    pool = candidates(debugged, base)
    tries = min(len(pool), MAX_AUTO_STEPS)
    kept: list[str] = []
    for attempt, layer in enumerate(pool[:tries], start=1):
        if result.score is not None and result.score.meets(target):
            break
        try:
            trial = quantize(debugged.calibrated, options, where, denylisted_nodes=[*base, *kept, layer.tensor])
        except UserError as exc:  # the quantizer refused this split
            result.steps.append(Step(layer, False, reason=exc.message[:80]))
            continue
        size = len(written(trial, inputs, outputs))  # rounding leaves the size as it is
        if size > result.budget_bytes:
            result.steps.append(Step(layer, False, bytes=size, reason=f"{size:,} bytes, over the size "
                                     f"budget of {result.budget_bytes:,} ({growth:g}x the int8 model)"))
            continue
        parts = xnnpack_delegation(trial).partitions
        if split.partitions is not None and (parts is None or parts > split.partitions):
            result.steps.append(Step(layer, False, bytes=size, partitions=parts,
                                     reason=f"in float it splits XNNPACK's graph into {parts} partitions, the int8 "
                                            f"model runs in {split.partitions}"))
            continue
        trial = made(trial)
        kept.append(layer.tensor)
        result.steps.append(Step(replace(layer, kept_float=True), True, score(reference, trial, inputs, outputs, feeds),
                                 len(trial), parts))
        current, current_split = trial, parts
        if progress is not None:
            progress(attempt, tries)
    final = result.score
    result.reached = final is not None and final.meets(target)
    result.data, result.bytes, result.partitions = current, len(current), current_split
    return result


def note(chosen: AutoKeep) -> str:
    first = chosen.int8_score.text() if chosen.int8_score else "?"
    where = f" on {chosen.checked_on}" if chosen.checked_on else ""
    if not chosen.kept:
        return (f"--keep-float auto: the target's int8 already meets {chosen.target.describe()}{where} ({first}); "
                "no layer kept in float beyond the target's own")
    kept = ", ".join(f"{k.layer} ({k.op}, RMSE/scale {k.rmse_scale:.3g})" for k in chosen.kept)
    grown = 100.0 * (chosen.bytes - chosen.int8_bytes) / max(chosen.int8_bytes, 1)
    parts = ""
    if chosen.partitions is not None:
        parts = f"; XNNPACK partitions {chosen.int8_partitions} -> {chosen.partitions} (counted, not timed)"
    final = chosen.score.text() if chosen.score else "?"
    return (f"--keep-float auto: the target's int8 {first}{where} misses {chosen.target.describe()}; kept "
            f"{len(chosen.kept)} more layer(s) in float, worst measured error first: {kept} -> {final}; cost: size "
            f"{chosen.int8_bytes:,} -> {chosen.bytes:,} bytes ({grown:+.1f}%, budget {chosen.budget_bytes:,}){parts}")
