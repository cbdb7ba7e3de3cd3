"""MTCNN's ONet, rebuilt as a TF1 graph (facenet's layout) from the weights the `mtcnn` package ships.

facenet's detect_face.py is how most people met MTCNN in TensorFlow: variables under
`onet/conv1/weights`, PReLU spelled relu(x) - alpha * relu(-x), softmax spelled
max/sub/exp/sum/realdiv, outputs `onet/prob1`, `onet/conv6-2/conv6-2` (boxes) and
`onet/conv6-3/conv6-3` (landmarks). The weights are the `mtcnn` package's onet.lz4; its Keras
ONet transposes H and W before flattening (Caffe order), and so does this graph, so both compute
the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf

ONET_OUTPUTS = ("onet/prob1", "onet/conv6-2/conv6-2", "onet/conv6-3/conv6-3")
# The astronaut photo that scikit-image ships (NASA, public domain): the face box MTCNN finds.
ASTRONAUT_FACE = (64, 171, 170, 277)  # top, bottom, left, right


def onet_weights() -> list[np.ndarray]:
    """The 21 ONet arrays from the mtcnn package, in its Keras layer order."""
    return net_weights("onet")


def net_weights(net: str) -> list[np.ndarray]:
    """The arrays of "pnet", "rnet" or "onet" from the mtcnn package, in its Keras layer order."""
    import importlib.resources

    import joblib

    path = importlib.resources.files("mtcnn.assets.weights") / f"{net}.lz4"
    with importlib.resources.as_file(path) as p:
        return [np.asarray(w, dtype=np.float32) for w in joblib.load(p)]


def normalize(pixels: np.ndarray) -> np.ndarray:
    """MTCNN's input normalization: (x - 127.5) / 128 on RGB pixels."""
    return ((np.asarray(pixels, dtype=np.float32) - 127.5) / 128.0).astype(np.float32)


def face_crop(size: int = 48) -> np.ndarray:
    """A real face: the astronaut's face from scikit-image's sample photo, size x size RGB uint8."""
    import skimage.data
    from skimage.transform import resize

    top, bottom, left, right = ASTRONAUT_FACE
    crop = skimage.data.astronaut()[top:bottom, left:right]
    return (resize(crop, (size, size), anti_aliasing=True) * 255).round().astype(np.uint8)


# The cameraman photo scikit-image ships (CC0, Lav Varshney): his face in
# profile behind the camera, a harder face for ONet (p ~ 0.9).
CAMERAMAN_FACE = (100, 200, 180, 280)  # top, bottom, left, right


def cameraman_face(size: int = 48) -> np.ndarray:
    """A second real face: the cameraman's, from scikit-image's sample photo, size x size RGB uint8."""
    import skimage.data
    from skimage.color import gray2rgb
    from skimage.transform import resize

    top, bottom, left, right = CAMERAMAN_FACE
    crop = gray2rgb(skimage.data.camera()[top:bottom, left:right])
    return (resize(crop, (size, size), anti_aliasing=True) * 255).round().astype(np.uint8)


def non_face_crops(size: int = 48, count: int = 4) -> np.ndarray:
    """Real non-face patches (a rocket, coffee, a cat's fur, bricks) from scikit-image's photos."""
    import skimage.data
    from skimage.color import gray2rgb
    from skimage.transform import resize

    sources = [skimage.data.rocket()[100:300, 200:400], skimage.data.coffee()[50:250, 100:300],
               skimage.data.chelsea()[200:300, 50:150], gray2rgb(skimage.data.brick()[0:200, 0:200])]
    out = [(resize(s, (size, size), anti_aliasing=True) * 255).round().astype(np.uint8) for s in sources]
    return np.stack(out[:count])


def lfw_crops(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """(faces, non-faces): scikit-image's lfw_subset, 100 face and 100 non-face 25x25 grayscale
    crops from Labeled Faces in the Wild, as size x size RGB uint8 (gray repeated, bilinear)."""
    import skimage.data
    from skimage.transform import resize

    gray = skimage.data.lfw_subset()
    out = np.stack([(resize(np.repeat(g[..., None], 3, axis=2), (size, size), anti_aliasing=True) * 255)
                    .round().astype(np.uint8) for g in gray])
    return out[:100], out[100:]


def _prelu(tf: Any, x: Any, name: str, alpha_init: np.ndarray) -> Any:
    v1 = tf.compat.v1
    with v1.variable_scope(name):
        alpha = v1.get_variable("alpha", initializer=alpha_init.reshape(-1), use_resource=False)
        return tf.add(tf.nn.relu(x), tf.multiply(alpha, -tf.nn.relu(-x)))


def _conv(tf: Any, x: Any, name: str, kernel: np.ndarray, bias: np.ndarray, padding: str = "VALID",
          bias_name: str | None = None) -> Any:
    """Conv + bias under scope `name`; the BiasAdd is `name/name` (or `name/bias_name`)."""
    v1 = tf.compat.v1
    with v1.variable_scope(name):
        w = v1.get_variable("weights", initializer=kernel, use_resource=False)
        b = v1.get_variable("biases", initializer=bias, use_resource=False)
        y = tf.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding=padding)
        return tf.nn.bias_add(y, b, name=bias_name or name)


def _fc(tf: Any, x: Any, name: str, kernel: np.ndarray, bias: np.ndarray) -> Any:
    v1 = tf.compat.v1
    with v1.variable_scope(name):
        w = v1.get_variable("weights", initializer=kernel, use_resource=False)
        b = v1.get_variable("biases", initializer=bias, use_resource=False)
        return tf.nn.bias_add(tf.matmul(x, w), b, name=name)


def _softmax(tf: Any, x: Any, name: str, axis: int = 1) -> Any:
    m = tf.reduce_max(x, axis=axis, keepdims=True)
    e = tf.exp(x - m)
    return tf.math.divide(e, tf.reduce_sum(e, axis=axis, keepdims=True), name=name)


PNET_OUTPUTS = ("pnet/prob1", "pnet/conv4-2/BiasAdd")
RNET_OUTPUTS = ("rnet/prob1", "rnet/conv5-2/conv5-2")


def _trunk(tf: Any, x: Any, w: list[np.ndarray], pools: list[tuple[int, str] | None]) -> Any:
    """conv{k} -> prelu{k} [-> max pool{k}] for k = 1.. len(pools): R- and ONet's shared front (a
    pool is (size, padding), stride 2; None: no pool after that conv)."""
    h = x
    for k, pool in enumerate(pools, start=1):
        i = 3 * (k - 1)
        h = _prelu(tf, _conv(tf, h, f"conv{k}", w[i], w[i + 1]), f"prelu{k}", w[i + 2])
        if pool is not None:
            h = tf.nn.max_pool2d(h, pool[0], 2, pool[1], name=f"pool{k}")
    return h


def build_pnet(weights: list[np.ndarray] | None = None) -> tuple[Any, Any]:
    """PNet (fully convolutional, any input size) in the current default graph, facenet's names.
    The mtcnn package stores the box branch first; facenet calls it conv4-2 and the face/non-face
    branch conv4-1. Returns (input placeholder, [prob, boxes])."""
    tf = _tf.tf()
    w = weights if weights is not None else net_weights("pnet")
    v1 = tf.compat.v1
    with v1.variable_scope("pnet"):
        x = v1.placeholder(tf.float32, [None, None, None, 3], name="input")
        h = _prelu(tf, _conv(tf, x, "conv1", w[0], w[1], bias_name="BiasAdd"), "PReLU1", w[2])
        h = tf.nn.max_pool2d(h, 2, 2, "SAME", name="pool1")
        h = _prelu(tf, _conv(tf, h, "conv2", w[3], w[4], bias_name="BiasAdd"), "PReLU2", w[5])
        h = _prelu(tf, _conv(tf, h, "conv3", w[6], w[7], bias_name="BiasAdd"), "PReLU3", w[8])
        logits = _conv(tf, h, "conv4-1", w[11], w[12], bias_name="BiasAdd")
        prob = _softmax(tf, logits, "prob1", axis=3)
        boxes = _conv(tf, h, "conv4-2", w[9], w[10], bias_name="BiasAdd")
    return x, [prob, boxes]


def build_rnet(weights: list[np.ndarray] | None = None) -> tuple[Any, Any]:
    """RNet (24x24 crops) in the current default graph, facenet's names. Returns (input, [prob, boxes])."""
    tf = _tf.tf()
    w = weights if weights is not None else net_weights("rnet")
    v1 = tf.compat.v1
    with v1.variable_scope("rnet"):
        x = v1.placeholder(tf.float32, [None, 24, 24, 3], name="input")
        h = _trunk(tf, x, w, [(3, "SAME"), (3, "VALID"), None])
        h = tf.reshape(tf.transpose(h, [0, 2, 1, 3]), [-1, 576])  # Caffe's flatten order
        h = _prelu(tf, _fc(tf, h, "conv4", w[9], w[10]), "prelu4", w[11])
        logits = _fc(tf, h, "conv5-1", w[14], w[15])
        prob = _softmax(tf, logits, "prob1")
        boxes = _fc(tf, h, "conv5-2", w[12], w[13])
    return x, [prob, boxes]


def build_onet(weights: list[np.ndarray] | None = None) -> tuple[Any, Any]:
    """Build ONet in the current default graph (TF1 style, VariableV2 variables).
    Returns (input placeholder, [prob, boxes, landmarks])."""
    tf = _tf.tf()
    w = weights if weights is not None else onet_weights()
    v1 = tf.compat.v1
    with v1.variable_scope("onet"):
        x = v1.placeholder(tf.float32, [None, 48, 48, 3], name="input")
        h = _trunk(tf, x, w, [(3, "SAME"), (3, "VALID"), (2, "SAME"), None])
        h = tf.reshape(tf.transpose(h, [0, 2, 1, 3]), [-1, 1152])  # Caffe's flatten order
        h = _prelu(tf, _fc(tf, h, "conv5", w[12], w[13]), "prelu5", w[14])
        boxes = _fc(tf, h, "conv6-2", w[15], w[16])
        landmarks = _fc(tf, h, "conv6-3", w[17], w[18])
        logits = _fc(tf, h, "conv6-1", w[19], w[20])
        prob = _softmax(tf, logits, "prob1")
    return x, [prob, boxes, landmarks]


MTCNN_OUTPUTS = PNET_OUTPUTS + RNET_OUTPUTS + ONET_OUTPUTS


def save_onet_checkpoint(directory: str | Path, step: int = 0, *, nets: tuple[str, ...] = ("onet",)) -> Path:
    """Write ONet (or several of "pnet", "rnet", "onet" in one graph, as facenet's frozen MTCNN has
    them) as a TF1 checkpoint (model.ckpt-STEP.meta/.index/.data + `checkpoint`)."""
    tf = _tf.tf()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    builders = {"pnet": build_pnet, "rnet": build_rnet, "onet": build_onet}
    with graph.as_default():
        for net in nets:
            builders[net]()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(sess, str(directory / "model.ckpt"), global_step=step)
    return Path(prefix)
