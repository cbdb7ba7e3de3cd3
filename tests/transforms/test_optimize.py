"""--optimize on TF2 / Keras 3 graphs, inline_partitionedcall, fuse_bias_add, the concat rewrites, and
the numeric check after transforms (per step with check_each), on the real runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tests.builders import run_graph_def
from tfshrink import _tf
from tfshrink.cli import main
from tfshrink.errors import CheckFailed
from tfshrink.fileio import serialize_graph_def
from tfshrink.graph.ir import Graph
from tfshrink.transformer import transform
from tfshrink.transforms import OPTIMIZE_SPEC, apply_transforms


def _keras3_bn_model(path: Path) -> Path:
    """Conv / depthwise / dense with batch norm (random statistics), a residual add and a concat of
    two ReLU branches: the shapes Keras 3 exports as Rsqrt/Mul/Sub/AddV2 chains."""
    import keras

    inp = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.Add()([x, y])
    a = keras.layers.ReLU()(keras.layers.Conv2D(4, 1)(x))
    b = keras.layers.ReLU()(keras.layers.Conv2D(4, 3, padding="same")(x))
    x = keras.layers.Concatenate()([a, b])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5)(x)
    x = keras.layers.BatchNormalization()(x)
    out = keras.layers.Softmax(name="probs")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    model.save(path)
    return path


@pytest.fixture(scope="module")
def bn_pb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("optimize")
    pb = folder / "bn.pb"
    tfshrink.freeze(_keras3_bn_model(folder / "bn.keras"), pb, verify=False)
    return pb


def test_optimize_folds_keras3_batch_norm_and_keeps_numbers(bn_pb: Path, tmp_path: Path) -> None:
    out = tmp_path / "opt.pb"
    result = transform(bn_pb, out, optimize=True)
    ops = [n.op for n in tfshrink.load(out).graph_def.node]
    assert not {"Rsqrt", "Mul", "Sub", "FusedBatchNormV3", "NoOp"} & set(ops)
    assert ops.count("Identity") <= 1  # at most the output itself
    assert ops.count("BiasAdd") >= 3 and ops.count("Relu") == 1  # ReLUs hoisted past the concat
    assert not [op for op in ops if op.startswith("_")]  # public ops only
    assert result.nodes_after < result.nodes_before / 2
    assert result.checks[-1].passed and result.max_abs_error < 1e-5
    check = tfshrink.verify(bn_pb, out, samples=3, atol=1e-5, rtol=1e-5)
    assert check.passed


def test_optimized_graph_converts_with_tflite(bn_pb: Path, tmp_path: Path) -> None:
    out = tmp_path / "opt.pb"
    transform(bn_pb, out, optimize=True)
    tf = _tf.tf()
    converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(str(out), ["image"], ["probs"],
                                                                   {"image": [1, 12, 12, 3]})
    assert len(converter.convert()) > 1000


def test_optimize_is_deterministic(bn_pb: Path, tmp_path: Path) -> None:
    transform(bn_pb, tmp_path / "a.pb", optimize=True)
    transform(bn_pb, tmp_path / "b.pb", optimize=True)
    assert (tmp_path / "a.pb").read_bytes() == (tmp_path / "b.pb").read_bytes()


def _nested_call_graph():
    tf = _tf.tf()

    @tf.function
    def inner(x):
        return tf.nn.relu(x) * 2.0

    @tf.function
    def outer(x):
        return inner(x) + 1.0, inner(-x)

    concrete = outer.get_concrete_function(tf.TensorSpec([None, 4], tf.float32, name="x"))
    graph_def = concrete.graph.as_graph_def()
    outs = [t.name.split(":")[0] for t in concrete.outputs]
    return graph_def, outs


def test_inline_partitionedcall_removes_every_call_and_keeps_numbers() -> None:
    graph_def, outs = _nested_call_graph()
    assert any(n.op in ("PartitionedCall", "StatefulPartitionedCall") for n in graph_def.node)
    result, applied, _ = apply_transforms(graph_def, "inline_partitionedcall", ["x"], outs)
    assert applied == [("inline_partitionedcall", True)]
    assert not [n for n in result.node if n.op.endswith("PartitionedCall")]
    assert not result.library.function  # nothing calls them any more
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    for out in outs:
        np.testing.assert_array_equal(run_graph_def(result, {"x:0": x}, f"{out}:0"),
                                      run_graph_def(graph_def, {"x:0": x}, f"{out}:0"))


def test_inline_keeps_a_requested_call_name() -> None:
    graph_def, _ = _nested_call_graph()
    call = next(n.name for n in graph_def.node if n.op.endswith("PartitionedCall"))
    result, _, _ = apply_transforms(graph_def, "inline_partitionedcall", ["x"], [call])
    g = Graph(result)
    assert g.node(call).op == "IdentityN"
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(run_graph_def(result, {"x:0": x}, f"{call}:0"),
                                  run_graph_def(graph_def, {"x:0": x}, f"{call}:0"))


def _conv_graph(bias_op: str, value: np.ndarray | float, with_bias: bool = False):
    tf = _tf.tf()
    g = tf.Graph()
    rng = np.random.default_rng(5)
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 5, 5, 2], name="x")
        y = tf.nn.conv2d(x, tf.constant(rng.normal(size=(3, 3, 2, 4)).astype(np.float32)), 1, "SAME")
        if with_bias:
            y = tf.nn.bias_add(y, tf.constant(rng.normal(size=4).astype(np.float32)))
        c = tf.constant(np.asarray(value, np.float32))
        y = {"add": lambda: y + c, "radd": lambda: c + y, "sub": lambda: y - c}[bias_op]()
        tf.nn.relu(y, name="out")
    return g.as_graph_def()


@pytest.mark.parametrize("op, value, bias, expect", [
    ("add", np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4), False, "BiasAdd"),
    ("radd", np.arange(4, dtype=np.float32), False, "BiasAdd"),
    ("sub", 0.5, False, "BiasAdd"),
    ("add", np.arange(4, dtype=np.float32), True, "merged"),
    ("add", np.zeros(4, np.float32), False, "bypassed"),
])
def test_fuse_bias_add(op: str, value: object, bias: bool, expect: str) -> None:
    original = _conv_graph(op, value, bias)
    result, applied, _ = apply_transforms(original, "fuse_bias_add strip_unused_nodes", ["x"], ["out"])
    ops = [n.op for n in result.node]
    assert applied[0] == ("fuse_bias_add", True)
    assert not {"Add", "AddV2", "Sub"} & set(ops)
    assert ops.count("BiasAdd") == (0 if expect == "bypassed" else 1)
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 2)).astype(np.float32)
    np.testing.assert_allclose(run_graph_def(result, {"x:0": x}), run_graph_def(original, {"x:0": x}),
                               rtol=1e-6, atol=1e-6)


def test_fuse_bias_add_leaves_spatial_constants_alone() -> None:
    original = _conv_graph("add", np.ones((1, 5, 5, 4), np.float32))  # varies over space: not a bias
    _, applied, _ = apply_transforms(original, "fuse_bias_add", ["x"], ["out"])
    assert applied == [("fuse_bias_add", False)]


def _concat_graph(share: bool = False):
    tf = _tf.tf()
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        parts = [tf.nn.relu(x * float(i + 1)) for i in range(3)]
        inner = tf.concat(parts[1:], axis=1)
        outer = tf.concat([parts[0], inner], axis=1)
        tf.identity(outer, name="out")
        if share:
            tf.identity(parts[0], name="side")
    return g.as_graph_def()


def test_merge_concats_and_hoist_activations() -> None:
    original = _concat_graph()
    result, applied, _ = apply_transforms(original, "merge_concats hoist_activations", ["x"], ["out"])
    ops = [n.op for n in result.node]
    assert applied == [("merge_concats", True), ("hoist_activations", True)]
    assert ops.count("ConcatV2") == 1 and ops.count("Relu") == 1
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_graph_def(result, {"x:0": x}), run_graph_def(original, {"x:0": x}))


def test_hoist_refuses_an_activation_read_elsewhere() -> None:
    tf = _tf.tf()
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        first, second = tf.nn.relu(x), tf.nn.relu(-x)
        tf.identity(tf.concat([first, second], axis=1), name="out")
        tf.identity(first, name="side")
    _, applied, _ = apply_transforms(g.as_graph_def(), "hoist_activations", ["x"], ["out", "side"])
    assert applied == [("hoist_activations", False)]


def test_check_each_reports_every_step_and_quantize_is_reported_not_failed(bn_pb: Path, tmp_path: Path) -> None:
    result = transform(bn_pb, tmp_path / "q.pb", "fold_constants quantize_weights(minimum_size=16)",
                       check_each=True)
    assert [c.after for c in result.checks] == ["fold_constants", "quantize_weights", "pipeline"]
    assert result.checks[0].exact and result.checks[0].max_abs_error < 1e-5
    assert not result.checks[1].exact and result.checks[-1].passed


def test_a_transform_that_breaks_numbers_fails_the_check_and_writes_nothing(bn_pb: Path, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bad.pb"
    with pytest.raises(CheckFailed, match="differs"):  # a valid graph that computes something else
        transform(bn_pb, out, "rename_op(old_op_name=Relu, new_op_name=Elu)")
    assert not out.exists()
    with pytest.raises(SystemExit) as exc:
        main(["transform", str(bn_pb), "-o", str(out), "--transforms", "rename_op(old_op_name=Relu, new_op_name=Elu)"])
    assert exc.value.code == 1 and "--check-each" in capsys.readouterr().err
    assert not out.exists()


def test_cli_optimize_prints_the_check(bn_pb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["transform", str(bn_pb), "-o", str(tmp_path / "o.pb"), "--optimize"])
    assert exc.value.code == 0
    assert "check whole pipeline: max abs error" in capsys.readouterr().out


def test_a_graph_that_no_longer_runs_exits_2(bn_pb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exc:
        main(["transform", str(bn_pb), "-o", str(tmp_path / "x.pb"),
              "--transforms", "rename_op(old_op_name=Relu6, new_op_name=MatMul)"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unbalanced_quote_exits_2(bn_pb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["transform", str(bn_pb), "-o", str(tmp_path / "x.pb"), "--transforms", 'remove_nodes(op="Identity)'])
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "x.pb").exists()


def test_optimize_spec_only_names_registered_transforms() -> None:
    from tfshrink.transforms import REGISTRY, parse_spec

    assert all(call.name in REGISTRY for call in parse_spec(OPTIMIZE_SPEC))
    assert serialize_graph_def  # the module's writer is what transform() uses


def test_python_api_takes_a_graph_def_in_memory(bn_pb: Path) -> None:
    graph_def = tfshrink.load(bn_pb).graph_def
    result = tfshrink.transform(graph_def, transforms="remove_nodes(op=Identity) strip_unused_nodes",
                                inputs="image", outputs="probs")
    assert result.output == "" and result.graph_def is not None
    assert result.nodes_after < result.nodes_before and result.checks[-1].passed
