"""Multiply-adds of the heavy ops, counted from tensor shapes, as benchmark_model --show_flops does.

Convention: TensorFlow's benchmark_model (tensorflow/tools/benchmark) prints "FLOPs" as twice the
multiply-adds of its Conv2D, DepthwiseConv2dNative and MatMul nodes (one multiply and one add each):

* Conv2D:                  2 * output elements * filter_height * filter_width * filter_in_depth
* DepthwiseConv2dNative:   2 * output elements * filter_height * filter_width
* MatMul:                  2 * output elements * k (the reduced dimension of `a`)

tfshrink reports both: ``macs`` (multiply-adds) and ``flops = 2 * macs``, the number benchmark_model
shows. TFLite's CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED get the same formulas, so a model
and its TFLite conversion count the same. Other ops (adds, pooling, activations) are not counted.
Shapes include the batch that is benched, so the count scales with ``--batch``.

GraphDef shapes come from a weightless import (big constants swapped for placeholders, see
tfshrink.graph.shapes) with the benched input shapes set on the placeholders; TFLite shapes come
from the flatbuffer, or from an undelegated interpreter when the inputs were resized.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tfshrink.graph.ir import Graph, parse_tensor, tensor_name
from tfshrink.graph.shapes import tensor_specs
from tfshrink.tflite.flatbuffer import opcode_names, read

# GraphDef op type -> (kind, index of the input whose shape sets the reduction)
TF_COUNTED = {
    "Conv2D": ("conv", 1),
    "_FusedConv2D": ("conv", 1),
    "FusedPadConv2D": ("conv", 2),
    "FusedResizeAndPadConv2D": ("conv", 3),
    "QuantizedConv2D": ("conv", 1),
    "DepthwiseConv2dNative": ("depthwise", 1),
    "_FusedDepthwiseConv2dNative": ("depthwise", 1),
    "MatMul": ("matmul", 0),
    "_FusedMatMul": ("matmul", 0),
    "QuantizedMatMul": ("matmul", 0),
}
# TFLite builtin -> kind (the weights are input 1 for all three)
TFLITE_COUNTED = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "fc"}


@dataclass
class FlopCount:
    """Multiply-adds of the counted ops; ``unknown`` names ops skipped for unknown shapes."""

    macs: int = 0
    by_op: dict[str, int] = field(default_factory=dict)  # op type -> multiply-adds
    counted: int = 0
    unknown: list[str] = field(default_factory=list)

    @property
    def flops(self) -> int:
        """2 x multiply-adds: the number benchmark_model --show_flops prints."""
        return 2 * self.macs

    def add(self, op_type: str, macs: int) -> None:
        self.macs += macs
        self.by_op[op_type] = self.by_op.get(op_type, 0) + macs
        self.counted += 1

    def to_json(self) -> dict[str, Any]:
        return {"flops": self.flops, "macs": self.macs,
                "flops_by_op": {k: 2 * v for k, v in sorted(self.by_op.items(), key=lambda kv: -kv[1])},
                "flops_ops_counted": self.counted, "flops_ops_unknown": list(self.unknown)}


def _known(shape: Sequence[int | None] | None) -> bool:
    return shape is not None and all(d is not None and d >= 0 for d in shape)


def _elements(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _macs(kind: str, out: Sequence[int], operand: Sequence[int], transpose_a: bool = False) -> int | None:
    """Multiply-adds of one op from its output shape and its filter (or `a`) shape."""
    count = _elements(out)
    if kind == "conv" and len(operand) == 4:  # TF filter [h, w, in, out]
        return count * operand[0] * operand[1] * operand[2]
    if kind == "depthwise" and len(operand) == 4:  # TF filter [h, w, in, multiplier]
        return count * operand[0] * operand[1]
    if kind == "matmul" and len(operand) >= 2:  # a [m, k] (or [k, m] when transposed)
        return count * (operand[-2] if transpose_a else operand[-1])
    return None


def graph_flops(graph_def: Any, outputs: Sequence[str], shapes: Mapping[str, Sequence[int]]) -> FlopCount:
    """Count the multiply-adds of the ops `outputs` depend on, with placeholders set to `shapes`.

    The GraphDef is not changed: tensor_specs shape-infers a weightless copy.
    """
    graph = Graph(graph_def)  # wraps the nodes, copies nothing
    needed = graph.ancestors(parse_tensor(o)[0] for o in outputs)
    targets = []
    for name in sorted(needed):
        node = graph.node(name)
        if node.op in TF_COUNTED:
            data = graph.data_inputs(name)
            index = TF_COUNTED[node.op][1]
            if index < len(data):
                targets.append((node, tensor_name(*data[index])))
    result = FlopCount()
    if not targets:
        return result
    refs = [t for node, operand in targets for t in (node.name, operand)]
    specs = tensor_specs(graph, list(dict.fromkeys(refs)), shapes)
    for node, operand in targets:
        out_shape, operand_shape = specs[node.name][1], specs[operand][1]
        kind = TF_COUNTED[node.op][0]
        macs = None
        if _known(out_shape) and _known(operand_shape):
            transpose = bool(node.attr["transpose_a"].b) if "transpose_a" in node.attr else False
            macs = _macs(kind, out_shape, operand_shape, transpose)  # type: ignore[arg-type]
        if macs is None:
            result.unknown.append(node.name)
        else:
            result.add(node.op, macs)
    return result


def tflite_flops(model_bytes: bytes, runtime_shapes: Mapping[int, Sequence[int]] | None = None) -> FlopCount:
    """Count the multiply-adds of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED in subgraph 0.

    Shapes are the flatbuffer's, except for tensor indexes in `runtime_shapes` (the shapes an
    interpreter computed after its inputs were resized).
    """

    model = read(model_bytes)
    codes = opcode_names(model)
    result = FlopCount()
    if not model.SubgraphsLength():
        return result
    sub = model.Subgraphs(0)
    runtime_shapes = runtime_shapes or {}

    def shape(index: int) -> list[int] | None:
        if index in runtime_shapes:
            return [int(d) for d in runtime_shapes[index]]
        tensor = sub.Tensors(index)
        return [int(tensor.Shape(d)) for d in range(tensor.ShapeLength())]

    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        name = codes[op.OpcodeIndex()]
        kind = TFLITE_COUNTED.get(name)
        if kind is None or op.InputsLength() < 2 or op.OutputsLength() < 1:
            continue
        out, weights = shape(op.Outputs(0)), shape(op.Inputs(1))
        macs = None
        if _known(out) and _known(weights):
            count = _elements(out)  # type: ignore[arg-type]
            w = weights  # type: ignore[assignment]
            if kind == "conv" and len(w) == 4:  # [out, h, w, in]
                macs = count * w[1] * w[2] * w[3]
            elif kind == "depthwise" and len(w) == 4:  # [1, h, w, channels]
                macs = count * w[1] * w[2]
            elif kind == "fc" and len(w) == 2:  # [units, k]
                macs = count * w[1]
        if macs is None:
            result.unknown.append(f"{name}#{i}")
        else:
            result.add(name, macs)
    return result
