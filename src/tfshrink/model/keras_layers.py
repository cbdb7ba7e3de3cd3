"""The Keras layers quantization-aware training writes into a .keras file (tfshrink.qat.keras's
quantize_model): FakeQuant weights and learned activation ranges. They live in the model layer
because loading such a file needs them registered with Keras, whichever command loads it."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.graph.fake_quant import INIT_MAX, INIT_MIN

_tf.tf()  # TensorFlow first (quietly): Keras runs on it
import keras  # noqa: E402
from keras import ops  # noqa: E402

PACKAGE = "tfshrink"
FUSABLE_ACTIVATIONS = ("linear", "relu", "relu6")  # applied before the output range is taken


def activation_name(activation: Any) -> str:
    name = keras.activations.serialize(activation) if activation is not None else "linear"
    if isinstance(name, dict):
        name = name.get("config", {}).get("name", name.get("class_name", "?"))
    return str(name)


class _Ranges:
    """One learned activation range held by `layer`: min, max and update count weights."""

    def __init__(self, layer: keras.layers.Layer, prefix: str):
        init = keras.initializers.Constant
        self.min = layer.add_weight(name=f"{prefix}_min", shape=(), initializer=init(INIT_MIN), trainable=False)
        self.max = layer.add_weight(name=f"{prefix}_max", shape=(), initializer=init(INIT_MAX), trainable=False)
        self.count = layer.add_weight(name=f"{prefix}_count", shape=(), initializer="zeros", trainable=False)

    def __call__(self, x: Any, training: Any, ema_decay: float, num_bits: int = 8) -> Any:
        lo, hi = self.min, self.max
        if training:
            seen = ops.stop_gradient(x)
            batch_min, batch_max = _global_batch_range(ops.minimum(ops.min(seen), 0.0),
                                                       ops.maximum(ops.max(seen), 0.0))
            n = ops.convert_to_tensor(self.count)
            decay = ops.minimum(ema_decay, n / (n + 1.0))
            lo_value = ops.convert_to_tensor(self.min) * decay + batch_min * (1.0 - decay)
            hi_value = ops.convert_to_tensor(self.max) * decay + batch_max * (1.0 - decay)
            self.min.assign(lo_value)
            self.max.assign(hi_value)
            self.count.assign(n + 1.0)
            lo, hi = lo_value, hi_value
        return keras.quantizers.fake_quant_with_min_max_vars(x, lo, hi, num_bits=num_bits, narrow_range=False)


def _global_batch_range(low: Any, high: Any) -> tuple[Any, Any]:
    """Under a tf.distribute strategy with several replicas, the range of the whole global batch
    (the min and max over every replica's part), so that every replica makes the same update a
    single process training on that batch would make, and the ranges stay the same everywhere.
    Alone, the range as it is."""
    tf = _tf.tf()
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return low, high
    both = ops.reshape(ops.stack([-ops.convert_to_tensor(low), ops.convert_to_tensor(high)]), (1, 2))
    widest = ops.max(context.all_gather(both, axis=0), axis=0)
    return -widest[0], widest[1]


def _weight_quant(kernel: Any, axis: int | None, num_bits: int = 8) -> Any:
    """Symmetric narrow-range fake-quant of a kernel, per channel on `axis` or per tensor."""
    if axis is None:
        limit = ops.maximum(ops.max(ops.abs(kernel)), 1e-8)
    else:
        reduce = [i for i in range(len(kernel.shape)) if i != axis % len(kernel.shape)]
        limit = ops.maximum(ops.max(ops.abs(kernel), axis=reduce), 1e-8)
    return keras.quantizers.fake_quant_with_min_max_vars(kernel, -limit, limit, num_bits=num_bits,
                                                         narrow_range=True, axis=axis)


class _QuantLayerMixin:
    """Shared by the quantized Conv2D / DepthwiseConv2D / Dense: the input (optional) and output
    activation ranges, and the order of output fake-quant and activation."""

    def __init__(self, *args: Any, ema_decay: float = 0.999, **kwargs: Any):
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.ema_decay = float(ema_decay)
        self._act_name = activation_name(self.activation)  # type: ignore[attr-defined]

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)  # type: ignore[misc]
        self.output_range = _Ranges(self, "output")  # type: ignore[arg-type]

    def get_config(self) -> dict:
        config = super().get_config()  # type: ignore[misc]
        config["ema_decay"] = self.ema_decay
        return config

    def _finish(self, outputs: Any, training: Any) -> Any:
        if self._act_name in FUSABLE_ACTIVATIONS:
            if self.activation is not None:
                outputs = self.activation(outputs)
            return self.output_range(outputs, training, self.ema_decay)
        outputs = self.output_range(outputs, training, self.ema_decay)
        return self.activation(outputs)

    # Keras 3's Conv and Dense save and load only their kernel and bias (by position); the ranges
    # are stored beside them by name.
    def save_own_variables(self, store: Any) -> None:
        super().save_own_variables(store)  # type: ignore[misc]
        if self.built and len(store.keys()) < len(self.weights):  # the base saved kernel and bias only
            for key, variable in self._range_variables():
                store[key] = variable

    def load_own_variables(self, store: Any) -> None:
        super().load_own_variables(store)  # type: ignore[misc]
        saved = set(store.keys())  # Keras' H5 entries have keys() but no __contains__
        if self.built and "output_min" in saved:
            for key, variable in self._range_variables():
                if key in saved:
                    variable.assign(store[key])

    def _range_variables(self) -> list[tuple[str, Any]]:
        r = self.output_range
        return [("output_min", r.min), ("output_max", r.max), ("output_count", r.count)]


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantConv2D(_QuantLayerMixin, keras.layers.Conv2D):
    """Conv2D with a per-output-channel fake-quantized kernel and a fake-quantized output."""

    def call(self, inputs: Any, training: Any = None) -> Any:
        outputs = self.convolution_op(inputs, _weight_quant(self.kernel, axis=-1))
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1,) * (self.rank + 1) + (self.filters,)))
        return self._finish(outputs, training)


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantDepthwiseConv2D(_QuantLayerMixin, keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D with a per-output-channel fake-quantized kernel and a fake-quantized output."""

    def call(self, inputs: Any, training: Any = None) -> Any:
        kh, kw, cin, mult = self.kernel.shape
        # One range per output channel (in * multiplier), TFLite's quantized dimension.
        flat = ops.reshape(self.kernel, (kh, kw, 1, cin * mult))
        kernel = ops.reshape(_weight_quant(flat, axis=-1), (kh, kw, cin, mult))
        outputs = ops.depthwise_conv(inputs, kernel, strides=self.strides, padding=self.padding,
                                     dilation_rate=self.dilation_rate, data_format=self.data_format)
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1,) * (self.rank + 1) + (cin * mult,)))
        return self._finish(outputs, training)


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantDense(_QuantLayerMixin, keras.layers.Dense):
    """Dense with a per-tensor fake-quantized kernel and a fake-quantized output."""

    def call(self, inputs: Any, training: Any = None) -> Any:
        outputs = ops.matmul(inputs, _weight_quant(self.kernel, axis=None))
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        return self._finish(outputs, training)


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizeInput(keras.layers.Layer):
    """Fake-quantizes a model input with a learned range (TFLite's input scale and zero point)."""

    def __init__(self, ema_decay: float = 0.999, **kwargs: Any):
        super().__init__(**kwargs)
        self.ema_decay = float(ema_decay)

    def build(self, input_shape: Any) -> None:
        self.output_range = _Ranges(self, "output")

    def call(self, inputs: Any, training: Any = None) -> Any:
        return self.output_range(inputs, training, self.ema_decay)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "ema_decay": self.ema_decay}


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizeOutput(keras.layers.Wrapper):
    """Runs the wrapped layer, then fake-quantizes its output with a learned range."""

    def __init__(self, layer: keras.layers.Layer, ema_decay: float = 0.999, **kwargs: Any):
        super().__init__(layer, **kwargs)
        self.ema_decay = float(ema_decay)

    def build(self, input_shape: Any = None) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        self.output_range = _Ranges(self, "output")
        self.built = True

    def call(self, inputs: Any, training: Any = None) -> Any:
        outputs = self.layer(inputs, training=training) if takes_training(self.layer) else self.layer(inputs)
        return self.output_range(outputs, training, self.ema_decay)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "ema_decay": self.ema_decay}


def activation_ranges(model: Any) -> list[tuple[str, float, float, int]]:
    """(layer, min, max, updates) of every learned activation range of a quantize_model model."""
    out = []
    for layer in model.layers:
        r = getattr(layer, "output_range", None)
        if isinstance(r, _Ranges):
            out.append((layer.name, float(np.asarray(r.min)), float(np.asarray(r.max)), int(np.asarray(r.count))))
    return out


def takes_training(layer: Any) -> bool:
    return "training" in inspect.signature(layer.call).parameters
