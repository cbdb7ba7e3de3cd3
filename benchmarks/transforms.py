"""Benchmark `tfshrink transform --optimize` against TF's optimize_for_inference and grappler.

Run: python benchmarks/transforms.py [--out DIR] [--models mobilenet_v2,inception_v3] [--repeat N]
     [--runs N] [--json]

1. Builds Keras 3 MobileNetV2 and InceptionV3 (weights=None, so nothing is downloaded), then gives
   every batch norm random statistics (seeded): with Keras' initial statistics each batch norm is
   a no-op scale and a zero bias, which any optimizer removes, so the comparison would be easier
   than on a trained model. Saves .keras and freezes with tfshrink.freeze. The .pb files are cached
   in --out; the build runs in a child process so the Keras model's memory never skews timings.
2. In one process, on the frozen GraphDef already in memory:
   - tfshrink: apply_transforms(OPTIMIZE_SPEC), GraphDef in, GraphDef out;
   - optimize_for_inference: tensorflow.python.tools.optimize_for_inference_lib;
   - grappler: tf_optimizer.OptimizeGraph with TF's default passes (constfold, arithmetic, remap,
     dependency, layout, ...), GraphDef in, GraphDef out.
   Wall time is the best of --repeat calls, taking turns. Each result is then run in a TF session
   (batch 1, median of --runs after warm-up, the
   sessions taking turns run by run) and compared with the unoptimized graph on the same
   seeded input: max relative error = max|y - y0| / max|y0| over the outputs (pre-softmax logits
   are not exposed by the Keras graphs, so the softmax probabilities are compared).

Targets (exit status 1 when one misses): tfshrink's node count <= grappler's; wall time <= grappler's;
max relative error <= 1e-4; session latency no worse than the unoptimized graph's (within 10% for
timing noise on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inspect_speed import freeze_keras, interleaved_best  # noqa: E402  (benchmarks/ is not a package)

DEFAULT_OUT = Path(__file__).resolve().parent / "out"
MODELS = {"mobilenet_v2": ("MobileNetV2", (224, 224, 3)), "inception_v3": ("InceptionV3", (299, 299, 3))}
MAX_REL_ERROR = 1e-4
LATENCY_SLACK = 1.10


def build_pb(out_dir: Path, model: str) -> Path:
    pb = out_dir / f"{model}_bn.pb"
    if pb.is_file() and pb.stat().st_size > 0:
        return pb
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"building {pb} (once; cached for later runs) ...", file=sys.stderr)
    subprocess.run([sys.executable, os.path.abspath(__file__), "--build-only", model, "--out", str(out_dir)],
                   check=True)
    return pb


def _build_child(out_dir: Path, model: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    cls, shape = MODELS[model]
    net = getattr(keras.applications, cls)(weights=None, input_shape=shape)
    rng = np.random.default_rng(0)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            new = []
            for w, v in zip(layer.weights, layer.get_weights(), strict=True):
                if "gamma" in w.path:
                    new.append(rng.uniform(0.5, 1.5, v.shape))
                elif "beta" in w.path or "mean" in w.path:
                    new.append(rng.normal(0, 0.1, v.shape))
                else:  # moving variance
                    new.append(rng.uniform(0.5, 1.5, v.shape))
            layer.set_weights([x.astype(np.float32) for x in new])
    freeze_keras(net, out_dir / f"{model}_bn.pb")


class Session:
    """A frozen graph loaded once in a TF1 session, fed the same input every run."""

    def __init__(self, graph_def: Any, inputs: list[str], outputs: list[str]):
        from tfshrink import _tf

        tf = _tf.tf()
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
        self.sess = tf.compat.v1.Session(graph=self.graph)
        self.inputs = [f"{n}:0" for n in inputs]
        self.outputs = [f"{n}:0" for n in outputs]

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        return self.sess.run(self.outputs, dict(zip(self.inputs, feeds, strict=True)))

    def close(self) -> None:
        self.sess.close()


def interleaved_latency_ms(sessions: Sequence[Session], feeds: list[np.ndarray], runs: int) -> list[float]:
    """Median latency of each session; the sessions take turns run by run, so a burst of load on the
    machine slows all of them rather than one."""
    for sess in sessions:
        for _ in range(3):
            sess.run(feeds)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for i, sess in enumerate(sessions):
            start = time.perf_counter()
            sess.run(feeds)
            times[i].append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def measure(pb: Path, repeat: int, runs: int) -> dict[str, Any]:
    from tfshrink import _tf

    tf = _tf.tf()
    import tfshrink
    from tfshrink.transforms import OPTIMIZE_SPEC, apply_transforms

    model = tfshrink.load(pb)
    graph_def = model.graph_def
    inputs = [s.name for s in model.inputs]
    outputs = [s.name for s in model.outputs]
    shape = [1 if d is None else d for d in model.inputs[0].shape]
    model.close()

    methods: dict[str, Callable[[], Any]] = {
        "tfshrink --optimize": lambda: apply_transforms(graph_def, OPTIMIZE_SPEC, inputs, outputs)[0],
        "optimize_for_inference": lambda: _tf.optimize_for_inference(graph_def, inputs, outputs, tf.float32),
        "grappler (default passes)": lambda: _tf.grappler_optimize(graph_def, outputs),
    }
    results = {name: fn() for name, fn in methods.items()}  # warm-up, and the graphs to measure
    walls = interleaved_best(list(methods.values()), repeat)

    feeds = [np.random.default_rng(0).normal(0, 1, shape).astype(np.float32)]
    graphs = {"unoptimized": (graph_def, 0.0), **{n: (r, w) for (n, r), w in zip(results.items(), walls, strict=True)}}
    sessions = {name: Session(g, inputs, outputs) for name, (g, _) in graphs.items()}
    expected = sessions["unoptimized"].run(feeds)
    latency = interleaved_latency_ms(list(sessions.values()), feeds, runs)
    rows = []
    for (name, (result, wall)), ms in zip(graphs.items(), latency, strict=True):
        got = sessions[name].run(feeds)
        rel = max(float(np.max(np.abs(g - e)) / max(float(np.max(np.abs(e))), 1e-30))
                  for g, e in zip(got, expected, strict=True))
        rows.append({"method": name, "nodes": len(result.node), "wall_s": wall, "latency_ms": ms,
                     "max_rel_error": rel, "ops": sorted({n.op for n in result.node})})
        sessions[name].close()
    return {"model": pb.stem, "bytes": pb.stat().st_size, "rows": rows}


def check(report: dict[str, Any]) -> list[str]:
    rows = {r["method"]: r for r in report["rows"]}
    ours, grappler, base = rows["tfshrink --optimize"], rows["grappler (default passes)"], rows["unoptimized"]
    misses = []
    if ours["nodes"] > grappler["nodes"]:
        misses.append(f"{report['model']}: {ours['nodes']} nodes > grappler's {grappler['nodes']}")
    if ours["wall_s"] > grappler["wall_s"]:
        misses.append(f"{report['model']}: {ours['wall_s']:.3f} s > grappler's {grappler['wall_s']:.3f} s")
    if ours["max_rel_error"] > MAX_REL_ERROR:
        misses.append(f"{report['model']}: max relative error {ours['max_rel_error']:.2e} > {MAX_REL_ERROR:g}")
    if ours["latency_ms"] > base["latency_ms"] * LATENCY_SLACK:
        misses.append(f"{report['model']}: latency {ours['latency_ms']:.1f} ms > unoptimized "
                      f"{base['latency_ms']:.1f} ms")
    if any(op.startswith("_") for op in ours["ops"]):
        misses.append(f"{report['model']}: internal ops in the output: {[o for o in ours['ops'] if o[0] == '_']}")
    return misses


def table(report: dict[str, Any]) -> str:
    lines = [f"{report['model']} ({report['bytes']:,} bytes frozen)", "",
             "| method | nodes | wall time | TF session latency (batch 1, median) | max relative error | internal ops |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in report["rows"]:
        internal = ", ".join(o for o in r["ops"] if o.startswith("_")) or "none"
        wall = "-" if r["method"] == "unoptimized" else f"{r['wall_s'] * 1000:.0f} ms"
        lines.append(f"| {r['method']} | {r['nodes']} | {wall} | {r['latency_ms']:.1f} ms | "
                     f"{r['max_rel_error']:.1e} | {internal} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeat", type=int, default=5, help="wall time: best of N")
    parser.add_argument("--runs", type=int, default=20, help="latency: median of N session runs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--build-only", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build_only:
        _build_child(args.out, args.build_only)
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    reports = []
    for model in args.models.split(","):
        pb = build_pb(args.out, model)
        reports.append(measure(pb, args.repeat, args.runs))
    misses = [m for r in reports for m in check(r)]
    if args.json:
        print(json.dumps({"reports": reports, "misses": misses}, indent=2))
    else:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; wall time best of {args.repeat}, "
              f"latency median of {args.runs}\n")
        for r in reports:
            print(table(r) + "\n")
        print("targets: " + ("all met" if not misses else "MISSED: " + "; ".join(misses)))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
