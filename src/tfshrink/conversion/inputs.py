"""The converter's input specs: names, dtypes and shapes from the model, --inputs and --input-shape
(an unknown batch becomes 1, unknown image dims the --preprocess size), and the stored
preprocessing's scale for an integer input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tfshrink.data.calibration import InputSpec
from tfshrink.data.feeds import parse_shape_overrides
from tfshrink.data.shapes import fill_shapes
from tfshrink.errors import UserError
from tfshrink.graph.ir import Graph
from tfshrink.graph.shapes import tensor_specs
from tfshrink.model import Model
from tfshrink.names import resolve_tensors, unknown_name_error
from tfshrink.tflite.flatbuffer import read, type_names
from tfshrink.tflite.preprocess import Preprocess


def shape_overrides(shapes: Mapping[str, Sequence[int]] | Sequence[str] | None) -> dict[str, tuple[int, ...]]:

    if not shapes:
        return {}
    if isinstance(shapes, Mapping):
        return {k.split(":")[0]: tuple(int(d) for d in v) for k, v in shapes.items()}
    return parse_shape_overrides(list(shapes))


def input_specs(model: Model, frozen: Any, wanted: list[str], overrides: dict[str, tuple[int, ...]],
                 spec: Preprocess | None, notes: list[str], defaults: dict[str, Any], where: str) -> list[InputSpec]:
    """The converter's inputs with fully known shapes: --input-shape first, then batch 1 and the
    --preprocess size for images; any other unknown dim is a UserError."""

    graph = Graph(frozen.graph_def)
    if wanted:
        names = resolve_tensors(wanted, graph.names(), where)
    else:
        names = [n for n in frozen.inputs if graph.node(n).op == "Placeholder"]
        skipped = [n for n in frozen.inputs if n not in names]
        if skipped:
            notes.append(f"inputs with defaults keep them: {', '.join(skipped)} (give --inputs to feed them)")
    if not names:
        raise UserError(f"{where}: the model has no inputs to convert", "give --inputs NODE[,NODE]")
    for key in overrides:
        if key not in {n.split(":")[0] for n in names}:

            raise unknown_name_error("input", key, names, where)
    found = tensor_specs(graph, names)
    by_name = {s.name: s for s in model.inputs}
    described = []
    for name in names:
        dtype, shape = found[name]
        if dtype == "unknown" and name in by_name:
            dtype, shape = by_name[name].dtype, by_name[name].shape
        described.append((name, dtype, shape))
    size = spec.size if spec is not None and spec.size else None
    out, batch_fixed = fill_shapes(described, overrides, where, size, None if spec is None else spec.input)
    if batch_fixed:
        defaults["batch"] = dict.fromkeys(batch_fixed, 1)
        notes.append(f"batch size fixed to 1 for {', '.join(batch_fixed)} (it was unknown); "
                     "give --input-shape NAME=N,... for another")
    return out


def quantized_input(spec: Preprocess | None, data: bytes) -> Preprocess | None:
    """Add the quantized input's scale and zero point (and the raw pixel map) to the spec."""
    if spec is None:
        return None

    model = read(data)
    sub = model.Subgraphs(0)
    for i in range(sub.InputsLength()):
        tensor = sub.Tensors(sub.Inputs(i))
        if (tensor.Name() or b"").decode().split(":")[0] != (spec.input or "").split(":")[0]:
            continue
        dtype = type_names().get(tensor.Type(), "").lower()
        q = tensor.Quantization()
        if dtype in ("int8", "uint8", "int16") and q is not None and q.ScaleLength():
            return spec.with_quantization(dtype, float(q.Scale(0)), int(q.ZeroPoint(0)))
    return spec
