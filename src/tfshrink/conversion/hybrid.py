"""Dynamic-range (hybrid) layers inside an int8 model.

A dynamic-range model runs a conv or fully-connected layer with float activations and int8 weights
(one symmetric scale per output channel): LiteRT's XNNPACK delegate quantizes the input on the fly
and runs its dynamic-range kernel. On some CPUs that kernel beats the int8 one for a given layer
(digits CNN, x86 without VNNI: a 16->32-channel 3x3 conv on a 4x4 map took 2.1 us dynamic-range
against 2.6 us int8). The int8 quantizer cannot write such a layer: a layer it leaves out of int8
stays all float. `hybridize` gives the float layers it is told about the dynamic-range form: their
weights become int8 with per-channel scales, exactly as TFLite's dynamic-range quantizer writes
them (weights with fewer than `MIN_WEIGHTS` elements stay float, as there), and the op's version
and the model's min_runtime_version rise to what the hybrid kernel needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfshrink.tflite.flatbuffer import op_names, pack, schema, text, type_names, unpack

MIN_WEIGHTS = 1024  # TFLite's dynamic-range quantizer leaves smaller weight tensors in float
# op -> (axis of the output channels in its weights, op version of the hybrid per-channel kernel as
# TF 2.21's dynamic-range converter writes it, the LiteRT release that runs that version)
HYBRID = {
    "CONV_2D": (0, 5, "2.4.0"),
    "DEPTHWISE_CONV_2D": (3, 6, "2.3.0"),
    "FULLY_CONNECTED": (0, 12, "2.17.0"),
}
_RUNTIME_KEY = "min_runtime_version"


@dataclass(frozen=True)
class Hybrid:
    """The model after `hybridize`, and the layers (output tensor names) it gave int8 weights."""

    data: bytes
    layers: tuple[str, ...]


def hybridize(data: bytes, layers: Collection[str]) -> Hybrid:
    """`data` with each float CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED whose output tensor is
    named in `layers` and whose constant float32 weights have at least `MIN_WEIGHTS` elements in
    dynamic-range form. Other ops and layers are left as they are; no change, same bytes."""
    fb = schema()
    model = unpack(data)
    sub = model.subgraphs[0]
    names = op_names()
    float32, int8 = (next(k for k, v in type_names().items() if v == t) for t in ("FLOAT32", "INT8"))
    users = Counter(t.buffer for t in sub.tensors)
    done: list[str] = []
    runtime = ""
    for op in sub.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
        if name not in HYBRID or len(op.inputs) < 2 or text(sub.tensors[op.outputs[0]].name) not in layers:
            continue
        x, w = sub.tensors[op.inputs[0]], sub.tensors[op.inputs[1]]
        buffer = model.buffers[w.buffer] if 0 < w.buffer < len(model.buffers) else None
        if x.type != float32 or w.type != float32 or buffer is None or buffer.data is None:
            continue
        weights = np.frombuffer(bytes(buffer.data), np.float32)
        if weights.size < MIN_WEIGHTS or weights.size != int(np.prod(w.shape)):
            continue
        axis, version, needs = HYBRID[name]
        q, scale = _per_channel_int8(weights.reshape(w.shape), axis)
        if users[w.buffer] > 1:  # shared with another tensor: give this one its own buffer
            buffer = fb.BufferT()
            model.buffers.append(buffer)
            w.buffer = len(model.buffers) - 1
        buffer.data = np.frombuffer(q.tobytes(), np.uint8)
        w.type = int8
        w.quantization = fb.QuantizationParametersT()
        w.quantization.scale = scale
        w.quantization.zeroPoint = np.zeros(scale.size, np.int64)
        w.quantization.quantizedDimension = axis
        if name == "FULLY_CONNECTED" and op.builtinOptions is not None:
            op.builtinOptions.asymmetricQuantizeInputs = True  # as the dynamic-range converter sets it
        code.version = max(code.version, version)
        runtime = max(runtime, needs, key=_version_key)
        done.append(text(sub.tensors[op.outputs[0]].name))
    if not done:
        return Hybrid(data, ())
    _raise_min_runtime(model, runtime)
    return Hybrid(pack(model, len(data)), tuple(done))


def _per_channel_int8(weights: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights in [-127, 127] with one float32 scale (max |w| / 127) per slice along
    `axis`; an all-zero channel gets scale 1."""
    moved = np.moveaxis(weights, axis, 0)
    peak = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shape = [1] * weights.ndim
    shape[axis] = scale.size
    q = np.clip(np.round(weights / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def _raise_min_runtime(model: Any, needs: str) -> None:
    """Set the model's min_runtime_version metadata to `needs` where it says less."""
    for entry in model.metadata or []:
        if text(entry.name) != _RUNTIME_KEY:
            continue
        buffer = model.buffers[entry.buffer]
        raw = bytes(buffer.data) if buffer.data is not None else b""
        width = len(raw)
        if _version_key(needs) > _version_key(raw.split(b"\0")[0].decode(errors="replace")) and width > len(needs):
            buffer.data = np.frombuffer(needs.encode().ljust(width, b"\0"), np.uint8)


def _version_key(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
