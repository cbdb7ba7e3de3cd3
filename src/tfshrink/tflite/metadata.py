"""Reading and writing a .tflite flatbuffer's metadata entries and signature, and finding the ops
that compute in float, with LiteRT's schema (ai_edge_litert.schema_py_generated)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfshrink.tflite.flatbuffer import opcode_names, pack, read, schema, text, type_names, unpack

SIGNATURE_KEY = "serving_default"
TARGET_METADATA = "tfshrink.target"  # JSON: {target, quantize, rules, plan_sha256}, written by convert
_FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")


def read_metadata(data: bytes) -> dict[str, bytes]:
    """Metadata entry name -> raw bytes of its buffer."""
    model = read(data)
    out = {}
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        buf = model.Buffers(md.Buffer())
        out[(md.Name() or b"").decode()] = bytes(buf.DataAsNumpy()) if buf.DataLength() else b""
    return out


def read_target(data: bytes) -> dict[str, Any] | None:
    """What convert recorded in TARGET_METADATA: {"target": "cpu" | "int8-only", "quantize": mode,
    "rules": version, "plan_sha256": hash or None}; None when the entry is absent, {"error": ...}
    when it is not valid JSON."""
    import json

    raw = read_metadata(data).get(TARGET_METADATA)
    if raw is None:
        return None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {"error": f"the {TARGET_METADATA} metadata entry is corrupt"}
    return doc if isinstance(doc, dict) else {"error": f"the {TARGET_METADATA} metadata entry is corrupt"}


def rewrite(data: bytes, entries: Mapping[str, bytes] | None = None,
            signature: tuple[Sequence[str], Sequence[str]] | None = None) -> bytes:
    """A copy of the model with metadata `entries` added (an entry of the same name is replaced)
    and, when the model has none, a `serving_default` signature whose keys are `signature`'s
    (input names, output names) in the subgraph's input and output order. Same input, same bytes."""

    fb = schema()
    model = unpack(data)
    for name, payload in (entries or {}).items():
        buffer = fb.BufferT()
        buffer.data = np.frombuffer(payload, dtype=np.uint8)
        existing = [m for m in (model.metadata or []) if text(m.name) == name]
        if existing:
            model.buffers[existing[0].buffer] = buffer
            continue
        model.buffers.append(buffer)
        entry = fb.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), entry]
    if signature is not None and not model.signatureDefs and len(model.subgraphs) == 1:
        sub = model.subgraphs[0]
        names_in, names_out = signature
        if len(names_in) == len(sub.inputs) and len(names_out) == len(sub.outputs):
            sig = fb.SignatureDefT()
            sig.signatureKey = SIGNATURE_KEY
            sig.subgraphIndex = 0
            sig.inputs = [_tensor_map(fb, n, int(i)) for n, i in zip(names_in, sub.inputs, strict=True)]
            sig.outputs = [_tensor_map(fb, n, int(i)) for n, i in zip(names_out, sub.outputs, strict=True)]
            model.signatureDefs = [sig]
    return pack(model, len(data))


def _tensor_map(fb: Any, name: str, index: int) -> Any:
    tm = fb.TensorMapT()
    tm.name = name
    tm.tensorIndex = index
    return tm


@dataclass
class Precision:
    """Which ops of a converted model compute in float."""

    float_ops: dict[str, int] = field(default_factory=dict)  # op -> count of ops computing in float
    float_nodes: list[str] = field(default_factory=list)  # their output tensor names
    edge_conversions: dict[str, int] = field(default_factory=dict)  # QUANTIZE/DEQUANTIZE at inputs/outputs
    inner_conversions: int = 0  # QUANTIZE/DEQUANTIZE around float ops inside the graph
    weight_dequantize: int = 0  # DEQUANTIZE of constant weights (float16 / dynamic-range)
    dynamic_range_ops: dict[str, int] = field(default_factory=dict)  # of float_ops: those with int8 weights

    def to_json(self) -> dict[str, Any]:
        return {"float_ops": self.float_ops, "float_nodes": self.float_nodes,
                "dynamic_range_ops": self.dynamic_range_ops,
                "edge_conversions": self.edge_conversions, "inner_conversions": self.inner_conversions,
                "weight_dequantize": self.weight_dequantize}


def precision(data: bytes) -> Precision:
    """Classify every op of the main subgraph: float compute (and, of those, the dynamic-range ones
    that read int8 weights), conversions at the model's edges, conversions around float ops,
    dequantized weights. An op computes in float when a non-constant
    input or an output is a float tensor (QUANTIZE and DEQUANTIZE are conversions, not compute)."""
    model = read(data)
    types = type_names()
    codes = opcode_names(model)
    out = Precision()
    if not model.SubgraphsLength():
        return out
    sub = model.Subgraphs(0)
    graph_inputs = {int(sub.Inputs(i)) for i in range(sub.InputsLength())}
    graph_outputs = {int(sub.Outputs(i)) for i in range(sub.OutputsLength())}

    def is_const(t: int) -> bool:
        tensor = sub.Tensors(t)
        buf = tensor.Buffer()
        return 0 < buf < model.BuffersLength() and model.Buffers(buf).DataLength() > 0

    def is_float(t: int) -> bool:
        return types.get(sub.Tensors(t).Type(), "") in _FLOAT_TYPES

    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        name = codes[op.OpcodeIndex()]
        ins = [int(op.Inputs(k)) for k in range(op.InputsLength()) if op.Inputs(k) >= 0]
        outs = [int(op.Outputs(k)) for k in range(op.OutputsLength())]
        if name in ("QUANTIZE", "DEQUANTIZE"):
            if name == "DEQUANTIZE" and ins and is_const(ins[0]):
                out.weight_dequantize += 1
            elif (name == "QUANTIZE" and ins and ins[0] in graph_inputs) or \
                    (name == "DEQUANTIZE" and outs and outs[0] in graph_outputs):
                out.edge_conversions[name] = out.edge_conversions.get(name, 0) + 1
            elif (ins and is_float(ins[0])) or (outs and is_float(outs[0])):
                out.inner_conversions += 1
            continue
        if any(is_float(t) for t in ins if not is_const(t)) or any(is_float(t) for t in outs):
            out.float_ops[name] = out.float_ops.get(name, 0) + 1
            if any(types.get(sub.Tensors(t).Type(), "") == "INT8" for t in ins if is_const(t)):
                out.dynamic_range_ops[name] = out.dynamic_range_ops.get(name, 0) + 1  # float activations, int8 weights
            out.float_nodes.append((sub.Tensors(outs[0]).Name() or b"").decode() if outs else name)
    out.float_ops = dict(sorted(out.float_ops.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def activation_types(data: bytes) -> dict[str, int]:
    """How many non-constant tensors of the main subgraph each type has ({"INT8": 40, "FLOAT32": 2})."""
    model = read(data)
    types = type_names()
    out: dict[str, int] = {}
    if not model.SubgraphsLength():
        return out
    sub = model.Subgraphs(0)
    for t in range(sub.TensorsLength()):
        tensor = sub.Tensors(t)
        buf = tensor.Buffer()
        if 0 < buf < model.BuffersLength() and model.Buffers(buf).DataLength() > 0:
            continue
        name = types.get(tensor.Type(), str(tensor.Type()))
        out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def quantization_summary(data: bytes) -> dict[str, Any] | None:
    """For a model whose activations are (partly) integer: its activation types and which ops
    compute in float (`precision`). None for float, float16 and dynamic-range models."""
    acts = activation_types(data)
    if not any(t in acts for t in ("INT8", "UINT8", "INT16")):
        return None
    return {"activation_types": acts, **precision(data).to_json()}


def tensor_names(data: bytes) -> list[tuple[str, str]]:
    """(op name, output tensor name) of every op of the main subgraph, in order."""
    model = read(data)
    codes = opcode_names(model, custom_codes=False)
    sub = model.Subgraphs(0)
    out = []
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        if op.OutputsLength():
            out.append((codes[op.OpcodeIndex()], (sub.Tensors(op.Outputs(0)).Name() or b"").decode()))
    return out
