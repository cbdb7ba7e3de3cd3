"""Conv fusions: flatten_atrous_conv, fuse_pad_and_conv, fuse_resize_and_conv,
fuse_resize_pad_and_conv, and sparsify_gather.

Every rewrite keeps the name of the last node of the matched chain (the node its consumers
read), so the rest of the graph and the requested outputs are untouched. A match is skipped
when an intermediate node has another consumer (data or control), when it is a requested output,
or when a parameter the rewrite depends on is not a constant. Control inputs of removed nodes
move to the node that replaces them.

All five write ops that TensorFlow 2.21 still runs on CPU (FusedPadConv2D,
FusedResizeAndPadConv2D, HashTable/InitializeTable/LookupTableFind were checked in a
compat.v1 Session), so none is registered with runs_on_tf=False; but the two fused conv kernels
are wrong for batches larger than 1, so the pad/resize fusions only fire on batch-1 inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.graph.ir import Graph, parse_tensor
from tfshrink.graph.shapes import tensor_specs
from tfshrink.transforms.common import add_const, const_value, new_node, only_feeds, set_attr
from tfshrink.transforms.registry import Context, Param, register

DT_FLOAT = 1
DT_INT32 = 3
DT_INT64 = 9


def _nhwc(node: Any) -> bool:
    return node.attr["data_format"].s in (b"", b"NHWC")


def _ones(node: Any, key: str) -> bool:
    return all(v == 1 for v in node.attr[key].list.i) if key in node.attr else True


def _copy_attrs(node: Any, keys: Iterable[str]) -> dict[str, Any]:
    """Detached copies of the node's attributes `keys` (those it has), safe across attr.clear()."""
    out = {}
    for key in keys:
        if key in node.attr:
            out[key] = type(node.attr[key])()
            out[key].CopyFrom(node.attr[key])
    return out


def _controls(graph: Graph, names: Iterable[str]) -> list[str]:
    return [f"^{c}" for n in names for c in graph.control_inputs(n)]


def _node_of(graph: Graph, ref: str) -> Any:
    return graph.node(parse_tensor(ref)[0])


# ---- flatten_atrous_conv ------------------------------------------------------------------------
def _same_pads(kernel: int) -> tuple[int, int]:
    """SAME padding (before, after) of a stride-1 window of `kernel` taps."""
    return (kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2


def _upsample(filt: np.ndarray, rate_h: int, rate_w: int) -> np.ndarray:
    h, w = filt.shape[:2]
    out = np.zeros(((h - 1) * rate_h + 1, (w - 1) * rate_w + 1, *filt.shape[2:]), filt.dtype)
    out[::rate_h, ::rate_w] = filt
    return out


def _atrous_match(graph: Graph, b2s: Any, ctx: Context) -> dict | None:
    if len(b2s.input) < 3:
        return None
    conv = _node_of(graph, b2s.input[0])
    if conv.op not in ("Conv2D", "DepthwiseConv2dNative") or not only_feeds(graph, conv.name, b2s.name, ctx):
        return None
    s2b = _node_of(graph, conv.input[0])
    if s2b.op != "SpaceToBatchND" or not only_feeds(graph, s2b.name, conv.name, ctx):
        return None
    if not (_nhwc(conv) and _ones(conv, "strides") and _ones(conv, "dilations")):
        return None
    if conv.attr["padding"].s not in (b"SAME", b"VALID") or conv.attr["T"].type != DT_FLOAT:
        return None
    block, block2 = const_value(graph, s2b.input[1]), const_value(graph, b2s.input[1])
    pads, crops = const_value(graph, s2b.input[2]), const_value(graph, b2s.input[2])
    filt = const_value(graph, conv.input[1])
    if any(v is None for v in (block, block2, pads, crops, filt)):
        return None
    if block.shape != (2,) or block2.shape != (2,) or not np.array_equal(block, block2) or (block < 1).any():
        return None
    if pads.shape != (2, 2) or crops.shape != (2, 2) or (pads < 0).any() or (crops < 0).any():
        return None
    if filt.ndim != 4:
        return None
    rates = [int(r) for r in block]
    eff = []
    for d in range(2):
        inner = _same_pads(filt.shape[d]) if conv.attr["padding"].s == b"SAME" else (0, 0)
        eff.append((int(pads[d, 0]) + inner[0] * rates[d] - int(crops[d, 0]),
                    int(pads[d, 1]) + inner[1] * rates[d] - int(crops[d, 1])))
    if any(p < 0 for pair in eff for p in pair):
        return None  # would crop the input itself: not a padding
    return {"conv": conv, "s2b": s2b, "rates": rates, "eff": eff, "filt": filt}


@register("flatten_atrous_conv", "SpaceToBatchND -> conv -> BatchToSpaceND becomes one dilated conv")
def flatten_atrous_conv(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: BatchToSpaceND(conv(SpaceToBatchND(x, block, pads), W), block, crops), where conv is
    Conv2D or DepthwiseConv2dNative (NHWC, stride 1, no dilation, SAME or VALID, float32) and
    block, pads, crops and W are constants (tf.nn.atrous_conv2d and depthwise_conv2d(rate=...)
    build this in graph mode when the spatial size is static; tf.nn.conv2d(dilations=...) emits a
    dilated Conv2D directly). The chain equals one dilated conv over x padded by
    pads + inner SAME padding * rate - crops.
    Refuse: the SpaceToBatchND or the inner conv has another consumer or is a requested output, a
    parameter is not constant, the block shapes differ, or the crops exceed the padding.
    Write: under the BatchToSpaceND's name, a Conv2D with `dilations` = block (measured bitwise
    equal to the original on CPU, while an upsampled filter differs by ~2e-6), or for depthwise a
    DepthwiseConv2dNative with the filter upsampled by inserting zeros (TF's own method: TF 2.21's
    CPU depthwise kernel refuses dilations; measured bitwise equal). Padding is SAME or VALID when
    the effective padding is that, else EXPLICIT (TF's C++ always wrote SAME, wrong for VALID)."""
    tf = _tf.tf()
    changed = False
    for b2s in graph:
        if b2s.op != "BatchToSpaceND" or b2s.name not in graph:
            continue
        found = _atrous_match(graph, b2s, ctx)
        if found is None:
            continue
        conv, s2b, rates, eff, filt = (found[k] for k in ("conv", "s2b", "rates", "eff", "filt"))
        kernel = [(filt.shape[d] - 1) * rates[d] + 1 for d in range(2)]
        if all(tuple(eff[d]) == _same_pads(kernel[d]) for d in range(2)):
            padding, explicit = "SAME", None
        elif all(p == 0 for pair in eff for p in pair):
            padding, explicit = "VALID", None
        else:
            padding, explicit = "EXPLICIT", [0, 0, *eff[0], *eff[1], 0, 0]
        if conv.op == "Conv2D":
            filter_ref, dilations = conv.input[1], [1, rates[0], rates[1], 1]
        else:
            filter_ref = add_const(graph, f"{b2s.name}/upsampled_filter", _upsample(filt, *rates))
            dilations = [1, 1, 1, 1]
        x_ref = s2b.input[0]
        controls = _controls(graph, [b2s.name, conv.name, s2b.name])
        old_inputs = [parse_tensor(r)[0] for r in list(b2s.input) + list(conv.input) + list(s2b.input)]
        keep = _copy_attrs(conv, ("T", "data_format", "use_cudnn_on_gpu"))
        b2s.op, b2s.device = conv.op, conv.device
        b2s.attr.clear()
        for key, value in keep.items():
            b2s.attr[key].CopyFrom(value)
        set_attr(b2s, "strides", [1, 1, 1, 1], tf)
        set_attr(b2s, "dilations", dilations, tf)
        set_attr(b2s, "padding", padding, tf)
        if explicit is not None:
            set_attr(b2s, "explicit_paddings", explicit, tf)
        graph.set_inputs(b2s.name, [x_ref, filter_ref, *controls])
        graph.remove([conv.name, s2b.name])
        graph.remove_unused(old_inputs, keep=ctx.boundary())
        changed = True
    return changed


# ---- fuse_pad_and_conv / fuse_resize_and_conv / fuse_resize_pad_and_conv ----------------------------
# TF 2.21's CPU kernels for FusedPadConv2D and FusedResizeAndPadConv2D are right for the first image
# of a batch and wrong for every later one (measured: errors of the size of the outputs themselves
# from batch index 1 on, 0.0 at index 0), so these fusions only fire where the input's batch size
# is statically 1.
BATCH_WARNING = "its input's batch size is not known to be 1 (TF 2.21's {op} computes wrong values for batch > 1)"


def _fusable_conv(conv: Any) -> bool:
    """A Conv2D the fused kernels can stand in for: float32, NHWC, SAME/VALID, no dilation."""
    return (conv.op == "Conv2D" and conv.attr["T"].type == DT_FLOAT and _nhwc(conv) and _ones(conv, "dilations")
            and conv.attr["padding"].s in (b"SAME", b"VALID"))


def _mirror_pad(graph: Graph, ref: str, consumer: str, ctx: Context) -> Any | None:
    """The MirrorPad behind `ref` when it may be fused: float32, only `consumer` uses it, constant
    paddings that leave batch and channels alone (the fused kernels pad spatial dimensions only)."""
    pad = _node_of(graph, ref)
    if pad.op != "MirrorPad" or pad.attr["T"].type != DT_FLOAT or not only_feeds(graph, pad.name, consumer, ctx):
        return None
    paddings = const_value(graph, pad.input[1])
    if paddings is None or paddings.shape != (4, 2) or paddings[[0, 3]].any():
        return None
    return pad


def _int32_paddings(graph: Graph, pad: Any) -> str:
    """The pad's paddings as the int32 tensor the fused ops take (a new Const for int64 ones)."""
    if pad.attr["Tpaddings"].type in (0, DT_INT32):
        return pad.input[1]
    value = const_value(graph, pad.input[1])
    return add_const(graph, f"{pad.name}/paddings_int32", value.astype(np.int32))


def _resize(graph: Graph, ref: str, consumer: str, ctx: Context) -> Any | None:
    """The ResizeBilinear behind `ref` when it may be fused: float32 images, no half-pixel centers
    (FusedResizeAndPadConv2D has no such option; tf.image.resize sets it), used only by `consumer`."""
    node = _node_of(graph, ref)
    if node.op != "ResizeBilinear" or node.attr["T"].type != DT_FLOAT or node.attr["half_pixel_centers"].b:
        return None
    return node if only_feeds(graph, node.name, consumer, ctx) else None


def _batch_one(graph: Graph, matches: list[tuple[Any, ...]], op: str, name: str, ctx: Context
               ) -> list[tuple[Any, ...]]:
    """The matches (conv, first absorbed node, ...) whose fused input has static batch size 1."""
    if not matches:
        return []
    specs = tensor_specs(graph, [m[1].input[0] for m in matches])
    kept = []
    for match in matches:
        shape = specs[match[1].input[0]][1]
        if shape and shape[0] == 1:
            kept.append(match)
        else:
            ctx.warnings.append(f"{name}: {match[0].name} left alone: {BATCH_WARNING.format(op=op)}")
    return kept


def _fuse(graph: Graph, conv: Any, op: str, inputs: list[str], absorbed: list[str], ctx: Context,
          **attrs: Any) -> None:
    """Turn `conv` (in place, keeping its name) into the fused `op` and drop the absorbed nodes."""
    tf = _tf.tf()
    controls = _controls(graph, [conv.name, *absorbed])
    keep = _copy_attrs(conv, ("T", "strides", "padding"))
    conv.op = op
    conv.attr.clear()
    for key, value in keep.items():
        conv.attr[key].CopyFrom(value)
    for key, value in attrs.items():
        set_attr(conv, key, value, tf)
    graph.set_inputs(conv.name, [*inputs, *controls])
    old = [parse_tensor(r)[0] for n in absorbed for r in graph.node(n).input]
    graph.remove(absorbed)
    graph.remove_unused(old, keep=ctx.boundary())


_REFUSE = ("Refuse: an absorbed node has another consumer or is a requested output, the "
           "paddings are not constant or pad batch/channels, a dtype is not float32, the "
           "Conv2D is NCHW, dilated or EXPLICIT-padded, the resize uses half-pixel centers, or the "
           "input's batch size is not statically 1 (TF 2.21's fused CPU kernels compute wrong values "
           "for every image after the first; a warning says so).")


def _conv_inputs(graph: Graph, ctx: Context, find: Any) -> list[tuple[Any, Any]]:
    """(conv, producer) for every fusable Conv2D whose input `find(graph, ref, conv, ctx)` matches."""
    matches = []
    for conv in graph:
        if _fusable_conv(conv):
            found = find(graph, conv.input[0], conv.name, ctx)
            if found is not None:
                matches.append((conv, found))
    return matches


@register("fuse_pad_and_conv", "MirrorPad -> Conv2D becomes FusedPadConv2D (batch-1 inputs)")
def fuse_pad_and_conv(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: Conv2D(MirrorPad(x, paddings), W).
    Write: FusedPadConv2D(x, paddings, W) with the pad's mode and the conv's strides and padding,
    under the Conv2D's name (measured equal to the unfused pair on CPU for batch 1)."""
    matches = _conv_inputs(graph, ctx, _mirror_pad)
    kept = _batch_one(graph, matches, "FusedPadConv2D", "fuse_pad_and_conv", ctx)
    for conv, pad in kept:
        _fuse(graph, conv, "FusedPadConv2D", [pad.input[0], _int32_paddings(graph, pad), conv.input[1]],
              [pad.name], ctx, mode=pad.attr["mode"].s)
    return bool(kept)


@register("fuse_resize_and_conv", "ResizeBilinear -> Conv2D becomes FusedResizeAndPadConv2D (batch-1 inputs)")
def fuse_resize_and_conv(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: Conv2D(ResizeBilinear(x, size), W).
    Write: FusedResizeAndPadConv2D(x, size, zero paddings, W) with mode REFLECT (a no-op with zero
    paddings) and resize_align_corners from the resize, under the Conv2D's name (measured equal
    to the unfused pair on CPU for batch 1)."""
    matches = _conv_inputs(graph, ctx, _resize)
    kept = _batch_one(graph, matches, "FusedResizeAndPadConv2D", "fuse_resize_and_conv", ctx)
    for conv, resize in kept:
        zeros = add_const(graph, f"{conv.name}_dummy_paddings", np.zeros((4, 2), np.int32))
        _fuse(graph, conv, "FusedResizeAndPadConv2D", [resize.input[0], resize.input[1], zeros, conv.input[1]],
              [resize.name], ctx, mode="REFLECT", resize_align_corners=resize.attr["align_corners"].b)
    return bool(kept)


@register("fuse_resize_pad_and_conv",
          "ResizeBilinear -> MirrorPad -> Conv2D becomes FusedResizeAndPadConv2D (batch-1 inputs)")
def fuse_resize_pad_and_conv(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: Conv2D(MirrorPad(ResizeBilinear(x, size), paddings), W).
    Write: FusedResizeAndPadConv2D(x, size, paddings, W) with the pad's mode and the resize's
    align_corners, under the Conv2D's name (measured equal to the unfused chain on CPU for batch 1)."""
    matches = []
    for conv in graph:
        if _fusable_conv(conv):
            pad = _mirror_pad(graph, conv.input[0], conv.name, ctx)
            resize = _resize(graph, pad.input[0], pad.name, ctx) if pad is not None else None
            if resize is not None:
                matches.append((conv, resize, pad))
    kept = _batch_one(graph, matches, "FusedResizeAndPadConv2D", "fuse_resize_pad_and_conv", ctx)
    for conv, resize, pad in kept:
        _fuse(graph, conv, "FusedResizeAndPadConv2D",
              [resize.input[0], resize.input[1], _int32_paddings(graph, pad), conv.input[1]],
              [pad.name, resize.name], ctx, mode=pad.attr["mode"].s,
              resize_align_corners=resize.attr["align_corners"].b)
    return bool(kept)


for _fn in (fuse_pad_and_conv, fuse_resize_and_conv, fuse_resize_pad_and_conv):
    _fn.__doc__ = f"{_fn.__doc__}\n    {_REFUSE}"


# ---- sparsify_gather ------------------------------------------------------------------------------
SPARSE_THRESHOLD = 1e-5  # TF's: weights smaller than this in magnitude are dropped (read back as 0)


def _gather_params(graph: Graph, gather: Any) -> tuple[str, np.ndarray] | None:
    """(weights Const name, value) when the gather reads a Const directly or through one Identity."""
    node = _node_of(graph, gather.input[0])
    if node.op == "Identity":
        node = _node_of(graph, node.input[0])
    if node.op != "Const":
        return None
    return node.name, _tf.tf().make_ndarray(node.attr["value"].tensor)


def _skip_reason(graph: Graph, gather: Any) -> str | None:
    if gather.op == "GatherV2":
        axis = const_value(graph, gather.input[2]) if len(gather.input) > 2 else None
        if axis is None or axis.size != 1 or int(axis.reshape(-1)[0]) != 0 or gather.attr["batch_dims"].i != 0:
            return "it is not a constant axis-0 gather"
    found = _gather_params(graph, gather)
    if found is None:
        return None  # not a gather over a constant: not a candidate at all
    _, weights = found
    if weights.dtype != np.float32:
        return f"its params are {weights.dtype}, not float32"
    if weights.ndim != 2 or weights.shape[1] != 1:
        return f"its params have shape {list(weights.shape)}, not [N, 1]"
    return None


@register("sparsify_gather", "Gather over a constant [N,1] table becomes a HashTable lookup of its non-zeros",
          {"group_init_node": Param(default="group_deps", help="NoOp that runs the table initializers"),
           "input_checkpoint": Param(help="not supported here: freeze the graph first")})
def sparsify_gather(graph: Graph, params: dict, ctx: Context) -> bool:
    """Match: Gather(params, ids) or GatherV2(params, ids, axis=0) where params is a float32 Const
    of shape [N, 1] (read directly or through an Identity).
    Refuse (skip, with a warning): another axis, a non-constant axis, batch_dims, another dtype or
    shape. Variables are not read from checkpoints (input_checkpoint): freeze the graph first.
    Write: per weights Const, a HashTable filled by an InitializeTable from the indices and values
    of its entries with |w| >= 1e-5 (so smaller weights read back as 0, as in TF); the gather
    becomes ExpandDims(LookupTableFind(table, int64 ids, 0.0), -1) under its own name (int32 ids
    get a Cast; TF's C++ fed them to an int64 table as they were). The InitializeTable ops become
    control inputs of the NoOp `group_init_node` (created if absent), which must run once before
    inference."""
    if params.get("input_checkpoint"):
        raise ValueError("input_checkpoint is not supported: freeze the graph (variables to constants) first")
    tf = _tf.tf()
    init_name = params.get("group_init_node") or "group_deps"
    init = graph.get(init_name)
    if init is not None and init.op != "NoOp":
        raise ValueError(f"group_init_node {init_name!r} is a {init.op} node, not a NoOp")
    tables: dict[str, str] = {}
    inits: list[str] = []
    absorbed: list[str] = []
    for gather in graph:
        if gather.op not in ("Gather", "GatherV2") or gather.name not in graph:
            continue
        found = _gather_params(graph, gather)
        if found is None:
            continue
        reason = _skip_reason(graph, gather)
        if reason is not None:
            ctx.warnings.append(f"sparsify_gather: {gather.name} left alone: {reason}")
            continue
        weights_name, weights = found
        if weights_name not in tables:
            flat = weights.reshape(-1)
            keys = np.flatnonzero(np.abs(flat) >= SPARSE_THRESHOLD).astype(np.int64)
            values = flat[keys].astype(np.float32)
            if keys.size == 0:  # the table initializer rejects empty tensors; TF stores one (0 -> 0)
                keys, values = np.zeros(1, np.int64), np.zeros(1, np.float32)
            k = add_const(graph, f"{weights_name}/indices", keys)
            v = add_const(graph, f"{weights_name}/values", values)
            table = new_node(graph, f"{weights_name}/HashTable", "HashTable", key_dtype=tf.int64,
                             value_dtype=tf.float32)
            inits.append(new_node(graph, f"{weights_name}/InitializeTable", "InitializeTable", [table, k, v],
                                  Tkey=tf.int64, Tval=tf.float32))
            tables[weights_name] = table
        ids = gather.input[1]
        ids_type = gather.attr["Tindices"].type
        if ids_type != DT_INT64:
            ids = new_node(graph, f"{gather.name}/ToInt64", "Cast", [ids], SrcT=tf.as_dtype(ids_type or DT_INT32),
                           DstT=tf.int64, Truncate=False)
        default = add_const(graph, f"{gather.name}/Const", np.float32(0))
        lookup = new_node(graph, f"{gather.name}/LookupTableFind", "LookupTableFind",
                          [tables[weights_name], ids, default], Tin=tf.int64, Tout=tf.float32)
        dim = add_const(graph, f"{gather.name}/ExpandDims/Const", np.int32(-1))
        absorbed.extend(parse_tensor(r)[0] for r in gather.input)
        controls = [r for r in gather.input if r.startswith("^")]
        gather.op = "ExpandDims"
        gather.attr.clear()
        set_attr(gather, "T", tf.float32, tf)
        set_attr(gather, "Tdim", tf.int32, tf)
        graph.set_inputs(gather.name, [lookup, dim, *controls])
    if not inits:
        return False
    if init is None:
        init_name = new_node(graph, init_name, "NoOp")
    graph.set_inputs(init_name, [*graph.node(init_name).input, *(f"^{n}" for n in inits)])
    graph.remove_unused(absorbed, keep=ctx.boundary())
    ctx.warnings.append(f"sparsify_gather: run {init_name!r} once before inference (it fills the lookup tables)")
    return True
