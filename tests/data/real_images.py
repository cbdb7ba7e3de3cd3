"""Real-image samples for the streaming tests, nothing downloaded: scikit-image's bundled photos
and its LFW face subset, cut into deterministic crops (seeded positions and sizes, resized) and
written as sharded TFRecord files of JPEG-encoded images, with a dataset file that names them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tfshrink import _tf

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "camera", "coins", "moon", "page", "text", "grass", "gravel", "brick", "colorwheel")


def _sources() -> list[np.ndarray]:
    """The bundled photos (RGB uint8) and the 200 LFW faces (gray, 25x25), as RGB uint8 arrays."""
    import skimage.data

    images = []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        images.append(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    for face in skimage.data.lfw_subset():
        gray = np.round(face * 255).astype(np.uint8)
        images.append(np.stack([gray] * 3, axis=-1))
    return images


def crops(count: int, size: int = 64, seed: int = 0) -> Iterator[np.ndarray]:
    """`count` RGB crops of `size` x `size`: source i % sources, a seeded square of 40-100% of the
    shorter side at a seeded place, horizontally flipped every other time, resized (bilinear)."""
    from PIL import Image

    sources = _sources()
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = sources[i % len(sources)]
        h, w = image.shape[:2]
        side = max(8, int(min(h, w) * rng.uniform(0.4, 1.0)))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = image[top:top + side, left:left + side]
        if i % 2:
            crop = crop[:, ::-1]
        yield np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BILINEAR))


def write_tfrecords(directory: Path, count: int, *, shards: int = 10, size: int = 64, input_name: str = "image",
                    seed: int = 0) -> Path:
    """`count` JPEG crops in `shards` TFRecord files (feature `image`, plus its source index as
    `label`) and `calib.toml` naming them for `input_name`; returns the .toml."""
    from PIL import Image

    tf = _tf.tf()
    directory.mkdir(parents=True, exist_ok=True)
    writers = [tf.io.TFRecordWriter(str(directory / f"crops-{k:05d}-of-{shards:05d}.tfrecord")) for k in range(shards)]
    per_shard = -(-count // shards)
    try:
        for i, crop in enumerate(crops(count, size, seed)):
            buffer = io.BytesIO()
            Image.fromarray(crop).save(buffer, format="JPEG", quality=90)
            example = tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buffer.getvalue()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 216]))}))
            writers[i // per_shard].write(example.SerializeToString())
    finally:
        for writer in writers:
            writer.close()
    spec = directory / "calib.toml"
    spec.write_text(f'files = "crops-*.tfrecord"\nfeatures = "image={input_name}:uint8:{size},{size},3"\n')
    return spec


def small_cnn(path: Path, size: int = 64) -> Path:
    """A small image classifier (conv-conv-pool-dense) on size x size RGB inputs in [-1, 1]."""
    keras = _tf.tf().keras
    keras.utils.set_random_seed(0)
    image = keras.Input((size, size, 3), name="image")
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(image)
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    probs = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    keras.Model(image, probs, name="small_cnn").save(path)
    return path
