"""Reading a .tflite flatbuffer with LiteRT's schema (ai_edge_litert.schema_py_generated): the names
of its enums and of each operator, the one place that maps the schema's numbers to names."""

from __future__ import annotations

from functools import cache
from typing import Any


def schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


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
