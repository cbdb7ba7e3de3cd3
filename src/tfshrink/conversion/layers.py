"""Per-layer quantization error (TF's QuantizationDebugger) and the --report files; --keep-float
auto (tfshrink.conversion.keep_auto) takes its candidates, worst first, from here.

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
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.conversion.converter import (
    ConvertOptions,
    configured_converter,
    converter_failure,
    representative_dataset,
)
from tfshrink.data.calibration import InputSpec
from tfshrink.errors import UserError

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
