"""Quantization-aware training for Keras 3 Sequential and Functional models.

`quantize_model(model)` returns a new Functional model, built with `keras.models.clone_model`,
in which:

* the inputs pass through `QuantizeInput` (a fake-quant with a learned range);
* Conv2D, DepthwiseConv2D and Dense become `QuantConv2D`, `QuantDepthwiseConv2D` and
  `QuantDense`: the same layer (subclassed, same config and weights) whose kernel goes through
  `keras.quantizers.fake_quant_with_min_max_vars` (per output channel for the convolutions,
  symmetric, narrow range, 8 bits; per tensor for Dense) and whose output goes through an
  activation fake-quant. A BatchNormalization that is the layer's only consumer is folded into its
  kernel and bias with the trained moving statistics (and replaced by an Identity), and a
  following ReLU / ReLU6 is fused into the layer, as TFLite fuses them; softmax, sigmoid and tanh
  stay after the output fake-quant (TFLite gives them fixed output ranges).
* Add, Subtract, Multiply, Concatenate, Average/Maximum/Minimum, AveragePooling, GlobalAverage-
  Pooling, standalone BatchNormalization, ReLU / LeakyReLU / Activation and Rescaling layers are
  wrapped in `QuantizeOutput`, which fake-quantizes their output.
* Pooling by max, Flatten, Reshape, Dropout, padding, cropping and similar layers pass through:
  TFLite's int8 kernels keep their input's scale.

Any other layer is refused with a UserError that names it, as is a subclassed model.

Activation ranges live in non-trainable weights (`<name>_min`, `<name>_max`, `<name>_count`),
learned during training (`training=True`) from the batch's min and max (widened to include 0):
the first batch sets them, later ones are averaged in with weight 1/(count+1) until that falls
to 1 - ema_decay, then an exponential moving average. Inference uses them as they are.

On TensorFlow the fake-quant ops are TF's FakeQuantWithMinMaxVars(PerChannel), which the TFLite
converter reads: `convert_qat(model, "model.tflite")` gives a fully int8 model with no
representative dataset.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.errors import UserError
from tfshrink.model.keras_layers import (
    FUSABLE_ACTIVATIONS,
    QuantConv2D,
    QuantDense,
    QuantDepthwiseConv2D,
    QuantizeInput,
    QuantizeOutput,
    activation_name,
    activation_ranges,
)

_tf.tf()  # TensorFlow first (quietly): Keras runs on it
import keras  # noqa: E402

QUANTIZED = ("Conv2D", "DepthwiseConv2D", "Dense")
OUTPUT_QUANTIZED = ("Add", "Subtract", "Multiply", "Concatenate", "Average", "Maximum", "Minimum",
                    "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
                    "BatchNormalization", "ReLU", "LeakyReLU", "Activation", "Rescaling")
PASS_THROUGH = ("InputLayer", "MaxPooling1D", "MaxPooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "Flatten",
                "Reshape", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
                "AlphaDropout", "ActivityRegularization", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D",
                "Cropping2D", "Permute", "Identity", "UpSampling2D", "Softmax")
FIXED_RANGE_ACTIVATIONS = ("softmax", "sigmoid", "tanh")  # TFLite gives these fixed output ranges


def _accepted(layer: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call kwargs of the original layer (mask=..., training=...) that the new one takes: an
    Identity standing for a folded BatchNormalization takes neither."""
    params = inspect.signature(layer.call).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


# -- planning -------------------------------------------------------------------------------------


@dataclass
class _Plan:
    quantized: dict[str, dict[str, Any]] = field(default_factory=dict)  # layer -> {"bn": name, "act": str}
    absorbed: set[str] = field(default_factory=set)  # BN / activation layers fused into a quantized one
    wrapped: set[str] = field(default_factory=set)
    passed: set[str] = field(default_factory=set)


def _check_model(model: Any) -> Any:
    """The model as a Functional model (a Sequential's own graph); UserError for anything else."""
    if not isinstance(model, keras.Model):
        raise UserError(f"quantize_model takes a Keras 3 model, not {type(model).__name__}",
                        "load it with keras.models.load_model")
    if isinstance(model, keras.Sequential):
        if not model.built or not getattr(model, "inputs", None):
            raise UserError(f"Sequential model {model.name!r} is not built, so its layers have no input shapes",
                            "start it with keras.Input(shape=...) or call model.build(input_shape)")
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if "Functional" not in {c.__name__ for c in type(model).__mro__}:  # keras.Model(inputs, outputs)
        raise UserError(f"model {model.name!r} is a subclassed Keras model ({type(model).__name__}); quantize_model "
                        "needs a Sequential or Functional model, whose layer graph it can rewrite",
                        "rebuild it with keras.Input(...) and layer calls (Functional API), or keras.Sequential")
    return model


def _consumers(model: Any) -> dict[str, list[str]]:
    """Layer name -> names of the layers that read its output, from the Functional config."""
    config = model.get_config()
    out: dict[str, list[str]] = {layer["name"]: [] for layer in config["layers"]}
    for layer in config["layers"]:
        for node in layer.get("inbound_nodes", []):
            for source in _history_names(node):
                out.setdefault(source, []).append(layer["name"])
    for output in _flat_outputs(config.get("output_layers", [])):
        out.setdefault(output, []).append("<output>")
    return out


def _history_names(value: Any) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            found.append(value["config"]["keras_history"][0])
        else:
            for v in value.values():
                found.extend(_history_names(v))
    elif isinstance(value, (list, tuple)):
        for v in value:
            found.extend(_history_names(v))
    return found


def _flat_outputs(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str):
        return [value[0]]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _flat_outputs(v)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _flat_outputs(v)]
    return []


def _plan(model: Any) -> _Plan:
    consumers = _consumers(model)
    by_name = {layer.name: layer for layer in model.layers}
    plan = _Plan()
    refused = []
    for layer in model.layers:
        kind = type(layer).__name__
        if layer.name in plan.absorbed:
            continue
        if kind in QUANTIZED:
            problem = _unsupported_config(layer)
            if problem:
                refused.append(f"{kind} {layer.name!r} ({problem})")
                continue
            plan.quantized[layer.name] = _fusion(layer, consumers, by_name, plan)
        elif kind in OUTPUT_QUANTIZED:
            plan.wrapped.add(layer.name)
        elif kind in PASS_THROUGH:
            plan.passed.add(layer.name)
        elif isinstance(layer, keras.Model):
            refused.append(f"{kind} {layer.name!r} (a nested model; flatten it into one Functional model)")
        else:
            refused.append(f"{kind} {layer.name!r}")
    if refused:
        shown = ", ".join(refused[:6]) + (f" and {len(refused) - 6} more" if len(refused) > 6 else "")
        raise UserError(f"model {model.name!r}: quantize_model cannot quantize these layers: {shown}",
                        f"supported: {', '.join(QUANTIZED)} (+ BatchNormalization, ReLU), "
                        f"{', '.join(OUTPUT_QUANTIZED[:5])}, pooling, Flatten, Reshape, Dropout, ...")
    return plan


def _unsupported_config(layer: Any) -> str | None:
    config = layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last":
        return "channels_first"
    if config.get("groups", 1) != 1:
        return "grouped convolution"
    if getattr(layer, "quantization_mode", None) or config.get("lora_rank"):
        return "already quantized or LoRA"
    act = activation_name(layer.activation)
    if act not in FUSABLE_ACTIVATIONS + FIXED_RANGE_ACTIVATIONS:
        return f"activation {act!r}; use a separate Activation layer"
    return None


def _fusion(layer: Any, consumers: dict[str, list[str]], by_name: dict[str, Any], plan: _Plan) -> dict[str, Any]:
    """Which BatchNormalization and ReLU the quantized `layer` absorbs (its sole consumers, in turn)."""
    info: dict[str, Any] = {"bn": None, "act": activation_name(layer.activation)}
    current = layer.name
    if info["act"] == "linear":
        nxt = _sole_consumer(current, consumers, by_name)
        if nxt is not None and type(nxt).__name__ == "BatchNormalization" and _foldable_bn(nxt):
            info["bn"] = nxt.name
            plan.absorbed.add(nxt.name)
            current = nxt.name
        nxt = _sole_consumer(current, consumers, by_name)
        act = _fusable_activation(nxt) if nxt is not None else None
        if act is not None:
            info["act"] = act
            plan.absorbed.add(nxt.name)
    return info


def _sole_consumer(name: str, consumers: dict[str, list[str]], by_name: dict[str, Any]) -> Any:
    users = consumers.get(name, [])
    if len(users) != 1 or users[0] not in by_name:
        return None
    return by_name[users[0]]


def _foldable_bn(layer: Any) -> bool:
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    return axis in (-1, len(layer.input.shape) - 1) if axis is not None else False


def _fusable_activation(layer: Any) -> str | None:
    kind = type(layer).__name__
    if kind == "Activation":
        name = activation_name(layer.activation)
        return name if name in ("relu", "relu6") else None
    if kind == "ReLU":
        c = layer.get_config()
        if c.get("negative_slope", 0.0) or c.get("threshold", 0.0):
            return None
        if c.get("max_value") is None:
            return "relu"
        return "relu6" if float(c["max_value"]) == 6.0 else None
    return None


# -- building ---------------------------------------------------------------------------------------


def quantize_model(model: Any, *, ema_decay: float = 0.999) -> Any:
    """A quantization-aware copy of the Keras 3 Sequential or Functional `model` (see the module
    docstring for the rewrite), with the same weights (batch norms folded), ready to compile and
    fine-tune. The original model is left unchanged. Raises UserError for a subclassed model and
    names every layer it cannot quantize.
    """
    if not 0.0 < float(ema_decay) < 1.0:
        raise UserError(f"ema_decay {ema_decay} is outside (0, 1)", "the default is 0.999")
    functional = _check_model(model)
    plan = _plan(functional)
    originals = {layer.name: layer for layer in functional.layers}
    quantized_inputs: dict[int, Any] = {}
    input_layers: list[Any] = []

    def clone(layer: Any) -> Any:
        kind = type(layer).__name__
        config = layer.get_config()
        if layer.name in plan.absorbed:
            return keras.layers.Identity(name=layer.name)
        if layer.name in plan.quantized:
            info = plan.quantized[layer.name]
            config["activation"] = info["act"]
            if info["bn"] is not None:
                config["use_bias"] = True
            cls = {"Conv2D": QuantConv2D, "DepthwiseConv2D": QuantDepthwiseConv2D, "Dense": QuantDense}[kind]
            return cls.from_config({**config, "ema_decay": ema_decay})
        if layer.name in plan.wrapped:
            return QuantizeOutput(type(layer).from_config(config), ema_decay=ema_decay, name=layer.name)
        return type(layer).from_config(config)

    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=_input_name(t)) for t in functional.inputs]
    input_ids = {id(t): i for i, t in enumerate(inputs)}

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_quantize_inputs(a, input_ids, inputs, quantized_inputs, input_layers, ema_decay) for a in args)
        return layer(*args, **_accepted(layer, kwargs))

    structure = inputs if isinstance(functional.input, (list, tuple)) else inputs[0]
    if isinstance(functional.input, dict):
        structure = dict(zip(functional.input.keys(), inputs, strict=True))
    new = keras.models.clone_model(functional, input_tensors=structure, clone_function=clone, call_function=call)
    _copy_weights(new, originals, plan)
    return new


def _input_name(tensor: Any) -> str:
    return str(tensor.name)


def _quantize_inputs(value: Any, input_ids: dict[int, int], inputs: list[Any], cache: dict[int, Any],
                     layers: list[Any], ema_decay: float) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_quantize_inputs(v, input_ids, inputs, cache, layers, ema_decay) for v in value)
    if isinstance(value, dict):
        return {k: _quantize_inputs(v, input_ids, inputs, cache, layers, ema_decay) for k, v in value.items()}
    index = input_ids.get(id(value))
    if index is None or "float" not in str(value.dtype):
        return value
    if index not in cache:
        layer = QuantizeInput(ema_decay=ema_decay, name=f"{_input_name(inputs[index])}_quant")
        layers.append(layer)
        cache[index] = layer(value)
    return cache[index]


def _copy_weights(new: Any, originals: dict[str, Any], plan: _Plan) -> None:
    for layer in new.layers:
        source = originals.get(layer.name)
        if source is None or layer.name in plan.absorbed:
            continue
        if layer.name in plan.quantized:
            kernel, bias = _folded(source, plan.quantized[layer.name]["bn"], originals)
            layer.kernel.assign(kernel)
            if bias is not None:
                layer.bias.assign(bias)
        elif layer.name in plan.wrapped:
            layer.layer.set_weights(source.get_weights())
        elif source.weights:
            layer.set_weights(source.get_weights())


def _folded(layer: Any, bn_name: str | None, originals: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """The layer's kernel and bias with the batch norm `bn_name` (if any) folded in."""
    kernel = np.asarray(layer.kernel)
    bias = np.asarray(layer.bias) if layer.use_bias else None
    if bn_name is None:
        return kernel, bias
    bn = originals[bn_name]
    channels = kernel.shape[-1] * (kernel.shape[-2] if type(layer).__name__ == "DepthwiseConv2D" else 1)
    gamma = np.asarray(bn.gamma) if bn.scale else np.ones(channels, np.float32)
    beta = np.asarray(bn.beta) if bn.center else np.zeros(channels, np.float32)
    scale = gamma / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
    prior = bias if bias is not None else np.zeros(channels, np.float32)
    new_bias = (prior - np.asarray(bn.moving_mean)) * scale + beta
    if type(layer).__name__ == "DepthwiseConv2D":
        kernel = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    else:
        kernel = kernel * scale
    return kernel.astype(np.float32), new_bias.astype(np.float32)


def quantized_layers(model: Any) -> dict[str, list[str]]:
    """The layers of a quantize_model model by role: quantized (weights and output), output
    (output only), inputs (input fake-quants)."""
    roles: dict[str, list[str]] = {"quantized": [], "output": [], "inputs": []}
    for layer in model.layers:
        if isinstance(layer, (QuantConv2D, QuantDepthwiseConv2D, QuantDense)):
            roles["quantized"].append(layer.name)
        elif isinstance(layer, QuantizeOutput):
            roles["output"].append(layer.name)
        elif isinstance(layer, QuantizeInput):
            roles["inputs"].append(layer.name)
    return roles


__all__: Sequence[str] = ("QuantConv2D", "QuantDense", "QuantDepthwiseConv2D", "QuantizeInput", "QuantizeOutput",
                          "activation_ranges", "quantize_model", "quantized_layers")
