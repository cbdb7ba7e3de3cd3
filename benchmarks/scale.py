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
    result: dict[str, Any] = {"recipe_steps": 6, "model": args.model, "serial_s": timings["serial"],
                              "parallel_s": timings[f"workers={args.workers}"], "workers": args.workers,
                              "speedup": timings["serial"] / timings[f"workers={args.workers}"],
                              "ray_startup_s": startup, "identical_artifacts": same, "cpus": os.cpu_count()}
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
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
