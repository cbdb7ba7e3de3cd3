"""Convert a quantization-aware trained graph (FakeQuant nodes) to an int8 .tflite with the ranges
training learned, no calibration data.

Converter path (TF 2.21): the frozen GraphDef is imported into a `tf.compat.v1.wrap_function`,
pruned to its inputs and outputs, and given to the v2 converter (`from_concrete_functions`) with
`optimizations=[DEFAULT]` and no representative dataset. The converter sees FakeQuant ops,
takes its quantization-aware-training path, and quantizes every op whose input and output ranges
the FakeQuant nodes give, the weights with the per-channel ranges their
FakeQuantWithMinMaxVarsPerChannel nodes hold (see tfshrink.qat.convert for the paths that fail).

`tfshrink convert --quantize int8` takes this path by itself when the frozen graph holds FakeQuant
nodes (`has_fake_quant`); `tfshrink.qat.convert_qat` is the same conversion as its own call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.conversion.converter import converter_failure
from tfshrink.errors import UserError
from tfshrink.graph.fake_quant import (
    FAKE_QUANT_TYPES,
    PASS_THROUGH_TYPES,
    QUANT_DELAY_VAR,
    FakeQuantRange,
    checkpoint_variables,
    fake_quant_ranges,
    steps_trained,
    unlearned_checkpoint_ranges,
)
from tfshrink.graph.ir import Graph, parse_tensor
from tfshrink.names import feed_key

RANGES_NOTE = ("int8 ranges from training: {n} FakeQuant node(s) ({a} activation, {w} weight), "
               "no calibration data used")



FIXED_RANGE_OPS = ("Softmax", "Sigmoid", "Tanh", "LogSoftmax")  # TFLite gives their outputs fixed ranges


def quantized_outputs(model: Any, wanted: list[str], notes: list[str]) -> list[str]:
    """The outputs to freeze: each given (or detected) output that a fake-quant reads directly is
    replaced by that fake-quant's output, so the last layer keeps its learned output range (the
    rewrite puts the fake-quant after a graph's final layer, and users name the layer)."""
    graph_def = getattr(model, "graph_def", None)
    if graph_def is None and getattr(model, "meta_graph", None) is not None:
        graph_def = model.meta_graph.graph_def
    if graph_def is None:
        return wanted
    names = wanted or [o.name for o in model.outputs]
    readers: dict[str, str] = {}
    for node in graph_def.node:
        if node.op in FAKE_QUANT_TYPES and node.input:
            node_name, index, _ = parse_tensor(node.input[0])
            readers.setdefault(node_name if index == 0 else f"{node_name}:{index}", node.name)
    out = []
    for name in names:
        short = name[:-2] if name.endswith(":0") else name
        quant = readers.get(short)
        if quant is not None:
            notes.append(f"output {short} is read after its fake-quant {quant} (its learned range)")
            out.append(quant)
        else:
            out.append(name)
    return out if (wanted or out != names) else wanted


def unquantized_outputs(graph_def: Any, outputs: Sequence[str]) -> str:
    """A hint naming outputs that no fake-quant produces (their last op then stays float)."""
    graph = Graph(graph_def)
    missing = []
    for name in outputs:
        node = graph.get(parse_tensor(name)[0])
        if node is not None and node.op not in FAKE_QUANT_TYPES + FIXED_RANGE_OPS:
            missing.append(node.name)
    if not missing:
        return ""
    return (f"; output {', '.join(missing)} is not a fake-quant's output: freeze with "
            f"outputs={','.join(f'{m}/act_quant/FakeQuant' for m in missing)}, or convert the eval checkpoint")


def checked_ranges(model: Any, graph_def: Any, where: str, warnings: list[str]) -> tuple[list[FakeQuantRange], str]:
    """The FakeQuant ranges of `model`'s frozen `graph_def` and the note saying where int8's ranges
    come from. Raises UserError when there are none, or when training never learned them (a
    checkpoint whose quant_delay outlasted training, or every range still at its initial value);
    appends a warning for the few ranges never learned."""
    if model.format == "checkpoint":
        _check_checkpoint(str(model.path), where)
    ranges = fake_quant_ranges(graph_def)
    _check_ranges(ranges, where, model.format, warnings)
    activations = [r for r in ranges if r.kind == "activation"]
    return ranges, RANGES_NOTE.format(n=len(ranges), a=len(activations), w=len(ranges) - len(activations))


def _check_checkpoint(prefix: str, where: str) -> None:
    """Refuse a checkpoint whose activation ranges were never updated in training."""
    values = checkpoint_variables(prefix)
    never, total = unlearned_checkpoint_ranges(values)
    if not total or len(never) < total:
        return
    delay = int(values[QUANT_DELAY_VAR]) if QUANT_DELAY_VAR in values else None
    steps = steps_trained(values)
    if delay is not None and delay > 0:
        raise UserError(f"{where}: the activation ranges were never learned: quant_delay ({delay}) ≥ steps trained "
                        f"({steps if steps is not None else 'unknown'})",
                        "train past quant_delay (or lower it), save, then restore into the eval graph again")
    raise UserError(f"{where}: the activation ranges were never learned (every fake-quant's update count is 0)",
                    "restore the training checkpoint into the eval graph before saving it, and train the "
                    "training graph (create_training_graph) for some steps first")


def _check_ranges(ranges: list[FakeQuantRange], where: str, fmt: str, warnings: list[str]) -> None:
    if not ranges:
        hint = ("rewrite the inference graph with tfshrink.qat.create_eval_graph, restore the training "
                "checkpoint, then save/freeze it" if fmt in ("checkpoint", "graphdef") else
                "train the model wrapped by tfshrink.qat.quantize_model")
        raise UserError(f"{where}: no FakeQuant nodes, so there are no trained ranges to convert with",
                        f"{hint}; for a float model use `tfshrink convert --quantize int8 --calibration DATA`")
    activations = [r for r in ranges if r.kind == "activation"]
    never = [r.node for r in activations if not r.learned]
    if activations and len(never) == len(activations):
        raise UserError(f"{where}: the activation ranges were never learned: every FakeQuant still holds its "
                        f"initial range [-6, 6] (quant_delay at least as long as training, or the training "
                        "checkpoint was not restored)",
                        "train past quant_delay, restore the training checkpoint into the eval graph, then freeze")
    if never:
        shown = ", ".join(never[:3]) + (f" and {len(never) - 3} more" if len(never) > 3 else "")
        warnings.append(f"{len(never)} activation range(s) never learned (still [-6, 6]): {shown}; the ops that "
                        "feed them never ran in training")



@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """from_concrete_functions logs a deprecation warning through absl for a function without a
    trackable object (a frozen graph has none to give)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def has_fake_quant(graph_def: Any) -> bool:
    """Does the (frozen) graph hold FakeQuant nodes, i.e. ranges from quantization-aware training?"""
    return any(node.op in FAKE_QUANT_TYPES for node in graph_def.node)


def convert_fake_quant_graph(graph_def: Any, specs: Sequence[Any], outputs: Sequence[str], input_type: str,
                             output_type: str, where: str) -> bytes:
    """Convert a frozen graph holding FakeQuant nodes to int8 TFLite bytes with their ranges: the
    v2 converter on the graph as a concrete function, optimizations=[DEFAULT], no representative
    dataset (see the module docstring). `specs`: InputSpec-like (name, dtype, shape) of the
    inputs; input_type / output_type: "float32", "int8" or "uint8". Raises UserError on failure."""
    import warnings as py_warnings


    tf = _tf.tf()

    def imported() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    try:
        wrapped = tf.compat.v1.wrap_function(imported, [])
        feeds = [wrapped.graph.get_tensor_by_name(feed_key(s.name)) for s in specs]
        for tensor, spec in zip(feeds, specs, strict=True):
            tensor.set_shape(spec.shape)
        fetches = [wrapped.graph.get_tensor_by_name(feed_key(o)) for o in outputs]
        function = wrapped.prune(feeds, fetches)
    except (KeyError, ValueError, tf.errors.OpError) as exc:
        raise UserError(f"{where}: cannot prepare the graph for conversion: {str(exc).splitlines()[0][:200]}",
                        "check inputs, outputs and input_shapes") from None
    with _quiet_absl(), py_warnings.catch_warnings():
        # "Statistics for quantized inputs were expected, but not specified": the input's range is
        # its FakeQuant node's; the converter finds it there.
        py_warnings.simplefilter("ignore", UserWarning)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if input_type != "float32":
            converter.inference_input_type = tf.dtypes.as_dtype(input_type)
        if output_type != "float32":
            converter.inference_output_type = tf.dtypes.as_dtype(output_type)
        with _tf.quiet_native() as log:
            try:
                return bytes(converter.convert())
            except Exception as exc:  # ConverterError, ValueError from the io-type rewrite
                failure = exc
        text = log.text
    raise converter_failure(failure, text, where)


def _input_range(graph_def: Any, name: str, ranges: Sequence[FakeQuantRange]) -> tuple[float, float] | None:
    """The learned range of the FakeQuant that quantizes input `name` (through pass-through ops)."""
    graph = Graph(graph_def)
    by_node = {r.node: r for r in ranges}
    frontier = [parse_tensor(name)[0]]
    for _ in range(8):
        nxt = []
        for node in frontier:
            for consumer in graph.data_consumers(node):
                op = graph.node(consumer).op
                if op in FAKE_QUANT_TYPES and consumer in by_node:
                    r = by_node[consumer]
                    if r.min and r.max and len(r.min) == 1:
                        return r.min[0], r.max[0]
                elif op in PASS_THROUGH_TYPES:
                    nxt.append(consumer)
        frontier = nxt
    return None


def range_feeds(graph_def: Any, specs: Sequence[Any], ranges: Sequence[FakeQuantRange], samples: int,
                seed: int) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    """`samples` seeded random feeds, each float input drawn uniformly from the range its FakeQuant
    learned (else [-1, 1)). Returns (feeds, the inputs drawn from a learned range)."""
    rng = np.random.default_rng(seed)
    feeds = []
    drawn: list[str] = []
    for _ in range(max(1, samples)):
        feed = {}
        for s in specs:
            lo_hi = _input_range(graph_def, s.name, ranges) if s.dtype == "float32" else None
            lo, hi = lo_hi or (-1.0, 1.0)
            shape = tuple(1 if d is None else d for d in s.shape)
            feed[s.name] = rng.uniform(lo, hi, size=shape).astype(s.dtype)
            if lo_hi and s.name not in drawn:
                drawn.append(s.name)
        feeds.append(feed)
    return feeds, drawn
