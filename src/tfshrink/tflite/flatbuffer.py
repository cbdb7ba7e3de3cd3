"""Reading and writing a .tflite flatbuffer with LiteRT's schema (ai_edge_litert.schema_py_generated):
the names of its enums and of each operator (the one place that maps the schema's numbers to
names), and packing an edited model (its object API form) back into bytes."""

from __future__ import annotations

import struct
from functools import cache
from typing import Any

import numpy as np

from tfshrink.errors import UserError


def schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def read(data: bytes) -> Any:
    """The read-only flatbuffer view of a .tflite (schema Model): fields are decoded on access, no
    tensor data is copied. The one place a .tflite is parsed; every reader starts here."""
    return schema().Model.GetRootAs(data, 0)


def check(data: bytes, where: str) -> None:
    """Refuse a .tflite whose flatbuffer cannot be walked whole (an offset past the end, a bad
    string): reading it field by field later would fail at a random place. The object API form is
    built once and dropped: every table, vector and string is visited."""
    try:
        _check_references(unpack(data))
    except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError, OverflowError, MemoryError,
            AttributeError):
        raise UserError(f"{where}: the TFLite flatbuffer is corrupt (an offset, index or name in it is invalid)",
                        "the file is truncated or corrupt; convert the model again") from None


def _check_references(model: Any) -> None:
    """Every index a table holds points at something that exists (a corrupt index would make a
    reader follow a random offset later). Raises IndexError otherwise."""
    buffers = len(model.buffers or [])
    codes = len(model.operatorCodes or [])
    for md in model.metadata or []:
        if not 0 <= md.buffer < buffers:
            raise IndexError("metadata buffer")
        text(md.name)  # names are UTF-8: readers decode them
    for code in model.operatorCodes or []:
        text(code.customCode)
    for sub in model.subgraphs or []:
        tensors = sub.tensors or []
        for t in tensors:
            if not 0 <= t.buffer < max(buffers, 1):
                raise IndexError("tensor buffer")
            text(t.name)
        ids = list(sub.inputs if sub.inputs is not None else []) + list(sub.outputs if sub.outputs is not None else [])
        for op in sub.operators or []:
            if not 0 <= op.opcodeIndex < codes:
                raise IndexError("opcode")
            ids += list(op.inputs if op.inputs is not None else []) + list(op.outputs if op.outputs is not None else [])
        if any(not -1 <= int(i) < len(tensors) for i in ids):
            raise IndexError("tensor index")
    for sig in model.signatureDefs or []:
        if not 0 <= sig.subgraphIndex < len(model.subgraphs or []):
            raise IndexError("signature subgraph")
        tensors = model.subgraphs[sig.subgraphIndex].tensors or []
        text(sig.signatureKey)
        for tm in list(sig.inputs or []) + list(sig.outputs or []):
            if not 0 <= tm.tensorIndex < len(tensors):
                raise IndexError("signature tensor")
            text(tm.name)


def unpack(data: bytes) -> Any:
    """The editable object-API form (schema ModelT) of a .tflite, for rewriting it (see `pack`)."""
    return schema().ModelT.InitFromObj(read(data))


def _enum_names(cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@cache
def op_names() -> dict[int, str]:
    """BuiltinOperator number -> name (CONV_2D)."""
    return _enum_names(schema().BuiltinOperator)


@cache
def type_names() -> dict[int, str]:
    """TensorType number -> name (FLOAT32, INT8)."""
    return _enum_names(schema().TensorType)


def text(value: Any) -> str:
    """A flatbuffer string field (bytes in the object API, None when absent) as str."""
    return value.decode() if isinstance(value, bytes) else str(value or "")


def builtin_ops() -> set[str]:
    """Every builtin op name TFLite's schema knows."""
    return set(op_names().values())


def opcode_names(model: Any, *, custom_codes: bool = True) -> list[str]:
    """The op name of each of `model`'s operator codes (index it with `op.OpcodeIndex()`): the
    builtin name, or for CUSTOM the op's custom code (TFLite_Detection_PostProcess) unless
    `custom_codes` is False. An op newer than this schema gets its number."""
    names = op_names()
    out = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # codes over 127 live in the new field
        name = names.get(code, str(code))
        if name == "CUSTOM" and custom_codes:
            name = (oc.CustomCode() or b"?").decode()
        out.append(name)
    return out


def pack(model: Any, size_hint: int = 0) -> bytes:
    """The bytes of `model` (a schema ModelT) as a .tflite file. Each distinct int64 / float32 array
    is written once and every table that holds it points at that one copy, as flatbuffers allows (a
    vector may be referenced from any number of tables): in a per-channel int8 model nearly every
    weight and bias has a zero-point array of zeros, one int64 per channel, so sharing saves ~8
    bytes per channel per tensor. Weight buffers (uint8 arrays) are written as they are. Same
    model, same bytes."""
    builder = _sharing_builder()(max(1024, size_hint + 4096))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@cache
def _sharing_builder() -> Any:
    """The Builder class that shares arrays (flatbuffers is imported on first use)."""
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):  # type: ignore[misc]
        def __init__(self, initial: int) -> None:
            super().__init__(initial)
            self._shared: dict[tuple[str, bytes], int] = {}

        def CreateNumpyVector(self, x: Any) -> int:  # noqa: N802 (flatbuffers' name)
            array = np.asarray(x)
            if array.dtype not in (np.int64, np.float32) or array.ndim != 1:
                return super().CreateNumpyVector(x)
            key = (array.dtype.str, array.tobytes())
            found = self._shared.get(key)
            if found is None:
                found = self._shared[key] = super().CreateNumpyVector(x)
            return found

    return SharingBuilder

