"""The "styles" corpus: one small model for each way TF models are written, trained on real data.

Run in a fresh process, as the user's own code would run:

    python -m tests.corpus.styles legacy OUT   # TF_USE_LEGACY_KERAS=1, graph mode (TF1 code on TF 2.x)
    python -m tests.corpus.styles modern OUT   # Keras 3 and TF2 SavedModels, eager

Each entry is a folder OUT/NAME holding the model, `probe.npz` (inputs of held-out digits and the
output the model gives them in the process that built it: the reference every command is checked
against) and `entry.json` (what the tests need to know: the source path, its binds, the output
name, the input name). Every model is a small CNN trained for a few steps on scikit-learn's
digits (8x8 grey images, 10 classes), so its outputs depend on its inputs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

STEPS = 60


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train images [N,8,8,1] in [0,1], train labels, held-out images [16,8,8,1])."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images[..., None] / 16.0).astype(np.float32)
    return x[:1500], data.target[:1500].astype(np.int64), x[1500:1516]


def _write(out: Path, name: str, source: str, probe: dict[str, np.ndarray], **info: Any) -> None:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "probe.npz", **probe)
    x_train, _, _ = digits()
    np.savez(folder / "calibration.npz", **{info["input"]: x_train[:64]})
    (folder / "entry.json").write_text(json.dumps({"name": name, "source": source, **info}, indent=1))


# --- TF1 code on TF 2.x (graph mode) -------------------------------------------------------------

def _train(tf: Any, graph: Any, feeds: Any, train_op: Any, saver: Any, prefix: Path, fetch: Any,
           probe_feeds: dict) -> np.ndarray:
    v1 = tf.compat.v1
    x_train, y_train, _ = digits()
    rng = np.random.default_rng(0)
    with v1.Session(graph=graph) as sess:
        sess.run(v1.global_variables_initializer())
        for _ in range(STEPS):
            idx = rng.integers(0, len(x_train), 64)
            sess.run(train_op, feeds(x_train[idx], y_train[idx]))
        prefix.parent.mkdir(parents=True, exist_ok=True)
        saver.save(sess, str(prefix), global_step=v1.train.get_global_step())
        return sess.run(fetch, probe_feeds)


def tf1_ref_cond(out: Path) -> None:
    """TF1 as written before 2.0: ref variables, tf.cond as Switch/Merge, keep_prob dropout, Adam."""
    import tensorflow as tf

    v1 = tf.compat.v1
    v1.disable_control_flow_v2()
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(1)
        x = v1.placeholder(tf.float32, [None, 8, 8, 1], name="input")
        keep_prob = v1.placeholder(tf.float32, [], name="keep_prob")
        is_training = v1.placeholder(tf.bool, [], name="is_training")
        labels = v1.placeholder(tf.int64, [None], name="labels")
        gs = v1.train.get_or_create_global_step()
        w = v1.get_variable("conv1/weights", [3, 3, 1, 16], use_resource=False)
        h = tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME")
        h = _bn_cond(tf, h, 16, "bn1", is_training, resource=False)
        h = tf.nn.max_pool2d(tf.nn.relu(h), 2, 2, "VALID")
        h = tf.reshape(h, [-1, 4 * 4 * 16])
        h = v1.nn.dropout(h, keep_prob=keep_prob)
        w2 = v1.get_variable("logits/weights", [256, 10], use_resource=False)
        b2 = v1.get_variable("logits/biases", [10], initializer=v1.zeros_initializer(), use_resource=False)
        logits = tf.nn.bias_add(tf.matmul(h, w2), b2, name="logits")
        tf.nn.softmax(logits, name="prob")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        train_op = v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=gs)
        _, _, probe = digits()
        ref = _train(tf, graph, lambda xb, yb: {x: xb, labels: yb, keep_prob: 0.5, is_training: True}, train_op,
                     v1.train.Saver(), out / "tf1_ref_cond" / "ckpt" / "model.ckpt", logits,
                     {x: probe, keep_prob: 1.0, is_training: False})
    v1.enable_control_flow_v2()
    _write(out, "tf1_ref_cond", "ckpt", {"input": probe, "logits": ref}, input="input", output="logits",
           binds=["is_training=false", "keep_prob=1.0"], kind="checkpoint")


def _bn_cond(tf: Any, h: Any, channels: int, name: str, is_training: Any, *, resource: bool) -> Any:
    """Batch norm by hand under tf.cond(is_training), the moving averages updated in the training
    branch (how TF1 models such as slim's InceptionV3 were often written)."""
    v1 = tf.compat.v1
    with v1.variable_scope(name):
        gamma = v1.get_variable("gamma", [channels], initializer=v1.ones_initializer(), use_resource=resource)
        beta = v1.get_variable("beta", [channels], initializer=v1.zeros_initializer(), use_resource=resource)
        mm = v1.get_variable("moving_mean", [channels], initializer=v1.zeros_initializer(), trainable=False,
                             use_resource=resource)
        mv = v1.get_variable("moving_variance", [channels], initializer=v1.ones_initializer(), trainable=False,
                             use_resource=resource)

        def train() -> Any:
            mean, var = tf.nn.moments(h, [0, 1, 2])
            up_m = v1.assign_sub(mm, 0.1 * (mm - mean))
            up_v = v1.assign_sub(mv, 0.1 * (mv - var))
            with tf.control_dependencies([up_m, up_v]):
                return tf.nn.batch_normalization(h, tf.identity(mean), tf.identity(var), beta, gamma, 1e-3)

        def infer() -> Any:
            return tf.nn.batch_normalization(h, mm, mv, beta, gamma, 1e-3)

        return tf.cond(tf.squeeze(is_training), train, infer)


def tf2_compat(out: Path, name: str, *, with_while: bool) -> None:
    """TF1 code run on TF 2.x with only disable_eager_execution(): resource variables, tf.cond as
    If (its predicate through a Squeeze), v2 dropout on keep_prob, an InceptionV3-like block of
    parallel branches, a momentum optimizer and a global step; optionally a tf.while_loop."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(1)
        x = v1.placeholder(tf.float32, [None, 8, 8, 1], name="input")
        keep_prob = v1.placeholder(tf.float32, [], name="keep_prob")
        is_training = v1.placeholder(tf.bool, [], name="is_training")
        labels = v1.placeholder(tf.int64, [None], name="labels")
        gs = v1.train.get_or_create_global_step()

        def conv_bn(h: Any, cin: int, cout: int, scope: str, k: int = 3) -> Any:
            with v1.variable_scope(scope):
                w = v1.get_variable("weights", [k, k, cin, cout])
                h = tf.nn.conv2d(h, w, [1, 1, 1, 1], "SAME")
            return tf.nn.relu(_bn_cond(tf, h, cout, f"{scope}/bn", is_training, resource=True))

        h = conv_bn(x, 1, 8, "conv1")
        a = conv_bn(h, 8, 8, "mixed/branch_1x1", k=1)
        b = conv_bn(conv_bn(h, 8, 8, "mixed/branch_3x3a", k=1), 8, 8, "mixed/branch_3x3b")
        h = tf.concat([a, b], 3, name="mixed/concat")
        if with_while:
            i0 = tf.constant(0)
            _, h = tf.while_loop(lambda i, t: i < 2, lambda i, t: (i + 1, t * 0.5 + 0.25), [i0, h])
        h = tf.reduce_mean(h, [1, 2])
        h = tf.nn.dropout(h, rate=1 - keep_prob)
        w = v1.get_variable("logits/weights", [16, 10])
        bias = v1.get_variable("logits/biases", [10], initializer=v1.zeros_initializer())
        logits = tf.nn.bias_add(tf.matmul(h, w), bias, name="logits")
        tf.nn.softmax(logits, name="predictions")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        train_op = v1.train.MomentumOptimizer(0.05, 0.9).minimize(loss, global_step=gs)
        _, _, probe = digits()
        ref = _train(tf, graph, lambda xb, yb: {x: xb, labels: yb, keep_prob: 0.8, is_training: True}, train_op,
                     v1.train.Saver(), out / name / "ckpt" / "model.ckpt", logits,
                     {x: probe, keep_prob: 1.0, is_training: False})
    _write(out, name, "ckpt", {"input": probe, "logits": ref}, input="input", output="logits",
           binds=["is_training=false", "keep_prob=1.0"], kind="checkpoint")


def v1_layers_bn(out: Path) -> None:
    """tf.compat.v1.layers (conv2d, batch_normalization(training=placeholder), dropout, dense),
    with the UPDATE_OPS control dependency on the train op, as TF1 tutorials wrote it."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(1)
        x = v1.placeholder(tf.float32, [None, 8, 8, 1], name="input")
        training = v1.placeholder_with_default(False, [], name="training")
        labels = v1.placeholder(tf.int64, [None], name="labels")
        gs = v1.train.get_or_create_global_step()
        h = v1.layers.conv2d(x, 16, 3, padding="same", use_bias=False, name="conv1")
        h = tf.nn.relu(v1.layers.batch_normalization(h, training=training, name="bn1"))
        h = v1.layers.max_pooling2d(h, 2, 2, name="pool1")
        h = v1.layers.flatten(h, name="flat")
        h = v1.layers.dropout(h, 0.3, training=training, name="drop")
        logits = v1.layers.dense(h, 10, name="logits")
        loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            train_op = v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=gs)
        _, _, probe = digits()
        ref = _train(tf, graph, lambda xb, yb: {x: xb, labels: yb, training: True}, train_op, v1.train.Saver(),
                     out / "v1_layers_bn" / "ckpt" / "model.ckpt", logits, {x: probe})
    _write(out, "v1_layers_bn", "ckpt", {"input": probe, "logits/BiasAdd": ref}, input="input",
           output="logits/BiasAdd", binds=["training=false"], kind="checkpoint")


def keras2_h5(out: Path) -> None:
    """A Keras 2 (tf_keras) functional CNN saved as legacy HDF5, with its optimizer state."""
    import tensorflow as tf

    keras = tf.keras  # tf_keras under TF_USE_LEGACY_KERAS=1
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", name="conv1")(image)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.Activation("relu", name="relu1")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dropout(0.2, name="drop")(h)
    probs = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(image, probs)
    model.compile("adam", "sparse_categorical_crossentropy")
    x_train, y_train, probe = digits()
    model.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    folder = out / "keras2_h5"
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.h5")
    import h5py

    with h5py.File(folder / "model.h5") as f:  # really written by Keras 2
        assert str(f.attrs["keras_version"]).startswith("2."), f.attrs["keras_version"]
    _write(out, "keras2_h5", "model.h5", {"image": probe, "probs": model.predict(probe, verbose=0)},
           input="image", output="probs", binds=[], kind="keras")


def tf1_builder(out: Path) -> None:
    """A TF1 graph exported with SavedModelBuilder: signature_defs "serving_default" and "scores",
    tensor names unrelated to the signature keys."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 8, 8, 1], name="pixels")
        labels = v1.placeholder(tf.int64, [None], name="labels")
        gs = v1.train.get_or_create_global_step()
        w = v1.get_variable("conv/w", [3, 3, 1, 8])
        h = tf.nn.relu(tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME"))
        h = tf.reshape(h, [-1, 8 * 8 * 8])
        w2 = v1.get_variable("fc/w", [512, 10])
        logits = tf.matmul(h, w2, name="fc/logits")
        probs = tf.nn.softmax(logits, name="fc/probs")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        train_op = v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=gs)
        x_train, y_train, probe = digits()
        rng = np.random.default_rng(0)
        folder = out / "tf1_builder"
        folder.mkdir(parents=True, exist_ok=True)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(STEPS):
                idx = rng.integers(0, len(x_train), 64)
                sess.run(train_op, {x: x_train[idx], labels: y_train[idx]})
            ref = sess.run(probs, {x: probe})
            info = v1.saved_model.utils.build_tensor_info
            sig = v1.saved_model.signature_def_utils.build_signature_def
            builder = v1.saved_model.builder.SavedModelBuilder(str(folder / "saved_model"))
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
                "serving_default": sig({"digit": info(x)}, {"probabilities": info(probs)}, "tensorflow/serving/predict"),
                "scores": sig({"digit": info(x)}, {"logits": info(logits)}, "tensorflow/serving/predict"),
            })
            builder.save()
    _write(out, "tf1_builder", "saved_model", {"digit": probe, "probabilities": ref}, input="digit",
           output="probabilities", binds=[], kind="savedmodel", signatures=["scores", "serving_default"])


# --- Keras 3 and TF2 SavedModels (eager) ---------------------------------------------------------

def keras3(out: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", name="conv1")(image)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    probs = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(image, probs)
    model.compile("adam", "sparse_categorical_crossentropy")
    x_train, y_train, probe = digits()
    model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
    folder = out / "keras3"
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    _write(out, "keras3", "model.keras", {"image": probe, "probs": np.asarray(model(probe))}, input="image",
           output="probs", binds=[], kind="keras")


def _module(tf: Any) -> Any:
    """A tf.Module CNN with trained variables (weights fitted by a few SGD steps, eagerly)."""
    x_train, y_train, _ = digits()
    rng = np.random.default_rng(0)

    class Digits(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(rng.normal(0, 0.3, (3, 3, 1, 8)).astype(np.float32), name="conv_w")
            self.w2 = tf.Variable(rng.normal(0, 0.05, (512, 10)).astype(np.float32), name="fc_w")

        def features(self, x: Any) -> Any:
            return tf.reshape(tf.nn.relu(tf.nn.conv2d(x, self.w, 1, "SAME")), [-1, 512])

        def logits(self, x: Any) -> Any:
            return tf.matmul(self.features(x), self.w2)

    module = Digits()
    opt = tf.keras.optimizers.SGD(0.1)
    for _ in range(STEPS):
        idx = rng.integers(0, len(x_train), 64)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y_train[idx], module.logits(x_train[idx])))
        grads = tape.gradient(loss, [module.w, module.w2])
        opt.apply_gradients(zip(grads, [module.w, module.w2], strict=True))
    return module


def tf_module_signatures(out: Path) -> None:
    """tf.saved_model.save of a tf.Module with two signatures (probabilities and features)."""
    import tensorflow as tf

    module = _module(tf)
    spec = tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image")
    serve = tf.function(lambda image: {"probs": tf.nn.softmax(module.logits(image))}, input_signature=[spec])
    feats = tf.function(lambda image: {"features": module.features(image)}, input_signature=[spec])
    folder = out / "tf_module_signatures"
    tf.saved_model.save(module, str(folder / "saved_model"), signatures={"serving_default": serve, "features": feats})
    _, _, probe = digits()
    _write(out, "tf_module_signatures", "saved_model", {"image": probe, "probs": serve(probe)["probs"].numpy()},
           input="image", output="probs", binds=[], kind="savedmodel", signatures=["features", "serving_default"])


def savedmodel_assets(out: Path) -> None:
    """A SavedModel that ships an asset (its class labels file) beside the variables."""
    import tensorflow as tf

    module = _module(tf)
    folder = out / "savedmodel_assets"
    folder.mkdir(parents=True, exist_ok=True)
    labels = folder / "labels.txt"
    labels.write_text("".join(f"digit {i}\n" for i in range(10)))
    module.labels = tf.saved_model.Asset(str(labels))
    spec = tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image")
    serve = tf.function(lambda image: {"probs": tf.nn.softmax(module.logits(image))}, input_signature=[spec])
    tf.saved_model.save(module, str(folder / "saved_model"), signatures={"serving_default": serve})
    labels.unlink()
    assert (folder / "saved_model" / "assets" / "labels.txt").is_file()
    _, _, probe = digits()
    _write(out, "savedmodel_assets", "saved_model", {"image": probe, "probs": serve(probe)["probs"].numpy()},
           input="image", output="probs", binds=[], kind="savedmodel")


def build(group: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if group == "legacy":
        import tensorflow as tf

        keras2_h5(out)  # eager, before graph mode is switched on
        tf.compat.v1.disable_eager_execution()
        tf1_ref_cond(out)
        tf2_compat(out, "tf2_compat_cond", with_while=False)
        tf2_compat(out, "tf2_compat_while", with_while=True)
        v1_layers_bn(out)
        tf1_builder(out)
    else:
        keras3(out)
        tf_module_signatures(out)
        savedmodel_assets(out)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    build(sys.argv[1], Path(sys.argv[2]))
