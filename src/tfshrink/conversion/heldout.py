"""Which samples calibrate and which judge the result, and the check that fails a bad conversion.

convert verifies on data that calibration never saw:

* ``eval=PATH`` (an image folder or glob, or an .npy/.npz, read like ``calibration``): every
  calibration sample calibrates, and the check runs on up to ``eval_samples`` samples of PATH.
* otherwise, when the mode calibrates (int8, int16x8, auto) on at least `MIN_SPLIT` samples, every
  k-th calibration sample is held out (k = 5, or more for over 500 samples, so that at most
  `MAX_HELD` are): "verified on 20 held-out calibration samples (every 5th: #4, #9, ..., #99),
  calibrated on the other 80". Every k-th rather than the last ones: image folders are often
  sorted by class (face_*, other_*), and the last fifth would hold out one class and calibrate
  on a skewed rest. A streamed dataset stays streamed (the two parts are filtered views, read in
  order). The split does not depend on `verify`: --no-verify writes the same bytes.
* a mode that needs no calibration (float16, dynamic) verifies on all calibration samples given;
  with none, on seeded random inputs (or the quantization-aware graph's learned input ranges), as
  before, and the result says so.

The check (`check`) raises CheckFailed, and nothing is written, when an output of the source is
the same for every checked input (a constant output: default batch-norm statistics, untrained
weights; agreement on it proves nothing), or an output's cosine to the source is below the
threshold: `check_cosine`, else --keep-float auto's / --quantize auto's `min_cosine`, else
`CHECK_COSINE` (0.99: int8 of a healthy model measures 0.999 or more on its outputs; 0.99 is what
a broken layer, a range that clips a whole tensor or a wrong preprocessing falls below). A cosine
of 0 or less never passes, whatever the threshold.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink.data.calibration import RANDOM, Calibration, InputSpec, load_calibration
from tfshrink.errors import CheckFailed, UserError
from tfshrink.tflite.preprocess import Preprocess
from tfshrink.verification import VerifyResult

CHECK_COSINE = 0.99
MIN_SPLIT = 5  # fewer calibration samples than this: nothing is held out (the check says so)
HELD_EVERY = 5  # every 5th sample is held out ...
MAX_HELD = 100  # ... and at most this many (a larger stride for more than 500 samples)


class _Every(Sequence[dict[str, np.ndarray]]):
    """The items of a sequence whose position i has i % k == k - 1 (`held`) or not, read lazily
    in order: a streamed dataset stays streamed."""

    def __init__(self, items: Sequence[dict[str, np.ndarray]], k: int, held: bool):
        self._items, self._k, self._held = items, k, held
        total = len(items)
        self._count = total // k if held else total - total // k

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        k, held = self._k, self._held
        return (x for i, x in enumerate(self._items) if (i % k == k - 1) == held)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            return list(itertools.islice(iter(self), start, stop, step))
        i = index + self._count if index < 0 else index
        if not 0 <= i < self._count:
            raise IndexError(index)
        return next(itertools.islice(iter(self), i, None))


@dataclass(frozen=True)
class CheckData:
    """The samples convert checks the result on, and where they come from: "eval" (--eval),
    "held-out" (every k-th of --calibration, not calibrated on), "calibration" (calibration samples
    the mode did not calibrate on, or too few to split: `held_out` False then), or "random"
    (held out from --calibration random)."""

    feeds: Sequence[dict[str, np.ndarray]]
    kind: str
    description: str
    held_out: bool
    source: str = ""
    first: int | None = None  # the held-out calibration samples' numbers, 0-based (every k-th from first)
    last: int | None = None
    calibrated_on: int | None = None
    every: int | None = None  # the held-out calibration samples are every `every`-th

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "held_out": self.held_out, "samples": len(self.feeds), "source": self.source,
                "every": self.every, "first": self.first, "last": self.last, "calibrated_on": self.calibrated_on,
                "description": self.description}


def stride(total: int) -> int:
    """k: every k-th of `total` calibration samples is held out (0: too few to split)."""
    return 0 if total < MIN_SPLIT else max(HELD_EVERY, -(-total // MAX_HELD))


def split_calibration(calib: Calibration) -> tuple[Calibration, CheckData | None]:
    """(the calibration that calibrates, the held-out samples that check) for a calibrated mode
    without --eval. With fewer than MIN_SPLIT samples everything calibrates and the check data is
    those same samples (held_out False)."""
    total = len(calib.samples)
    k = stride(total)
    if not k:
        return calib, CheckData(calib.samples, "calibration", f"{total} calibration sample(s), not held out (too few "
                                "to split; give --eval or more --calibration-samples)", False, calib.source)
    held = list(_Every(calib.samples, k, True))  # at most MAX_HELD samples
    others = _Every(calib.samples, k, False)
    rest = list(others) if isinstance(calib.samples, list) else others
    nth = {2: "2nd", 3: "3rd"}.get(k, f"{k}th")
    text = (f"{len(held)} held-out calibration samples (every {nth}: #{k - 1}, #{2 * k - 1}, ..., "
            f"#{len(held) * k - 1}), calibrated on the other {len(rest)}")
    calib = replace(calib, samples=rest, notes=[*calib.notes, f"calibration: every {nth} of the {total} samples "
                                                f"({len(held)}) is held out to check the result, {len(rest)} calibrate "
                                                "(--eval PATH checks on other data and calibrates on all)"])
    kind = "random" if calib.kind == "random" else "held-out"  # random inputs: a constant output only warns
    return calib, CheckData(held, kind, text, True, calib.source, k - 1, len(held) * k - 1, len(rest), k)


def load_eval(path: str | Path, specs: Sequence[InputSpec], samples: int, preprocess: Preprocess | None, seed: int,
              progress: Callable[[int, int], None] | None, calibrated_on: int | None) -> tuple[CheckData, list[str]]:
    """--eval PATH read like --calibration (at most `samples`): (the check data, warnings)."""
    if str(path) == RANDOM:
        raise UserError("--eval random would check on random inputs, which says nothing about accuracy",
                        "give held-out images or an .npy/.npz, or drop --eval")
    if samples < 1:
        raise UserError(f"--eval-samples {samples} must be at least 1", "e.g. --eval-samples 100")
    data = load_calibration(path, specs, samples=samples, preprocess=preprocess, seed=seed, progress=progress)
    extra = f", calibrated on all {calibrated_on} calibration samples" if calibrated_on is not None else ""
    return (CheckData(data.samples, "eval", f"{len(data.samples)} --eval sample(s) from {path}{extra}", True,
                      str(path), calibrated_on=calibrated_on),
            [w.replace("calibration", "--eval") for w in data.warnings])


def threshold(check_cosine: float | None, min_cosine: float | None) -> float:
    """The cosine below which the check fails (see the module doc)."""
    if check_cosine is not None:
        return check_cosine
    return min_cosine if min_cosine is not None else CHECK_COSINE


def check_cosine_value(value: float | None) -> None:
    if value is not None and not -1.0 <= value <= 1.0:
        raise UserError(f"--check-cosine {value} is not a cosine", "give a value in [-1, 1], e.g. 0.99")


def check(verification: VerifyResult, floor: float, described: str, mode: str) -> None:
    """Raise CheckFailed when an output of the source is constant on the checked inputs, or an
    output's cosine is below `floor` (or at most 0)."""
    constant = [o for o in verification.outputs if o.constant]
    if constant:
        names = ", ".join(o.name_a for o in constant)
        raise CheckFailed(f"check failed: output {names} of the source is the same for every one of the "
                          f"{verification.samples} checked inputs ({described}), so agreement on it proves nothing "
                          "(untrained weights or default batch-norm statistics?); nothing written",
                          "convert a model with real weights, check on real inputs (--eval), or skip the check "
                          "with --no-verify")
    bad = [o for o in verification.outputs if o.cosine < floor or o.cosine <= 0.0]
    if bad:
        worst = min(bad, key=lambda o: o.cosine)
        listed = "; ".join(f"{o.name_b}: cosine {o.cosine:.6f}"
                           + (f", top-1 agreement {o.top1:.1%}" if o.top1 is not None else "")
                           + f", max abs error {o.max_abs:.3g}" for o in bad)
        need = f"at least {floor:.10g}" if floor > 0 else "above 0"
        raise CheckFailed(f"check failed: the {mode} model's {listed} on {described}; every output needs a cosine "
                          f"{need}; nothing written",
                          ("--keep-float auto or --quantize auto keep the worst layers in float; "
                           if mode == "int8" else "") + "--check-cosine sets the threshold"
                          + (f" (this one measured {worst.cosine:.6f})" if worst.cosine > 0 else ""))
