"""MTCNN ONet in int8 for each --target: XNNPACK partitions, size, LiteRT latency and accuracy, next
to float32, dynamic-range and TFLiteConverter's own full int8, in one run.

Run: python benchmarks/onet_targets.py [--out DIR] [--rounds N] [--seconds S] [--json]

ONet has the mtcnn package's real weights (tfshrink.zoo.mtcnn) and 5 PReLUs, which XNNPACK (in
ai-edge-litert 2.3) has no int8 kernel for. Models, all from the same frozen graph:
- float32, dynamic-range: `tfshrink convert --quantize none / dynamic`;
- int8 --target cpu (tfshrink's default) and --target int8-only, calibrated on 100 PNGs: scikit-
  image's LFW crops 0..49 of faces and of non-faces (tests/conversion/test_onet_int8.py's set);
- TFLiteConverter full int8: tf.lite's own converter on the same frozen graph and calibration
  (float I/O, min/max ranges, every op int8 it can, nothing tfshrink does).
Columns:
- partitions: DELEGATE nodes after LiteRT applies XNNPACK (tfshrink.conversion.delegation: the
  model loaded, not timed), and the ops XNNPACK left outside;
- latency: LiteRT with XNNPACK, 1 thread, via tfshrink.benchmarking (open_runner, measure): the
  models take turns, --rounds rounds of at least --seconds each, the median of each model's p50;
- held-out: the largest and mean change of the face probability against the float graph (TF) on
  106 crops never used for calibration: LFW 50..99 faces and non-faces, the astronaut and the
  cameraman faces, 4 photo non-faces;
- colour photos: the same on 72 seeded crops of scikit-image's colour photos (colorwheel, chelsea,
  coffee, ...): inputs unlike the grey LFW calibration set, shown apart because their error comes
  from activation ranges the calibration never saw, not from the target's choices.
Targets (exit 1 when one misses): --target cpu in one XNNPACK partition, no slower than float32
(5% timing slack) and within 1.5x of dynamic-range; both targets' held-out worst change <= 0.03;
--target int8-only with no float op.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "out" / "onet_targets"
PREPROCESS = "size=48x48,mean=127.5,std=128,color=rgb"
PHOTOS = ("colorwheel", "chelsea", "coffee", "rocket", "astronaut", "hubble_deep_field", "immunohistochemistry",
          "retina", "logo")


def held_out() -> np.ndarray:
    from tfshrink.zoo.mtcnn import cameraman_face, face_crop, lfw_crops, non_face_crops

    faces, others = lfw_crops()
    return np.concatenate([faces[50:], others[50:], face_crop()[None], cameraman_face()[None], non_face_crops()])


def colour_crops(per_photo: int = 8) -> np.ndarray:
    """Seeded square crops of scikit-image's colour photos, resized to 48x48 RGB uint8."""
    import skimage.data
    from skimage.transform import resize

    out = []
    for k, name in enumerate(PHOTOS):
        image = getattr(skimage.data, name)()
        image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
        pixels = image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else max(float(image.max()), 1e-9))
        h, w = pixels.shape[:2]
        rng = np.random.default_rng(k)
        for _ in range(per_photo):
            side = int(rng.integers(min(h, w) // 8, min(h, w) // 2))
            y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            crop = resize(pixels[y:y + side, x:x + side], (48, 48), anti_aliasing=True)
            out.append((crop * 255).round().clip(0, 255).astype(np.uint8))
    return np.stack(out)


def build(out: Path) -> dict[str, Path]:
    """Every model, converted afresh into `out`."""
    import tensorflow as tf
    from PIL import Image

    import tfshrink
    from tfshrink.zoo import mtcnn

    out.mkdir(parents=True, exist_ok=True)
    pb = out / "onet.pb"
    if not pb.is_file():
        tfshrink.freeze(mtcnn.save_onet_checkpoint(out / "onet_ckpt"), pb, verify=False)
    folder = out / "calibration"
    faces, others = mtcnn.lfw_crops()
    if not folder.is_dir():
        folder.mkdir()
        for i in range(50):
            Image.fromarray(faces[i]).save(folder / f"face_{i:03d}.png")
            Image.fromarray(others[i]).save(folder / f"other_{i:03d}.png")
    paths = {}
    for label, kw in (("float32", {"quantize": "none"}), ("dynamic-range", {"quantize": "dynamic"}),
                      ("int8 --target cpu", {"quantize": "int8", "calibration": folder}),
                      ("int8 --target int8-only", {"quantize": "int8", "calibration": folder, "target": "int8-only"})):
        path = out / (label.replace(" ", "_").replace("--", "") + ".tflite")
        tfshrink.convert(pb, path, preprocess=PREPROCESS, verify=False, **kw)
        paths[label] = path
    # TFLiteConverter on its own: the frozen graph, the same 100 crops, full int8, float I/O.
    calibration = np.stack([mtcnn.normalize(c) for c in np.concatenate([faces[:50], others[:50]])])
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(pb.read_bytes())
    converter = tf.compat.v1.lite.TFLiteConverter(graph_def, None, None,
                                                  input_arrays_with_shape=[("onet/input", [1, 48, 48, 3])],
                                                  output_arrays=["onet/prob1", "onet/conv6-2/conv6-2",
                                                                 "onet/conv6-3/conv6-3"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path = out / "tflite_converter_int8.tflite"
    path.write_bytes(converter.convert())
    paths["TFLiteConverter full int8"] = path
    return paths


def probabilities(path: Path, crops: np.ndarray) -> np.ndarray:
    from tfshrink.model.tflite import TFLiteModel
    from tfshrink.zoo.mtcnn import normalize

    model = TFLiteModel(path)
    try:
        name = model.inputs[0].name
        prob = next(o.name for o in model.outputs if "prob1" in o.name)
        return np.array([float(model.run({name: normalize(c)[None]})[prob][0, 1]) for c in crops])
    finally:
        model.close()


def reference(pb: Path, crops: np.ndarray) -> np.ndarray:
    import tfshrink
    from tfshrink.zoo.mtcnn import normalize

    with tfshrink.load(pb) as source:
        return np.array([float(source.run({"onet/input": normalize(c)[None]})["onet/prob1"][0, 1]) for c in crops])


def latencies(paths: dict[str, Path], rounds: int, seconds: float) -> dict[str, float]:
    """Median over rounds of each model's p50 (ms), LiteRT with XNNPACK, 1 thread, models in turns."""
    from tfshrink import _tf
    from tfshrink.benchmarking import latency_stats, measure
    from tfshrink.benchmarking.runners import open_runner

    runners = {}
    try:
        for label, path in paths.items():
            with _tf.quiet_native():
                runners[label] = open_runner(path, threads=1)
            runners[label].first_run()
            measure(runners[label].invoke, runs=20)
        p50s: dict[str, list[float]] = {label: [] for label in paths}
        for _ in range(rounds):
            for label, runner in runners.items():
                p50s[label].append(latency_stats(measure(runner.invoke, runs=20, min_seconds=seconds))["p50"])
    finally:
        for runner in runners.values():
            runner.close()
    return {label: statistics.median(v) for label, v in p50s.items()}


def measure_all(out: Path, rounds: int, seconds: float) -> dict[str, Any]:
    from tfshrink.conversion.delegation import xnnpack_delegation
    from tfshrink.tflite.metadata import precision

    paths = build(out)
    held, colour = held_out(), colour_crops()
    ref_held, ref_colour = reference(out / "onet.pb", held), reference(out / "onet.pb", colour)
    speed = latencies(paths, rounds, seconds)
    rows = {}
    for label, path in paths.items():
        data = path.read_bytes()
        split = xnnpack_delegation(data)
        d_held = np.abs(probabilities(path, held) - ref_held)
        d_colour = np.abs(probabilities(path, colour) - ref_colour)
        prec = precision(data)
        rows[label] = {"bytes": len(data), "partitions": split.partitions, "outside": split.outside_ops(),
                       "float_ops": prec.float_ops, "p50_ms": speed[label],
                       "held_out_max": float(d_held.max()), "held_out_mean": float(d_held.mean()),
                       "held_out_worst_crop": int(d_held.argmax()),
                       "colour_max": float(d_colour.max()), "colour_mean": float(d_colour.mean()),
                       "colour_worst_crop": f"{PHOTOS[int(d_colour.argmax()) // 8]} #{int(d_colour.argmax()) % 8}"}
    cpu, only = rows["int8 --target cpu"], rows["int8 --target int8-only"]
    checks = {
        "cpu: one XNNPACK partition": cpu["partitions"] == 1 and not cpu["outside"],
        "cpu: no slower than float32 (5% slack)": cpu["p50_ms"] <= 1.05 * rows["float32"]["p50_ms"],
        "cpu: within 1.5x of dynamic-range": cpu["p50_ms"] <= 1.5 * rows["dynamic-range"]["p50_ms"],
        "cpu: held-out worst change <= 0.03": cpu["held_out_max"] <= 0.03,
        "int8-only: no float op": only["float_ops"] == {},
        "int8-only: held-out worst change <= 0.03": only["held_out_max"] <= 0.03,
    }
    return {"rows": rows, "checks": checks, "held_out": len(held), "colour_crops": len(colour),
            "rounds": rounds, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="the least time of one model's turn")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent / "src"))
    report = measure_all(args.out, args.rounds, args.seconds)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        rows = report["rows"]
        dyn = rows["dynamic-range"]["p50_ms"]
        print(f"MTCNN ONet, LiteRT XNNPACK 1 thread (median of {args.rounds} rounds' p50); face probability "
              f"change vs float on {report['held_out']} held-out crops and {report['colour_crops']} colour photo crops\n")
        print("| model | bytes | XNNPACK partitions | outside XNNPACK | p50 µs | x dynamic | held-out max | "
              "held-out mean | colour max | colour mean |")
        print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, r in rows.items():
            outside = ", ".join(f"{op} x{n}" for op, n in r["outside"].items()) or "none"
            print(f"| {label} | {r['bytes']:,} | {r['partitions']} | {outside} | {1000 * r['p50_ms']:.1f} | "
                  f"{r['p50_ms'] / dyn:.2f} | {r['held_out_max']:.4f} | {r['held_out_mean']:.4f} | "
                  f"{r['colour_max']:.4f} ({r['colour_worst_crop']}) | {r['colour_mean']:.4f} |")
        print()
        for name, ok in report["checks"].items():
            print(f"{'ok  ' if ok else 'MISS'} {name}")
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
