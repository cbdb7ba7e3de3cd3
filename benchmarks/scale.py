"""Scaling out on one machine: a recipe's independent steps serially and on a local Ray cluster.

Run: python benchmarks/scale.py [--out DIR] [--workers N] [--model mobilenet_v2|inception_v3] [--json]

1. The model: Keras MobileNetV2 or InceptionV3 (weights=None, seeded batch-norm statistics), frozen;
   the same .pb benchmarks/transforms.py and inspect_speed.py build (cached in benchmarks/out).
2. A recipe of 6 independent steps: convert to float32, float16, dynamic-range and int16x8 (random
   calibration, 8 samples), and two verify steps (the .pb against itself, and against a float
   .tflite made before the timing, so that no step waits for another).
3. Wall time of `run_recipe` serially, then with `workers=N` (a local Ray cluster started for the
   run: its start-up is timed apart, as `ray.init` + `ray.shutdown` of an empty cluster), each
   into a fresh folder with --force, after one untimed warm-up of each. The artifacts of the two
   runs are compared byte for byte.

4. Evaluation over shards: the digits CNN (trained on scikit-learn's digits, as the tests do)
   against its int8 .tflite on 10,000 real digits (the 1,797 of scikit-learn shifted by up to one
   pixel, written as 10 TFRecord files), as one recipe verify step with `shards = 2`: serially (the
   two shards one after the other) and with --workers 2 (a Ray task each), then merged.

Reported: serial and parallel wall time, the speed-up, Ray's start-up overhead, and whether the
artifacts are identical (exit 1 if not). On 2 cores the ceiling is 2x minus start-up; each Ray
worker imports TensorFlow once (about as long as one conversion of a small model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "out" / "scale"

RECIPE = """\
[[step]]
kind = "convert"
name = "float32"
input = "{pb}"
verify_samples = 4

[[step]]
kind = "convert"
name = "float16"
input = "{pb}"
quantize = "float16"
verify_samples = 4

[[step]]
kind = "convert"
name = "dynamic"
input = "{pb}"
quantize = "dynamic"
verify_samples = 4

[[step]]
kind = "convert"
name = "int16x8"
input = "{pb}"
quantize = "int16x8"
calibration = "random"
calibration_samples = 8
verify_samples = 4

[[step]]
kind = "verify"
name = "pb_vs_pb"
a = "{pb}"
b = "{pb}"

[[step]]
kind = "verify"
name = "pb_vs_tflite"
a = "{pb}"
b = "{tflite}"
atol = 1e-3
rtol = 1e-2
"""


def _artifacts(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".tfshrink-cache" not in p.parts and p.name != "summary.json"}


EVAL = """\
[[step]]
kind = "verify"
name = "int8_vs_float"
a = "{keras}"
b = "{tflite}"
inputs = "records/*.tfrecord"
inputs_spec = "pixels=input:float32:8,8,1"
samples = 100000
shards = {shards}
atol = 1.0
"""


def digits_records(folder: Path, count: int = 10_000, files: int = 10) -> None:
    """`count` real digits (scikit-learn's 1,797, each shifted by -1..1 pixels in x and y) as `files`
    TFRecord files of float pixels in [0, 1], the way the digits CNN takes them."""
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits

    if len(list(folder.glob("*.tfrecord"))) == files:
        return
    folder.mkdir(parents=True, exist_ok=True)
    images = load_digits().images.astype(np.float32) / 16.0
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    writers = [tf.io.TFRecordWriter(str(folder / f"digits-{k:02d}.tfrecord")) for k in range(files)]
    for i in range(count):
        dy, dx = shifts[(i // len(images)) % len(shifts)]
        image = np.roll(images[i % len(images)], (dy, dx), axis=(0, 1))
        feature = {"pixels": tf.train.Feature(float_list=tf.train.FloatList(value=image.ravel()))}
        writers[i * files // count].write(tf.train.Example(features=tf.train.Features(feature=feature))
                                          .SerializeToString())
    for writer in writers:
        writer.close()


def evaluation(out: Path, workers: int) -> dict[str, Any]:
    import tfshrink
    from tfshrink.recipe import run_recipe

    sys.path.insert(0, str(ROOT))
    from tests import builders

    folder = out / "eval"
    keras = folder / "digits.keras"
    if not keras.is_file():
        builders.digits_cnn(folder)
    tflite = folder / "digits_int8.tflite"
    if not tflite.is_file():
        tfshrink.convert(keras, tflite, quantize="int8", calibration=folder / "calibration.npz", verify=False)
    digits_records(folder / "records")
    recipe = folder / "eval.toml"
    recipe.write_text(EVAL.format(keras=keras, tflite=tflite, shards=workers))
    times: dict[str, float] = {}
    for label, kw in (("serial", {}), ("parallel", {"workers": workers})):
        t0 = time.perf_counter()
        result = run_recipe(recipe, out=folder / label, force=True, **kw)
        times[label] = time.perf_counter() - t0
        samples = json.loads((folder / label / "int8_vs_float.json").read_text())["samples"]
        assert result.passed, result.steps[0].error
    same = (folder / "serial" / "int8_vs_float.json").read_bytes() == \
        (folder / "parallel" / "int8_vs_float.json").read_bytes()
    return {"samples": samples, "serial_s": times["serial"], "parallel_s": times["parallel"],
            "speedup": times["serial"] / times["parallel"], "identical": same}


def ray_startup(workers: int) -> float:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.shutdown()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", choices=("mobilenet_v2", "inception_v3"), default="mobilenet_v2")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import transforms  # benchmarks/transforms.py builds the MobileNetV2 .pb

    import tfshrink
    from tfshrink.recipe import run_recipe

    args.out.mkdir(parents=True, exist_ok=True)
    if args.model == "inception_v3":
        import inspect_speed  # benchmarks/inspect_speed.py builds the InceptionV3 .pb

        pb = inspect_speed.build_pb(HERE / "out")
    else:
        pb = transforms.build_pb(HERE / "out", "mobilenet_v2")
    tflite = args.out / "reference.tflite"
    if not tflite.is_file():
        tfshrink.convert(pb, tflite, verify=False)
    recipe = args.out / "recipe.toml"
    recipe.write_text(RECIPE.format(pb=pb, tflite=tflite))
    timings: dict[str, float] = {}
    for label, kw in (("serial", {}), (f"workers={args.workers}", {"workers": args.workers})):
        run_recipe(recipe, out=args.out / f"{label}-warm", force=True, **kw)  # imports, page cache
        t0 = time.perf_counter()
        run_recipe(recipe, out=args.out / label, force=True, **kw)
        timings[label] = time.perf_counter() - t0
    startup = ray_startup(args.workers)
    same = _artifacts(args.out / "serial") == _artifacts(args.out / f"workers={args.workers}")
    evaluated = evaluation(args.out, args.workers)
    result: dict[str, Any] = {"recipe_steps": 6, "model": args.model, "serial_s": timings["serial"],
                              "parallel_s": timings[f"workers={args.workers}"], "workers": args.workers,
                              "speedup": timings["serial"] / timings[f"workers={args.workers}"],
                              "ray_startup_s": startup, "identical_artifacts": same, "cpus": os.cpu_count(),
                              "evaluation": evaluated}
    (args.out / "scale.json").write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"6-step recipe on {args.model}, {os.cpu_count()} CPUs:")
        print(f"  serial                 {result['serial_s']:7.1f} s")
        print(f"  --workers {args.workers}            {result['parallel_s']:7.1f} s   speed-up "
              f"{result['speedup']:.2f}x (includes Ray start-up)")
        print(f"  Ray start-up (empty)   {startup:7.1f} s")
        print(f"  artifacts byte-identical: {'yes' if same else 'NO'}")
        e = evaluated
        print(f"int8 digits CNN against its float model on {e['samples']:,} real digits (10 TFRecord files):")
        print(f"  serial (2 shards in turn) {e['serial_s']:7.1f} s")
        print(f"  --workers {args.workers} (a task a shard) {e['parallel_s']:7.1f} s   speed-up {e['speedup']:.2f}x")
        print(f"  merged result byte-identical: {'yes' if e['identical'] else 'NO'}")
    return 0 if same and evaluated["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
