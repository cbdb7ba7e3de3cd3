"""The one place tfshrink imports TensorFlow and touches its private modules.

TensorFlow is imported lazily (``tf()``) so that ``tfshrink --help`` answers at once, and quietly,
because its C++ start-up chatter (CUDA stubs, CPU feature notes) is noise for a CLI user.
Every use of ``tensorflow.python.*`` lives here, each with the reason no public API does the job,
so that a TensorFlow upgrade breaks this file and no other.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

_TF: Any = None


def tf() -> Any:
    """Import TensorFlow once, with its start-up logging silenced."""
    global _TF
    if _TF is not None:
        return _TF
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    # Some messages are printed by C++ before TF_CPP_MIN_LOG_LEVEL is read; catch stderr at the
    # file-descriptor level for the import only, and replay it if the import fails.
    with tempfile.TemporaryFile() as buf:
        saved = _redirect_stderr(buf)
        try:
            import tensorflow as tensorflow_module
        except BaseException:
            _restore_stderr(saved)
            buf.seek(0)
            sys.stderr.write(buf.read().decode(errors="replace"))
            raise
        _restore_stderr(saved)
    tensorflow_module.get_logger().setLevel("ERROR")
    _TF = tensorflow_module
    return _TF


def _redirect_stderr(target: Any) -> int | None:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(target.fileno(), 2)
        return saved
    except (OSError, ValueError):
        return None


def _restore_stderr(saved: int | None) -> None:
    if saved is None:
        return
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def graph_pb2() -> Any:
    """The GraphDef protobuf module (public TF proto, imported without building a tf.Graph)."""
    tf()
    from tensorflow.core.framework import graph_pb2 as module

    return module


def meta_graph_pb2() -> Any:
    tf()
    from tensorflow.core.protobuf import meta_graph_pb2 as module

    return module


def saved_model_pb2() -> Any:
    tf()
    from tensorflow.core.protobuf import saved_model_pb2 as module

    return module


def convert_variables_to_constants_v2(concrete_function: Any) -> Any:
    """Freeze a TF2 ConcreteFunction into one with constants in place of variables.

    Private: TF 2.x exposes no public API that freezes a tf.function / SavedModel signature;
    tf.compat.v1.graph_util.convert_variables_to_constants only handles TF1 sessions.
    """
    tf()
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2 as convert,
    )

    return convert(concrete_function)


@contextlib.contextmanager
def control_flow_v1() -> Iterator[None]:
    """Build tf.cond / while_loop as TF1 did (Switch/Merge, not If/While) inside this block."""
    v1 = tf().compat.v1
    v1.disable_control_flow_v2()
    try:
        yield
    finally:
        v1.enable_control_flow_v2()


def update_input(op: Any, index: int, tensor: Any) -> None:
    """Make the tf.Graph operation `op` read `tensor` at data input `index` (a rewrite in place).

    Private: TF 2.x has no public API that rewires an existing op's input; tf.contrib.graph_editor,
    which tf.contrib.quantize used for the same rewrite, was removed with contrib and called
    Operation._update_input itself.
    """
    op._update_input(index, tensor)


def add_control_input(op: Any, dependency: Any) -> None:
    """Make the tf.Graph operation `op` run only after `dependency` (an Operation), in place.

    Private: TF 2.x has no public API that adds a control edge to an op already built
    (tf.control_dependencies only applies to ops created inside it); Operation._add_control_input
    is what tf.contrib.graph_editor used.
    """
    op._add_control_input(dependency)


def op_def(op_type: str) -> Any | None:
    """The registered OpDef of an op type, or None for ops this TensorFlow doesn't know.

    Private: the public API has no lookup from op type name to OpDef (tf.raw_ops gives
    callables, not signatures).
    """
    tf()
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op_type)


def load_v1_saved_model(session: Any, tags: Sequence[str], path: str) -> Any:
    """tf.compat.v1.saved_model.loader.load, without its deprecation warning: the TF1 loader is
    the only public way to run a SavedModel whose Python object graph tf.saved_model.load cannot
    rebuild. Returns the loaded MetaGraphDef."""
    tf_ = tf()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger = tf_.get_logger()
        level = logger.level
        logger.setLevel("ERROR")
        try:
            return tf_.compat.v1.saved_model.loader.load(session, list(tags), path)
        finally:
            logger.setLevel(level)


def evaluate_constant(graph_def: Any, tensor: str) -> Any | None:
    """The value of `tensor` in a GraphDef that needs no feeds (a numpy array), or None when
    TensorFlow cannot compute it."""
    tf_ = tf()
    graph = tf_.Graph()
    try:
        with graph.as_default():
            tf_.graph_util.import_graph_def(graph_def, name="")
        with tf_.compat.v1.Session(graph=graph) as sess:
            return sess.run(tensor)
    except (ValueError, KeyError, TypeError, tf_.errors.OpError):
        return None


def import_output_specs(graph_def: Any, outputs: Sequence[tuple[str, int]]
                        ) -> list[tuple[str, tuple[int | None, ...] | None] | None]:
    """(dtype name, static shape) of each (node, output index) of `graph_def` once imported into a
    new tf.Graph; None for an output the graph lacks. Raises ValueError when TensorFlow cannot
    import the graph, as tf.graph_util.import_graph_def does.

    Private: import_graph_def runs shape inference in C, then wraps every imported node in a Python
    Operation, which on a 2,000-node graph costs several times the C import itself. Here the C
    import runs with the same options, and only the requested nodes get an Operation, whose tensors
    read their dtype and shape back from the C graph (the same inferred shapes).
    """
    try:
        return _import_output_specs_fast(graph_def, outputs)
    except (ImportError, AttributeError, TypeError):
        # TensorFlow's internals moved: fall back to the public (slower) import.
        return _import_output_specs_public(graph_def, outputs)


def _import_output_specs_public(graph_def: Any, outputs: Sequence[tuple[str, int]]
                                ) -> list[tuple[str, tuple[int | None, ...] | None] | None]:
    tf_module = tf()
    graph = tf_module.Graph()
    with graph.as_default():
        try:
            tf_module.graph_util.import_graph_def(graph_def, name="")
        except tf_module.errors.InvalidArgumentError as exc:
            raise ValueError(str(exc)) from None
    return _output_specs({op.name: op for op in graph.get_operations()}, outputs)


def _output_specs(ops: dict[str, Any], outputs: Sequence[tuple[str, int]]
                  ) -> list[tuple[str, tuple[int | None, ...] | None] | None]:
    """(dtype, shape) of each requested output of the imported `ops`; None where there is none."""
    specs: list[tuple[str, tuple[int | None, ...] | None] | None] = []
    for node, index in outputs:
        op = ops.get(node)
        if op is None or not 0 <= index < len(op.outputs):
            specs.append(None)
            continue
        tensor = op.outputs[index]
        shape = tensor.shape
        specs.append((tensor.dtype.name, None if shape.rank is None else tuple(shape.as_list())))
    return specs


def _import_output_specs_fast(graph_def: Any, outputs: Sequence[tuple[str, int]]
                              ) -> list[tuple[str, tuple[int | None, ...] | None] | None]:
    tf_module = tf()
    from tensorflow.python.client import pywrap_tf_session as c_api
    from tensorflow.python.framework import c_api_util, importer

    wanted = list(dict.fromkeys(node for node, _ in outputs))
    present = {n.name for n in graph_def.node}
    returned = [n for n in wanted if n in present]
    graph = tf_module.Graph()
    options = c_api_util.ScopedTFImportGraphDefOptions()
    # The options import_graph_def(graph_def, name="") sets, plus the nodes to hand back.
    importer._PopulateTFImportGraphDefOptions(options.options, "", {}, None, True)
    for name in returned:
        c_api.TF_ImportGraphDefOptionsAddReturnOperation(options.options, name)
    buffer = c_api.TF_NewBufferFromString(graph_def.SerializeToString())
    try:
        with graph._c_graph.get() as c_graph:
            results = c_api_util.ScopedTFImportGraphDefResults(
                c_api.TF_GraphImportGraphDefWithResults(c_graph, buffer, options.options))
    except tf_module.errors.InvalidArgumentError as exc:
        raise ValueError(str(exc)) from None
    finally:
        c_api.TF_DeleteBuffer(buffer)
    c_ops = c_api.TF_ImportGraphDefResultsReturnOperations(results.results)
    ops = {name: graph._create_op_from_tf_operation(c_op, compute_device=False)
           for name, c_op in zip(returned, c_ops, strict=True)}
    return _output_specs(ops, outputs)


def function_to_graph_def(function_def: Any, library: Any) -> tuple[Any, dict[str, str]]:
    """A FunctionDef as a GraphDef (arguments become Placeholders named after them), and the map
    from the function's "node:out_arg:i" names to the GraphDef's "node:k" names.

    Private: no public API turns a FunctionDef into a GraphDef; inlining a tf.cond v2 branch
    (If/StatelessIf on a bound predicate) needs it.
    """
    tf_module = tf()
    from tensorflow.python.framework import function_def_to_graph

    # Nested calls (an If inside the branch) are looked up in the default graph's library.
    holder = graph_pb2().GraphDef()
    holder.library.CopyFrom(library)
    graph = tf_module.Graph()
    with graph.as_default():
        tf_module.graph_util.import_graph_def(holder, name="")
        return function_def_to_graph.function_def_to_graph_def(function_def)


def grappler_optimize(graph_def: Any, outputs: Sequence[str], optimizers: Sequence[str] | None = None) -> Any:
    """Run TF's grappler on a frozen GraphDef, as the benchmarks' point of comparison.

    Private: grappler has no public Python entry point for a GraphDef (tf.config.optimizer only
    affects functions TF itself runs); tensorflow.python.grappler.tf_optimizer is what TF's own
    tools call. `optimizers` names grappler passes (e.g. "constfold", "arithmetic", "remap");
    None runs grappler's default set.
    """
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
    from tensorflow.python.framework import importer, ops
    from tensorflow.python.grappler import tf_optimizer
    from tensorflow.python.training import saver

    graph = ops.Graph()
    with graph.as_default():
        importer.import_graph_def(graph_def, name="")
        meta = saver.export_meta_graph(graph_def=graph.as_graph_def(add_shapes=True), graph=graph)
    fetch = meta.collection_def["train_op"].node_list.value
    for name in outputs:
        fetch.append(name)
    config = config_pb2.ConfigProto()
    rewriter = config.graph_options.rewrite_options
    rewriter.CopyFrom(rewriter_config_pb2.RewriterConfig())
    if optimizers is not None:
        rewriter.optimizers.extend(optimizers)
    rewriter.min_graph_nodes = -1
    return tf_optimizer.OptimizeGraph(config, meta)


def optimize_for_inference(graph_def: Any, inputs: Sequence[str], outputs: Sequence[str], dtype: Any) -> Any:
    """TF's own optimize_for_inference, the benchmarks' other point of comparison.

    Private: optimize_for_inference_lib lives under tensorflow.python.tools and has no public alias.
    """
    from tensorflow.python.tools import optimize_for_inference_lib

    return optimize_for_inference_lib.optimize_for_inference(graph_def, list(inputs), list(outputs),
                                                              dtype.as_datatype_enum)


_TERMINAL_STDERR: Any = None


class NativeOutput:
    """What TensorFlow's C++ side wrote to stderr inside `quiet_native()`."""

    def __init__(self) -> None:
        self.text = ""


@contextlib.contextmanager
def quiet_native() -> Iterator[NativeOutput]:
    """Send what C++ code writes to file descriptor 2 (the TFLite converter's MLIR dumps,
    "fully_quantize: 0, inference_type: 6 ..." lines) to a temporary file, while Python's
    sys.stderr keeps writing to the terminal (so a progress bar still shows). The captured text
    is in the yielded object's `text` after the block, for error messages."""
    global _TERMINAL_STDERR
    captured = NativeOutput()
    with tempfile.TemporaryFile() as buf:
        python_stderr = sys.stderr
        swap = False
        with contextlib.suppress(OSError, ValueError, AttributeError):  # pytest's capture has no fileno
            swap = python_stderr.fileno() == 2
        if swap and _TERMINAL_STDERR is None:
            # One lasting handle on the real stderr: a logging handler made inside the block keeps
            # it, so it must never be closed.
            _TERMINAL_STDERR = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        saved = _redirect_stderr(buf)
        if saved is not None and swap:
            sys.stderr = _TERMINAL_STDERR
        try:
            yield captured
        finally:
            if saved is not None and swap:
                sys.stderr = python_stderr
            _restore_stderr(saved)
            buf.seek(0)
            captured.text = buf.read().decode(errors="replace")


def converter_error_class() -> type[BaseException]:
    """The exception the TFLite converter raises (it carries `.errors`, a list of ConverterErrorData
    protos with error_code and operator name).

    Private: TF 2.21 exports no public alias for ConverterError.
    """
    tf()
    try:
        from tensorflow.lite.python.convert_phase import ConverterError
    except ImportError:  # TensorFlow moved it: fall back to duck typing on `.errors`
        return Exception
    return ConverterError


def calibrate_only(converter: Any) -> None:
    """Make `converter.convert()` stop after calibration and return the float model with the
    recorded activation ranges, so `mlir_quantize` can quantize it with a denylist.

    Private: the only way to keep chosen ops or nodes in float in a full-integer model is
    the quantizer's denylist, and TF reaches it the same way (QuantizationDebugger sets this flag,
    then calls convert.mlir_quantize); there is no public option on the converter.
    """
    converter._experimental_calibrate_only = True


def mlir_quantize(calibrated: bytes, *, input_type: Any, output_type: Any,
                  denylisted_ops: Sequence[str], denylisted_nodes: Sequence[str]) -> bytes:
    """Quantize a calibrated model to int8, leaving `denylisted_ops` (TFLite builtin names such as
    FULLY_CONNECTED) and `denylisted_nodes` (op output tensor names) in float.

    Private: see `calibrate_only`; tensorflow.lite.python.convert.mlir_quantize is what
    QuantizationDebugger calls.
    """
    tf()
    from tensorflow.lite.python import convert

    return convert.mlir_quantize(calibrated, input_data_type=input_type, output_data_type=output_type,
                                 denylisted_ops=list(denylisted_ops), denylisted_nodes=list(denylisted_nodes))


def has_kernel(op_type: str) -> bool:
    """Whether this TensorFlow has a kernel that runs `op_type` on CPU (a CPU or any-device one).

    Private: the public API cannot tell an op TF runs from one it only knows by name. The TFLite
    converter registers OpDefs (no kernels) for TFLite's custom ops such as
    TFLite_Detection_PostProcess, so `op_def` alone says yes for them once a conversion ran.
    """
    tf()
    try:
        from tensorflow.python.framework import kernels
    except ImportError:  # moved: fall back to the OpDef registry
        return op_def(op_type) is not None
    return any(k.device_type in ("CPU", "DEFAULT") for k in kernels.get_registered_kernels_for_op(op_type).kernel)
