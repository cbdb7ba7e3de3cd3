"""What `convert` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfshrink.conversion.auto import AutoChoice
from tfshrink.conversion.delegation import Delegation
from tfshrink.conversion.heldout import CheckData
from tfshrink.conversion.keep_auto import AutoKeep
from tfshrink.conversion.layers import LayerError
from tfshrink.data.calibration import Calibration
from tfshrink.model import TensorSpec
from tfshrink.tflite.metadata import Precision
from tfshrink.tflite.preprocess import Preprocess
from tfshrink.verification import VerifyResult


@dataclass(frozen=True, kw_only=True)
class Written:
    """A .tflite written from a source model (convert, convert_qat): the source and its format, the
    file written, its size, I/O and op counts, what was noted, and its check against the source
    (`verification`, on `verify_inputs`). Keyword-only, so results built on it keep their own
    positional fields."""

    source: str
    format: str
    output: str
    bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ops: dict[str, int]
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    verification: VerifyResult | None
    verify_inputs: str = ""


@dataclass(frozen=True)
class ConvertResult(Written):
    """What `convert` did: sizes, the mode and the defaults it chose, and how close the result is."""

    quantize: str
    source_bytes: int
    defaults: dict[str, Any]
    calibration: Calibration | None
    preprocess: Preprocess | None
    precision: Precision | None
    kept_float: dict[str, list[str]]
    layers: tuple[LayerError, ...] = ()  # per-layer quantization error (--report, --keep-float auto)
    auto_keep: AutoKeep | None = None
    report_files: tuple[str, ...] = ()
    target: str = "cpu"  # what the model was made for: "cpu" (LiteRT with XNNPACK) or "int8-only"
    delegation: Delegation | None = None  # how LiteRT's XNNPACK splits it (None: LiteRT could not load it)
    plan: str | None = None  # sha256 of the tune plan applied
    check: CheckData | None = None  # the data the result was checked on (held out from calibration, or --eval)
    check_cosine: float | None = None  # the cosine every output had to reach
    auto: AutoChoice | None = None  # what --quantize auto tried and chose (`quantize` is the chosen mode)

    @property
    def partitions(self) -> int | None:
        """XNNPACK partitions of the written model (None: not measured)."""
        return self.delegation.partitions if self.delegation is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "format": self.format, "output": self.output, "quantize": self.quantize,
            "bytes": self.bytes, "source_bytes": self.source_bytes,
            "inputs": [s.to_json() for s in self.inputs], "outputs": [s.to_json() for s in self.outputs],
            "defaults": self.defaults,
            "calibration": self.calibration.to_json() if self.calibration else None,
            "preprocess": self.preprocess.to_json() if self.preprocess else None,
            "precision": self.precision.to_json() if self.precision else None,
            "kept_float": self.kept_float, "ops": self.ops,
            "notes": list(self.notes), "warnings": list(self.warnings),
            "verification": self._verification_json(),
            "layers": [x.to_json() for x in self.layers],
            "auto_keep_float": self.auto_keep.to_json() if self.auto_keep else None,
            "report_files": list(self.report_files),
            "target": self.target, "plan_sha256": self.plan,
            "xnnpack": self.delegation.to_json() if self.delegation is not None else None,
            "quantize_auto": self.auto.to_json() if self.auto is not None else None,
        }

    def _verification_json(self) -> dict[str, Any] | None:
        if self.verification is None:
            return None
        v = self.verification
        return {"inputs": self.verify_inputs, "samples": v.samples,
                "data": self.check.to_json() if self.check is not None else None,
                "min_cosine": self.check_cosine,
                "outputs": [{"name": o.name_b, "source_name": o.name_a, "cosine": o.cosine,
                             "max_abs_error": o.max_abs, "mean_abs_error": o.mean_abs, "top1_agreement": o.top1}
                            for o in v.outputs]}
