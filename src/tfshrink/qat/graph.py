"""Quantization-aware training for TF1-style graphs: tf.contrib.quantize's two rewrites, on TF 2.x.

Both functions rewrite a `tf.Graph` in place, as tf.contrib.quantize did, and must run after the
forward pass (and loss) are built and before the optimizer is added, so that the gradients see
the fake-quantized graph.

What the rewrite finds, in every graph:

* layers: Conv2D, DepthwiseConv2dNative and MatMul whose weights are computed from variables or
  constants only, followed by any run of single-consumer ops among BiasAdd / Add / Sub / Mul by a
  per-channel parameter, FusedBatchNorm(V2/V3) and one Relu / Relu6;
* merges: Add / AddV2 / ConcatV2 whose inputs are all quantized activations (residual adds,
  concatenations), with one following Relu / Relu6.

What it inserts:

* weights: FakeQuantWithMinMaxVarsPerChannel for Conv2D and DepthwiseConv2dNative (one range per
  output channel, as TFLite's int8 kernels take them) and FakeQuantWithMinMaxVars for MatMul;
  symmetric ranges [-max|w|, max|w|] computed from the weights at every step, narrow range
  (-127..127), `weight_bits` bits. They need no variables, so the eval graph computes the same
  ranges from the restored weights.
* activations: FakeQuantWithMinMaxVars on each layer's output (after the activation function), on
  each merge's output, and on every other float tensor that feeds a layer or merge unquantized
  (the model input, a dropout's output), `activation_bits` bits. Its range lives in the
  non-trainable variables ``<producer op>/act_quant/min`` and ``.../max`` (initially -6 and 6, the
  values tf.contrib.quantize started from), plus ``.../count`` (updates so far). In the training
  graph each step updates them from the batch's min and max (widened to include 0): the first
  update copies the batch range, later ones average it in with weight 1/(count+1) until that
  falls to 1 - ema_decay, an exponential moving average from then on.
* batch norm: folded into the layer's weights, so the weights that are quantized are the weights
  TFLite runs. In the eval graph (FusedBatchNorm with is_training=False, or a Mul/Add by
  parameters) the fold uses the moving statistics: w * gamma / sigma_moving, and the bias
  beta - gamma * mean_moving / sigma_moving. In the training graph (is_training=True) the folded
  weights use the moving variance too, and the output is corrected to batch statistics by
  sigma_moving / sigma_batch (and the bias uses the batch mean) until the global step reaches
  `freeze_bn_delay`; from then on the moving statistics are used as in the eval graph. The
  original batch norm stays in the graph, unquantized, so its moving-average updates keep running.
  When the moving statistics cannot be found (no mean/variance inputs and no assign op fed by the
  batch mean), the weights are folded with the batch statistics instead.
* quant_delay: until the global step reaches it, every fake-quant passes its input through and
  no range is updated; quantization and range learning start together.

The fake-quant after a graph's last layer (logits) becomes the real output: freeze with
``outputs=<layer>/act_quant/FakeQuant``, or give convert_qat the eval checkpoint and
``outputs=<layer>``, which it replaces by the fake-quant. A folded layer's unfolded original is
left in the graph, read by nothing but a NoOp ``tfshrink_qat/replaced_by_folded``, so output
detection skips it.

The training graph also gets ``tfshrink_qat/quant_delay`` and ``tfshrink_qat/steps`` (the global
step + 1 at the last training step), which create_eval_graph creates too, so a checkpoint saved
from the eval graph still says how long training ran (see `check_checkpoint_ranges`).
Checkpoints saved from the training graph restore into the eval graph: the only variables the
rewrite adds have the same names in both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tfshrink import _tf
from tfshrink.errors import UserError
from tfshrink.graph.fake_quant import (
    FAKE_QUANT_TYPES,
    QUANT_DELAY_VAR,
    SCOPE,
    STEPS_VAR,
)
from tfshrink.qat.activation import ActivationQuantization
from tfshrink.qat.common import (
    ACTIVATION_TYPES,
    BATCH_NORM_TYPES,
    LAYER_TYPES,
    NOT_PARAMETER_TYPES,
    PARAMETER_SOURCES,
)
from tfshrink.qat.folding import BatchNormFolding


@dataclass
class QuantizeReport:
    """What a rewrite did: the layers it quantized, the batch norms it folded, the activation
    fake-quants it inserted (by variable scope) and what it left alone."""

    mode: str  # "training" | "eval"
    layers: list[str] = field(default_factory=list)
    folded_batch_norms: list[str] = field(default_factory=list)
    merges: list[str] = field(default_factory=list)
    activation_quants: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "layers": self.layers, "folded_batch_norms": self.folded_batch_norms,
                "merges": self.merges, "activation_quants": self.activation_quants, "notes": self.notes}


def create_training_graph(graph: Any = None, quant_delay: int = 0, weight_bits: int = 8,
                          activation_bits: int = 8, freeze_bn_delay: int | None = None, *,
                          ema_decay: float = 0.999) -> QuantizeReport:
    """Rewrite the TF1 training graph `graph` (default: the default graph) in place for
    quantization-aware training, as tf.contrib.quantize.create_training_graph did.

    Call it once the model and its loss are built, before the optimizer: the gradients must be
    computed through the fake-quant ops. `quant_delay`: global steps of plain float training
    before weights and activations are quantized (and activation ranges start being learned).
    `freeze_bn_delay`: global step from which folded batch norms use their moving statistics
    instead of the batch's (None: never). Bits: 2..8 (TFLite runs 8).
    Raises UserError when nothing can be quantized, the graph already holds fake-quant ops, or an
    optimizer was already added. See the module docstring for the exact rewrite.
    """
    return _rewrite(graph, training=True, quant_delay=quant_delay, weight_bits=weight_bits,
                    activation_bits=activation_bits, freeze_bn_delay=freeze_bn_delay, ema_decay=ema_decay)


def create_eval_graph(graph: Any = None, *, weight_bits: int = 8, activation_bits: int = 8) -> QuantizeReport:
    """Rewrite the TF1 inference graph `graph` (default: the default graph) in place, as
    tf.contrib.quantize.create_eval_graph did: the same fake-quant ops as the training graph, with
    activation ranges read from the variables training learned (no updates), and batch norms
    folded with their moving statistics. Restore the training checkpoint into it, then save or
    freeze it; `convert_qat` turns the frozen result into a fully int8 TFLite model.
    Raises UserError as create_training_graph does.
    """
    return _rewrite(graph, training=False, quant_delay=0, weight_bits=weight_bits,
                    activation_bits=activation_bits, freeze_bn_delay=None, ema_decay=0.999)


# -- the rewrite ---------------------------------------------------------------------------------


@dataclass
class _Step:
    kind: str  # "bias" | "scale" | "bn" | "act"
    op: Any
    value: Any = None  # the bias or scale tensor


@dataclass
class _Layer:
    op: Any
    steps: list[_Step]
    end: Any  # the chain's last tensor


class _Rewriter(BatchNormFolding, ActivationQuantization):
    def __init__(self, graph: Any, training: bool, quant_delay: int, weight_bits: int, activation_bits: int,
                 freeze_bn_delay: int | None, ema_decay: float):
        self.tf = _tf.tf()
        self.v1 = self.tf.compat.v1
        self.graph = graph
        self.training = training
        self.quant_delay = int(quant_delay)
        self.weight_bits = weight_bits
        self.activation_bits = activation_bits
        self.freeze_bn_delay = freeze_bn_delay
        self.ema_decay = float(ema_decay)
        self.report = QuantizeReport("training" if training else "eval")
        self.params = _parameter_ops(graph)
        self.quantized: dict[Any, Any] = {}  # tensor.ref() -> its fake-quantized replacement
        self.quant_outputs: set[Any] = set()  # refs of the fake-quantized tensors
        self.active: Any = None  # bool tensor: quantization on (None: always)
        self.bn_frozen: Any = None  # bool tensor: folded batch norms use moving statistics
        self.global_step: Any = None
        self.steps_update: Any = None  # the op recording the step, run with the first range update
        self.updates: list[Any] = []  # moving-statistics assignments whose variables the folds read
        self.replaced: list[Any] = []  # the ends of layer chains recomputed folded (now unread)

    # -- helpers ---------------------------------------------------------------------------------

    def is_param(self, tensor: Any) -> bool:
        return tensor.op in self.params

    def depends_on(self, tensor: Any, op: Any, limit: int = 64) -> bool:
        """Does `tensor` (a short distance up) read the output of `op`?"""
        seen = set()
        stack = [tensor.op]
        while stack and len(seen) < limit:
            current = stack.pop()
            if current is op:
                return True
            if current in seen:
                continue
            seen.add(current)
            stack.extend(t.op for t in current.inputs)
        return False


    def variable(self, name: str, value: float, dtype: Any = None) -> Any:
        """A non-trainable resource variable with exactly this name, created in the root scope."""
        v1 = self.v1
        dtype = dtype or self.tf.float32
        with self.graph.name_scope(None), v1.variable_scope(v1.VariableScope(reuse=False, name="")):
            collections = [v1.GraphKeys.GLOBAL_VARIABLES]
            if dtype == self.tf.float32:
                collections.append(v1.GraphKeys.MOVING_AVERAGE_VARIABLES)
            return v1.get_variable(name, shape=[], dtype=dtype, initializer=v1.constant_initializer(value),
                                   trainable=False, collections=collections, use_resource=True)

    def reroute(self, old: Any, new: Any, consumers: Iterable[Any]) -> None:
        for op in consumers:
            for i, t in enumerate(op.inputs):
                if t is old:
                    _tf.update_input(op, i, new)

    # -- global state ------------------------------------------------------------------------------

    def setup(self) -> None:
        tf, v1 = self.tf, self.v1
        with self.graph.as_default():
            self.global_step = v1.train.get_global_step(self.graph)
            if self.training and (self.quant_delay > 0 or self.freeze_bn_delay is not None):
                self.global_step = v1.train.get_or_create_global_step(self.graph)
            delay = self.variable(QUANT_DELAY_VAR, self.quant_delay if self.training else -1, tf.int64)
            steps = self.variable(STEPS_VAR, 0, tf.int64)
            if not self.training:
                return
            with self.graph.name_scope(f"{SCOPE}/"):
                if self.global_step is not None:
                    step = tf.cast(self.global_step, tf.int64)
                    self.steps_update = steps.assign(step + 1, read_value=False)
                else:
                    self.steps_update = steps.assign_add(tf.constant(1, tf.int64), read_value=False)
                if self.quant_delay > 0:
                    self.active = tf.greater_equal(tf.cast(self.global_step, tf.int64), delay.read_value(),
                                                   name="active")
                if self.freeze_bn_delay is not None:
                    self.bn_frozen = tf.greater_equal(tf.cast(self.global_step, tf.int64),
                                                      tf.constant(int(self.freeze_bn_delay), tf.int64),
                                                      name="bn_frozen")

    # -- finding layers --------------------------------------------------------------------------

    def find_layers(self) -> list[_Layer]:
        layers = []
        for op in self.graph.get_operations():
            if op.type not in LAYER_TYPES or len(op.inputs) < 2:
                continue
            if op.type == "MatMul" and (op.get_attr("transpose_a")):
                continue
            if not self.is_param(op.inputs[1]) or self.is_param(op.inputs[0]):
                continue
            if op.inputs[1].dtype.base_dtype != self.tf.float32:
                continue
            layers.append(self.chain(op))
        return layers

    def channels(self, op: Any) -> int | None:
        shape = op.inputs[1].shape
        if shape.rank is None:
            return None
        dims = shape.as_list()
        if op.type == "Conv2D":
            return dims[3]
        if op.type == "DepthwiseConv2dNative":
            return None if dims[2] is None or dims[3] is None else dims[2] * dims[3]
        return dims[0] if op.get_attr("transpose_b") else dims[1]

    def channel_axis_last(self, op: Any) -> bool:
        if op.type == "MatMul":
            return True
        return op.get_attr("data_format").decode() in ("NHWC", "")

    def per_channel(self, layer: Any, value: Any) -> bool:
        """Is `value` a scalar or a per-output-channel vector that broadcasts on `layer`'s output?"""
        shape = value.shape
        if shape.rank is None or not shape.is_fully_defined():
            return False
        dims = shape.as_list()
        size = 1
        for d in dims:
            size *= d
        if size == 1:
            return True
        channels = self.channels(layer)
        if channels is None or size != channels:
            return False
        if self.channel_axis_last(layer):
            return dims[-1] == channels
        return len(dims) >= 3 and dims[-3] == channels

    def chain(self, layer: Any) -> _Layer:
        steps: list[_Step] = []
        current = layer.outputs[0]
        while True:
            consumers = current.consumers()
            if len(consumers) != 1:
                for op in consumers:
                    self.refuse_unfused_batch_norm(layer, op, current)
                break
            op = consumers[0]
            step = self.classify(layer, op, current, steps)
            if step is None:
                break
            steps.append(step)
            current = op.outputs[0]
            if step.kind == "act":
                break
        return _Layer(layer, steps, current)


    def classify(self, layer: Any, op: Any, current: Any, steps: list[_Step]) -> _Step | None:
        t = op.type
        inputs = list(op.inputs)
        if t == "BiasAdd" and inputs[0] is current and self.is_param(inputs[1]):
            return _Step("bias", op, inputs[1])
        if t in ("Add", "AddV2", "Sub", "Mul") and len(inputs) == 2 and any(x is current for x in inputs):
            other = inputs[1] if inputs[0] is current else inputs[0]
            if other is current:
                return None
            if not self.is_param(other):
                self.refuse_unfused_batch_norm(layer, op, current)
                return None
            if not self.per_channel(layer, other):
                return None
            if t == "Sub":
                if inputs[0] is not current:
                    return None
                return _Step("bias", op, self.tf.negative(other))
            return _Step("scale" if t == "Mul" else "bias", op, other)
        if t in BATCH_NORM_TYPES and inputs[0] is current and all(self.is_param(x) for x in inputs[1:3]):
            if any(s.kind == "bn" for s in steps):
                return None
            if not op.get_attr("is_training") and not all(self.is_param(x) for x in inputs[3:5]):
                return None
            return _Step("bn", op)
        if t in ACTIVATION_TYPES and inputs[0] is current:
            return _Step("act", op)
        return None

    # -- fake quantization -----------------------------------------------------------------------

    def weight_quant(self, weights: Any, op_type: str, name: str) -> Any:
        tf = self.tf
        with self.graph.name_scope(f"{name}/weights_quant/"):
            if op_type == "MatMul":
                limit = tf.maximum(tf.reduce_max(tf.abs(weights)), 1e-8)
                return tf.quantization.fake_quant_with_min_max_vars(
                    weights, -limit, limit, num_bits=self.weight_bits, narrow_range=True)
            reshaped = weights
            if op_type == "DepthwiseConv2dNative":
                # one range per output channel (in * multiplier), TFLite's quantized dimension
                shape = tf.shape(weights)
                reshaped = tf.reshape(weights, tf.stack([shape[0], shape[1], 1, shape[2] * shape[3]]))
            limit = tf.maximum(tf.reduce_max(tf.abs(reshaped), axis=[0, 1, 2]), 1e-8)
            quant = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                reshaped, -limit, limit, num_bits=self.weight_bits, narrow_range=True)
            if op_type == "DepthwiseConv2dNative":
                quant = tf.reshape(quant, tf.shape(weights))
            return quant


    # -- layers ---------------------------------------------------------------------------------

    def quantize_layer(self, layer: Any) -> Any:
        """Quantize one layer; returns the op that now computes it (for its input's quantization)."""
        op = layer.op
        end_consumers = list(layer.end.consumers())
        folds = any(s.kind in ("scale", "bn") for s in layer.steps)
        self.report.layers.append(op.name)
        if not folds:
            with self.graph.as_default():
                _tf.update_input(op, 1, self.weight_quant(op.inputs[1], op.type, op.name))
                self.activation_quant(layer.end, end_consumers)
            return op
        with self.graph.as_default():
            self.updates = []
            computed, new_op = self.folded(layer)
            for update in self.updates:
                # The fold reads the moving statistics; their update (run beside the forward pass,
                # from UPDATE_OPS) must wait, or a step would read a half-updated value.
                _tf.add_control_input(update, computed.op)
            self.activation_quant_replacing(layer.end, computed, end_consumers)
        self.replaced.append(layer.end.op)
        return new_op


    # -- merges -----------------------------------------------------------------------------------


def _parameter_ops(graph: Any) -> set[Any]:
    """Ops whose outputs are computed from constants and variables only."""
    params: set[Any] = set()
    for op in graph.get_operations():
        if op.type in PARAMETER_SOURCES:
            params.add(op)
            continue
        if op.type in NOT_PARAMETER_TYPES or op.type.startswith(("Random", "Stateless", "Iterator", "Queue")):
            continue
        if op.inputs and all(t.op in params for t in op.inputs):
            params.add(op)
    return params


def _rewrite(graph: Any, *, training: bool, quant_delay: int, weight_bits: int, activation_bits: int,
             freeze_bn_delay: int | None, ema_decay: float) -> QuantizeReport:
    tf = _tf.tf()
    graph = graph if graph is not None else tf.compat.v1.get_default_graph()
    what = "create_training_graph" if training else "create_eval_graph"
    _check_arguments(what, quant_delay, weight_bits, activation_bits, freeze_bn_delay, ema_decay)
    if tf.executing_eagerly() and graph is tf.compat.v1.get_default_graph() and not graph.get_operations():
        raise UserError(f"{what}: the default graph is empty (TF 2 runs eagerly)",
                        "build the model inside `with tf.Graph().as_default() as graph:` and pass graph=graph")
    ops = graph.get_operations()
    already = [op.name for op in ops if op.type in FAKE_QUANT_TYPES]
    if already:
        raise UserError(f"{what}: the graph already holds fake-quant ops ({already[0]})",
                        "rewrite each graph once: create_training_graph for training, create_eval_graph "
                        "on a freshly built inference graph")
    trainers = [op.name for op in ops if op.type.startswith(("Apply", "ResourceApply"))
                or op.name.startswith("gradients/")]
    if trainers:
        raise UserError(f"{what}: the graph already has an optimizer ({trainers[0]}); its gradients would miss "
                        "the fake-quant ops",
                        f"call {what} after building the model and loss, before optimizer.minimize")
    rewriter = _Rewriter(graph, training, quant_delay, weight_bits, activation_bits, freeze_bn_delay, ema_decay)
    layers = rewriter.find_layers()
    if not layers:
        raise UserError(f"{what}: nothing to quantize: the graph has no Conv2D, DepthwiseConv2dNative or MatMul "
                        "whose weights are variables or constants",
                        "build the model first (input -> layers -> loss), then rewrite its graph")
    rewriter.setup()
    layer_ops = []
    try:
        for layer in layers:
            new_op = rewriter.quantize_layer(layer)
            layer_ops.append((new_op, layer.op))
        rewriter.quantize_merges(ops)
        with graph.as_default():
            for new_op, old_op in layer_ops:
                rewriter.ensure_quantized(new_op.inputs[0], new_op)
                if old_op is not new_op and old_op.inputs[0] is not new_op.inputs[0]:
                    rewriter.ensure_quantized(old_op.inputs[0], old_op)
            for name in rewriter.report.merges:
                op = graph.get_operation_by_name(name)
                data = list(op.inputs[:-1]) if op.type == "ConcatV2" else list(op.inputs)
                for t in data:
                    rewriter.ensure_quantized(t, op)
    except ValueError as exc:  # TF refuses an edge (e.g. across a tf.cond / while_loop boundary)
        raise UserError(f"{what}: TensorFlow refused the rewrite: {str(exc).splitlines()[0][:200]}",
                        "layers inside tf.cond / tf.while_loop cannot be rewritten; build them outside") from None
    if rewriter.steps_update is not None:  # no activation was quantized: record the step anyway
        graph.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, rewriter.steps_update)
    if rewriter.replaced:
        # The unfolded originals of folded layers are read by nothing now; a NoOp that waits on
        # them marks them as no model output (for output detection when freezing).
        with graph.as_default(), graph.name_scope(None), tf.control_dependencies(rewriter.replaced):
            tf.no_op(name=f"{SCOPE}/replaced_by_folded")
    return rewriter.report


def _check_arguments(what: str, quant_delay: int, weight_bits: int, activation_bits: int,
                     freeze_bn_delay: int | None, ema_decay: float) -> None:
    if int(quant_delay) < 0:
        raise UserError(f"{what}: quant_delay {quant_delay} is negative", "give 0 to quantize from the first step")
    for label, bits in (("weight_bits", weight_bits), ("activation_bits", activation_bits)):
        if not 2 <= int(bits) <= 8:
            raise UserError(f"{what}: {label}={bits} is outside 2..8", "TFLite runs 8-bit models; use 8")
    if freeze_bn_delay is not None and int(freeze_bn_delay) < 0:
        raise UserError(f"{what}: freeze_bn_delay {freeze_bn_delay} is negative", "give None to never freeze")
    if not 0.0 < float(ema_decay) < 1.0:
        raise UserError(f"{what}: ema_decay {ema_decay} is outside (0, 1)", "the default is 0.999")
