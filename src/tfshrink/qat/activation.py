"""Activation fake-quants with ranges learned in training (the rewrite's activation part; see
tfshrink.qat.graph for the whole rewrite)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tfshrink.graph.fake_quant import (
    FAKE_QUANT_TYPES,
    INIT_MAX,
    INIT_MIN,
    PASS_THROUGH_TYPES,
)
from tfshrink.qat.common import ACTIVATION_TYPES, MERGE_TYPES, act_scope


class ActivationQuantization:
    """A part of tfshrink.qat.graph's rewriter (its state lives there: graph, tf, v1, training,
    params, quantized, quant_outputs, active, bn_frozen, updates, report...)."""

    # attributes the rewriter sets
    tf: Any
    v1: Any
    graph: Any

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

    def activation_quant_replacing(self, original: Any, computed: Any, consumers: Sequence[Any]) -> None:
        """Quantize `computed` (the folded layer's output) under `original`'s name, and make the
        original's consumers read it."""
        quant = self._activation_quant(computed, act_scope(original))
        self.quantized[original.ref()] = quant
        self.quant_outputs.add(quant.ref())
        self.reroute(original, quant, consumers)

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
