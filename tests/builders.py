"""Real TF graphs and models for the tests, built and trained here (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfshrink import _tf


def save_training_checkpoint(directory: Path) -> Path:
    """A TF1 training graph: input/keep_prob/is_training/labels placeholders, conv + batch norm under
    tf.cond with moving-average updates, dropout, softmax, loss, accuracy, Adam and global_step;
    trained for a few steps so the moving averages and slots hold real values."""
    tf = _tf.tf()
    v1 = tf.compat.v1
    with _tf.control_flow_v1():
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
    return Path(prefix)


def v1_cond_graph(then_fn, else_fn):
    """x[?,4] and flag[] -> out = tf.cond(flag, then_fn(x), else_fn(x)), as TF1 built it
    (Switch/Merge). The branch functions take (tf, x)."""
    tf = _tf.tf()
    v1 = tf.compat.v1
    with _tf.control_flow_v1():
        graph = tf.Graph()
        with graph.as_default():
            x = v1.placeholder(tf.float32, [None, 4], name="x")
            flag = v1.placeholder(tf.bool, [], name="flag")
            y = v1.cond(flag, lambda: then_fn(tf, x), lambda: else_fn(tf, x), name="c")
            tf.identity(y, name="out")
    return graph.as_graph_def()


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


def _keras2_layer(class_name: str, name: str, config: dict, inbound: list[str]) -> dict:
    """One layer entry of a Keras 2 (tf.keras 2.x) Functional config: dtype as a plain string,
    inbound nodes as nested [[layer, node, tensor, kwargs]] lists."""
    return {"class_name": class_name, "name": name,
            "config": {"name": name, "trainable": True, "dtype": "float32", **config},
            "inbound_nodes": [[[src, 0, 0, {}] for src in inbound]] if inbound else []}


def legacy_keras2_h5(path: Path, weights_from: Path) -> Path:
    """The two-input, two-output model of `small_keras_model`, written with h5py the way tf.keras
    2.x (Keras 2) wrote HDF5 files: keras_version 2.15.0, a Keras 2 model_config, weight datasets
    named `kernel:0`. Keras 2 (tf_keras) is not installed, so the file is assembled by hand; the
    weights are copied from the Keras 3 model at `weights_from`, so both compute the same numbers."""
    import json

    import h5py

    keras = _tf.tf().keras
    source = keras.models.load_model(weights_from, compile=False)
    dense = {"use_bias": True, "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
             "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": None,
             "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
             "bias_constraint": None}
    layers = [
        {"class_name": "InputLayer", "name": "image", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, 12, 12, 3], "dtype": "float32", "sparse": False,
                    "ragged": False, "name": "image"}},
        _keras2_layer("Conv2D", "conv", {"filters": 4, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid",
                                         "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1,
                                         "activation": "relu", **dense}, ["image"]),
        _keras2_layer("BatchNormalization", "bn", {
            "axis": -1, "momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True,
            "beta_initializer": {"class_name": "Zeros", "config": {}},
            "gamma_initializer": {"class_name": "Ones", "config": {}},
            "moving_mean_initializer": {"class_name": "Zeros", "config": {}},
            "moving_variance_initializer": {"class_name": "Ones", "config": {}},
            "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None,
            "gamma_constraint": None}, ["conv"]),
        _keras2_layer("GlobalAveragePooling2D", "gap", {"data_format": "channels_last", "keepdims": False}, ["bn"]),
        {"class_name": "InputLayer", "name": "meta", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, 4], "dtype": "float32", "sparse": False, "ragged": False,
                    "name": "meta"}},
        _keras2_layer("Concatenate", "concat", {"axis": -1}, ["gap", "meta"]),
        _keras2_layer("Dense", "scores", {"units": 5, "activation": "softmax", **dense}, ["concat"]),
        _keras2_layer("Dense", "box", {"units": 4, "activation": "linear", **dense}, ["concat"]),
    ]
    config = {"class_name": "Functional", "config": {
        "name": "model", "layers": layers, "input_layers": [["image", 0, 0], ["meta", 0, 0]],
        "output_layers": [["scores", 0, 0], ["box", 0, 0]]}}
    weight_names = {"conv": ["kernel", "bias"], "bn": ["gamma", "beta", "moving_mean", "moving_variance"],
                    "scores": ["kernel", "bias"], "box": ["kernel", "bias"]}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(config)
        group = f.create_group("model_weights")
        group.attrs["keras_version"] = "2.15.0"
        group.attrs["backend"] = "tensorflow"
        group.attrs["layer_names"] = [layer["name"].encode() for layer in layers]
        for layer in layers:
            name = layer["name"]
            g = group.create_group(name)
            names = [f"{name}/{w}:0" for w in weight_names.get(name, [])]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for full, value in zip(names, source.get_layer(name).get_weights(), strict=True):
                g.create_dataset(full, data=np.asarray(value, dtype=np.float32))
    return path


def int8_tflite(keras_path: Path, path: Path) -> Path:
    """Full-integer TFLite of the two-input Keras model: int8 weights, activations, inputs and outputs,
    calibrated on a seeded representative dataset (keyed by signature input name)."""
    tf = _tf.tf()
    model = tf.keras.models.load_model(keras_path, compile=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(32):
            yield {"image": rng.uniform(-1, 1, (1, 12, 12, 3)).astype(np.float32),
                   "meta": rng.uniform(-1, 1, (1, 4)).astype(np.float32)}

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


def run_graph_def(graph_def, feeds: dict, fetch: str = "out:0") -> np.ndarray:
    """Run a GraphDef in a fresh TF session (the real runtime) and return one tensor."""
    tf = _tf.tf()
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as sess:
            return sess.run(fetch, feeds)


class Digits:
    """A small CNN trained on scikit-learn's digits (8x8 grayscale, pixels 0..16 scaled to 0..1),
    saved as .keras, with its held-out test split and calibration data as .npz and as PNG files."""

    def __init__(self, directory: Path, keras_path: Path, x_test: np.ndarray, y_test: np.ndarray,
                 calibration_npz: Path, images: Path):
        self.directory = directory
        self.keras = keras_path
        self.x_test = x_test
        self.y_test = y_test
        self.calibration_npz = calibration_npz
        self.images = images


def digits_cnn(directory: Path, epochs: int = 8) -> Digits:
    """Train conv-relu-pool-conv-relu-dense-softmax on 1,400 digits (a few seconds on 2 cores) and
    keep 397 for testing. Calibration: 100 training images as `image` in an .npz, and 40 as 8-bit
    grayscale PNGs (pixel = value / 16 * 255, so --preprocess mean=0,std=255 gives the model's input)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    keras = _tf.tf().keras
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(image)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(64, activation="relu", name="fc")(h)
    probs = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(image, probs)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    directory.mkdir(parents=True, exist_ok=True)
    keras_path = directory / "digits.keras"
    model.save(keras_path)
    calibration = directory / "calibration.npz"
    np.savez(calibration, image=x_train[:100])
    images = directory / "images"
    images.mkdir()
    for i in range(40):
        pixels = np.round(x_train[i, :, :, 0] * 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"digit_{i:03d}.png")
    return Digits(directory, keras_path, x_test, y_test, calibration, images)


SSD_INPUT = "normalized_input_image_tensor"
SSD_OUTPUTS = ("TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess:1",
               "TFLite_Detection_PostProcess:2", "TFLite_Detection_PostProcess:3")


def ssd_postprocess_pb(path: Path, *, size: int = 16, classes: int = 3, max_detections: int = 5) -> Path:
    """A tflite_graph.pb as TF's object detection export_tflite_ssd_graph writes it, in miniature:
    `normalized_input_image_tensor` [1, size, size, 3] (already (x / 128) - 1), a conv "box
    predictor" giving raw_outputs/box_encodings [1, N, 4] and raw_outputs/class_predictions
    [1, N, classes + 1] (sigmoid scores), an `anchors` Const [N, 4] (ycenter, xcenter, h, w), all
    feeding TFLite_Detection_PostProcess with the export's attributes. That op is not registered in
    TensorFlow, so the graph is written as NodeDefs. Weights are seeded random; anchors tile the
    image on the conv's output grid (N = (size / 4)^2 anchors, one per cell)."""
    tf = _tf.tf()
    rng = np.random.default_rng(7)
    grid = size // 4
    n = grid * grid
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, size, size, 3], name=SSD_INPUT)
        w1 = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32), name="FeatureExtractor/w")
        h = tf.nn.relu6(tf.nn.conv2d(x, w1, 2, "SAME"), name="FeatureExtractor/relu6")
        h = tf.nn.max_pool2d(h, 2, 2, "SAME", name="FeatureExtractor/pool")
        wb = tf.constant(rng.normal(0, 0.2, (1, 1, 8, 4)).astype(np.float32), name="BoxPredictor/box_w")
        wc = tf.constant(rng.normal(0, 0.5, (1, 1, 8, classes + 1)).astype(np.float32), name="BoxPredictor/cls_w")
        boxes = tf.reshape(tf.nn.conv2d(h, wb, 1, "SAME"), [1, n, 4], name="BoxPredictor/box_reshape")
        logits = tf.reshape(tf.nn.conv2d(h, wc, 1, "SAME") + 0.5, [1, n, classes + 1], name="BoxPredictor/cls_reshape")
        tf.identity(boxes, name="raw_outputs/box_encodings")
        tf.identity(tf.sigmoid(logits, name="convert_scores"), name="raw_outputs/class_predictions")
        centers = (np.arange(grid, dtype=np.float32) + 0.5) / grid
        cy, cx = np.meshgrid(centers, centers, indexing="ij")
        anchors = np.stack([cy.ravel(), cx.ravel(), np.full(n, 2.0 / grid), np.full(n, 2.0 / grid)], axis=1)
        tf.constant(anchors.astype(np.float32), name="anchors")
    graph_def = graph.as_graph_def()
    post = graph_def.node.add()
    post.name, post.op = "TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess"
    post.input.extend(["raw_outputs/box_encodings", "raw_outputs/class_predictions", "anchors"])
    post.attr["_output_quantized"].b = True
    post.attr["_output_types"].list.type.extend([tf.float32.as_datatype_enum] * 4)
    post.attr["_support_output_type_float_in_quantized_op"].b = True
    for key, value in (("max_detections", max_detections), ("max_classes_per_detection", 1),
                       ("detections_per_class", 100), ("num_classes", classes)):
        post.attr[key].i = value
    for key, value in (("nms_score_threshold", 1e-8), ("nms_iou_threshold", 0.6), ("y_scale", 10.0),
                       ("x_scale", 10.0), ("h_scale", 5.0), ("w_scale", 5.0)):
        post.attr[key].f = value
    post.attr["use_regular_nms"].b = False
    path.write_bytes(graph_def.SerializeToString())
    return path


def broken_int8_pb(digits: Digits, path: Path) -> Path:
    """The trained digits CNN as a frozen .pb, built so that its `fc` layer breaks int8 and
    nothing else does: conv2 gets a 33rd channel that is always 0 (zero weights, bias -1, ReLU),
    and fc's weights from that channel's 16 features are 1e4. The float model computes exactly
    what the Keras model does (the outlier weights only ever multiply zeros), but per-channel int8
    scales of fc become ~1e4/127, so all its real weights round to 0."""
    tf = _tf.tf()
    keras_model = tf.keras.models.load_model(digits.keras)
    w = {layer.name: [np.asarray(v) for v in layer.get_weights()] for layer in keras_model.layers}
    k2, b2 = w["conv2"]
    k2 = np.concatenate([k2, np.zeros((3, 3, 16, 1), np.float32)], axis=3)
    b2 = np.concatenate([b2, [-1.0]]).astype(np.float32)
    fc_w, fc_b = w["fc"]
    rows = fc_w.reshape(4, 4, 32, 64)
    outlier = np.full((4, 4, 1, 64), 1e4, np.float32)
    fc_w = np.concatenate([rows, outlier], axis=2).reshape(4 * 4 * 33, 64)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 1], name="image")
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w["conv1"][0], 1, "SAME"), w["conv1"][1]), name="conv1")
        h = tf.nn.max_pool2d(h, 2, 2, "VALID", name="pool")
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, k2, 1, "SAME"), b2), name="conv2")
        h = tf.reshape(h, [-1, 4 * 4 * 33], name="flat")
        h = tf.nn.relu(tf.nn.bias_add(tf.matmul(h, fc_w), fc_b), name="fc")
        logits = tf.nn.bias_add(tf.matmul(h, w["probs"][0]), w["probs"][1])
        tf.nn.softmax(logits, name="probs")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def chromium() -> str | None:
    """A headless-capable Chromium on PATH (CI installs Debian's), or None."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None
