"""create_training_graph / create_eval_graph on small TF1 graphs: what gets quantized (depthwise,
residual add, concat, fused batch norm), checkpoint compatibility, quant_delay, and the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tests.qat.digits import assert_int8_only
from tfshrink import _tf
from tfshrink.errors import UserError
from tfshrink.qat import convert_qat, create_eval_graph, create_training_graph


def _block(tf: object, is_training: bool) -> tuple[object, object]:
    """input [?,8,8,3] -> conv 3x3x8 + bias + relu -> depthwise 3x3 + fused BN + relu6 ->
    1x1 conv 8 + bias, added to the depthwise output (residual) -> relu -> concat with the
    depthwise output -> flatten -> logits 4."""
    v1 = tf.compat.v1
    x = v1.placeholder(tf.float32, [None, 8, 8, 3], name="input")
    w = v1.get_variable("conv/weights", [3, 3, 3, 8])
    b = v1.get_variable("conv/biases", [8], initializer=v1.zeros_initializer())
    h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "SAME"), b), name="conv/relu")
    dw = v1.get_variable("dw/weights", [3, 3, 8, 1])
    d = tf.nn.depthwise_conv2d(h, dw, [1, 1, 1, 1], "SAME")
    gamma = v1.get_variable("dw/gamma", [8], initializer=v1.ones_initializer())
    beta = v1.get_variable("dw/beta", [8], initializer=v1.zeros_initializer())
    mean = v1.get_variable("dw/moving_mean", [8], initializer=v1.zeros_initializer(), trainable=False)
    var = v1.get_variable("dw/moving_variance", [8], initializer=v1.ones_initializer(), trainable=False)
    if is_training:
        d, bm, bv = v1.nn.fused_batch_norm(d, gamma, beta, epsilon=1e-3, is_training=True, name="dw/bn")
        for moving, batch in ((mean, bm), (var, bv)):
            v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, v1.assign_sub(moving, 0.1 * (moving - batch)))
    else:
        d, _, _ = v1.nn.fused_batch_norm(d, gamma, beta, mean, var, epsilon=1e-3, is_training=False, name="dw/bn")
    d = tf.nn.relu6(d, name="dw/relu6")
    pw = v1.get_variable("pw/weights", [1, 1, 8, 8])
    pb = v1.get_variable("pw/biases", [8], initializer=v1.zeros_initializer())
    p = tf.nn.bias_add(tf.nn.conv2d(d, pw, 1, "SAME"), pb, name="pw/out")
    r = tf.nn.relu(p + d, name="residual/relu")
    c = tf.concat([r, d], axis=3, name="concat")
    flat = tf.reshape(c, [-1, 8 * 8 * 16])
    fw = v1.get_variable("fc/weights", [8 * 8 * 16, 4])
    logits = tf.matmul(flat, fw, name="logits")
    return x, logits


def _train(directory: Path, steps: int, quant_delay: int = 0, freeze_bn_delay: int | None = None) -> Path:
    tf = _tf.tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(0)
        x, logits = _block(tf, is_training=True)
        labels = v1.placeholder(tf.int64, [None])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        report = create_training_graph(graph, quant_delay=quant_delay, freeze_bn_delay=freeze_bn_delay)
        assert report.layers == ["Conv2D", "depthwise", "Conv2D_1", "logits"]
        assert report.folded_batch_norms == ["dw/bn"] and report.merges == ["add", "concat"]
        step = v1.train.get_or_create_global_step()
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            train_op = v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=step)
        rng = np.random.default_rng(0)
        xs = rng.uniform(0, 1, (64, 8, 8, 3)).astype(np.float32)
        ys = (xs.mean(axis=(1, 2)).argmax(axis=1)).astype(np.int64)
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for i in range(steps):
                sess.run(train_op, {x: xs[(i * 16) % 64:][:16], labels: ys[(i * 16) % 64:][:16]})
            directory.mkdir(parents=True, exist_ok=True)
            return Path(saver.save(sess, str(directory / "model.ckpt"), global_step=step))


def _eval_checkpoint(checkpoint: Path | None, directory: Path, quantized: bool = True) -> Path:
    """The inference graph (rewritten when `quantized`), restored from `checkpoint` (None: fresh
    variables), saved with its .meta."""
    tf = _tf.tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        _block(tf, is_training=False)
        if quantized:
            create_eval_graph(graph)
        saver = v1.train.Saver()
        directory.mkdir(parents=True, exist_ok=True)
        with v1.Session(graph=graph) as sess:
            if checkpoint is None:
                sess.run(v1.global_variables_initializer())
            else:
                saver.restore(sess, str(checkpoint))
            return Path(saver.save(sess, str(directory / "model.ckpt")))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("qat_block_train"), steps=30)


def test_training_checkpoint_restores_into_the_eval_graph(trained: Path, tmp_path: Path) -> None:
    tf = _tf.tf()
    saved = set(tf.train.load_checkpoint(str(trained)).get_variable_to_shape_map())
    ranges = {n for n in saved if "/act_quant/" in n}
    # one range per quantized activation: input, conv, depthwise (after relu6), pw, add (after
    # relu), concat, logits; plus the records of training
    assert {n.rsplit("/", 1)[0] for n in ranges} == {
        "input/act_quant", "conv/relu/act_quant", "dw/relu6/act_quant", "pw/out/act_quant",
        "residual/relu/act_quant", "concat/act_quant", "logits/act_quant"}
    assert {"tfshrink_qat/quant_delay", "tfshrink_qat/steps"} <= saved
    eval_ckpt = _eval_checkpoint(trained, tmp_path / "eval")  # Saver.restore raises on a missing name
    values = tf.train.load_checkpoint(str(eval_ckpt))
    assert values.get_tensor("tfshrink_qat/steps") == 30
    assert values.get_tensor("conv/relu/act_quant/count") == 30
    assert values.get_tensor("conv/relu/act_quant/min") == 0.0 < values.get_tensor("conv/relu/act_quant/max")


def test_depthwise_residual_add_and_concat_convert_to_int8(trained: Path, tmp_path: Path) -> None:
    eval_ckpt = _eval_checkpoint(trained, tmp_path / "eval")
    # straight from the eval checkpoint: the output `logits` is read after its fake-quant
    result = convert_qat(eval_ckpt, tmp_path / "block.tflite", outputs="logits")
    ops = assert_int8_only((tmp_path / "block.tflite").read_bytes())
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "CONCATENATION", "FULLY_CONNECTED"} <= set(ops)
    assert result.fully_int8 and not result.warnings
    assert any("output logits is read after its fake-quant logits/act_quant/FakeQuant" in n for n in result.notes)
    assert result.verification is not None and result.verification.outputs[0].cosine > 0.99
    # the depthwise weights carry one scale per output channel
    from tfshrink.tflite.flatbuffer import opcode_names, read

    model = read((tmp_path / "block.tflite").read_bytes())
    sub = model.Subgraphs(0)
    codes = opcode_names(model)
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        if codes[op.OpcodeIndex()] == "DEPTHWISE_CONV_2D":
            q = sub.Tensors(op.Inputs(1)).Quantization()
            assert q.ScaleLength() == 8 and q.QuantizedDimension() == 3


def test_freezing_the_last_layer_by_name_keeps_its_output_fake_quant(trained: Path, tmp_path: Path) -> None:
    """Issue 13: `freeze --outputs logits` (the layer, as users name it) reads the logits after
    their output fake-quant, so the classifier still converts to all-int8."""
    eval_ckpt = _eval_checkpoint(trained, tmp_path / "eval")
    pb = tmp_path / "named.pb"
    frozen = tfshrink.freeze(eval_ckpt, pb, outputs="logits")
    assert frozen.outputs == ("logits/act_quant/FakeQuant",)
    assert "output logits is read after its fake-quant logits/act_quant/FakeQuant" in frozen.notes[0]
    result = convert_qat(pb, tmp_path / "named.tflite", verify=False)
    assert result.fully_int8 and not result.float_ops and not result.warnings
    # without --outputs, freeze detects the fake-quant after the last layer (the folded layer's
    # unfolded original is no output)
    assert tfshrink.freeze(eval_ckpt, pb).outputs == ("logits/act_quant/FakeQuant",)
    assert convert_qat(pb, tmp_path / "whole.tflite", verify=False).fully_int8


def test_quant_delay_passes_through_and_learns_nothing_before_it(tmp_path: Path) -> None:
    tf = _tf.tf()
    ckpt = _train(tmp_path / "train", steps=5, quant_delay=3, freeze_bn_delay=4)
    values = tf.train.load_checkpoint(str(ckpt))
    assert values.get_tensor("tfshrink_qat/quant_delay") == 3
    assert values.get_tensor("conv/relu/act_quant/count") == 2  # steps 3 and 4
    assert np.isfinite(values.get_tensor("dw/gamma")).all()  # trained through the frozen batch norm too


def test_quant_delay_longer_than_training_is_refused(tmp_path: Path) -> None:
    ckpt = _train(tmp_path / "train", steps=5, quant_delay=100)
    eval_ckpt = _eval_checkpoint(ckpt, tmp_path / "eval")
    with pytest.raises(UserError, match=r"ranges were never learned: quant_delay \(100\) ≥ steps trained \(5\)"):
        convert_qat(eval_ckpt, tmp_path / "never.tflite")
    # frozen first, the numbers are gone, the initial ranges still tell
    pb = tmp_path / "never.pb"
    tfshrink.freeze(eval_ckpt, pb, outputs="logits")
    with pytest.raises(UserError, match=r"never learned: every FakeQuant still holds its initial range"):
        convert_qat(pb, tmp_path / "never.tflite")
    assert not (tmp_path / "never.tflite").exists()


def test_an_eval_graph_without_ranges_is_refused(trained: Path, tmp_path: Path) -> None:
    float_ckpt = _eval_checkpoint(trained, tmp_path / "float", quantized=False)
    pb = tmp_path / "float.pb"
    tfshrink.freeze(float_ckpt, pb, outputs="logits")
    with pytest.raises(UserError, match="no FakeQuant nodes") as exc:
        convert_qat(pb, tmp_path / "float.tflite")
    assert "create_eval_graph" in exc.value.hint
    # rewritten but never restored: every range is still the initial one
    fresh = _eval_checkpoint(None, tmp_path / "fresh")
    with pytest.raises(UserError, match="update count is 0"):
        convert_qat(fresh, tmp_path / "fresh.tflite")


def test_nothing_to_quantize_and_misuse_are_refused() -> None:
    tf = _tf.tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 4], name="x")
        tf.nn.relu(x * 2.0 + 1.0, name="out")
        with pytest.raises(UserError, match="nothing to quantize"):
            create_training_graph(graph)
        w = v1.get_variable("w", [4, 2])
        loss = tf.reduce_sum(tf.matmul(x, w))
        with pytest.raises(UserError, match="quant_delay -1 is negative"):
            create_training_graph(graph, quant_delay=-1)
        with pytest.raises(UserError, match="weight_bits=16"):
            create_training_graph(graph, weight_bits=16)
        create_training_graph(graph)
        with pytest.raises(UserError, match="already holds fake-quant ops"):
            create_eval_graph(graph)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 4], name="x")
        loss = tf.reduce_sum(tf.matmul(x, v1.get_variable("w", [4, 2])))
        v1.train.GradientDescentOptimizer(0.1).minimize(loss)
        with pytest.raises(UserError, match="already has an optimizer") as exc:
            create_training_graph(graph)
        assert "before optimizer.minimize" in exc.value.hint


def test_an_unfused_training_batch_norm_is_refused() -> None:
    tf = _tf.tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 8, 8, 1], name="x")
        h = tf.nn.conv2d(x, v1.get_variable("w", [3, 3, 1, 4]), 1, "SAME")
        mean, var = tf.nn.moments(h, [0, 1, 2])
        tf.nn.batch_normalization(h, mean, var, None, None, 1e-3)
        with pytest.raises(UserError, match="unfused batch norm in training mode") as exc:
            create_training_graph(graph)
        assert "fused_batch_norm" in exc.value.hint
