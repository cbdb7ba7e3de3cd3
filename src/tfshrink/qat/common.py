"""Small pieces the TF1 rewrite's parts share."""

from __future__ import annotations

from typing import Any

from tfshrink import _tf
from tfshrink.graph.fake_quant import ACT_SUFFIX

LAYER_TYPES = ("Conv2D", "DepthwiseConv2dNative", "MatMul")
BATCH_NORM_TYPES = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
ACTIVATION_TYPES = ("Relu", "Relu6")
MERGE_TYPES = ("Add", "AddV2", "ConcatV2")
PARAMETER_SOURCES = ("Const", "VariableV2", "Variable", "VarHandleOp")
NOT_PARAMETER_TYPES = ("Placeholder", "PlaceholderWithDefault", "Merge", "Switch", "Enter", "Exit",
                       "NextIteration", "LoopCond")


def const_value(tensor: Any) -> Any:
    """The value of a Const tensor as a numpy array, else None."""
    if tensor.op.type != "Const":
        return None
    return _tf.tf().make_ndarray(tensor.op.get_attr("value"))


def act_scope(tensor: Any) -> str:
    """The variable scope of the activation fake-quant of `tensor`: its producer's name."""
    index = tensor.value_index
    return f"{tensor.op.name}/{ACT_SUFFIX}" + (f"_{index}" if index else "")
