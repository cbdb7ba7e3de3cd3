"""The set-ups of docs/scaling.md on scikit-learn's digits, nothing downloaded.

    python examples/scaling.py data [--out scale-demo]
    python examples/scaling.py qat [--out scale-demo] [--strategy mirrored|multi-worker] [--epochs 3]

`data` writes, into OUT:
  digits.keras                a small float CNN (conv+BN+ReLU, pool, conv, dense, softmax) trained on
                              1,437 digits (8x8x1 in 0..1)
  train-0000{0..3}-of-00004.tfrecord, val-00000-of-00001.tfrecord
                              the 1,437 training and 360 test digits as tf.train.Example records:
                              `pixels` (64 floats) and `digit` (int64)
  train.toml, val.toml        dataset files for QAT: pixels -> x, digit -> y
  calib.toml                  a dataset file for calibration: pixels -> the model input `image`
  digits_data.py              an entry point: `digits_data:calibration` returns a tf.data.Dataset

`qat` fine-tunes digits.keras with quantization-aware training on train.toml (val.toml for the
accuracies) and writes digits_qat.keras and digits_qat.tflite; with --strategy it trains under
tf.distribute (multi-worker: start it once per worker, each with its TF_CONFIG). --backup-dir
keeps a backup to resume from after an interruption.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ENTRY_POINT = '''"""An entry point for tfshrink: `--calibration digits_data:calibration` (run from this folder)."""

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits


def calibration():
    """500 digits as {"image": [8, 8, 1] floats in 0..1}, one per element."""
    images = (load_digits().images[:500] / 16.0).astype(np.float32)[..., None]
    return tf.data.Dataset.from_tensor_slices({"image": images})
'''


def write_data(out: Path) -> None:
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    out.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    x_train, x_val, y_train, y_val = train_test_split(x, digits.target, test_size=360, random_state=0,
                                                      stratify=digits.target)
    for name, xs, ys, files in (("train", x_train, y_train, 4), ("val", x_val, y_val, 1)):
        writers = [tf.io.TFRecordWriter(str(out / f"{name}-{k:05d}-of-{files:05d}.tfrecord")) for k in range(files)]
        for i in range(len(xs)):
            feature = {"pixels": tf.train.Feature(float_list=tf.train.FloatList(value=xs[i].ravel())),
                       "digit": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(ys[i])]))}
            writers[i % files].write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        for writer in writers:
            writer.close()
        (out / f"{name}.toml").write_text(f'files = "{name}-*.tfrecord"\nfeatures = "pixels=x:float32:8,8,1; digit=y:int64"\n')
    (out / "calib.toml").write_text('files = "train-*.tfrecord"\nfeatures = "pixels=image:float32:8,8,1"\n')
    (out / "digits_data.py").write_text(ENTRY_POINT)

    keras = tf.keras
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(image)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(64, activation="relu")(h)
    model = keras.Model(image, keras.layers.Dense(10, activation="softmax")(h), name="digits")
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train.astype(np.int64), epochs=15, batch_size=32, verbose=0)
    model.save(out / "digits.keras")
    print(f"wrote {out}: digits.keras, {len(x_train)} + {len(x_val)} digits as TFRecords, train.toml, val.toml, "
          "calib.toml, digits_data.py")


def run_qat(out: Path, strategy: str | None, epochs: int, backup_dir: str | None) -> None:
    from tfshrink.qat.train import qat_keras

    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    r = qat_keras(out / "digits.keras", out / "train.toml", out / "digits_qat.keras", epochs=epochs,
                  val=out / "val.toml", tflite=out / "digits_qat.tflite", strategy=strategy, backup_dir=backup_dir,
                  progress=_progress(task))
    print(f"\n{task.get('type', 'single')} {task.get('index', '')}: float {r.float_metric:.2f}%, "
          f"QAT {r.qat_metric:.2f}%" + (f", int8 TFLite {r.int8_metric:.2f}%" if r.int8_metric is not None else ""))
    for note in r.notes:
        print(f"  note: {note}")


def _progress(task: dict) -> object:
    label = f"{task.get('type', '')} {task.get('index', '')}".strip() or "qat"
    last = [-1]

    def report(done: int, total: int) -> None:
        percent = 100 * done // total
        if percent // 10 != last[0] // 10:
            last[0] = percent
            print(f"{label}: {done}/{total} samples", file=sys.stderr, flush=True)

    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("data", "qat"))
    parser.add_argument("--out", type=Path, default=Path("scale-demo"))
    parser.add_argument("--strategy", choices=("mirrored", "multi-worker"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--backup-dir")
    args = parser.parse_args()
    if args.what == "data":
        write_data(args.out)
    else:
        run_qat(args.out, args.strategy, args.epochs, args.backup_dir)


if __name__ == "__main__":
    main()
