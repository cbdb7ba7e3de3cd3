"""Issue 13, scope 4: a TF1 classifier whose logits layer has no activation (conv -> relu ->
reshape -> matmul -> bias_add) converts to all-int8 after create_training_graph /
create_eval_graph -> freeze -> convert --quantize int8: the logits get an output FakeQuant, as
tf.contrib.quantize gave them, and freezing by the layer's name keeps it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.qat.digits import assert_int8_only
from tfshrink import _tf, qat
from tfshrink.cli import main


def _build(tf):  # noqa: ANN001, ANN202
    v1 = tf.compat.v1
    x = v1.placeholder(tf.float32, [None, 8, 8, 1], name="input")
    w = v1.get_variable("conv1/weights", [3, 3, 1, 8])
    h = tf.nn.relu(tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME"))
    h = tf.reshape(h, [-1, 8 * 8 * 8])
    w2 = v1.get_variable("logits/weights", [512, 10])
    b2 = v1.get_variable("logits/biases", [10], initializer=v1.zeros_initializer())
    return x, tf.nn.bias_add(tf.matmul(h, w2), b2, name="logits")


@pytest.fixture(scope="module")
def eval_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_digits

    tf = _tf.tf()
    v1 = tf.compat.v1
    digits = load_digits()
    images = (digits.images[..., None] / 16.0).astype(np.float32)
    out = tmp_path_factory.mktemp("qat_logits")
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(0)
        x, logits = _build(tf)
        labels = v1.placeholder(tf.int64, [None], name="labels")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        qat.create_training_graph(graph)
        step = v1.train.get_or_create_global_step()
        train = v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=step)
        rng = np.random.default_rng(0)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(80):
                idx = rng.integers(0, 1500, 64)
                sess.run(train, {x: images[idx], labels: digits.target[idx]})
            v1.train.Saver().save(sess, str(out / "train.ckpt"))
    graph = tf.Graph()
    with graph.as_default():
        _build(tf)
        qat.create_eval_graph(graph)
        with v1.Session(graph=graph) as sess:
            saver = v1.train.Saver()
            saver.restore(sess, str(out / "train.ckpt"))
            saver.save(sess, str(out / "eval.ckpt"))
    return out / "eval.ckpt"


@pytest.mark.parametrize("outputs", [[], ["--outputs", "logits"]])
def test_the_logits_layer_converts_to_int8(eval_ckpt: Path, outputs: list[str], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    pb = tmp_path / "eval.pb"
    with pytest.raises(SystemExit) as exc:
        main(["freeze", str(eval_ckpt), "-o", str(pb), *outputs])
    assert exc.value.code == 0, capsys.readouterr().err
    assert "logits/act_quant/FakeQuant" in capsys.readouterr().out
    tflite = tmp_path / "eval.tflite"
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(pb), "-o", str(tflite), "--quantize", "int8"])
    text = capsys.readouterr().out
    assert exc.value.code == 0, text
    assert "ops left in float: none" in text
    ops = assert_int8_only(tflite.read_bytes())  # only QUANTIZE / DEQUANTIZE at the float edges
    assert ops["FULLY_CONNECTED"] == 1 and ops["QUANTIZE"] == 1 and ops["DEQUANTIZE"] == 1
