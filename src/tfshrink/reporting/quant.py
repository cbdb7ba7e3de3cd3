"""Per-layer quantization error from a CSV: `tfshrink convert --report DIR`'s DIR/layer_errors.csv
(columns index, op, layer, rmse_scale, flagged, kept_float, ...), or TF's QuantizationDebugger's.

QuantizationDebugger's layer statistics (``debugger.layer_statistics_dump(f)``) have the columns
op_name, tensor_idx, num_elements, stddev, mean_error, max_abs_error, mean_squared_error, scale,
zero_point, tensor_name. TF's guide judges a layer by RMSE / scale: about 0.289 (= 1/sqrt(12), the
rounding error of a uniform quantizer) is healthy; above 0.7 the guide calls a layer suspect.

``read_quant_errors`` takes any CSV with a layer column (layer, layer_name, name, tensor_name or
op_name) and either an ``rmse/scale`` column (also spelled rmse_scale or rmse_over_scale) or the
mean_squared_error and scale columns it is computed from. ``flagged`` and ``kept_float`` columns
are used when present. A folder is searched for one such CSV (layer_errors.csv first).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from tfshrink.errors import UserError

__all__ = ["HEALTHY_RMSE_SCALE", "LayerError", "read_quant_errors"]

HEALTHY_RMSE_SCALE = 1 / math.sqrt(12)  # 0.2887: the rounding error of a uniform quantizer, in steps
FLAG_ABOVE = 0.7  # TF's QuantizationDebugger guide calls layers above this suspect (as tfshrink convert does)

_LAYER_COLUMNS = ("layer", "layer_name", "name", "tensor_name", "op_name")
_RATIO_COLUMNS = ("rmse/scale", "rmse_scale", "rmse_over_scale", "rmse/step")


@dataclass(frozen=True)
class LayerError:
    """One layer's quantization error, in quantization steps (RMSE / scale)."""

    layer: str
    op: str
    rmse_scale: float
    flagged_as: bool | None = None  # the CSV's own flag, when it has one
    kept_float: bool = False  # left in float by convert --keep-float (its error is not an int8 error)

    @property
    def flagged(self) -> bool:
        if self.kept_float:
            return False
        return self.flagged_as if self.flagged_as is not None else self.rmse_scale > FLAG_ABOVE

    def to_json(self) -> dict[str, object]:
        return {"layer": self.layer, "op": self.op, "rmse_scale": self.rmse_scale, "flagged": self.flagged,
                "kept_float": self.kept_float}


def _bool(text: str | None) -> bool | None:
    if text is None or not text.strip():
        return None
    return text.strip().lower() in ("true", "1", "yes")


def _find_csv(folder: Path) -> Path:
    if (folder / "layer_errors.csv").is_file():
        return folder / "layer_errors.csv"
    found = sorted(folder.glob("*.csv"))
    preferred = [f for f in found if any(k in f.name.lower() for k in ("layer", "quant", "error", "debug"))]
    if len(preferred) == 1 or (preferred and len(found) > 1):
        return preferred[0]
    if len(found) == 1:
        return found[0]
    how_many = "several" if found else "no"
    raise UserError(f"{folder}: {how_many} CSV files for per-layer quantization errors",
                    "give the CSV file itself (from tfshrink convert --report or QuantizationDebugger)")


def _column(header: dict[str, str], choices: tuple[str, ...]) -> str | None:
    for c in choices:
        if c in header:
            return header[c]
    return None


MAX_CSV_BYTES = 64 << 20  # a per-layer CSV is kilobytes; far more is not one (and is not read whole)


def _read_text(p: Path) -> str:
    """The CSV's text: UTF-8 (a BOM allowed), no NUL bytes; anything else is a UserError."""
    try:
        with p.open("rb") as f:
            data = f.read(MAX_CSV_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{p}: cannot read the file ({exc.strerror or type(exc).__name__})",
                        "check the path and its permissions") from None
    if len(data) > MAX_CSV_BYTES:
        raise UserError(f"{p}: over {MAX_CSV_BYTES >> 20} MiB, not a per-layer quantization error CSV",
                        "give the CSV from tfshrink convert --report")
    try:
        if b"\0" in data:
            raise ValueError("NUL byte")
        return data.decode("utf-8-sig")
    except ValueError:
        raise UserError(f"{p}: a binary file, not a UTF-8 CSV",
                        "give the CSV from tfshrink convert --report or QuantizationDebugger") from None


def read_quant_errors(path: str | Path) -> list[LayerError]:
    """The per-layer RMSE/scale values of a CSV (or of the one CSV in a folder), in file order."""
    p = Path(path)
    if p.is_dir():
        p = _find_csv(p)
    if p.exists() and not p.is_file():
        raise UserError(f"{p}: not a regular file (a FIFO, socket or device)",
                        "give the CSV from tfshrink convert --report")
    if not p.is_file():
        raise UserError(f"{p}: no such quantization error file",
                        "give the CSV from tfshrink convert --report")
    text = _read_text(p)
    try:
        with io.StringIO(text, newline="") as f:
            reader = csv.DictReader(f)
            header = {h.strip().lower(): h for h in (reader.fieldnames or [])}
            layer_col = _column(header, _LAYER_COLUMNS)
            ratio_col = _column(header, _RATIO_COLUMNS)
            mse_col, scale_col = header.get("mean_squared_error"), header.get("scale")
            if layer_col is None or (ratio_col is None and (mse_col is None or scale_col is None)):
                columns = ", ".join(header) or "none"
                raise UserError(f"{p}: not a per-layer quantization error CSV (columns: {columns})",
                                "expected a layer column and rmse/scale, or mean_squared_error and scale")
            op_col = next((header[c] for c in ("op", "op_name") if c in header and header[c] != layer_col), None)
            flag_col, kept_col = header.get("flagged"), header.get("kept_float")
            out = []
            for line, row in enumerate(reader, start=2):
                try:
                    if ratio_col is not None:
                        value = float(row[ratio_col])
                    else:
                        scale = float(row[scale_col])  # type: ignore[index]
                        value = math.sqrt(float(row[mse_col])) / scale if scale else math.nan  # type: ignore[index]
                except (TypeError, ValueError):
                    raise UserError(f"{p}:{line}: not a number in the error columns", "check the CSV") from None
                if math.isnan(value):
                    continue
                out.append(LayerError(str(row[layer_col]), str(row.get(op_col, "") if op_col else ""), value,
                                      _bool(row.get(flag_col)) if flag_col else None,
                                      bool(_bool(row.get(kept_col))) if kept_col else False))
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise UserError(f"{p}: not a readable CSV ({exc})", "give the CSV from tfshrink convert --report") from None
    if not out:
        raise UserError(f"{p}: the CSV lists no layers", "give the CSV from tfshrink convert --report")
    return out
