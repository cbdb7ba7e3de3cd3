"""Convert any supported model to TFLite: float32, float16, dynamic-range, full int8 or int16x8,
then check the result against the source.

    result = convert("model.keras", "model_int8.tflite", quantize="int8", calibration="photos/",
                     preprocess="mean=127.5,std=127.5")

The source (frozen .pb/.pbtxt, TF1 checkpoint, SavedModel, Keras .keras/.h5) is frozen in memory
and converted with TF's GraphDef converter. Defaults follow documented rules for the target
runtime (`target="cpu"`: LiteRT with XNNPACK; `"int8-only"`: integer-only hardware), set from
measurements in LiteRT and never from timings taken while converting (see `ConvertResult.notes`
for what was chosen and why). Timing on a machine is a separate step: `tune()` writes a plan file
that `convert(..., plan=PATH)` applies. The output is written only when everything succeeded,
atomically, and the same input and options give the same bytes on every machine.

The result is checked on held-out data (--eval, else every 5th calibration sample, which then
does not calibrate); a constant source output or a cosine below the threshold fails the check
and nothing is written.

Pieces: `api` (convert() and its result), `modes` (the --quantize modes), `converter` (TF's
converter and the quantizer), `heldout` (the data the result is checked on, and the check),
`check` (verifying the result), `accuracy` (scoring candidates against the source), `fake_quant`
(quantization-aware graphs), `rules` (int8 for a target, by rules; never timed), `delegation`
(XNNPACK partitions), `tuning` (tune(): measuring on a machine into a plan file), `layers` /
`ranges` / `rounding` / `hybrid` (int8's per-layer choices), `keep_auto` (--keep-float auto),
`auto` (--quantize auto).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tfshrink.conversion.modes import MODES, TARGETS

if TYPE_CHECKING:
    from tfshrink.conversion.api import ConvertResult, convert
    from tfshrink.conversion.tuning import TuneResult, tune
    from tfshrink.tflite.preprocess import Preprocess, parse_preprocess, read_preprocess

__all__ = ["MODES", "TARGETS", "ConvertResult", "Preprocess", "TuneResult", "convert", "parse_preprocess",
           "read_preprocess", "tune"]

_LAZY = {"ConvertResult": "tfshrink.conversion.api", "convert": "tfshrink.conversion.api",
         "TuneResult": "tfshrink.conversion.tuning", "tune": "tfshrink.conversion.tuning",
         "Preprocess": "tfshrink.tflite.preprocess", "parse_preprocess": "tfshrink.tflite.preprocess",
         "read_preprocess": "tfshrink.tflite.preprocess"}


def __getattr__(name: str) -> Any:
    # Lazy: the converter imports TensorFlow; `tfshrink --help` only needs MODES.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfshrink.conversion' has no attribute {name!r}")
