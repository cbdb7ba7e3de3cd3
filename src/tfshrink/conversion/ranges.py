"""Activation ranges for int8: the calibrated min/max narrowed where that lowers the error.

convert --activation-ranges: "mse" (the default) narrows each range as below; "minmax" keeps
TFLite's calibrated min/max, as TFLiteConverter does.

TFLite's calibrator records each activation's min and max over the calibration samples and the
quantizer spreads 256 levels over that range. One rare large value then coarsens the steps for
every other value of that tensor, and in a deep net the rounding noise of every requantization
adds up. MTCNN's ONet shows it: with min/max ranges one of 106 held-out real crops moved its face
probability by 0.038 (mean 0.0037); with each range narrowed to its least squared error the worst
is 0.017 (mean 0.0029; benchmarks/onet_int8_noise.py). Tuning the ranges against the model's
outputs instead (each end tried at 85/70/55%, one quantization each, 20 s for ONet) measured
worse on the held-out crops (0.033), so tfshrink does not offer it.

Choosing the method per tensor by the error it causes at the model's outputs (issue 15) was tried
and dropped. Each activation's range was set in turn to min/max, least squared error or the 99.99th
percentile, the model quantized and run on the calibration samples, and the method kept when it
lowered the error of the outputs (or of the logits, before a softmax) by more than 1% (also with
5%, with the error required to fall on both halves of the calibration samples, and with the
worst sample's error): two passes, about 130 quantizations, 3-4 s for fer and ONet. On held-out
data its mean error was larger than least squared error's on both models and both halves
(benchmarks/anchors.py's models, calibrated on one half of the LFW faces and judged on the other
half, augmented to 300 fer faces and 636 ONet crops, both halves in turn); so were min/max's, and
the 99.99th percentile everywhere, which only agreed on fer's top-1 more often (weights rounded to
nearest in all four; benchmarks/ptq_folds.py reproduces the min/max and least-squared-error rows):

| ranges                        | fer top-1 % | fer mean abs prob error | ONet mean, worst face-prob change (1st half; 2nd) |
| ---                           | ---         | ---                     | ---                                |
| least squared error (default) | 97.3 / 96.7 | 0.0049 / 0.0059         | 0.0011 / 0.034; 0.0018 / 0.054     |
| per tensor, by output error   | 96.3 / 96.0 | 0.0051 / 0.0060         | 0.0011 / 0.035; 0.0017 / 0.058     |
| min/max (TFLite's)            | 96.0 / 97.3 | 0.0054 / 0.0063         | 0.0013 / 0.046; 0.0026 / 0.151     |
| 99.99th percentile            | 98.3 / 97.7 | 0.0059 / 0.0064         | 0.0014 / 0.064; 0.0015 / 0.065     |

The output error of 50-100 calibration samples is dominated by the few samples nearest a decision
boundary, and changing one tensor's range reshuffles their rounding: a choice that halved it on
the calibration samples (ONet conv3 at the 99.99th percentile) raised it by a third on held-out
crops. The per-tensor least-squared-error range already chooses between min/max (its widest
candidate) and narrower ranges by each tensor's own expected error, which does not overfit.

`refine` runs the calibrated float model in LiteRT on the calibration samples (all tensors kept),
builds a histogram of each activation over its calibrated range, and for each picks the range
[l, h] (l <= 0 <= h, each end shrunk to between `SHRINK` and 1 of the min/max) that minimizes the
expected squared error: rounding noise step^2 / 12 for the values inside (exact zeros cost
nothing: zero is always a level), and the squared distance to the edge for the values clipped. It
writes the chosen min/max into the calibrated model, which `converter.quantize` then quantizes as
usual. Model inputs and outputs keep their min/max: those ranges are the caller's data.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.data.calibration import InputSpec
from tfshrink.tflite.flatbuffer import read, schema

METHODS = ("mse", "minmax")
BINS = 2048
SHRINK = 0.2  # each end may move in to 20% of the calibrated min/max
GRID = 41  # candidate ends per side


@dataclass(frozen=True)
class Narrowed:
    """One activation's range, as calibrated and as chosen."""

    tensor: str
    calibrated: tuple[float, float]
    chosen: tuple[float, float]

    @property
    def ratio(self) -> float:
        """Chosen width over calibrated width (1: unchanged)."""
        width = self.calibrated[1] - self.calibrated[0]
        return (self.chosen[1] - self.chosen[0]) / width if width > 0 else 1.0


@dataclass(frozen=True)
class Refined:
    data: bytes
    tensors: int  # activations with a range (inputs and outputs excluded)
    narrowed: tuple[Narrowed, ...]  # those whose range changed
    samples: int

    def note(self) -> str:
        if not self.narrowed:
            return (f"activation ranges: min/max over {self.samples} calibration samples; narrowing none of the "
                    f"{self.tensors} lowered the expected error")
        worst = sorted(self.narrowed, key=lambda n: n.ratio)[:2]
        shown = ", ".join(f"{n.tensor} [{n.calibrated[0]:.3g}, {n.calibrated[1]:.3g}] -> "
                          f"[{n.chosen[0]:.3g}, {n.chosen[1]:.3g}]" for n in worst)
        return (f"activation ranges: {len(self.narrowed)} of {self.tensors} narrowed from the calibrated min/max to "
                f"their least squared error on {self.samples} samples (finer int8 steps; rare extremes clip), "
                f"most: {shown} (--activation-ranges minmax keeps min/max)")


def best_range(counts: np.ndarray, zeros: int, lo: float, hi: float) -> tuple[float, float]:
    """The [l, h] with the least expected squared int8 error for values histogrammed in `counts`
    (equal bins over [lo, hi]; `zeros` of them exactly 0, which round exactly)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0 or counts.sum() == 0:
        return lo, hi
    edges = np.linspace(lo, hi, len(counts) + 1)
    x = (edges[:-1] + edges[1:]) / 2
    c = counts.astype(np.float64)
    # prefix sums of c, c*x, c*x^2 give any clipped tail's squared error in closed form
    pc, px, pxx = (np.concatenate([[0.0], np.cumsum(v)]) for v in (c, c * x, c * x * x))
    total = pc[-1]
    his = hi * np.linspace(SHRINK, 1.0, GRID) if hi > 0 else np.zeros(1)
    los = lo * np.linspace(SHRINK, 1.0, GRID) if lo < 0 else np.zeros(1)
    # bins above h: index >= ih; bins below l: index < il
    ih = np.searchsorted(x, his, side="right")
    il = np.searchsorted(x, los, side="left")
    above_n, above_x, above_xx = pc[-1] - pc[ih], px[-1] - px[ih], pxx[-1] - pxx[ih]
    below_n, below_x, below_xx = pc[il], px[il], pxx[il]
    above = above_xx - 2 * his * above_x + his * his * above_n  # sum c (x - h)^2 over x > h
    below = below_xx - 2 * los * below_x + los * los * below_n  # sum c (x - l)^2 over x < l
    step = (his[:, None] - los[None, :]) / 255.0
    inside = np.maximum(total - above_n[:, None] - below_n[None, :] - zeros, 0.0)
    error = above[:, None] + below[None, :] + inside * step * step / 12.0
    i, j = np.unravel_index(int(np.argmin(error)), error.shape)
    return float(los[j]), float(his[i])


def _ranged(calibrated: bytearray) -> dict[int, tuple[str, Any, Any]]:
    """Tensor index -> (name, min view, max view) for the float activations with one recorded,
    non-empty range, not model inputs or outputs; the views write into `calibrated`."""

    fb = schema()
    sub = read(calibrated).Subgraphs(0)
    edges = {int(sub.Inputs(i)) for i in range(sub.InputsLength())} | \
        {int(sub.Outputs(i)) for i in range(sub.OutputsLength())}
    found = {}
    for i in range(sub.TensorsLength()):
        tensor = sub.Tensors(i)
        q = tensor.Quantization()
        if i in edges or tensor.Type() != fb.TensorType.FLOAT32 or q is None or q.MinLength() != 1 \
                or q.MaxLength() != 1 or min(q.Min(0), 0.0) >= max(q.Max(0), 0.0):
            continue
        found[i] = ((tensor.Name() or b"").decode(), q.MinAsNumpy(), q.MaxAsNumpy())
    return found


def refine(calibrated: bytes, inputs: Sequence[InputSpec], samples: Sequence[dict[str, np.ndarray]]) -> Refined:
    """The calibrated model with each activation's range narrowed to its least squared error on
    `samples` (see the module doc). Raises what LiteRT raises when it cannot run the model."""
    from ai_edge_litert.interpreter import Interpreter

    data = bytearray(calibrated)
    ranged = _ranged(data)
    if not ranged or not samples:
        return Refined(bytes(data), len(ranged), (), len(samples))
    with _tf.quiet_native(), warnings.catch_warnings():  # keeping all tensors is "for debugging": it is meant
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_content=bytes(data), experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
    details = interpreter.get_input_details()
    bounds = {i: (min(float(mn[0]), 0.0), max(float(mx[0]), 0.0)) for i, (_, mn, mx) in ranged.items()}
    counts = {i: np.zeros(BINS, np.int64) for i in ranged}
    zeros = dict.fromkeys(ranged, 0)
    for feed in samples:
        for detail, spec in zip(details, inputs, strict=True):
            interpreter.set_tensor(detail["index"], np.asarray(feed[spec.name], detail["dtype"]))
        interpreter.invoke()
        for i, (lo, hi) in bounds.items():
            values = interpreter.get_tensor(i).ravel()
            zeros[i] += int(np.count_nonzero(values == 0))
            index = np.clip(((values - lo) * (BINS / (hi - lo))).astype(np.int64), 0, BINS - 1)
            counts[i] += np.bincount(index, minlength=BINS)
    narrowed = []
    for i, (name, mn, mx) in ranged.items():
        lo, hi = bounds[i]
        new_lo, new_hi = best_range(counts[i], zeros[i], lo, hi)
        if (new_lo, new_hi) != (lo, hi):
            narrowed.append(Narrowed(name, (float(mn[0]), float(mx[0])), (new_lo, new_hi)))
            mn[0], mx[0] = new_lo, new_hi
    return Refined(bytes(data), len(ranged), tuple(narrowed), len(samples))
