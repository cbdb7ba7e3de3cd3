"""Real TF graphs and models for the tests, built and trained here (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfshrink import _tf


def save_training_checkpoint(directory: Path, *, control_flow_v2: bool = False) -> Path:
    """A TF1 training graph: input/keep_prob/is_training/labels placeholders, conv + batch norm under
    tf.cond with moving-average updates, dropout, softmax, loss, accuracy, Adam and global_step;
    trained for a few steps so the moving averages and slots hold real values."""
    tf = _tf.tf()
    v1 = tf.compat.v1
    _tf.set_control_flow_v2(control_flow_v2)
    try:
        graph = tf.Graph()
        with graph.as_default():
            v1.set_random_seed(1)
            x = v1.placeholder(tf.float32, [None, 8, 8, 1], name="input")
            keep_prob = v1.placeholder(tf.float32, [], name="keep_prob")
            is_training = v1.placeholder(tf.bool, [], name="is_training")
            labels = v1.placeholder(tf.int64, [None], name="labels")
            global_step = v1.train.get_or_create_global_step()
            w = v1.get_variable("conv1/weights", [3, 3, 1, 8], use_resource=False)
            h = tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME")
            gamma = v1.get_variable("bn/gamma", [8], initializer=v1.ones_initializer(), use_resource=False)
            beta = v1.get_variable("bn/beta", [8], initializer=v1.zeros_initializer(), use_resource=False)
            mm = v1.get_variable("bn/moving_mean", [8], initializer=v1.zeros_initializer(), trainable=False, use_resource=False)
            mv = v1.get_variable("bn/moving_variance", [8], initializer=v1.ones_initializer(), trainable=False, use_resource=False)

            def train_branch():
                mean, var = tf.nn.moments(h, [0, 1, 2])
                up_m = v1.assign_sub(mm, 0.1 * (mm - mean))
                up_v = v1.assign_sub(mv, 0.1 * (mv - var))
                with tf.control_dependencies([up_m, up_v]):
                    return tf.nn.batch_normalization(h, tf.identity(mean), tf.identity(var), beta, gamma, 1e-3)

            def eval_branch():
                return tf.nn.batch_normalization(h, mm, mv, beta, gamma, 1e-3)

            h = v1.cond(is_training, train_branch, eval_branch, name="bn/cond")
            h = tf.nn.relu(h)
            h = tf.reshape(h, [-1, 8 * 8 * 8])
            w2 = v1.get_variable("fc1/weights", [512, 32], use_resource=False)
            b2 = v1.get_variable("fc1/biases", [32], initializer=v1.zeros_initializer(), use_resource=False)
            h = tf.nn.relu(tf.matmul(h, w2) + b2)
            h = v1.nn.dropout(h, keep_prob=keep_prob)
            w3 = v1.get_variable("logits/weights", [32, 4], use_resource=False)
            logits = tf.matmul(h, w3, name="logits")
            tf.nn.softmax(logits, name="prob")
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), name="loss")
            correct = tf.equal(tf.argmax(logits, 1), labels)
            accuracy = tf.reduce_mean(tf.cast(correct, tf.float32), name="accuracy")
            v1.summary.scalar("loss", loss)
            v1.summary.scalar("accuracy", accuracy)
            train_op = v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=global_step)
            saver = v1.train.Saver()
            rng = np.random.default_rng(0)
            with v1.Session(graph=graph) as sess:
                sess.run(v1.global_variables_initializer())
                for _ in range(5):
                    xb = rng.normal(size=(16, 8, 8, 1)).astype(np.float32) + 0.5
                    yb = rng.integers(0, 4, size=16)
                    sess.run(train_op, {x: xb, labels: yb, keep_prob: 0.5, is_training: True})
                directory.mkdir(parents=True, exist_ok=True)
                prefix = saver.save(sess, str(directory / "model.ckpt"), global_step=global_step)
    finally:
        _tf.set_control_flow_v2(True)
    return Path(prefix)


def small_keras_model(path: Path) -> Path:
    """A functional Keras model with two inputs and two outputs, saved to `path` (.keras or .h5)."""
    tf = _tf.tf()
    keras = tf.keras
    keras.utils.set_random_seed(0)
    image = keras.Input((12, 12, 3), name="image")
    meta = keras.Input((4,), name="meta")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    h = keras.layers.Concatenate(name="concat")([h, meta])
    scores = keras.layers.Dense(5, activation="softmax", name="scores")(h)
    box = keras.layers.Dense(4, name="box")(h)
    model = keras.Model([image, meta], [scores, box])
    model.save(path)
    return path
