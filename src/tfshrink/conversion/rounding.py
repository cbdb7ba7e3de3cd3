"""int8 weights rounded to the least error at each layer's output, in the spirit of AdaRound.

convert --weight-rounding: "adaptive" (the default) as below; "nearest" keeps TFLite's rounding of
each weight to its nearest int8 step.

TFLite's quantizer rounds every weight w of a conv / depthwise conv / fully-connected layer to the
nearest step of its channel's scale s (symmetric, per output channel, s = max|w| / 127). Each
rounding is the best one alone, but the layer's output is a sum over its inputs, and the rounding
errors of one channel's weights add up there. AdaRound (Nagel et al., 2020) chooses, per weight,
floor or ceil so as to minimize the layer's output error on calibration data,
E[((W_q - W) x)^2], with x the layer's (quantized) input. Per output channel that is the quadratic
d^T C d with d = s*q - w, and C = E[x x^T], the second moment of the layer's input patches. AdaRound
relaxes the choice to a continuous one and trains it; here it is solved greedily instead, which is
deterministic and needs no training: start from nearest rounding and flip single weights to their
other neighbour while that lowers the quadratic (coordinate descent, all channels of a layer at
once), at most `MAX_PASSES` passes. A flip is kept only when it lowers the error by more than a
relative `TOLERANCE`, so float rounding in the BLAS of another machine cannot change a decision.
The weights' scales, the biases and everything else stay as TFLite wrote them: only int8 weight
bytes change, so the file has the same size and XNNPACK splits it the same way.

`round_weights` runs the int8 model in LiteRT on the calibration samples (at most `MAX_SAMPLES`,
all tensors kept), reads each layer's int8 input, dequantizes it into patches (im2col with the
layer's strides, padding and dilation), accumulates C per layer, and rounds every layer from the
same run. Layers with float inputs (kept float, dynamic-range) and layers whose quadratic would be
too costly (`MAX_COST`) keep nearest rounding.

What was measured (benchmarks/anchors.py's data, the first and the second half of the LFW faces
as calibration in turn, judged on the other half, augmented to 300 fer faces and 636 ONet crops;
benchmarks/ptq_folds.py reproduces the first two rows, the dropped variants were prototypes that
are not kept; each cell: first half / second half):

| variant (on top of MSE ranges)                        | fer top-1 %  | fer mean abs prob error | ONet mean, worst face-prob change (1st half; 2nd) |
| ---                                                   | ---          | ---                     | ---                                |
| nearest rounding (before)                             | 97.3 / 96.7  | 0.0049 / 0.0059         | 0.0011 / 0.034; 0.0018 / 0.054     |
| adaptive rounding (kept)                              | 99.0 / 98.0  | 0.0047 / 0.0053         | 0.0010 / 0.037; 0.0016 / 0.038     |
| bias correction, own weight error (dropped)           | 97.0 / 98.0  | 0.0048 / 0.0057         | 0.0011 / 0.034; 0.0017 / 0.058     |
| bias correction, upstream error too, layer by layer (dropped) | 97.0 / 98.0 | 0.0047 / 0.0057 | 0.0011 / 0.034; 0.0016 / 0.089 |
| adaptive rounding + bias correction (dropped)         | 96.3 / 96.7  | 0.0047 / 0.0053         | 0.0011 / 0.034; 0.0016 / 0.058     |
| rounding that also cancels the input's error, layer by layer (dropped) | 97.3 / 97.7 | 0.0048 / 0.0056 | 0.0010 / 0.025; 0.0018 / 0.079 |
| bias correction of the input's error too, all layers from one run (dropped) | 94.7 / 96.0 | 0.0085 / 0.0104 | 0.0010 / 0.034; 0.0018 / 0.063 |

Adaptive rounding lowered the mean error on both models and both halves and raised fer's top-1
agreement (ONet's single worst crop moved 0.034 -> 0.037 on the first half, 0.054 -> 0.038 on the
second; on benchmarks/anchors.py's 106 held-out crops 0.023 -> 0.019); bias correction (subtracting each channel's mean output error from its int32 bias)
helped fer a little and made ONet's worst crop worse, with or without adaptive rounding, so
tfshrink does not do it. Correcting the input's upstream error as well (GPTQ-like, each layer
re-measured after the ones before it were rounded) overfits the few calibration samples on ONet.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.data.calibration import InputSpec
from tfshrink.errors import first_line
from tfshrink.tflite.flatbuffer import opcode_names, read, schema

METHODS = ("adaptive", "nearest")
MAX_SAMPLES = 100  # calibration samples whose activations feed C
MAX_PASSES = 20
TOLERANCE = 1e-9  # a flip must lower the channel's error by more than this fraction of its scale
MAX_COST = 4e9  # rows * K * K of a layer's coordinate descent per pass; bigger layers keep nearest
LAYERS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass(frozen=True)
class _Layer:
    op: str
    name: str  # output tensor name
    x: int  # input tensor index (int8)
    w: int  # weight tensor index (int8) in the quantized model
    fw: int  # weight tensor index (float32) in the calibrated model
    shape: tuple[int, ...]  # weight shape
    w_scale: np.ndarray
    x_scale: float
    x_zero: int
    conv: tuple[int, int, int, int, int, int] | None  # padding (0 SAME), stride h/w, dilation h/w, multiplier


@dataclass(frozen=True)
class Rounded:
    """The int8 model with its weights re-rounded, and what changed."""

    data: bytes
    layers: int  # layers re-rounded
    moved: int  # weights rounded the other way than nearest
    weights: int  # weights in those layers
    samples: int
    kept_nearest: tuple[str, ...] = ()  # layers left as TFLite rounded them (too costly)
    error: str | None = None  # why nothing was done (LiteRT cannot run the model here)

    def note(self) -> str:
        if self.error is not None:
            return f"weights: rounded to nearest (adaptive rounding needs the model to run in LiteRT here: {self.error})"
        if not self.layers:
            return "weights: rounded to nearest (no int8 conv or fully-connected layer with int8 inputs)"
        extra = f"; {len(self.kept_nearest)} layer(s) too large kept nearest" if self.kept_nearest else ""
        return (f"weights: {self.moved:,} of {self.weights:,} int8 weights in {self.layers} layer(s) rounded the other "
                f"way than nearest, to the least output error of each layer on {self.samples} calibration samples "
                f"(AdaRound's objective, solved greedily; --weight-rounding nearest keeps TFLite's){extra}")


def _options(op: Any, kind: str) -> tuple[int, int, int, int, int, int] | None:
    fb = schema()
    table = op.BuiltinOptions()
    if table is None:
        return None
    if kind == "CONV_2D":
        o = fb.Conv2DOptions()
        o.Init(table.Bytes, table.Pos)
        return o.Padding(), o.StrideH(), o.StrideW(), o.DilationHFactor(), o.DilationWFactor(), 1
    if kind == "DEPTHWISE_CONV_2D":
        o = fb.DepthwiseConv2DOptions()
        o.Init(table.Bytes, table.Pos)
        return o.Padding(), o.StrideH(), o.StrideW(), o.DilationHFactor(), o.DilationWFactor(), o.DepthMultiplier()
    o = fb.FullyConnectedOptions()
    o.Init(table.Bytes, table.Pos)
    return None if o.WeightsFormat() != 0 else (0, 0, 0, 0, 0, 0)


def _layers(quantized: Any, calibrated: Any) -> list[_Layer]:
    """The quantized model's int8 layers with int8 inputs, each paired by output name with its
    float op in the calibrated model."""
    fb = schema()
    qsub, fsub = quantized.Subgraphs(0), calibrated.Subgraphs(0)
    qcodes, fcodes = opcode_names(quantized), opcode_names(calibrated)

    def name(sub: Any, t: int) -> str:
        return (sub.Tensors(t).Name() or b"").decode()

    floats = {}
    for k in range(fsub.OperatorsLength()):
        op = fsub.Operators(k)
        if fcodes[op.OpcodeIndex()] in LAYERS and op.OutputsLength():
            floats[name(fsub, op.Outputs(0))] = op
    users = Counter(qsub.Tensors(i).Buffer() for i in range(qsub.TensorsLength()))
    found = []
    for k in range(qsub.OperatorsLength()):
        op = qsub.Operators(k)
        kind = qcodes[op.OpcodeIndex()]
        if kind not in LAYERS or op.InputsLength() < 2 or not op.OutputsLength():
            continue
        x, w = qsub.Tensors(op.Inputs(0)), qsub.Tensors(op.Inputs(1))
        fop = floats.get(name(qsub, op.Outputs(0)))
        if fop is None or x.Type() != fb.TensorType.INT8 or w.Type() != fb.TensorType.INT8 or users[w.Buffer()] != 1:
            continue
        fw = calibrated.Subgraphs(0).Tensors(fop.Inputs(1))
        wq, xq = w.Quantization(), x.Quantization()
        shape = tuple(int(v) for v in w.ShapeAsNumpy())
        conv = _options(op, kind)
        if fw.Type() != fb.TensorType.FLOAT32 or tuple(int(v) for v in fw.ShapeAsNumpy()) != shape or \
                wq is None or xq is None or xq.ScaleLength() != 1 or conv is None:
            continue
        scale = wq.ScaleAsNumpy().astype(np.float64)
        rows = shape[-1] if kind == "DEPTHWISE_CONV_2D" else shape[0]
        x_channels = int(x.ShapeAsNumpy()[-1]) if x.ShapeLength() else -1
        if scale.size != rows or (kind == "CONV_2D" and x_channels != shape[3]):
            continue  # per-tensor weights, grouped convs: left as they are
        found.append(_Layer(kind, name(qsub, op.Outputs(0)), int(op.Inputs(0)), int(op.Inputs(1)),
                            int(fop.Inputs(1)), shape, scale, float(xq.Scale(0)), int(xq.ZeroPoint(0)),
                            conv if kind != "FULLY_CONNECTED" else None))
    return found


def patches(x: np.ndarray, layer: _Layer) -> np.ndarray:
    """A layer's input (NHWC, batch 1) as the rows its weights multiply: [positions, kh*kw*C] for
    CONV_2D, [C, kh*kw, positions] for DEPTHWISE_CONV_2D, [rows, K] for FULLY_CONNECTED."""
    if layer.op == "FULLY_CONNECTED":
        return x.reshape(-1, layer.shape[1])
    assert layer.conv is not None
    padding, sh, sw, dh, dw, _ = layer.conv
    kh, kw = layer.shape[1], layer.shape[2]
    _, height, width, channels = x.shape
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == 0:  # SAME: zero (the zero point, in int8) around, the extra row/column at the end
        ho, wo = -(-height // sh), -(-width // sw)
        ph, pw = max((ho - 1) * sh + ekh - height, 0), max((wo - 1) * sw + ekw - width, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        ho, wo = (height - ekh) // sh + 1, (width - ekw) // sw + 1
    taps = [x[0, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw, :]
            for i in range(kh) for j in range(kw)]
    stacked = np.stack(taps, axis=2)  # ho, wo, kh*kw, C
    if layer.op == "DEPTHWISE_CONV_2D":
        return stacked.reshape(ho * wo, kh * kw, channels).transpose(2, 1, 0)
    return stacked.reshape(ho * wo, kh * kw * channels)


def _moments(data: bytes, layers: Sequence[_Layer], inputs: Sequence[InputSpec],
             samples: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Per layer, E[x x^T] over its input patches on `samples` (per input channel for depthwise)."""
    from ai_edge_litert.interpreter import Interpreter

    with _tf.quiet_native(), warnings.catch_warnings():  # keeping all tensors is "for debugging": it is meant
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_content=data, experimental_preserve_all_tensors=True, num_threads=1)
        interpreter.allocate_tensors()
    details = interpreter.get_input_details()
    sums: list[Any] = [0.0] * len(layers)
    counts = [0] * len(layers)
    for feed in samples:
        for detail, spec in zip(details, inputs, strict=True):
            interpreter.set_tensor(detail["index"], np.asarray(feed[spec.name], detail["dtype"]))
        interpreter.invoke()
        for k, layer in enumerate(layers):
            x = (interpreter.get_tensor(layer.x).astype(np.float64) - layer.x_zero) * layer.x_scale
            p = patches(x, layer)
            if p.ndim == 3:
                sums[k] = sums[k] + p @ p.transpose(0, 2, 1)
                counts[k] += p.shape[2]
            else:
                sums[k] = sums[k] + p.T @ p
                counts[k] += p.shape[0]
    return [s / max(n, 1) for s, n in zip(sums, counts, strict=True)]


def greedy_rounding(weights: np.ndarray, scale: np.ndarray, moment: np.ndarray, passes: int = MAX_PASSES
                    ) -> np.ndarray:
    """int8 steps q (rows x K) for float `weights` (rows x K, one `scale` per row) minimizing each
    row's d^T C d, d = scale*q - w, with q the floor or the ceil of w/scale within [-127, 127];
    `moment` is C (K x K, shared) or one per row (rows x K x K). Starts from nearest rounding."""
    ratio = weights / scale[:, None]
    q = np.clip(np.round(ratio), -127, 127)
    low, high = np.clip(np.floor(ratio), -127, 127), np.clip(np.ceil(ratio), -127, 127)
    d = q * scale[:, None] - weights
    per_row = moment.ndim == 3
    grad = np.einsum("rij,rj->ri", moment, d) if per_row else d @ moment  # C d, per row
    diag = np.einsum("rii->ri", moment) if per_row else np.broadcast_to(np.diag(moment), weights.shape)
    floor = TOLERANCE * np.maximum(diag.max(axis=1), 1e-30) * scale * scale
    for _ in range(passes):
        flips = 0
        for i in range(weights.shape[1]):
            other = np.where(q[:, i] == high[:, i], low[:, i], high[:, i])
            delta = (other - q[:, i]) * scale
            gain = 2.0 * delta * grad[:, i] + delta * delta * diag[:, i]  # change of d^T C d
            take = (gain < -floor) & (delta != 0)
            if not take.any():
                continue
            flips += int(take.sum())
            step = np.where(take, delta, 0.0)
            q[:, i] = np.where(take, other, q[:, i])
            grad += step[:, None] * (moment[:, i, :] if per_row else moment[i][None, :])
        if not flips:
            break
    return q


def round_weights(quantized: bytes, calibrated: bytes, inputs: Sequence[InputSpec],
                  samples: Sequence[dict[str, np.ndarray]]) -> Rounded:
    """`quantized` (an int8 model quantized from `calibrated`) with each int8 layer's weights
    rounded to the least error at its output on `samples` (see the module doc)."""
    data = bytearray(quantized)
    qmodel, fmodel = read(data), read(calibrated)
    layers = _layers(qmodel, fmodel)
    used = list(samples[:MAX_SAMPLES])
    if not layers or not used:
        return Rounded(bytes(data), 0, 0, 0, len(used))
    try:
        moments = _moments(bytes(data), layers, inputs, used)
    except (RuntimeError, ValueError) as exc:  # Select TF ops, custom ops LiteRT has no kernel for here
        return Rounded(bytes(data), 0, 0, 0, len(used), error=first_line(exc)[:120])
    qsub, fsub = qmodel.Subgraphs(0), fmodel.Subgraphs(0)
    done = moved = total = 0
    kept: list[str] = []
    for layer, moment in zip(layers, moments, strict=True):
        stored = qmodel.Buffers(qsub.Tensors(layer.w).Buffer()).DataAsNumpy()
        raw = fmodel.Buffers(fsub.Tensors(layer.fw).Buffer()).DataAsNumpy()
        count = int(np.prod(layer.shape))
        if not isinstance(stored, np.ndarray) or not isinstance(raw, np.ndarray) or stored.size != count \
                or raw.size != 4 * count:
            continue  # weights stored outside the flatbuffer
        floats = raw.view(np.float32).astype(np.float64).reshape(layer.shape)
        if layer.op == "DEPTHWISE_CONV_2D":
            kh, kw, channels = layer.shape[1:]
            w = floats.reshape(kh * kw, channels).T
            multiplier = max(layer.conv[5] if layer.conv else 1, 1)
            c = moment[np.arange(channels) // multiplier]
        else:
            w = floats.reshape(layer.shape[0], -1)
            c = moment
        if w.shape[0] * w.shape[1] ** 2 > MAX_COST:
            kept.append(layer.name)
            continue
        q = greedy_rounding(w, layer.w_scale, c)
        nearest = np.clip(np.round(w / layer.w_scale[:, None]), -127, 127)
        moved += int(np.count_nonzero(q != nearest))
        total += q.size
        done += 1
        out = q.T.reshape(layer.shape) if layer.op == "DEPTHWISE_CONV_2D" else q.reshape(layer.shape)
        stored.view(np.int8)[:] = out.astype(np.int8).ravel()  # a view into `data`: same size, same offsets
    return Rounded(bytes(data), done, moved, total, len(used), tuple(kept))
