"""Fully int8 TFLite from a quantization-aware trained model, with the ranges its FakeQuant nodes
learned in training: no calibration data.

Converter path (TF 2.21): the frozen GraphDef is imported into a `tf.compat.v1.wrap_function`,
pruned to its inputs and outputs, and given to the v2 converter (`from_concrete_functions`) with
`optimizations=[DEFAULT]` and no representative dataset. The converter sees FakeQuant ops,
takes its quantization-aware-training path (QuantizationMode.is_quantization_aware_training), and
quantizes every op whose input and output ranges the FakeQuant nodes give, the weights with the
per-channel ranges their FakeQuantWithMinMaxVarsPerChannel nodes hold.

The other paths fail in 2.21: the v1 GraphDef converter (`tf.compat.v1.lite.TFLiteConverter`)
keeps its `inference_type` default of float32 unless told otherwise, which turns the FakeQuant
nodes into uint8 QUANTIZE/DEQUANTIZE pairs around float kernels; with `inference_type=tf.int8` it
does quantize, but demands `quantized_input_stats` even for a float input and has no int8 output
type. `target_spec.supported_ops = [TFLITE_BUILTINS_INT8]` on a FakeQuant graph fails in both:
the v1 converter raises AttributeError ('QuantizationMode' object has no attribute
'_experimental_low_bit_qat', read before it is set), the v2 converter asks for a
representative_dataset. So the builtin op set is left at its default and the result is checked
for float ops instead (`QatConvertResult.float_ops`).

`tfshrink convert --quantize int8` takes this path by itself when the frozen graph holds FakeQuant
nodes (`has_fake_quant`): `checked_ranges`, `convert_fake_quant_graph` and `range_feeds` are the
pieces it shares with `convert_qat`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfshrink import _tf
from tfshrink.conversion.fake_quant import (
    checked_ranges,
    convert_fake_quant_graph,
    quantized_outputs,
    range_feeds,
    unquantized_outputs,
)
from tfshrink.conversion.result import Written
from tfshrink.conversion.rules import target_entry
from tfshrink.data.shapes import fill_shapes
from tfshrink.errors import UserError
from tfshrink.fileio import atomic_write, check_output
from tfshrink.graph.fake_quant import (
    FakeQuantRange,
)
from tfshrink.graph.ir import Graph
from tfshrink.graph.shapes import tensor_specs
from tfshrink.model import load
from tfshrink.model.base import TensorSpec
from tfshrink.model.graphdef import GraphDefModel
from tfshrink.model.tflite import TFLiteModel, flatbuffer_summary, io_specs
from tfshrink.names import split_names
from tfshrink.tflite.metadata import precision, rewrite
from tfshrink.verification import VerifyResult, compare

IO_TYPES = ("float32", "int8", "uint8")


@dataclass(frozen=True)
class QatConvertResult(Written):
    """What `convert_qat` wrote: the int8 model, where its ranges came from, how close it is."""

    input_type: str
    output_type: str
    float_ops: dict[str, int]  # ops left computing in float (none for a fully int8 model)
    edge_conversions: dict[str, int]  # QUANTIZE / DEQUANTIZE at the model's float inputs/outputs
    ranges: tuple[FakeQuantRange, ...]

    @property
    def fully_int8(self) -> bool:
        return not self.float_ops

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "output": self.output, "bytes": self.bytes,
                "quantize": "int8", "ranges_from": "training",
                "input_type": self.input_type, "output_type": self.output_type,
                "inputs": [s.to_json() for s in self.inputs], "outputs": [s.to_json() for s in self.outputs],
                "ops": self.ops, "float_ops": self.float_ops, "edge_conversions": self.edge_conversions,
                "fully_int8": self.fully_int8,
                "fake_quant_ranges": [r.to_json() for r in self.ranges],
                "notes": list(self.notes), "warnings": list(self.warnings),
                "verification": None if self.verification is None else {
                    "inputs": self.verify_inputs, **self.verification.to_json()}}


def convert_qat(source: Any, output: str | Path, *, input_type: str = "float32", output_type: str = "float32",
                inputs: Sequence[str] | str | None = None, outputs: Sequence[str] | str | None = None,
                input_shapes: Mapping[str, Sequence[int]] | None = None, verify: bool = True,
                verify_samples: int = 16, seed: int = 0) -> QatConvertResult:
    """Convert a quantization-aware trained model to a fully int8 .tflite at `output`.

    `source`: a frozen .pb/.pbtxt of an eval graph (create_eval_graph, then tfshrink.freeze), the
    eval graph's checkpoint, a .keras file of a `quantize_model` model, or that Keras model itself.
    The activation and weight ranges are the FakeQuant nodes'; no calibration data is used.
    input_type / output_type: "float32" (QUANTIZE / DEQUANTIZE at the edges), "int8" or "uint8".
    inputs / outputs pick tensors (default: the placeholders and detected outputs); input_shapes
    fix unknown dims (an unknown batch becomes 1). With `verify`, the .tflite is run against the
    frozen fake-quant graph on seeded random inputs drawn from the input's learned range.
    Raises UserError when the source holds no FakeQuant nodes, when its ranges were never learned
    (quant_delay at least as long as training), or when the converter fails.
    """
    in_type, out_type = (str(input_type).lower(), str(output_type).lower())
    for flag, value in (("input_type", in_type), ("output_type", out_type)):
        if value not in IO_TYPES:
            raise UserError(f"{flag} {value} is not one of {', '.join(IO_TYPES)}", "e.g. int8")
    with _source_model(source, outputs) as (model, where):
        out_path = check_output(output, [model.path])
        notes: list[str] = []
        warnings: list[str] = []
        if not model.is_tensorflow:
            raise UserError(f"{where}: already a TFLite model", "convert_qat takes the eval graph's checkpoint, "
                            "its frozen .pb, or a quantize_model Keras model")
        wanted = quantized_outputs(model, split_names(outputs), notes)
        frozen = model.freeze(wanted or None)
        graph_def = frozen.graph_def
        ranges, note = checked_ranges(model, graph_def, where, warnings)
        notes.insert(0, note)
        specs = _input_specs(graph_def, frozen.inputs, split_names(inputs), input_shapes or {}, where, notes)
        data = convert_fake_quant_graph(graph_def, specs, list(frozen.outputs), in_type, out_type, where)

        # the default target's entry, as `convert --quantize int8` writes for the same graph: the same bytes
        data = rewrite(data, target_entry("cpu", "int8", None), signature=([s.name for s in specs],
                                                                           list(frozen.outputs)))
        prec = precision(data)
        if prec.float_ops:
            ops = ", ".join(f"{op} x{n}" for op, n in prec.float_ops.items())
            warnings.append(f"{sum(prec.float_ops.values())} op(s) stayed float: {ops} ({', '.join(prec.float_nodes[:4])}); "
                            "no FakeQuant gave their input or output range" + unquantized_outputs(graph_def, frozen.outputs))
        verification, described = None, ""
        if verify:
            verification, described = _verify(graph_def, specs, list(frozen.outputs), ranges, data, out_path,
                                              verify_samples, seed, where)
        io = io_specs(data)
        atomic_write(out_path, data)
    return QatConvertResult(in_type, out_type, dict(prec.float_ops), dict(prec.edge_conversions), tuple(ranges),
                            source=str(where), format=model.format, output=str(out_path), bytes=len(data),
                            inputs=tuple(io[0]), outputs=tuple(io[1]), ops=flatbuffer_summary(data)["ops"],
                            notes=tuple(notes), warnings=tuple(warnings), verification=verification,
                            verify_inputs=described)


@contextlib.contextmanager
def _source_model(source: Any, outputs: Sequence[str] | str | None) -> Iterator[tuple[Any, str]]:
    """The loaded model of a path or an in-memory Keras model (saved to a temporary .keras)."""

    wanted = split_names(outputs) or None
    if isinstance(source, (str, Path)):
        model = load(source, outputs=wanted)
        try:
            yield model, str(source)
        finally:
            model.close()
        return
    if not hasattr(source, "layers") or not hasattr(source, "save"):
        raise UserError(f"convert_qat takes a path or a Keras model, not {type(source).__name__}",
                        "pass the eval graph's checkpoint or frozen .pb, or a quantize_model model")
    with tempfile.TemporaryDirectory(prefix="tfshrink-qat-") as tmp:
        path = Path(tmp) / f"{source.name or 'model'}.keras"
        source.save(path)
        model = load(path)
        try:
            yield model, f"Keras model {source.name!r}"
        finally:
            model.close()


def _input_specs(graph_def: Any, placeholders: Sequence[str], wanted: list[str],
                 overrides: Mapping[str, Sequence[int]], where: str, notes: list[str]) -> list[Any]:

    graph = Graph(graph_def)
    names = wanted or [n for n in placeholders if graph.node(n).op == "Placeholder"]
    if not names:
        raise UserError(f"{where}: the model has no inputs to convert", "give inputs=[...]")
    found = tensor_specs(graph, names)
    specs, fixed = fill_shapes([(n, *found[n]) for n in names], overrides, where)
    if fixed:
        notes.append(f"batch size fixed to 1 for {', '.join(fixed)} (it was unknown); give input_shapes for another")
    return specs


def _verify(graph_def: Any, specs: Sequence[Any], outputs: list[str], ranges: Sequence[FakeQuantRange],
            data: bytes, out_path: Path, samples: int, seed: int, where: str) -> tuple[VerifyResult | None, str]:

    feeds, drawn = range_feeds(graph_def, specs, ranges, samples, seed)
    with tempfile.TemporaryDirectory(prefix="tfshrink-qat-") as tmp:
        tmp_path = Path(tmp) / out_path.name
        tmp_path.write_bytes(data)
        try:
            with _tf.quiet_native():
                lite = TFLiteModel(tmp_path)
        except UserError as exc:
            return None, f"not verified: {exc.message}"
        reference = GraphDefModel(Path(where), graph_def=graph_def, outputs=outputs)
        try:
            reference.inputs = [TensorSpec(s.name, s.dtype, tuple(feeds[0][s.name].shape)) for s in specs]
            lite.path = out_path
            result = compare(reference, lite, feeds, atol=float("inf"), rtol=0.0)
        finally:
            reference.close()
            lite.close()
    how = "within the inputs' learned ranges" if drawn else "in [-1, 1)"
    return result, f"{len(feeds)} seeded random input(s) {how}, against the frozen fake-quant graph"
