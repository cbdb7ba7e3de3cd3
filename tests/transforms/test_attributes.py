"""add_default_attributes, set_device, remove_attribute, rename_attribute, rename_op, rename_node,
remove_control_dependencies, obfuscate_names, backport_concatv2, insert_logging: structure, numbers,
refusals."""

from __future__ import annotations

import numpy as np
import pytest

from tests.builders import run_graph_def, v1_cond_graph
from tfshrink import _tf
from tfshrink.errors import UserError
from tfshrink.graph.ir import Graph
from tfshrink.transforms import apply_transforms
from tfshrink.transforms.renaming import _short_name

X = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)


def _graph_def(axis_dtype: str = "int32"):
    """x[?,3] -> mm = x @ w -> bias -> relu; scaled = relu * 2 (control input on mm);
    cat = concat([relu, scaled], 1); out = identity(cat); coloc = identity(relu) colocated with relu."""
    tf = _tf.tf()
    v1 = tf.compat.v1
    rng = np.random.default_rng(1)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        w = tf.constant(rng.normal(size=(3, 4)).astype(np.float32), name="w")
        b = tf.constant(rng.normal(size=(4,)).astype(np.float32), name="b")
        mm = tf.matmul(x, w, name="mm")
        relu = tf.nn.relu(tf.nn.bias_add(mm, b, name="bias"), name="relu")
        with tf.control_dependencies([mm.op]):
            scaled = tf.identity(relu * 2.0, name="scaled")
        axis = tf.constant(1, dtype=getattr(tf, axis_dtype), name="axis")
        out = tf.identity(tf.concat([relu, scaled], axis, name="cat"), name="out")
        with g.colocate_with(relu.op):
            tf.identity(relu, name="coloc")
        assert out.op.inputs[0].op.type == "ConcatV2"
    return g.as_graph_def()


def _apply(spec: str, graph_def=None, inputs=("x",), outputs=("out",)):
    return apply_transforms(graph_def or _graph_def(), spec, list(inputs), list(outputs))


def _same_numbers(result, original, fetch: str = "out:0", feeds: dict | None = None) -> None:
    feeds = feeds or {"x:0": X}
    np.testing.assert_array_equal(run_graph_def(result, feeds, fetch),
                                  run_graph_def(original, feeds, "out:0"))


def _node(graph_def, name: str):
    return Graph(graph_def).node(name)


# ---- add_default_attributes ------------------------------------------------------------------

def test_add_default_attributes_restores_stripped_defaults() -> None:
    original = _graph_def()
    stripped = type(original)()
    stripped.CopyFrom(original)
    g = Graph(stripped)
    del g.node("mm").attr["transpose_a"]
    del g.node("bias").attr["data_format"]
    result, applied, warnings = _apply("add_default_attributes", g.to_graph_def())
    assert applied == [("add_default_attributes", True)] and not warnings
    assert _node(result, "mm").attr["transpose_a"].b is False
    assert _node(result, "bias").attr["data_format"].s == b"NHWC"
    _same_numbers(result, original)
    # A graph with every default already written is left alone.
    again, applied, _ = _apply("add_default_attributes", result)
    assert applied == [("add_default_attributes", False)] and again == result


def test_add_default_attributes_warns_about_unregistered_ops() -> None:
    g = Graph(_graph_def())
    g.node("coloc").op = "MyCustomOp"
    _, _, warnings = _apply("add_default_attributes", g.to_graph_def())
    assert any("MyCustomOp" in w for w in warnings)


# ---- set_device ------------------------------------------------------------------------------

def test_set_device_all_or_only_unplaced() -> None:
    g = Graph(_graph_def())
    g.node("mm").device = "/job:worker/device:CPU:0"
    original = g.to_graph_def()
    result, applied, _ = _apply("set_device(device=/device:CPU:0)", original)
    assert applied == [("set_device", True)]
    assert {n.device for n in result.node} == {"/device:CPU:0"}
    _same_numbers(result, _graph_def())  # the original itself names a worker this session lacks
    kept, _, _ = _apply("set_device(device=/device:CPU:0, if_default=true)", original)
    assert _node(kept, "mm").device == "/job:worker/device:CPU:0"
    assert _node(kept, "relu").device == "/device:CPU:0"


def test_set_device_refuses_a_device_tf_cannot_parse() -> None:
    with pytest.raises(UserError, match="set_device failed: .*not a device"):
        _apply("set_device(device=garbage)")


# ---- remove_attribute / rename_attribute -----------------------------------------------------

def test_remove_attribute_by_op_and_everywhere() -> None:
    original = _graph_def()
    result, applied, _ = _apply("remove_attribute(attribute_name=transpose_a, op_name=MatMul)", original)
    assert applied == [("remove_attribute", True)]
    assert "transpose_a" not in _node(result, "mm").attr
    _same_numbers(result, original)
    result, _, _ = _apply("remove_attribute(attribute_name=_class)", original)
    assert not [n.name for n in result.node if "_class" in n.attr]
    _same_numbers(result, original)
    # op_name restricts the match: no Relu carries transpose_a.
    _, applied, _ = _apply("remove_attribute(attribute_name=transpose_a, op_name=Relu)", original)
    assert applied == [("remove_attribute", False)]


def test_remove_attribute_refuses_a_required_attribute() -> None:
    with pytest.raises(UserError, match="'relu' \\(Relu\\) would no longer load: lacks attribute 'T'"):
        _apply("remove_attribute(attribute_name=T, op_name=Relu)")
    with pytest.raises(UserError, match="remove_attribute needs attribute_name"):
        _apply("remove_attribute(op_name=Relu)")


def test_rename_attribute_repairs_a_misnamed_attribute() -> None:
    tf = _tf.tf()
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        w = tf.constant(np.random.default_rng(4).normal(size=(4, 3)).astype(np.float32), name="w")
        tf.identity(tf.matmul(x, w, transpose_b=True, name="mm"), name="out")
    original = g.as_graph_def()
    broken = Graph(type(original).FromString(original.SerializeToString()))
    mm = broken.node("mm")  # as a foreign writer might spell it: TF ignores adj_y and fails on the shapes
    mm.attr["adj_y"].CopyFrom(mm.attr["transpose_b"])
    del mm.attr["transpose_b"]
    with pytest.raises(ValueError, match="must be equal"):
        run_graph_def(broken.to_graph_def(), {"x:0": X})
    spec = "rename_attribute(old_attribute_name=adj_y, new_attribute_name=transpose_b, op_name=MatMul)"
    result, applied, warnings = _apply(spec, broken.to_graph_def())
    assert applied == [("rename_attribute", True)] and not warnings
    assert _node(result, "mm").attr["transpose_b"].b is True and "adj_y" not in _node(result, "mm").attr
    _same_numbers(result, original)
    # A name the op does not declare is allowed (TF ignores it), with a warning.
    _, _, warnings = _apply("rename_attribute(old_attribute_name=transpose_a, new_attribute_name=adj_x)",
                            original)
    assert "'adj_x', which their op does not declare" in warnings[0]


@pytest.mark.parametrize("spec, words", [
    ("rename_attribute(old_attribute_name=T, new_attribute_name=dtype, op_name=Relu)", "lacks attribute 'T'"),
    ("rename_attribute(old_attribute_name=transpose_a, new_attribute_name=transpose_b)",
     "already has an attribute 'transpose_b'"),
    ("rename_attribute(old_attribute_name=transpose_a)", "needs new_attribute_name"),
])
def test_rename_attribute_refusals(spec: str, words: str) -> None:
    with pytest.raises(UserError, match=words):
        _apply(spec)


# ---- rename_op / backport_concatv2 -----------------------------------------------------------

def test_rename_op_to_an_equivalent_op() -> None:
    original = _graph_def()
    result, applied, _ = _apply("rename_op(old_op_name=Identity, new_op_name=Snapshot)", original)
    assert applied == [("rename_op", True)]
    assert {n.name for n in result.node if n.op == "Snapshot"} == {"scaled", "out", "coloc"}
    assert not [n for n in result.node if n.op == "Identity"]
    _same_numbers(result, original)


@pytest.mark.parametrize("spec, words", [
    ("rename_op(old_op_name=Mul, new_op_name=Multiply)", "no op named 'Multiply' \\(closest: .*Mul"),
    ("rename_op(old_op_name=MatMul, new_op_name=Relu)",
     "'mm' does not fit Relu: it has 2 data input\\(s\\), Relu takes 1"),
    ("rename_op(old_op_name=Relu, new_op_name=LogicalNot)",
     "could not load the result: .*incompatible with expected bool"),
    ("rename_op(old_op_name=BiasAdd, new_op_name=Relu)", "does not fit Relu"),
    ("rename_op(old_op_name=Mul)", "rename_op needs new_op_name"),
])
def test_rename_op_refuses_ops_that_would_not_load(spec: str, words: str) -> None:
    original = _graph_def()
    with pytest.raises(UserError, match=words):
        _apply(spec, original)


def test_rename_op_ignore_errors_keeps_the_graph() -> None:
    original = _graph_def()
    result, applied, warnings = _apply("rename_op(old_op_name=Mul, new_op_name=Multiply, ignore_errors=true)",
                                       original)
    assert applied == [("rename_op", False)] and "skipped" in warnings[0]
    assert result == original


def test_backport_concatv2_puts_the_axis_first() -> None:
    original = _graph_def()
    result, applied, warnings = _apply("backport_concatv2", original)
    assert applied == [("backport_concatv2", True)] and not warnings
    cat = _node(result, "cat")
    assert cat.op == "Concat" and "Tidx" not in cat.attr
    assert list(cat.input) == ["axis", "relu", "scaled"] and cat.attr["N"].i == 2
    _same_numbers(result, original)


def test_backport_concatv2_keeps_an_int64_axis() -> None:
    original = _graph_def("int64")
    result, applied, warnings = _apply("backport_concatv2", original)
    assert applied == [("backport_concatv2", False)] and "int64" in warnings[0]
    assert _node(result, "cat").op == "ConcatV2"


# ---- rename_node / obfuscate_names -----------------------------------------------------------

def test_rename_node_updates_data_control_and_colocation_references() -> None:
    original = _graph_def()
    result, applied, _ = _apply("rename_node(old_node_name=mm, new_node_name=matmul) "
                                "rename_node(old_node_name=relu, new_node_name=activation)", original)
    assert applied == [("rename_node", True), ("rename_node", True)]
    g = Graph(result)
    assert "mm" not in g and "relu" not in g
    assert list(g.node("bias").input)[0] == "matmul"
    assert [n.name for n in g if "^matmul" in list(n.input)] == ["mul/y"]  # the control edge followed
    assert list(g.node("cat").input)[0] == "activation"
    assert list(g.node("coloc").attr["_class"].list.s) == [b"loc:@activation"]
    _same_numbers(result, original)  # TF imports it: no reference points at the old names


def test_rename_node_of_an_output_follows_it() -> None:
    original = _graph_def()
    result, _, warnings = _apply("rename_node(old_node_name=out, new_node_name=result) strip_unused_nodes",
                                 original)
    assert "output 'out' is now named 'result'" in warnings
    assert "result" in Graph(result) and "coloc" not in Graph(result)  # strip_unused used the new name
    _same_numbers(result, original, fetch="result:0")


@pytest.mark.parametrize("spec, words", [
    ("rename_node(old_node_name=relu, new_node_name=mm)", "a node named 'mm' already exists"),
    ("rename_node(old_node_name=rleu, new_node_name=act)", "no node named 'rleu' \\(closest: relu"),
    ("rename_node(old_node_name=relu, new_node_name=\"a b\")", "not a valid node name"),
])
def test_rename_node_refusals(spec: str, words: str) -> None:
    with pytest.raises(UserError, match=words):
        _apply(spec)


def test_short_names_count_in_base_62() -> None:
    assert [_short_name(i) for i in (0, 9, 10, 35, 36, 61, 62, 63, 62 * 62)] == \
        ["0", "9", "a", "z", "A", "Z", "10", "11", "100"]


def test_obfuscate_names_keeps_inputs_outputs_and_numbers_and_is_deterministic() -> None:
    original = _graph_def()
    result, applied, _ = _apply("obfuscate_names", original)
    assert applied == [("obfuscate_names", True)]
    names = [n.name for n in result.node]
    assert "x" in names and "out" in names
    others = [n for n in names if n not in ("x", "out")]
    assert others == [_short_name(i) for i in range(len(others))]
    assert len(names) == len(original.node)
    _same_numbers(result, original)  # references and colocations were all rewritten
    again, _, _ = _apply("obsfucate_names", original)  # the old spelling is the same transform
    assert again.SerializeToString(deterministic=True) == result.SerializeToString(deterministic=True)


def test_obfuscate_names_skips_ids_an_input_uses() -> None:
    tf = _tf.tf()
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2], name="1")
        tf.identity(tf.nn.relu(x, name="a"), name="out")
    result, _, _ = _apply("obfuscate_names", g.as_graph_def(), inputs=["1"], outputs=["out"])
    assert [n.name for n in result.node] == ["1", "0", "out"]
    assert list(_node(result, "out").input) == ["0"]
    value = np.array([-1.0, 2.0], np.float32)
    np.testing.assert_array_equal(run_graph_def(result, {"1:0": value}), [0.0, 2.0])


# ---- remove_control_dependencies ---------------------------------------------------------------

def test_remove_control_dependencies_drops_plain_control_edges() -> None:
    original = _graph_def()
    result, applied, warnings = _apply("remove_control_dependencies", original)
    assert applied == [("remove_control_dependencies", True)] and not warnings
    assert not [r for n in result.node for r in n.input if r.startswith("^")]
    _same_numbers(result, original)


def test_remove_control_dependencies_keeps_cond_pivots() -> None:
    # The then-branch is a bare constant: only its control edge on the pivot keeps it in the branch.
    original = v1_cond_graph(lambda tf, x: tf.constant(7.0) + tf.zeros([1, 4]), lambda tf, x: tf.nn.relu(x))
    result, _, warnings = _apply("remove_control_dependencies", original, inputs=["x", "flag"])
    assert any("tf.cond" in w for w in warnings)
    g = Graph(result)
    kept = [(n.name, c) for n in g for c in g.control_inputs(n.name)]
    assert kept and all(g.node(c).op in ("Identity", "Switch") for _, c in kept)
    x = np.random.default_rng(2).normal(size=(1, 4)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x:0": x, "flag:0": flag}
        np.testing.assert_array_equal(run_graph_def(result, feeds), run_graph_def(original, feeds))


# ---- insert_logging --------------------------------------------------------------------------

def test_insert_logging_prints_and_passes_values_through(capfd: pytest.CaptureFixture[str]) -> None:
    original = _graph_def()
    result, applied, _ = _apply('insert_logging(op=Relu, show_name=true, show_op=true, message="vals:", '
                                'summarize=5, first_n=3)', original)
    assert applied == [("insert_logging", True)]
    g = Graph(result)
    printer = g.node("relu__print__")
    assert printer.op == "Print" and list(printer.input) == ["relu", "relu"]
    assert printer.attr["message"].s == b";Relu;;relu__print__;vals:"
    assert (printer.attr["first_n"].i, printer.attr["summarize"].i) == (3, 5)
    assert list(printer.attr["U"].list.type) == [printer.attr["T"].type]
    # Every reader of relu now reads the Print (the colocation attribute still names relu).
    assert g.data_consumers("relu") == {"relu__print__"}
    assert g.names().index("relu__print__") == g.names().index("relu") + 1
    capfd.readouterr()
    _same_numbers(result, original)
    assert ";Relu;;relu__print__;vals:" in capfd.readouterr().err


def test_insert_logging_by_prefix_and_refuses_a_second_run() -> None:
    original = _graph_def()
    result, _, _ = _apply("insert_logging(prefix=mm, prefix=bias)", original)
    added = sorted(n.name for n in result.node if n.op == "Print")
    assert added == ["bias__print__", "mm__print__"]
    _same_numbers(result, original)
    with pytest.raises(UserError, match="'mm__print__' already exists"):
        _apply("insert_logging(prefix=mm)", result)


def test_insert_logging_everywhere_in_a_cond_graph_keeps_its_numbers() -> None:
    original = v1_cond_graph(lambda tf, x: tf.identity(x * 2.0), lambda tf, x: tf.nn.relu(x))
    result, applied, warnings = _apply("insert_logging", original, inputs=["x", "flag"])
    assert applied == [("insert_logging", True)]
    assert any("control-flow" in w for w in warnings)
    prints = [n for n in result.node if n.op == "Print"]
    assert prints and not [p for p in prints if p.name.startswith("c/Switch") or "Merge" in p.name]
    x = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x:0": x, "flag:0": flag}
        np.testing.assert_array_equal(run_graph_def(result, feeds), run_graph_def(original, feeds))
