"""How close a candidate .tflite is to the float source on held-out data, and the targets that
--keep-float auto and --quantize auto must reach (--min-cosine, --max-top1-drop)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.data.calibration import InputSpec
from tfshrink.errors import UserError
from tfshrink.model.base import TensorSpec
from tfshrink.model.graphdef import GraphDefModel
from tfshrink.tflite.metadata import rewrite

DEFAULT_MIN_COSINE = 0.999  # the target when neither --min-cosine nor --max-top1-drop is given


@dataclass(frozen=True)
class Target:
    """What an automatic choice must reach against the float source: a cosine floor on every
    output, and/or a largest drop in top-1 agreement (percentage points) on classification outputs."""

    min_cosine: float | None = None
    max_top1_drop: float | None = None

    def describe(self) -> str:
        parts = []
        if self.min_cosine is not None:
            parts.append(f"cosine >= {self.min_cosine:.10g}")
        if self.max_top1_drop is not None:
            parts.append(f"top-1 drop <= {self.max_top1_drop:.10g} points")
        return " and ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"min_cosine": self.min_cosine, "max_top1_drop": self.max_top1_drop}


def make_target(min_cosine: float | None, max_top1_drop: float | None) -> Target:
    """The target from the user's values (DEFAULT_MIN_COSINE when none), checked."""
    if min_cosine is not None and not -1.0 <= min_cosine <= 1.0:
        raise UserError(f"--min-cosine {min_cosine} is not a cosine", "give a value in [-1, 1], e.g. 0.999")
    if max_top1_drop is not None and not 0.0 <= max_top1_drop <= 100.0:
        raise UserError(f"--max-top1-drop {max_top1_drop} is not a percentage", "give 0..100 points, e.g. 1")
    if min_cosine is None and max_top1_drop is None:
        return Target(DEFAULT_MIN_COSINE, None)
    return Target(min_cosine, max_top1_drop)


@dataclass(frozen=True)
class Score:
    cosine: float  # the worst output's
    top1_drop: float | None  # percentage points, the worst classification output's

    def meets(self, target: Target) -> bool:
        if target.min_cosine is not None and self.cosine < target.min_cosine:
            return False
        return not (target.max_top1_drop is not None and self.top1_drop is not None
                    and self.top1_drop > target.max_top1_drop)

    def text(self) -> str:
        out = f"cosine {self.cosine:.6f}"
        if self.top1_drop is not None:
            out += f", top-1 drop {self.top1_drop:.2f} points"
        return out

    def to_json(self) -> dict[str, Any]:
        return {"cosine": self.cosine, "top1_drop": self.top1_drop}


def classifies(reference: Sequence[dict[str, np.ndarray]], outputs: Sequence[str]) -> bool:
    """Whether an output is class scores ([batch, classes])."""
    return any(np.asarray(reference[0][o]).ndim == 2 and np.asarray(reference[0][o]).shape[1] > 1 for o in outputs)


def check_top1(target: Target, reference: Sequence[dict[str, np.ndarray]], outputs: Sequence[str]) -> None:
    if target.max_top1_drop is not None and target.min_cosine is None and not classifies(reference, outputs):
        raise UserError("--max-top1-drop needs a classification output ([batch, classes])",
                        "use --min-cosine for this model")


def written(data: bytes, inputs: Sequence[InputSpec], outputs: Sequence[str]) -> bytes:
    """The model as convert packs it (signature added, identical buffers shared): the size a
    candidate is compared by is the size of the file, less convert's metadata entries (a few
    hundred bytes, the same for every candidate)."""
    return rewrite(data, {}, signature=([s.name for s in inputs], list(outputs)))


def score(reference: Sequence[dict[str, np.ndarray]], candidate: bytes, inputs: Sequence[InputSpec],
          outputs: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]) -> Score:
    """The candidate .tflite (as `written` packs it: its signature is what runs it) on `feeds`
    against the float `reference` outputs."""
    from ai_edge_litert.interpreter import Interpreter

    got: list[dict[str, np.ndarray]] = []
    with _tf.quiet_native():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
        runner = Interpreter(model_content=candidate).get_signature_runner()
        for feed in feeds:
            result = runner(**{s.name: feed[s.name] for s in inputs})
            got.append({name: np.asarray(result[name]) for name in outputs})
    worst_cos, worst_drop = 1.0, None
    for name in outputs:
        a = np.concatenate([np.asarray(r[name], np.float64).reshape(1, -1) for r in reference])
        b = np.concatenate([np.asarray(g[name], np.float64).reshape(1, -1) for g in got])
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        cos = 1.0 if na == nb == 0 else (0.0 if na == 0 or nb == 0 else float((a * b).sum() / (na * nb)))
        worst_cos = min(worst_cos, cos)
        shape = np.asarray(reference[0][name]).shape
        if len(shape) == 2 and shape[1] > 1:
            ra = np.concatenate([np.asarray(r[name]) for r in reference])
            rb = np.concatenate([np.asarray(g[name]).reshape(np.asarray(r[name]).shape)
                                 for g, r in zip(got, reference, strict=True)])
            drop = 100.0 * float(np.mean(np.argmax(ra, axis=1) != np.argmax(rb, axis=1)))
            worst_drop = drop if worst_drop is None else max(worst_drop, drop)
    return Score(worst_cos, worst_drop)


def float_reference(graph_def: Any, inputs: Sequence[InputSpec], outputs: Sequence[str],
                    feeds: Sequence[dict[str, np.ndarray]], where: Path) -> list[dict[str, np.ndarray]]:
    """The frozen float graph's outputs on `feeds`, in a TF session."""

    model = GraphDefModel(where, graph_def=graph_def, outputs=list(outputs))
    model.inputs = [TensorSpec(s.name, s.dtype, s.shape) for s in inputs]
    try:
        return [{o: np.asarray(v) for o, v in model.run(dict(f)).items()} for f in feeds]
    finally:
        model.close()
