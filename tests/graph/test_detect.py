"""Input/output detection on training graphs, inference graphs and ambiguous ones."""

from __future__ import annotations

from pathlib import Path

from tfshrink import _tf
from tfshrink.graph.detect import detect_io
from tfshrink.graph.ir import Graph
from tfshrink.model.checkpoint import CheckpointModel, checkpoint_prefix


def test_training_checkpoint_detection(train_ckpt: Path) -> None:
    model = CheckpointModel(train_ckpt)
    det = model.detection
    assert det.outputs == ["prob"]
    assert det.inputs == ["input", "keep_prob", "is_training"]
    assert det.labels == ["labels"]
    assert not det.ambiguous
    assert det.optional_inputs == []  # save/Const and friends are not inputs


def test_logits_feeding_only_the_loss_is_the_output() -> None:
    tf = _tf.tf()
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 6], name="features")
        y = v1.placeholder(tf.float32, [None, 2], name="y_true")
        w = v1.get_variable("dense/kernel", [6, 2], use_resource=False)
        logits = tf.matmul(x, w, name="logits")
        loss = tf.reduce_mean(tf.square(tf.sigmoid(logits) - y), name="loss")
        v1.train.GradientDescentOptimizer(0.1).minimize(loss)
        v1.train.Saver()
    det = detect_io(Graph(g.as_graph_def()))
    # sigmoid feeds only the loss, but it is the model's head: the loss starts after it.
    assert det.outputs == ["Sigmoid"]
    assert det.inputs == ["features"]
    assert det.labels == ["y_true"]


def test_onet_three_outputs(onet_ckpt: Path) -> None:
    det = CheckpointModel(checkpoint_prefix(onet_ckpt)).detection
    assert sorted(det.outputs) == ["onet/conv6-2/conv6-2", "onet/conv6-3/conv6-3", "onet/prob1"]
    assert det.inputs == ["onet/input"]


def test_weak_dangling_node_makes_detection_ambiguous() -> None:
    tf = _tf.tf()
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        w = tf.constant(1.0, shape=[6, 3])
        tf.matmul(x, w, name="out")
        tf.shape(x, name="debug_shape")  # reads the input, applies no weight
    det = detect_io(Graph(g.as_graph_def()))
    assert det.ambiguous
    assert [c.name for c in det.candidates] == ["out", "debug_shape"]
    assert det.suggested_outputs == ["out"]


def test_every_output_of_a_multi_output_sink_is_an_output() -> None:
    tf = _tf.tf()
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        scores = tf.matmul(x, tf.constant(0.5, shape=[6, 10]), name="scores")
        tf.math.top_k(scores, k=3, name="top")
    det = detect_io(Graph(g.as_graph_def()))
    assert det.outputs == ["top", "top:1"]
    assert not det.ambiguous
