"""Batch norm folded into the layer's weights for quantization-aware training (the rewrite's
folding part; see tfshrink.qat.graph for the whole rewrite and its math)."""

from __future__ import annotations

from typing import Any

from tfshrink.errors import UserError
from tfshrink.qat.common import const_value


class BatchNormFolding:
    """A part of tfshrink.qat.graph's rewriter (its state lives there: graph, tf, v1, training,
    params, quantized, quant_outputs, active, bn_frozen, updates, report...)."""

    # attributes the rewriter sets
    tf: Any
    v1: Any
    graph: Any

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
                axes = const_value(op.inputs[1])
                if axes is not None and 0 in [int(a) for a in axes.reshape(-1)]:
                    return True
            stack.extend(t.op for t in op.inputs)
        return False

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

    def folded(self, layer: Any) -> tuple[Any, Any]:
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
