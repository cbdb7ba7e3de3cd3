"""flatten_atrous_conv, fuse_pad_and_conv, fuse_resize_and_conv, fuse_resize_pad_and_conv and
sparsify_gather on small real graphs, compared with the unfused graph on the TF runtime."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests.builders import run_graph_def
from tfshrink import _tf
from tfshrink.errors import UserError
from tfshrink.graph.ir import Graph
from tfshrink.transforms import apply_transforms

RNG = np.random.default_rng(11)


def _build(shape: list[int | None], body: Callable, dtype: str = "float32"):
    """x (placeholder of `shape`) -> body(tf, x) -> identity `out`; returns the GraphDef."""
    tf = _tf.tf()
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.as_dtype(dtype), shape, name="x")
        tf.identity(body(tf, x), name="out")
    return g.as_graph_def()


def _ops(graph_def) -> list[str]:
    return [n.op for n in graph_def.node]


def _weights(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


def _same_numbers(result, original, x: np.ndarray, atol: float) -> float:
    got, want = run_graph_def(result, {"x:0": x}), run_graph_def(original, {"x:0": x})
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    return float(np.abs(got - want).max())


# ---- flatten_atrous_conv ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["conv", "depthwise"])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("rate", [2, 3])
def test_atrous_conv_becomes_one_dilated_conv(kind: str, padding: str, rate: int) -> None:
    w = _weights(3, 3, 3, 4) if kind == "conv" else _weights(3, 3, 3, 2)

    def body(tf, x):
        if kind == "conv":  # tf.nn.conv2d(dilations=...) writes a dilated Conv2D directly; this doesn't
            return tf.nn.atrous_conv2d(x, tf.constant(w), rate, padding)
        return tf.compat.v1.nn.depthwise_conv2d(x, tf.constant(w), [1, 1, 1, 1], padding, rate=[rate, rate])

    original = _build([None, 11, 13, 3], body)
    assert "SpaceToBatchND" in _ops(original)
    result, applied, _ = apply_transforms(original, "flatten_atrous_conv strip_unused_nodes", ["x"], ["out"])
    assert applied[0] == ("flatten_atrous_conv", True)
    ops = _ops(result)
    assert "SpaceToBatchND" not in ops and "BatchToSpaceND" not in ops
    conv = next(n for n in result.node if n.op in ("Conv2D", "DepthwiseConv2dNative"))
    assert conv.attr["padding"].s.decode() == padding
    if kind == "conv":
        assert list(conv.attr["dilations"].list.i) == [1, rate, rate, 1]
    # Measured: bitwise equal (0.0) for both, so the exact-rewrite tolerance is the tight one.
    _same_numbers(result, original, _weights(2, 11, 13, 3), atol=1e-5)


def test_atrous_with_uneven_padding_becomes_explicit() -> None:
    """Hand-built pads/crops that are neither SAME nor VALID: the dilated conv gets EXPLICIT padding."""
    w = _weights(3, 3, 3, 4)

    def body(tf, x):
        s2b = tf.space_to_batch_nd(x, [2, 2], [[3, 1], [0, 3]])
        conv = tf.nn.conv2d(s2b, tf.constant(w), 1, "VALID")
        return tf.compat.v1.batch_to_space_nd(conv, [2, 2], [[1, 0], [0, 1]])

    original = _build([None, 10, 11, 3], body)
    result, applied, _ = apply_transforms(original, "flatten_atrous_conv", ["x"], ["out"])
    assert applied == [("flatten_atrous_conv", True)]
    conv = next(n for n in result.node if n.op == "Conv2D")
    assert conv.attr["padding"].s == b"EXPLICIT"
    assert list(conv.attr["explicit_paddings"].list.i) == [0, 0, 2, 1, 0, 2, 0, 0]
    _same_numbers(result, original, _weights(2, 10, 11, 3), atol=1e-5)  # measured 4.8e-7


def test_atrous_refuses_shared_intermediate_output_and_dynamic_padding() -> None:
    w = _weights(3, 3, 3, 4)

    def shared(tf, x):
        y = tf.nn.atrous_conv2d(x, tf.constant(w), 2, "SAME")
        s2b = next(op for op in y.graph.get_operations() if op.type == "SpaceToBatchND")
        return y + tf.reduce_mean(s2b.outputs[0])

    original = _build([1, 11, 13, 3], shared)
    _, applied, _ = apply_transforms(original, "flatten_atrous_conv", ["x"], ["out"])
    assert applied == [("flatten_atrous_conv", False)]

    plain = _build([None, 11, 13, 3], lambda tf, x: tf.nn.atrous_conv2d(x, tf.constant(w), 2, "SAME"))
    conv = next(n.name for n in plain.node if n.op == "Conv2D")
    _, applied, _ = apply_transforms(plain, "flatten_atrous_conv", ["x"], ["out", conv])
    assert applied == [("flatten_atrous_conv", False)]

    # Unknown spatial size: the paddings are computed at run time, not constants.
    dynamic = _build([None, None, None, 3], lambda tf, x: tf.nn.atrous_conv2d(x, tf.constant(w), 2, "SAME"))
    _, applied, _ = apply_transforms(dynamic, "flatten_atrous_conv", ["x"], ["out"])
    assert applied == [("flatten_atrous_conv", False)]


# ---- pad / resize fusions ----------------------------------------------------------------------------
PADS = [[0, 0], [1, 2], [2, 1], [0, 0]]


@pytest.mark.parametrize("mode", ["REFLECT", "SYMMETRIC"])
@pytest.mark.parametrize("strides, padding", [(1, "VALID"), (2, "SAME")])
def test_mirror_pad_and_conv_fuse(mode: str, strides: int, padding: str) -> None:
    w = _weights(3, 3, 3, 4)
    original = _build([1, 7, 8, 3],
                      lambda tf, x: tf.nn.conv2d(tf.pad(x, PADS, mode=mode), tf.constant(w), strides, padding))
    result, applied, _ = apply_transforms(original, "fuse_pad_and_conv", ["x"], ["out"])
    assert applied == [("fuse_pad_and_conv", True)]
    ops = _ops(result)
    assert "FusedPadConv2D" in ops and "MirrorPad" not in ops and "Conv2D" not in ops
    fused = next(n for n in result.node if n.op == "FusedPadConv2D")
    assert fused.attr["mode"].s.decode() == mode
    _same_numbers(result, original, _weights(1, 7, 8, 3), atol=1e-5)  # measured 0.0


@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_and_conv_fuse(align_corners: bool) -> None:
    w = _weights(3, 3, 3, 4)

    def body(tf, x):
        up = tf.compat.v1.image.resize_bilinear(x, [9, 11], align_corners=align_corners)
        return tf.nn.conv2d(up, tf.constant(w), 1, "SAME")

    original = _build([1, 5, 6, 3], body)
    result, applied, _ = apply_transforms(original, "fuse_resize_and_conv", ["x"], ["out"])
    assert applied == [("fuse_resize_and_conv", True)]
    assert "FusedResizeAndPadConv2D" in _ops(result) and "ResizeBilinear" not in _ops(result)
    _same_numbers(result, original, _weights(1, 5, 6, 3), atol=1e-5)  # measured 0.0


def test_resize_pad_and_conv_fuse() -> None:
    w = _weights(3, 3, 3, 4)

    def body(tf, x):
        up = tf.compat.v1.image.resize_bilinear(x, [9, 11])
        padded = tf.pad(up, tf.constant(PADS, tf.int64), mode="SYMMETRIC")  # int64 paddings: rewritten to int32
        return tf.nn.conv2d(padded, tf.constant(w), 1, "VALID")

    original = _build([1, 5, 6, 3], body)
    result, applied, _ = apply_transforms(original, "fuse_resize_pad_and_conv", ["x"], ["out"])
    assert applied == [("fuse_resize_pad_and_conv", True)]
    ops = _ops(result)
    assert "FusedResizeAndPadConv2D" in ops and not {"ResizeBilinear", "MirrorPad", "Conv2D"} & set(ops)
    _same_numbers(result, original, _weights(1, 5, 6, 3), atol=1e-5)  # measured 0.0


def test_tf_fused_conv_kernels_are_wrong_after_the_first_image() -> None:
    """Why the pad/resize fusions need a batch-1 input: on TF 2.21 CPU both fused kernels match the
    unfused ops for image 0 and not for image 1. If this starts failing, TF fixed the kernels and
    the batch guard in fusion.py can go."""
    tf = _tf.tf()
    x, w = _weights(2, 5, 6, 3), _weights(3, 3, 3, 4)
    fused = tf.raw_ops.FusedPadConv2D(input=x, paddings=PADS, filter=w, mode="REFLECT", strides=[1, 1, 1, 1],
                                      padding="VALID").numpy()
    plain = tf.nn.conv2d(tf.pad(x, PADS, mode="REFLECT"), w, 1, "VALID").numpy()
    assert np.abs(fused[0] - plain[0]).max() <= 1e-5 and np.abs(fused[1] - plain[1]).max() > 1.0


def test_pad_and_resize_fusions_need_a_static_batch_of_one() -> None:
    w = _weights(3, 3, 3, 4)
    for spec, body in [
        ("fuse_pad_and_conv", lambda tf, x: tf.nn.conv2d(tf.pad(x, PADS, mode="REFLECT"), tf.constant(w), 1, "VALID")),
        ("fuse_resize_and_conv", lambda tf, x: tf.nn.conv2d(
            tf.compat.v1.image.resize_bilinear(x, [9, 11]), tf.constant(w), 1, "SAME")),
    ]:
        for batch in (None, 2):
            original = _build([batch, 5, 6, 3], body)
            result, applied, warnings = apply_transforms(original, spec, ["x"], ["out"])
            assert applied == [(spec, False)] and "Conv2D" in _ops(result)
            assert any("batch size is not known to be 1" in m for m in warnings)


def test_pad_and_resize_fusions_refuse() -> None:
    w = _weights(3, 3, 3, 4)

    def shared_pad(tf, x):
        padded = tf.pad(x, PADS, mode="REFLECT")
        return tf.nn.conv2d(padded, tf.constant(w), 1, "VALID") + tf.reduce_mean(padded)

    cases = [
        ("fuse_pad_and_conv", shared_pad),
        # batch padding: the fused kernel pads spatial dimensions only
        ("fuse_pad_and_conv", lambda tf, x: tf.nn.conv2d(
            tf.pad(x, [[1, 1], [1, 1], [1, 1], [0, 0]], mode="REFLECT"), tf.constant(w), 1, "VALID")),
        # a zero Pad is not a MirrorPad
        ("fuse_pad_and_conv", lambda tf, x: tf.nn.conv2d(tf.pad(x, PADS), tf.constant(w), 1, "VALID")),
        # tf.image.resize uses half-pixel centers, which FusedResizeAndPadConv2D cannot do
        ("fuse_resize_and_conv", lambda tf, x: tf.nn.conv2d(tf.image.resize(x, [9, 11]), tf.constant(w), 1, "SAME")),
        # a dilated conv has no fused form
        ("fuse_resize_and_conv", lambda tf, x: tf.nn.conv2d(
            tf.compat.v1.image.resize_bilinear(x, [9, 11]), tf.constant(w), 1, "SAME", dilations=2)),
    ]
    for spec, body in cases:
        _, applied, _ = apply_transforms(_build([1, 5, 6, 3], body), spec, ["x"], ["out"])
        assert applied == [(spec, False)], spec

    original = _build([1, 5, 6, 3], lambda tf, x: tf.nn.conv2d(
        tf.pad(x, PADS, mode="REFLECT", name="padded"), tf.constant(w), 1, "VALID"))
    _, applied, _ = apply_transforms(original, "fuse_pad_and_conv", ["x"], ["out", "padded"])
    assert applied == [("fuse_pad_and_conv", False)]  # the pad is a requested output


# ---- sparsify_gather -------------------------------------------------------------------------------------
def _run_with_init(graph_def, feeds: dict, fetch: str, init: str | None = "group_deps") -> np.ndarray:
    tf = _tf.tf()
    g = tf.Graph()
    with g.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            if init:
                sess.run(init)
            return sess.run(fetch, feeds)


def _sparse_table(n: int) -> np.ndarray:
    table = np.zeros((n, 1), np.float32)
    hot = RNG.choice(n, n // 4, replace=False)
    table[hot, 0] = RNG.normal(size=hot.size).astype(np.float32)
    table[hot[0], 0] = 3e-6  # below TF's 1e-5 threshold: read back as 0
    return table


@pytest.mark.parametrize("op, ids_dtype, identity", [
    ("GatherV2", "int32", True), ("GatherV2", "int64", False), ("Gather", "int64", True)])
def test_gather_over_constant_becomes_hash_table_lookup(op: str, ids_dtype: str, identity: bool) -> None:
    table = _sparse_table(40)

    def body(tf, ids):
        params = tf.constant(table, name="weights")
        if identity:
            params = tf.identity(params, name="weights/read")
        if op == "Gather":
            return tf.raw_ops.Gather(params=params, indices=ids)
        return tf.gather(params, ids)

    original = _build([None, 3], body, ids_dtype)
    assert op in _ops(original)
    result, applied, warnings = apply_transforms(original, "sparsify_gather", ["x"], ["out"])
    assert applied == [("sparsify_gather", True)]
    ops = _ops(result)
    assert op not in ops and {"HashTable", "InitializeTable", "LookupTableFind", "ExpandDims"} <= set(ops)
    assert "weights" not in Graph(result)  # the dense table is gone
    init = Graph(result).node("group_deps")
    assert init.op == "NoOp" and any(r.startswith("^weights/InitializeTable") for r in init.input)
    assert any("group_deps" in w for w in warnings)
    ids = RNG.integers(0, 40, size=(5, 3)).astype(ids_dtype)
    got = _run_with_init(result, {"x:0": ids}, "out:0")
    want = run_graph_def(original, {"x:0": ids})
    assert got.shape == want.shape == (5, 3, 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)  # only the 3e-6 entry differs (read as 0)


def test_sparsify_gather_skips_unsupported_and_reuses_an_existing_init_node() -> None:
    tf = _tf.tf()
    g = tf.Graph()
    with g.as_default():
        ids = tf.compat.v1.placeholder(tf.int64, [None], name="x")
        wide = tf.constant(_weights(10, 4), name="wide")  # [N, 4]: not sparsifiable
        axis1 = tf.gather(tf.constant(_sparse_table(10).T.copy(), name="row"), ids, axis=1)
        a = tf.gather(tf.constant(_sparse_table(10), name="tall"), ids)
        tf.identity(tf.reduce_sum(tf.gather(wide, ids)) + tf.reduce_sum(axis1) + tf.reduce_sum(a), name="out")
        tf.no_op(name="init_all")
    original = g.as_graph_def()
    result, applied, warnings = apply_transforms(original, "sparsify_gather(group_init_node=init_all)",
                                                 ["x"], ["out"])
    assert applied == [("sparsify_gather", True)]
    assert "group_deps" not in Graph(result) and Graph(result).node("init_all").input
    assert [n.op for n in result.node].count("LookupTableFind") == 1
    assert sum("left alone" in w for w in warnings) == 2
    feed = {"x:0": np.array([0, 3, 9], np.int64)}
    np.testing.assert_allclose(_run_with_init(result, feed, "out:0", "init_all"), run_graph_def(original, feed),
                               rtol=1e-6, atol=1e-5)
    with pytest.raises(UserError, match="input_checkpoint"):
        apply_transforms(original, "sparsify_gather(input_checkpoint=/tmp/x)", ["x"], ["out"])


def test_sparsify_gather_through_transform_is_checked(tmp_path) -> None:
    """The check after transform() runs the lookup table's initializer, as serving would."""
    from tfshrink.transformer import transform

    tf = _tf.tf()
    g = tf.Graph()
    with g.as_default():
        ids = tf.compat.v1.placeholder(tf.int64, [3], name="x")
        tf.identity(tf.gather(tf.constant(_sparse_table(10), name="tall"), ids), name="out")
    src = tmp_path / "g.pb"
    src.write_bytes(g.as_graph_def().SerializeToString())
    result = transform(src, tmp_path / "s.pb", "sparsify_gather", inputs="x", outputs="out")
    assert result.checks[-1].passed and result.max_abs_error < 1e-5
