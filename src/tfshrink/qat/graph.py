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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tfshrink import _tf
from tfshrink.errors import UserError
from tfshrink.graph.fake_quant import (
    ACT_SUFFIX,
    FAKE_QUANT_TYPES,
    INIT_MAX,
    INIT_MIN,
    PASS_THROUGH_TYPES,
    QUANT_DELAY_VAR,
    SCOPE,
    STEPS_VAR,
)

LAYER_TYPES = ("Conv2D", "DepthwiseConv2dNative", "MatMul")
BATCH_NORM_TYPES = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
ACTIVATION_TYPES = ("Relu", "Relu6")
MERGE_TYPES = ("Add", "AddV2", "ConcatV2")
PARAMETER_SOURCES = ("Const", "VariableV2", "Variable", "VarHandleOp")
NOT_PARAMETER_TYPES = ("Placeholder", "PlaceholderWithDefault", "Merge", "Switch", "Enter", "Exit",
                       "NextIteration", "LoopCond")



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


class _Rewriter:
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

    def batch_statistic(self, tensor: Any, layer: Any) -> bool:
        """Is `tensor` computed from a mean over the batch axis (a Mean reducing axis 0) of `layer`'s
        output, as tf.nn.moments computes a batch norm's statistics? (A squeeze-and-excitation's
        mean over height and width is not.)"""
        seen = set()
        stack = [tensor.op]
        while stack and len(seen) < 64:
            op = stack.pop()
            if op in seen:
                continue
            seen.add(op)
            if op.type == "Mean" and len(op.inputs) == 2 and self.depends_on(op.inputs[0], layer, limit=8):
                axes = _const_value(op.inputs[1])
                if axes is not None and 0 in [int(a) for a in axes.reshape(-1)]:
                    return True
            stack.extend(t.op for t in op.inputs)
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

    def refuse_unfused_batch_norm(self, layer: Any, op: Any, current: Any) -> None:
        """A Mul / Add / Sub of the layer's output with a tensor computed from that output (its batch
        mean or variance) is a batch norm in training mode written out in ops, which cannot be
        folded."""
        inputs = list(op.inputs)
        if op.type not in ("Add", "AddV2", "Sub", "Mul") or len(inputs) != 2:
            return
        if not any(x is current for x in inputs):
            return
        other = inputs[1] if inputs[0] is current else inputs[0]
        if other is not current and not self.is_param(other) and self.batch_statistic(other, layer):
            raise UserError(
                f"{layer.name}: its output feeds {op.name} ({op.type}) together with statistics of itself, "
                "an unfused batch norm in training mode, which the rewrite cannot fold",
                "use tf.compat.v1.nn.fused_batch_norm (FusedBatchNormV3) for batch norms after "
                "Conv2D / DepthwiseConv2dNative / MatMul")

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

    def activation_quant(self, tensor: Any, consumers: Sequence[Any]) -> Any:
        """Insert an activation fake-quant after `tensor`, read by `consumers` (gathered before)."""
        if tensor.ref() in self.quantized:
            quant = self.quantized[tensor.ref()]
        else:
            quant = self._activation_quant(tensor)
            self.quantized[tensor.ref()] = quant
            self.quant_outputs.add(quant.ref())
        self.reroute(tensor, quant, consumers)
        return quant

    def _activation_quant(self, tensor: Any, scope: str | None = None) -> Any:
        tf = self.tf
        scope = scope or act_scope(tensor)
        self.report.activation_quants.append(scope)
        with self.graph.as_default():
            lo = self.variable(f"{scope}/min", INIT_MIN)
            hi = self.variable(f"{scope}/max", INIT_MAX)
            count = self.variable(f"{scope}/count", 0.0)
            with self.graph.name_scope(f"{scope}/"):
                if not self.training:
                    return tf.quantization.fake_quant_with_min_max_vars(
                        tensor, lo.read_value(), hi.read_value(), num_bits=self.activation_bits, name="FakeQuant")
                x = tf.stop_gradient(tensor)
                batch_min = tf.minimum(tf.reduce_min(x), 0.0, name="BatchMin")
                batch_max = tf.maximum(tf.reduce_max(x), 0.0, name="BatchMax")
                n = count.read_value()
                decay = tf.minimum(tf.constant(self.ema_decay), n / (n + 1.0))
                step = tf.constant(1.0)
                if self.active is not None:
                    decay = tf.where(self.active, decay, 1.0)
                    step = tf.cast(self.active, tf.float32)
                deps = [] if self.steps_update is None else [self.steps_update]
                self.steps_update = None
                with tf.control_dependencies(deps):
                    new_lo = lo.assign(lo.read_value() * decay + batch_min * (1.0 - decay), name="AssignMin")
                    new_hi = hi.assign(hi.read_value() * decay + batch_max * (1.0 - decay), name="AssignMax")
                with tf.control_dependencies([new_lo, new_hi]):  # count was read for the decay first
                    counted = count.assign_add(step, read_value=False, name="AssignCount")
                with tf.control_dependencies([counted]):
                    quant = tf.quantization.fake_quant_with_min_max_vars(
                        tensor, new_lo, new_hi, num_bits=self.activation_bits, name="FakeQuant")
                if self.active is not None:
                    quant = tf.where(self.active, quant, tensor, name="delayed_quant")
                return quant

    def ensure_quantized(self, tensor: Any, reader: Any) -> None:
        """Make sure the data `reader` takes in `tensor` is quantized: look back through ops that
        keep quantization; quantize the first tensor that is not a fake-quant's output."""
        current, consumer = tensor, reader
        for _ in range(32):
            if current.op.type in FAKE_QUANT_TYPES or current.ref() in self.quant_outputs:
                return
            if current.op.type in PASS_THROUGH_TYPES and current.op.inputs:
                consumer = current.op
                current = current.op.inputs[0]
                continue
            break
        if current.dtype.base_dtype != self.tf.float32 or self.is_param(current):
            return
        self.activation_quant(current, [consumer])

    def reaches_quant(self, tensor: Any) -> bool:
        current = tensor
        for _ in range(32):
            if current.op.type in FAKE_QUANT_TYPES or current.ref() in self.quant_outputs:
                return True
            if current.op.type in PASS_THROUGH_TYPES and current.op.inputs:
                current = current.op.inputs[0]
                continue
            return False
        return False

    # -- layers ---------------------------------------------------------------------------------

    def quantize_layer(self, layer: _Layer) -> Any:
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

    def activation_quant_replacing(self, original: Any, computed: Any, consumers: Sequence[Any]) -> None:
        """Quantize `computed` (the folded layer's output) under `original`'s name, and make the
        original's consumers read it."""
        quant = self._activation_quant(computed, act_scope(original))
        self.quantized[original.ref()] = quant
        self.quant_outputs.add(quant.ref())
        self.reroute(original, quant, consumers)

    def folded(self, layer: _Layer) -> tuple[Any, Any]:
        """Recompute the layer with its scales and batch norm folded into the weights:
        out = corr * layer(x, FQ(w * A)) + B, then the activation. Returns (out, the new layer op)."""
        tf = self.tf
        op = layer.op
        channels = self.channels(op)
        scale: Any = None  # A: per-channel weight multiplier
        bias: Any = None  # B
        corr: Any = None  # per-channel output correction (training batch norm)
        act: Any = None
        with self.graph.name_scope(f"{op.name}_folded/"):
            for step in layer.steps:
                if step.kind == "bias":
                    value = tf.reshape(step.value, [-1])
                    bias = value if bias is None else bias + value
                elif step.kind == "scale":
                    value = tf.reshape(step.value, [-1])
                    scale = value if scale is None else scale * value
                    bias = None if bias is None else bias * value
                elif step.kind == "bn":
                    scale, bias, corr = self.fold_batch_norm(step.op, scale, bias)
                    self.report.folded_batch_norms.append(step.op.name)
                elif step.kind == "act":
                    act = step.op
            weights = op.inputs[1]
            if scale is not None:
                weights = weights * self.weight_multiplier(op, scale, channels)
        quant = self.weight_quant(weights, op.type, op.name + "_folded")
        with self.graph.name_scope(f"{op.name}_folded/"):
            y = self.relayer(op, op.inputs[0], quant)
            new_op = y.op
            fmt = "NHWC" if self.channel_axis_last(op) else "NCHW"
            if corr is not None:
                shape = [-1] if fmt == "NHWC" else [-1, 1, 1]
                y = y * tf.reshape(corr, shape)
            if bias is not None:
                if channels is not None and bias.shape.num_elements() == 1:
                    bias = tf.broadcast_to(tf.reshape(bias, [-1]), [channels])
                y = tf.nn.bias_add(y, bias, data_format=fmt)
            if act is not None:
                y = tf.nn.relu(y) if act.type == "Relu" else tf.nn.relu6(y)
        return y, new_op

    def weight_multiplier(self, op: Any, scale: Any, channels: int | None) -> Any:
        tf = self.tf
        if channels is not None and scale.shape.num_elements() == 1:
            scale = tf.broadcast_to(tf.reshape(scale, [-1]), [channels])
        if op.type == "DepthwiseConv2dNative":
            dims = op.inputs[1].shape.as_list()
            return tf.reshape(scale, [dims[2], dims[3]])
        if op.type == "MatMul" and op.get_attr("transpose_b"):
            return tf.reshape(scale, [-1, 1])
        return scale

    def relayer(self, op: Any, x: Any, weights: Any) -> Any:
        raw = self.tf.raw_ops
        if op.type == "MatMul":
            return raw.MatMul(a=x, b=weights, transpose_a=op.get_attr("transpose_a"),
                              transpose_b=op.get_attr("transpose_b"))
        common = {"strides": op.get_attr("strides"), "padding": op.get_attr("padding"),
                  "explicit_paddings": op.get_attr("explicit_paddings"),
                  "data_format": op.get_attr("data_format"), "dilations": op.get_attr("dilations")}
        if op.type == "Conv2D":
            return raw.Conv2D(input=x, filter=weights, use_cudnn_on_gpu=op.get_attr("use_cudnn_on_gpu"), **common)
        return raw.DepthwiseConv2dNative(input=x, filter=weights, **common)

    def fold_batch_norm(self, bn: Any, scale: Any, bias: Any) -> tuple[Any, Any, Any]:
        """(A, B, corr) after the batch norm `bn`, given A and B before it (None: 1 and 0)."""
        tf = self.tf
        x, gamma, beta = bn.inputs[0], bn.inputs[1], bn.inputs[2]
        eps = bn.get_attr("epsilon")
        prior = tf.zeros_like(gamma) if bias is None else bias
        mult = tf.ones_like(gamma) if scale is None else scale
        if not bn.get_attr("is_training"):
            sigma = tf.sqrt(bn.inputs[4] + eps)
            return mult * gamma / sigma, beta + gamma * (prior - bn.inputs[3]) / sigma, None
        axes = [0, 1, 2] if bn.get_attr("data_format").decode() in ("NHWC", "") else [0, 2, 3]
        if not self.training:
            raise UserError(f"{bn.name}: batch norm in training mode (is_training=True) in the eval graph",
                            "build the eval graph with is_training=False, so it uses the moving statistics")
        batch_mean, batch_var = tf.nn.moments(x, axes)
        sigma_b = tf.sqrt(batch_var + eps)
        moving = self.moving_statistics(bn)
        if moving is None:
            self.report.notes.append(f"{bn.name}: no moving statistics found; weights folded with batch statistics")
            return mult * gamma / sigma_b, beta + gamma * (prior - batch_mean) / sigma_b, None
        moving_mean, moving_var = moving
        sigma_m = tf.sqrt(moving_var + eps)
        # Weights always folded with the moving variance (what inference will use); the output is
        # corrected to the batch's statistics until freeze_bn_delay.
        corr = sigma_m / sigma_b
        bias_b = beta + gamma * (prior - batch_mean) / sigma_b
        if self.bn_frozen is not None:
            corr = tf.where(self.bn_frozen, tf.ones_like(corr), corr)
            bias_b = tf.where(self.bn_frozen, beta + gamma * (prior - moving_mean) / sigma_m, bias_b)
        return mult * gamma / sigma_m, bias_b, corr

    def moving_statistics(self, bn: Any) -> tuple[Any, Any] | None:
        """The moving mean and variance of a training-mode batch norm: its mean/variance inputs
        when it has them (exponential_avg_factor), else the variables its batch statistics are
        assigned into."""
        inputs = list(bn.inputs)
        if len(inputs) >= 5 and all(t.shape.num_elements() for t in inputs[3:5]):
            return inputs[3], inputs[4]
        found = [self.assigned_variable(bn.outputs[i]) for i in (1, 2)]
        if found[0] is None or found[1] is None:
            return None
        return found[0], found[1]

    def assigned_variable(self, tensor: Any) -> Any:
        """The current value of the variable `tensor` (a batch statistic) is assigned into within a
        few ops, read in a way the assignment waits for (see `order_updates`)."""
        tf = self.tf
        frontier = [tensor]
        seen = set()
        for _ in range(5):
            nxt = []
            for t in frontier:
                for c in t.consumers():
                    if c in seen:
                        continue
                    seen.add(c)
                    if c.type in ("AssignSub", "Assign"):
                        self.updates.append(c)
                        return tf.identity(c.inputs[0])
                    if c.type in ("AssignSubVariableOp", "AssignVariableOp"):
                        self.updates.append(c)
                        return tf.raw_ops.ReadVariableOp(resource=c.inputs[0], dtype=tf.float32)
                    nxt.extend(c.outputs)
            frontier = nxt
        return None

    # -- merges -----------------------------------------------------------------------------------

    def quantize_merges(self, ops: Sequence[Any]) -> None:
        for op in ops:
            if op.type not in MERGE_TYPES or op.outputs[0].dtype.base_dtype != self.tf.float32:
                continue
            data = list(op.inputs[:-1]) if op.type == "ConcatV2" else list(op.inputs)
            dynamic = [t for t in data if not self.is_param(t)]
            if len(dynamic) < 2 or len(dynamic) != len(data) or not all(self.reaches_quant(t) for t in data):
                continue
            end = op.outputs[0]
            consumers = end.consumers()
            if len(consumers) == 1 and consumers[0].type in ACTIVATION_TYPES:
                end = consumers[0].outputs[0]
            self.report.merges.append(op.name)
            with self.graph.as_default():
                self.activation_quant(end, list(end.consumers()))


def _const_value(tensor: Any) -> Any:
    """The value of a Const tensor as a numpy array, else None."""
    if tensor.op.type != "Const":
        return None
    return _tf.tf().make_ndarray(tensor.op.get_attr("value"))


def act_scope(tensor: Any) -> str:
    """The variable scope of the activation fake-quant of `tensor`: its producer's name."""
    index = tensor.value_index
    return f"{tensor.op.name}/{ACT_SUFFIX}" + (f"_{index}" if index else "")


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
