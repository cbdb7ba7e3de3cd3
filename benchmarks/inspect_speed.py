"""Benchmark `tfshrink inspect` on Keras InceptionV3 against a bare protobuf parse, and CLI start-up.

Run: python benchmarks/inspect_speed.py [--out DIR] [--repeat N] [--json]

1. Builds InceptionV3 (random weights, no download), saves it as .keras and freezes it with
   tfshrink's own freeze(); the .pb is cached in --out, so reruns skip this step. The build runs in
   a child process, so the Keras model's memory never skews the timings taken here.
2. In this one process, after every import and one warm-up call of each: best of --repeat for
   (a) reading the file and parsing it with protobuf alone, and (b) tfshrink.inspection.inspect(),
   taking turns. Both include reading the file: inspect() takes a path and reads it itself, so (a)
   times the read too, like for like. The warm-up leaves the file in the page cache for both.
3. Wall time of `tfshrink --help`, `python -c "import tensorflow"` and `tfshrink inspect PB --json`,
   each a fresh subprocess, best of 3.

Exit status 1 when inspect() takes more than TARGET_RATIO times the bare parse, or when
`tfshrink --help` imports TensorFlow.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TARGET_RATIO = 2.0
MIN_NODES = 2000
PARAMS_RANGE = (22_000_000, 26_000_000)  # InceptionV3: 23.85M weights, BN statistics included
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
PB_NAME = "inception_v3.pb"
CLI_REPEAT = 3


def build_pb(out_dir: Path) -> Path:
    """Build and freeze InceptionV3 into out_dir (in a child process) unless the .pb is cached."""
    pb = out_dir / PB_NAME
    if pb.is_file() and pb.stat().st_size > 0:
        return pb
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"building {pb} (once; cached for later runs) ...", file=sys.stderr)
    subprocess.run([sys.executable, os.path.abspath(__file__), "--build-only", "--out", str(out_dir)],
                   check=True)
    return pb


def _build_child(out_dir: Path) -> None:
    """The child process: Keras InceptionV3 -> .keras -> frozen .pb via tfshrink.freeze."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    freeze_keras(keras.applications.InceptionV3(weights=None), out_dir / PB_NAME)


def freeze_keras(net: Any, pb: Path) -> None:
    """Save a Keras model next to `pb`, freeze it there with tfshrink.freeze (which writes through
    a temp file and a rename, so a cached .pb is never partial), and delete the .keras."""
    from tfshrink.freezer import freeze

    keras_path = pb.with_suffix(".keras")
    pb.parent.mkdir(parents=True, exist_ok=True)
    net.save(keras_path)
    result = freeze(keras_path, pb, verify=False)
    keras_path.unlink()
    print(f"froze {result.nodes} nodes to {pb} ({result.bytes:,} bytes)", file=sys.stderr)


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """The fastest of `repeat` calls of fn, in seconds."""
    return interleaved_best([fn], repeat)[0]


def interleaved_best(fns: Sequence[Callable[[], Any]], repeat: int) -> list[float]:
    """The fastest of `repeat` calls of each fn, in seconds; the calls take turns, so that a
    burst of load on the machine slows all of them rather than one."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def time_command(cmd: Sequence[str], repeat: int = CLI_REPEAT) -> float:
    """Best wall time of a subprocess, output captured; raises if it fails."""
    def once() -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")

    return best_of(once, repeat)


def help_imports_tensorflow() -> bool:
    """Whether `tfshrink --help` loads TensorFlow (it must not)."""
    code = ("import sys\nfrom tfshrink.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
            "    pass\nprint('TF_LOADED=' + str('tensorflow' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return "TF_LOADED=True" in out


def tfshrink_exe() -> str:
    """The `tfshrink` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "tfshrink"
    found = str(beside) if beside.is_file() else shutil.which("tfshrink")
    if not found:
        raise SystemExit("the tfshrink console script is not installed (pip install -e .)")
    return found


def measure(pb: Path, repeat: int) -> dict[str, Any]:
    """All numbers of the benchmark, as a JSON-ready dict."""
    from tfshrink import _tf

    _tf.tf()  # import tensorflow (quietly) before timing; inspect() would import it anyway
    from tensorflow.core.framework.graph_pb2 import GraphDef

    import tfshrink.inspection

    def parse() -> Any:
        with open(pb, "rb") as f:
            data = f.read()
        graph_def = GraphDef()
        graph_def.ParseFromString(data)
        return graph_def

    def run_inspect() -> Any:
        return tfshrink.inspection.inspect(pb)

    graph_def = parse()  # warm-up (also fills the page cache)
    result = run_inspect()  # warm-up
    nodes = len(graph_def.node)
    if result.nodes != nodes:
        raise SystemExit(f"inspect() counted {result.nodes} nodes, the GraphDef has {nodes}")
    if nodes < MIN_NODES:
        raise SystemExit(f"{pb}: {nodes} nodes, expected {MIN_NODES}+ (delete it to rebuild)")
    if not PARAMS_RANGE[0] <= result.const_parameters <= PARAMS_RANGE[1]:
        raise SystemExit(f"{pb}: {result.const_parameters:,} const parameters, expected about 24M")
    del graph_def
    gc.collect()

    parse_s, inspect_s = interleaved_best([parse, run_inspect], repeat)

    exe = tfshrink_exe()
    startup = {
        "tfshrink --help": time_command([exe, "--help"]),
        'python -c "import tensorflow"': time_command([sys.executable, "-c", "import tensorflow"]),
        f"tfshrink inspect {pb.name} --json": time_command([exe, "inspect", str(pb), "--json"]),
    }
    return {
        "model": "keras.applications.InceptionV3(weights=None), frozen by tfshrink.freeze",
        "pb": str(pb), "file_bytes": pb.stat().st_size, "nodes": nodes,
        "const_parameters": result.const_parameters,
        "inputs": [s.to_json() for s in result.inputs], "outputs": [s.to_json() for s in result.outputs],
        "repeat": repeat, "timing": "best of repeat, taking turns; both include reading the file",
        "parse_s": parse_s, "inspect_s": inspect_s, "ratio": inspect_s / parse_s,
        "target_ratio": TARGET_RATIO, "startup_s": startup, "startup_repeat": CLI_REPEAT,
        "help_imports_tensorflow": help_imports_tensorflow(),
    }


def _specs(specs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s['name']} {s['dtype']}{s['shape']}" for s in specs)


def report(r: dict[str, Any]) -> str:
    """The numbers as a small human-readable table."""
    ok = "ok" if r["ratio"] <= r["target_ratio"] else "OVER TARGET"
    lines = [
        f"model: {r['pb']} ({r['file_bytes']:,} bytes)",
        f"nodes: {r['nodes']:,}   const parameters: {r['const_parameters']:,}",
        f"inputs: {_specs(r['inputs'])}   outputs: {_specs(r['outputs'])}",
        "",
        f"best of {r['repeat']} (taking turns), file read included in both:",
        f"  {'protobuf ParseFromString':<40}{r['parse_s'] * 1e3:>10.1f} ms",
        f"  {'tfshrink.inspection.inspect()':<40}{r['inspect_s'] * 1e3:>10.1f} ms",
        f"  {'ratio':<40}{r['ratio']:>10.2f}x   (target <= {r['target_ratio']:.1f}: {ok})",
        "",
        f"start-up, wall time, best of {r['startup_repeat']}:",
    ]
    lines += [f"  {cmd:<40}{s * 1e3:>10.0f} ms" for cmd, s in r["startup_s"].items()]
    lines.append(f"  tfshrink --help imports TensorFlow: {'YES (bad)' if r['help_imports_tensorflow'] else 'no'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="cache folder for the model (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print every number as JSON")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    out_dir = args.out.resolve()
    if args.build_only:
        _build_child(out_dir)
        return 0
    results = measure(build_pb(out_dir), args.repeat)
    print(json.dumps(results, indent=2) if args.json else report(results))
    failed = False
    if results["ratio"] > TARGET_RATIO:
        print(f"FAIL: inspect() took {results['ratio']:.2f}x the bare parse (target <= {TARGET_RATIO})",
              file=sys.stderr)
        failed = True
    if results["help_imports_tensorflow"]:
        print("FAIL: `tfshrink --help` imports TensorFlow", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
