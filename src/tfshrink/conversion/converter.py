"""Driving the TFLite converter on a frozen GraphDef, and making sense of its failures.

Every source is frozen first (tfshrink's model layer), then converted with TF's GraphDef converter
(tf.compat.v1.lite.TFLiteConverter). In TF 2.21 with Keras 3 this is the path that works for all of
them: from_concrete_functions on a Keras 3 model leaves READ_VARIABLE ops that calibration cannot
run, and the GraphDef converter also takes graphs holding ops TF itself does not register (the
TFLite_Detection_PostProcess custom op of SSD exports), by input and output names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.conversion.modes import REGISTRY
from tfshrink.conversion.ranges import refine
from tfshrink.conversion.rounding import round_weights
from tfshrink.data.calibration import InputSpec
from tfshrink.errors import UserError, first_line
from tfshrink.graph.ir import Graph, GraphError, parse_tensor
from tfshrink.names import closest, feed_key
from tfshrink.tflite.flatbuffer import builtin_ops
from tfshrink.tflite.metadata import tensor_names
from tfshrink.transforms.activations import rewrite_prelus, rewrite_softmaxes
from tfshrink.transforms.registry import Context


@dataclass(frozen=True)
class ConvertOptions:
    quantize: str = "none"
    input_type: str = "float32"
    output_type: str = "float32"
    allow_custom_ops: bool = False
    select_tf_ops: bool = False
    keep_float: tuple[str, ...] = ()
    ranges: str = "mse"  # int8 activation ranges: "mse" (narrowed, tfshrink.conversion.ranges) or "minmax"
    rounding: str = "adaptive"  # int8 weights: "adaptive" (tfshrink.conversion.rounding) or "nearest"


@dataclass
class Converted:
    data: bytes
    notes: list[str] = field(default_factory=list)
    kept_float: dict[str, list[str]] = field(default_factory=dict)  # --keep-float item -> what it matched


def _tf_dtype(name: str) -> Any:
    return _tf.tf().dtypes.as_dtype(name)


def _ops_sets(options: ConvertOptions, allow_float: bool = False) -> list[Any]:
    """The converter's supported_ops for the mode: int8 and int16x8 are restricted to integer
    kernels unless `allow_float` (--keep-float, or ops int16x8 lacks)."""
    sets = _tf.tf().lite.OpsSet
    chosen = [getattr(sets, name) for name in REGISTRY[options.quantize].ops]
    if allow_float or not chosen:
        # int8 with float ops left (--keep-float) converts on the float builtins; int16x8 keeps its
        # int16 kernels and falls back to float ones where it has none.
        chosen = [*chosen, sets.TFLITE_BUILTINS] if options.quantize != "int8" else [sets.TFLITE_BUILTINS]
    if options.select_tf_ops:
        chosen.append(sets.SELECT_TF_OPS)
    return chosen


def representative_dataset(inputs: Sequence[InputSpec], samples: Sequence[dict[str, np.ndarray]] | None,
                           progress: Callable[[int, int], None] | None = None) -> Callable[[], Any]:
    """The converter's representative_dataset: `samples` as lists in input order."""

    def representative() -> Any:
        total = len(samples or [])
        for i, feed in enumerate(samples or [], start=1):
            yield [feed[s.name] for s in inputs]
            if progress is not None:
                progress(i, total)

    return representative


def configured_converter(graph_def: Any, inputs: Sequence[InputSpec], outputs: Sequence[str],
                         options: ConvertOptions, samples: Sequence[dict[str, np.ndarray]] | None, where: str,
                         *, allow_float: bool, progress: Callable[[int, int], None] | None = None) -> Any:
    """A TFLiteConverter on the graph with the mode's settings (calibrating on `samples`)."""
    tf = _tf.tf()
    mode = options.quantize
    converter = _converter(graph_def, inputs, outputs, where)
    spec = REGISTRY[mode]
    if spec.optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if spec.types:
        converter.target_spec.supported_types = [_tf_dtype(t) for t in spec.types]
    if spec.calibrated:
        converter.representative_dataset = representative_dataset(inputs, samples, progress)
        converter.inference_input_type = _tf_dtype(options.input_type)
        converter.inference_output_type = _tf_dtype(options.output_type)
    converter.target_spec.supported_ops = _ops_sets(options, allow_float)
    converter.allow_custom_ops = options.allow_custom_ops
    return converter


def calibrate(graph_def: Any, inputs: Sequence[InputSpec], outputs: Sequence[str], options: ConvertOptions,
              samples: Sequence[dict[str, np.ndarray]] | None, where: str,
              progress: Callable[[int, int], None] | None = None, notes: list[str] | None = None) -> bytes:
    """The float model with the activation ranges measured on `samples`, ready for `quantize`;
    for int8 with options.ranges "mse", narrowed where that lowers the error (a note says how)."""
    converter = configured_converter(graph_def, inputs, outputs, options, samples, where, allow_float=True,
                                     progress=progress)
    _tf.calibrate_only(converter)
    return refine_ranges(_run(converter, where), inputs, samples, options, notes)


def refine_ranges(calibrated: bytes, inputs: Sequence[InputSpec], samples: Sequence[dict[str, np.ndarray]] | None,
                  options: ConvertOptions, notes: list[str] | None = None) -> bytes:
    """`calibrated` with its int8 activation ranges narrowed per options.ranges (unchanged for
    "minmax", int16x8, or a model LiteRT cannot run here, which a note says)."""

    if options.ranges != "mse" or options.quantize != "int8" or not samples:
        return calibrated
    try:
        refined = refine(calibrated, inputs, samples)
    except (RuntimeError, ValueError) as exc:  # LiteRT cannot run it here (Select TF ops): keep min/max
        if notes is not None:
            notes.append(f"activation ranges: min/max (narrowing them needs the model to run in LiteRT here: "
                         f"{first_line(exc)[:120]})")
        return calibrated
    if notes is not None:
        notes.append(refined.note())
    return refined.data


def rounded(data: bytes, calibrated: bytes, inputs: Sequence[InputSpec],
            samples: Sequence[dict[str, np.ndarray]] | None, options: ConvertOptions,
            notes: list[str] | None = None) -> bytes:
    """An int8 model quantized from `calibrated` with its weights rounded per options.rounding
    (tfshrink.conversion.rounding; unchanged for "nearest" or without samples); a note says how."""
    if options.rounding != "adaptive" or options.quantize != "int8" or not samples:
        return data
    done = round_weights(data, calibrated, inputs, samples)
    if notes is not None:
        notes.append(done.note())
    return done.data


def quantize(calibrated: bytes, options: ConvertOptions, where: str, *, denylisted_ops: Sequence[str] = (),
             denylisted_nodes: Sequence[str] = ()) -> bytes:
    """Full-integer quantization of a calibrated model, leaving the denylisted ops/nodes in float."""
    with _tf.quiet_native() as log:
        try:
            return _tf.mlir_quantize(calibrated, input_type=_tf_dtype(options.input_type),
                                     output_type=_tf_dtype(options.output_type),
                                     denylisted_ops=denylisted_ops, denylisted_nodes=denylisted_nodes)
        except Exception as exc:  # the quantizer raises RuntimeError / ConverterError
            failure = exc
    raise converter_failure(failure, log.text, where) from None


def convert_graph(graph_def: Any, inputs: Sequence[InputSpec], outputs: Sequence[str], options: ConvertOptions,
                  samples: Sequence[dict[str, np.ndarray]] | None, where: str,
                  progress: Callable[[int, int], None] | None = None) -> Converted:
    """Convert a frozen GraphDef with fixed input shapes; `samples` calibrate int8/int16x8."""
    mode = options.quantize
    result = Converted(b"")

    def configured(allow_float: bool) -> Any:
        return configured_converter(graph_def, inputs, outputs, options, samples, where, allow_float=allow_float,
                                    progress=progress)

    if mode == "int8" and (options.keep_float or (samples and (options.ranges == "mse"
                                                               or options.rounding == "adaptive"))):
        calibrated = calibrate(graph_def, inputs, outputs, options, samples, where, progress, result.notes)
        ops, nodes, result.kept_float = resolve_keep_float(options.keep_float, calibrated)
        result.data = rounded(quantize(calibrated, options, where, denylisted_ops=ops, denylisted_nodes=nodes),
                              calibrated, inputs, samples, options, result.notes)
        return result
    try:
        result.data = _run(configured(allow_float=False), where)
    except UserError as exc:
        unsupported = sorted(set(_NOT_16X8.findall(exc.message)))
        if mode != "int16x8" or not unsupported:
            raise
        # Like int8, leave ops without an int16 kernel in float (the result lists them) rather than fail.
        result.data = _run(configured(allow_float=True), where)
        result.notes.append(f"int16x8 has no int16 kernel for {', '.join(unsupported)}: left in float")
    return result


def prepare_graph(graph_def: Any, inputs: Sequence[InputSpec], outputs: Sequence[str]) -> tuple[Any, list[str]]:
    """Rewrite activations the TFLite converter would otherwise leave unfused (and, in int8, partly
    float) into the spellings it fuses: PReLU (fuse_prelu) and softmax (fuse_softmax). The numbers
    stay the same. Returns (GraphDef, notes); the input GraphDef is not changed."""

    try:
        graph = Graph(type(graph_def).FromString(graph_def.SerializeToString()))
        ctx = Context([s.name for s in inputs], list(outputs))
        prelus = rewrite_prelus(graph, ctx)
        softmaxes = rewrite_softmaxes(graph, ctx)
    except (GraphError, ValueError, UserError):
        return graph_def, []  # the rewrites are an optimization: convert the graph as it is
    notes = []
    if prelus:
        notes.append(f"rewrote {prelus} PReLU(s) spelled relu(x) + alpha*(-relu(-x)) or relu(x) - alpha*relu(-x) "
                     "into the form TFLite fuses into PRELU (transform fuse_prelu; same numbers): otherwise "
                     "they convert to RELU/NEG/MUL/ADD, and NEG has no int8 kernel")
    if softmaxes:
        notes.append(f"rewrote {softmaxes} softmax(es) spelled exp/sum/div into Softmax (transform fuse_softmax)")
    if not notes:
        return graph_def, []
    return graph.to_graph_def(), notes


def _converter(graph_def: Any, inputs: Sequence[InputSpec], outputs: Sequence[str], where: str) -> Any:
    """tf.compat.v1.lite.TFLiteConverter on the graph; by names and shapes when TF cannot import it
    (ops TF does not register, such as TFLite_Detection_PostProcess)."""
    tf = _tf.tf()
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
    except (ValueError, tf.errors.OpError):
        arrays = [(parse_tensor(s.name)[0], list(s.shape)) for s in inputs]
        return tf.compat.v1.lite.TFLiteConverter(graph_def, None, None, input_arrays_with_shape=arrays,
                                                 output_arrays=[_array_name(o) for o in outputs])
    try:
        in_tensors = [graph.get_tensor_by_name(feed_key(s.name)) for s in inputs]
        out_tensors = [graph.get_tensor_by_name(feed_key(o)) for o in outputs]
        for tensor, spec in zip(in_tensors, inputs, strict=True):
            tensor.set_shape(spec.shape)
    except (KeyError, ValueError) as exc:
        raise UserError(f"{where}: {first_line(exc)}", "check --inputs, --outputs and --input-shape") from None
    return tf.compat.v1.lite.TFLiteConverter(graph_def, in_tensors, out_tensors)


def _array_name(tensor: str) -> str:
    """The converter's name for a tensor: "node" for output 0, "node:k" for the others (the
    four outputs of TFLite_Detection_PostProcess are node, node:1, node:2, node:3)."""
    node, index, _ = parse_tensor(tensor)
    return node if index == 0 else f"{node}:{index}"


def _run(converter: Any, where: str) -> bytes:
    with _tf.quiet_native() as log:
        try:
            return bytes(converter.convert())
        except UserError:
            raise
        except Exception as exc:  # ConverterError, RuntimeError from calibration, ValueError on options
            failure = exc
    raise converter_failure(failure, log.text, where) from None


_NOT_16X8 = re.compile(r"16x8-bit not yet supported for op: '(\w+)'")
_SELECT = re.compile(r"TF Select ops: ([^\n]+)")
_CUSTOM = re.compile(r"Custom ops: ([^\n]+)")
_CODE_OP = re.compile(r"error_code: (ERROR_NEEDS_\w+)[\s\S]*?operator \{\s*name: \"(?:tf\.)?([\w.]+)\"")


def missing_ops(text: str) -> tuple[list[str], list[str]]:
    """(ops TF Select has, ops only a custom kernel can run) named in converter error text."""
    flex: list[str] = []
    custom: list[str] = []
    for m in _SELECT.finditer(text):
        flex += [o.strip() for o in m.group(1).split(",") if o.strip()]
    for m in _CUSTOM.finditer(text):
        custom += [o.strip() for o in m.group(1).split(",") if o.strip()]
    for code, op in _CODE_OP.findall(text):
        (flex if code == "ERROR_NEEDS_FLEX_OPS" else custom).append(op)
    flex = sorted(set(flex))
    custom = sorted(set(custom) - set(flex))
    return flex, custom


def converter_failure(exc: BaseException, log: str, where: str) -> UserError:
    """One clear UserError for a converter failure: which ops TFLite lacks and the flags that help,
    or the converter's first error line."""
    details = "\n".join(str(e) for e in getattr(exc, "errors", None) or [])
    text = f"{exc}\n{details}\n{log}"
    flex, custom = missing_ops(text)
    if flex or custom:
        ops = ", ".join(flex + custom)
        hints = []
        if flex:
            hints.append(f"{', '.join(flex)}: --select-tf-ops (the app then links LiteRT's Flex delegate)")
        if custom:
            hints.append(f"{', '.join(custom)}: --allow-custom-ops keeps it as a custom op the app must register")
        if flex and not custom:
            hints.append("or --allow-custom-ops to implement them yourself")
        return UserError(f"{where}: TFLite has no builtin kernel for {ops}", "; ".join(hints))
    line = _first_error_line(text) or first_line(exc)
    if _NOT_16X8.search(text):
        return UserError(f"{where}: {line}", "int16x8 lacks this op's int16 kernel")
    if "representative" in text.lower() or "calibrat" in text.lower() or isinstance(exc, RuntimeError):
        return UserError(f"{where}: calibration failed: {line}",
                         "check that the calibration samples match the model inputs (--input-shape)")
    return UserError(f"{where}: the TFLite converter failed: {line}", "rerun with --debug for the traceback")


def _first_error_line(text: str) -> str:
    for raw in text.splitlines():
        line = raw.strip()
        m = re.search(r"error: (.+)", line)
        if m and "failed while converting" not in line:
            return re.sub(r"loc\([^)]*\)\)?:?\s*", "", m.group(1)).strip()[:300]
    return ""


def _parts_match(wanted: list[str], parts: list[str]) -> bool:
    """Is `wanted` (a scope path) a contiguous run of `parts`? Keras 3's `name_1` scopes match `name`."""
    n = len(wanted)
    for start in range(len(parts) - n + 1):
        if all(p == w or re.fullmatch(re.escape(w) + r"_\d+", p) for w, p in zip(wanted, parts[start:start + n],
                                                                                  strict=True)):
            return True
    return False


def resolve_keep_float(items: Sequence[str], calibrated: bytes) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """--keep-float items as the quantizer's denylists: builtin op names (CONV_2D, conv_2d) go to
    the op list; anything else names TF nodes or scopes (functional_1/fc_1, fc), matched against
    the converted ops' output tensor names. An item that matches nothing is a UserError."""
    known_ops = builtin_ops()
    ops_and_tensors = tensor_names(calibrated)
    present_ops = {op for op, _ in ops_and_tensors}
    deny_ops: list[str] = []
    deny_nodes: list[str] = []
    matched: dict[str, list[str]] = {}
    for item in items:
        token = item.strip()
        if token.upper() in known_ops:
            op = token.upper()
            if op not in present_ops:
                raise UserError(f"--keep-float {token}: the model has no {op} op",
                                f"its ops are {', '.join(sorted(present_ops))}")
            deny_ops.append(op)
            matched[token] = [op]
            continue
        wanted = [p for p in token.split(":")[0].split("/") if p]
        hits = []
        for _, tensor in ops_and_tensors:
            if any(_parts_match(wanted, [p for p in component.split("/") if p])
                   for component in tensor.split(";")):
                hits.append(tensor)
        if not hits:
            pool = sorted({c for _, t in ops_and_tensors for c in t.split(";")})
            near = closest(token, pool)
            raise UserError(f"--keep-float {token}: no op or node of that name in the model",
                            f"closest: {', '.join(near)}" if near else
                            "give a TFLite op (CONV_2D) or a TF node/scope name (run `tfshrink inspect`)")
        deny_nodes.extend(h for h in hits if h not in deny_nodes)
        matched[token] = hits
    return deny_ops, deny_nodes, matched
