"""Per-layer quantization error (TF's QuantizationDebugger), the --report files, and
--keep-float auto: keep the worst layers in float, one at a time, until a target holds.

The debugger quantizes the calibrated model with a NumericVerify op after every quantized op: it
runs the op's float version on the same (dequantized) inputs and records the difference. For each
layer tfshrink reports RMSE / scale, the error in units of the output's quantization step. Pure
rounding to the nearest step gives 1/sqrt(12) ~ 0.289; a layer well above that (range too wide
for its values, an outlier channel) is where int8 loses accuracy. Layers whose output equals their
input's values exactly (MAX_POOL_2D, RESHAPE, ...) show 0.
"""

from __future__ import annotations

import csv
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.benchmarking import bench
from tfshrink.conversion.converter import (
    ConvertOptions,
    configured_converter,
    converter_failure,
    quantize,
    representative_dataset,
)
from tfshrink.data.calibration import InputSpec
from tfshrink.errors import UserError
from tfshrink.model.base import TensorSpec
from tfshrink.model.graphdef import GraphDefModel
from tfshrink.tflite.metadata import rewrite

HEALTHY = 1.0 / math.sqrt(12.0)  # RMSE/scale of rounding to the nearest step: 0.2887
FLAG_ABOVE = 0.7  # TF's debugger guide calls layers above this suspect
DEBUG_SAMPLES = 32
MAX_AUTO_STEPS = 20
# Ops that move or select values without arithmetic: int8 cannot make them worse, and keeping
# them in float only adds conversions.
EXACT_OPS = {"MAX_POOL_2D", "RESHAPE", "TRANSPOSE", "SQUEEZE", "CONCATENATION", "PAD", "SLICE",
             "STRIDED_SLICE", "GATHER", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "SPLIT", "PACK", "UNPACK"}


_GENERIC = re.compile(r"(MatMul|BiasAdd|Conv2D|DepthwiseConv2dNative|Relu6?|Add(V2)?|Mul|Sub|Reshape|Identity|"
                      r"Squeeze|Max|Sum|Mean|Softmax|Sigmoid|Tanh|MaxPool|AvgPool|ConcatV2|Pad)(_\d+)?\d*")


@dataclass(frozen=True)
class LayerError:
    """One quantized op's measured error (over the debug samples)."""

    index: int  # position among the debugged ops, in execution order
    op: str  # TFLite op, e.g. CONV_2D
    tensor: str  # its output tensor name (the TF nodes it came from, ';'-joined)
    rmse: float
    scale: float
    zero_point: int
    max_abs_error: float
    mean_error: float
    kept_float: bool = False

    @property
    def rmse_scale(self) -> float:
        return self.rmse / self.scale if self.scale > 0 else 0.0

    @property
    def flagged(self) -> bool:
        return self.rmse_scale > FLAG_ABOVE

    @property
    def layer(self) -> str:
        """A short name: the first TF node of the tensor name that says more than its op type
        ("fc" from "MatMul;fc;BiasAdd_2"), else the first."""
        parts = [p for p in self.tensor.split(";") if p]
        for part in parts:
            if "/" in part or not _GENERIC.fullmatch(part):
                return part
        return parts[0] if parts else self.tensor

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "layer": self.layer, "tensor": self.tensor, "rmse": self.rmse,
                "scale": self.scale, "zero_point": self.zero_point, "rmse_scale": self.rmse_scale,
                "max_abs_error": self.max_abs_error, "mean_error": self.mean_error, "flagged": self.flagged,
                "kept_float": self.kept_float}


@dataclass
class Debugged:
    """The calibrated model and its per-layer errors."""

    calibrated: bytes
    layers: list[LayerError]
    samples: int


def debug_layers(graph_def: Any, inputs: Sequence[InputSpec], outputs: Sequence[str], options: ConvertOptions,
                 samples: Sequence[dict[str, np.ndarray]], where: str, *, denylisted_nodes: Sequence[str] = (),
                 progress: Callable[[int, int], None] | None = None) -> Debugged:
    """Calibrate on `samples` and measure every quantized op's error with TF's QuantizationDebugger
    (on the first DEBUG_SAMPLES samples). `denylisted_nodes` stay float (and are not measured)."""
    tf = _tf.tf()
    debug_set = list(samples[:DEBUG_SAMPLES])
    converter = configured_converter(graph_def, inputs, outputs, options, samples, where, allow_float=True,
                                     progress=progress)
    debug_options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(denylisted_nodes) or None)
    with warnings.catch_warnings(), _tf.quiet_native() as log:
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        try:
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative_dataset(inputs, debug_set),
                debug_options=debug_options)
            debugger.run()
        except UserError:
            raise
        except Exception as exc:

            raise converter_failure(exc, log.text, where) from None
    return Debugged(bytes(debugger.calibrated_model), _layer_errors(debugger), len(debug_set))


def _layer_errors(debugger: Any) -> list[LayerError]:
    """The debugger's layer_statistics as LayerErrors, in op order (what layer_statistics_dump
    writes, read through the same interpreter calls)."""
    import io

    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    buffer.seek(0)
    rows = []
    for row in csv.DictReader(buffer):
        mse = float(row.get("mean_squared_error") or "nan")
        rows.append(LayerError(index=int(row["tensor_idx"]), op=row["op_name"], tensor=row["tensor_name"],
                               rmse=math.sqrt(mse) if mse == mse and mse >= 0 else float("nan"),
                               scale=float(row["scale"]), zero_point=int(float(row["zero_point"])),
                               max_abs_error=float(row.get("max_abs_error") or "nan"),
                               mean_error=float(row.get("mean_error") or "nan")))
    rows.sort(key=lambda r: r.index)
    return [replace(r, index=i) for i, r in enumerate(rows)]


# ---- --report DIR ------------------------------------------------------------------------------
def write_report(directory: Path, layers: Sequence[LayerError], title: str) -> list[Path]:
    """layer_errors.csv and a bar chart (layer_errors.png, layer_errors.svg) of RMSE/scale per
    layer, with the 0.289 rounding level and the flag level drawn in. Returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    csv_path = directory / "layer_errors.csv"
    fields = ["index", "op", "layer", "rmse_scale", "flagged", "kept_float", "rmse", "scale", "zero_point",
              "max_abs_error", "mean_error", "tensor"]
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields, lineterminator="\n")
        writer.writeheader()
        for layer in layers:
            row = layer.to_json()
            writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in fields})
    written = [csv_path]
    written += _chart(directory, layers, title)
    return written


def _chart(directory: Path, layers: Sequence[LayerError], title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [0.0 if math.isnan(x.rmse_scale) else x.rmse_scale for x in layers]
    colors = ["#d62728" if x.flagged else "#1f77b4" for x in layers]
    width = max(6.0, 0.28 * len(layers) + 2.0)
    fig, ax = plt.subplots(figsize=(min(width, 40.0), 4.8))
    bars = ax.bar(range(len(layers)), values, color=colors, edgecolor="black", linewidth=0.3)
    for bar, layer in zip(bars, layers, strict=True):
        if layer.kept_float:
            bar.set_hatch("//")
            bar.set_alpha(0.6)
    positive = [v for v in values if v > 0]
    if positive and max(positive) > 20 * HEALTHY:  # one runaway layer would flatten the others
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(min(positive), 0.01) / 2)
    ax.axhline(HEALTHY, color="#2ca02c", linestyle="--", linewidth=1, label=f"rounding only ({HEALTHY:.3f})")
    ax.axhline(FLAG_ABOVE, color="#d62728", linestyle=":", linewidth=1, label=f"flagged above {FLAG_ABOVE}")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([f"{x.layer[-28:]} ({x.op.lower()})" for x in layers], rotation=90, fontsize=7)
    ax.set_ylabel("RMSE / scale (quantization steps)")
    ax.set_title(title, fontsize=10)
    if any(x.kept_float for x in layers):
        ax.bar([0], [0], color="white", edgecolor="black", hatch="//", label="kept in float")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out = []
    for suffix in ("png", "svg"):
        path = directory / f"layer_errors.{suffix}"
        # A fixed date keeps the SVG the same bytes run to run.
        fig.savefig(path, dpi=110, metadata={"Date": None} if suffix == "svg" else None)
        out.append(path)
    plt.close(fig)
    return out


# ---- --keep-float auto -------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """What --keep-float auto must reach against the float source: a cosine floor on every output,
    and/or a largest drop in top-1 agreement (percentage points) on classification outputs."""

    min_cosine: float | None = None
    max_top1_drop: float | None = None

    def describe(self) -> str:
        parts = []
        if self.min_cosine is not None:
            parts.append(f"cosine >= {self.min_cosine:g}")
        if self.max_top1_drop is not None:
            parts.append(f"top-1 drop <= {self.max_top1_drop:g} points")
        return " and ".join(parts)


@dataclass(frozen=True)
class Score:
    cosine: float  # the worst output's
    top1_drop: float | None  # percentage points, the worst classification output's

    def meets(self, target: Target) -> bool:
        if target.min_cosine is not None and self.cosine < target.min_cosine:
            return False
        return not (target.max_top1_drop is not None and self.top1_drop is not None
                    and self.top1_drop > target.max_top1_drop)

    def to_json(self) -> dict[str, Any]:
        return {"cosine": self.cosine, "top1_drop": self.top1_drop}


@dataclass
class AutoKeep:
    """What --keep-float auto did: each step's kept layer and score, and the cost."""

    target: Target
    reached: bool
    kept: list[LayerError] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)  # scores[0]: all int8; scores[i]: after kept[:i]
    int8_bytes: int = 0
    bytes: int = 0
    int8_latency_ms: float | None = None
    latency_ms: float | None = None
    data: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target.describe(), "reached": self.reached,
                "kept": [{"layer": k.layer, "op": k.op, "tensor": k.tensor, "rmse_scale": k.rmse_scale,
                          "score_after": s.to_json()} for k, s in zip(self.kept, self.scores[1:], strict=True)],
                "all_int8_score": self.scores[0].to_json() if self.scores else None,
                "int8_bytes": self.int8_bytes, "bytes": self.bytes, "int8_latency_ms": self.int8_latency_ms,
                "latency_ms": self.latency_ms}


def score(reference: Sequence[dict[str, np.ndarray]], candidate: bytes, inputs: Sequence[InputSpec],
          outputs: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]) -> Score:
    """The candidate .tflite's outputs on `feeds` against the float `reference` outputs."""
    from ai_edge_litert.interpreter import Interpreter

    signed = rewrite(candidate, {}, signature=([s.name for s in inputs], list(outputs)))
    got: list[dict[str, np.ndarray]] = []
    with _tf.quiet_native():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
        runner = Interpreter(model_content=signed).get_signature_runner()
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


def auto_keep_float(debugged: Debugged, options: ConvertOptions, inputs: Sequence[InputSpec], outputs: Sequence[str],
                    reference: Sequence[dict[str, np.ndarray]], feeds: Sequence[dict[str, np.ndarray]],
                    target: Target, where: str, *, measure_latency: bool = True,
                    progress: Callable[[int, int], None] | None = None) -> AutoKeep:
    """Quantize the calibrated model with nothing kept; while the score misses `target`, add the
    layer with the largest RMSE/scale (among ops with arithmetic) to the float denylist and
    quantize again. Stops when the target holds, or after MAX_AUTO_STEPS layers (reached=False).
    `reference` holds the float source's outputs on `feeds`."""
    if target.max_top1_drop is not None and target.min_cosine is None and \
            not any(np.asarray(reference[0][o]).ndim == 2 and np.asarray(reference[0][o]).shape[1] > 1
                    for o in outputs):
        raise UserError("--max-top1-drop needs a classification output ([batch, classes])",
                        "use --min-cosine for this model")
    candidates = sorted((x for x in debugged.layers if x.op not in EXACT_OPS and x.rmse_scale == x.rmse_scale
                         and x.rmse_scale > 0), key=lambda x: (-x.rmse_scale, x.index))
    int8 = quantize(debugged.calibrated, options, where)
    result = AutoKeep(target, False, int8_bytes=len(int8))
    current = int8
    result.scores.append(score(reference, current, inputs, outputs, feeds))
    steps = min(len(candidates), MAX_AUTO_STEPS)
    for step, layer in enumerate(candidates[:steps], start=1):
        if result.scores[-1].meets(target):
            break
        result.kept.append(replace(layer, kept_float=True))
        current = quantize(debugged.calibrated, options, where, denylisted_nodes=[k.tensor for k in result.kept])
        result.scores.append(score(reference, current, inputs, outputs, feeds))
        if progress is not None:
            progress(step, steps)
    result.reached = result.scores[-1].meets(target)
    result.data = current
    result.bytes = len(current)
    if measure_latency:
        result.int8_latency_ms, result.latency_ms = _latencies(int8, current)
    return result


def _latencies(int8: bytes, chosen: bytes) -> tuple[float | None, float | None]:
    """p50 latency (ms, LiteRT with XNNPACK, 1 thread) of the all-int8 model and the chosen one,
    measured taking turns so both see the same machine load."""
    import tempfile


    if int8 == chosen:
        with tempfile.TemporaryDirectory(prefix="tfshrink-auto-") as tmp:
            path = Path(tmp) / "int8.tflite"
            path.write_bytes(int8)
            with _tf.quiet_native():
                ms = bench(path, min_seconds=0.3, warmup=3, threads=1).latency_ms["p50"]
        return ms, ms
    with tempfile.TemporaryDirectory(prefix="tfshrink-auto-") as tmp:
        paths = [Path(tmp) / "int8.tflite", Path(tmp) / "kept.tflite"]
        paths[0].write_bytes(int8)
        paths[1].write_bytes(chosen)
        best: list[float] = [math.inf, math.inf]
        deadline = time.monotonic() + 3.0
        rounds = 0
        while rounds < 2 or (time.monotonic() < deadline and rounds < 6):
            for i, path in enumerate(paths):
                with _tf.quiet_native():
                    best[i] = min(best[i], bench(path, min_seconds=0.2, warmup=2, threads=1).latency_ms["p50"])
            rounds += 1
    return best[0], best[1]


def float_reference(graph_def: Any, inputs: Sequence[InputSpec], outputs: Sequence[str],
                    feeds: Sequence[dict[str, np.ndarray]], where: Path) -> list[dict[str, np.ndarray]]:
    """The frozen float graph's outputs on `feeds`, in a TF session."""

    model = GraphDefModel(where, graph_def=graph_def, outputs=list(outputs))
    model.inputs = [TensorSpec(s.name, s.dtype, s.shape) for s in inputs]
    try:
        return [{o: np.asarray(v) for o, v in model.run(dict(f)).items()} for f in feeds]
    finally:
        model.close()
