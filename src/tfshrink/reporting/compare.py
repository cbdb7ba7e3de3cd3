"""`tfshrink compare`: several models side by side: format, size, latency and agreement with the first.

    result = compare_models(["model.pb", "model_fp16.tflite", "model_int8.tflite"])
    for m in result.models:
        print(m.name, m.format, m.bytes, m.latency_p50_ms, m.cosine)

The first model is the reference. Every model is timed with ``tfshrink.benchmarking.bench`` (a few
runs by default: enough for a p50, not a benchmark) and run on the same inputs as the reference
(seeded random values, or an .npz); its outputs are compared with the reference's as
``tfshrink verify`` does (cosine similarity, max abs error, top-1 agreement).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tfshrink.verification as verification
from tfshrink.benchmarking import bench as run_bench
from tfshrink.errors import UserError
from tfshrink.fileio import disk_bytes
from tfshrink.model import detect_format, load, runtime_of, savedmodel_options
from tfshrink.model.freezing import parse_binds
from tfshrink.tflite.preprocess import first_stored
from tfshrink.verification import SourceView, bound_values, compare, make_feed_list

__all__ = ["DEFAULT_RUNS", "CompareResult", "ModelComparison", "compare_models", "default_names",
           "measure_models"]

DEFAULT_RUNS = 20
DEFAULT_WARMUP = 1

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ModelComparison:
    """One model of a comparison. The agreement fields are None for the reference (the first model)
    and `top1` is None when no output is a [batch, classes] tensor."""

    name: str
    path: str
    format: str
    bytes: int
    latency_p50_ms: float | None
    bench: Any | None  # tfshrink.benchmarking.BenchResult, None when not timed
    agreement: Any | None  # tfshrink.verification.VerifyResult against the reference

    @property
    def cosine(self) -> float | None:
        """The lowest cosine similarity over the outputs."""
        if self.agreement is None:
            return None
        return min((o.cosine for o in self.agreement.outputs), default=1.0)

    @property
    def max_abs(self) -> float | None:
        """The largest absolute error over the outputs."""
        return None if self.agreement is None else self.agreement.max_abs

    @property
    def top1(self) -> float | None:
        """The lowest top-1 agreement over the [batch, classes] outputs."""
        if self.agreement is None:
            return None
        values = [o.top1 for o in self.agreement.outputs if o.top1 is not None]
        return min(values) if values else None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "format": self.format, "bytes": self.bytes,
                "latency_p50_ms": self.latency_p50_ms,
                "latency_ms": None if self.bench is None else dict(self.bench.latency_ms),
                "runs": None if self.bench is None else self.bench.runs,
                "cosine": self.cosine, "max_abs_error": self.max_abs, "top1_agreement": self.top1,
                "outputs": None if self.agreement is None else [o.to_json() for o in self.agreement.outputs]}


@dataclass(frozen=True)
class CompareResult:
    """Every model of a comparison, the reference first."""

    models: tuple[ModelComparison, ...]
    samples: int
    inputs: str  # "N seeded random input set(s)" or the .npz path

    @property
    def reference(self) -> ModelComparison:
        return self.models[0]

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference.path, "samples": self.samples, "inputs": self.inputs,
                "models": [m.to_json() for m in self.models]}


def default_names(paths: Sequence[str | Path]) -> list[str]:
    """Short, unique display names: the file names (a SavedModel folder's or a checkpoint's name),
    with the parent folder added where two are the same."""
    names = [Path(p).name or str(p) for p in paths]
    return [str(Path(p)) if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]


def _check_names(names: Sequence[str] | None, count: int) -> list[str] | None:
    if names is None:
        return None
    names = [str(n) for n in names]
    if len(names) != count:
        raise UserError(f"{len(names)} name(s) for {count} model(s)",
                        "give one name per model, e.g. --names float,int8")
    if len(set(names)) != len(names):
        raise UserError(f"the names {', '.join(names)} are not unique", "give each model its own name")
    return names


def compare_models(paths: Sequence[str | Path], **options: Any) -> CompareResult:
    """Compare two or more models of any formats with the first one: `measure_models`, whose
    keywords it takes (inputs, samples, runs, bench, shapes, binds...). Raises UserError (before
    loading anything) for fewer than two models or a missing file."""
    if len(paths) < 2:
        raise UserError(f"compare needs at least two models, got {len(paths)}",
                        "e.g. tfshrink compare model.pb model.tflite")
    return measure_models(paths, **options)


def measure_models(paths: Sequence[str | Path], *, names: Sequence[str] | None = None,
                   inputs: str | Path | None = None, preprocess: Any = None, samples: int = 3, seed: int = 0,
                   runs: int | None = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP, bench: bool = True,
                   shapes: Mapping[str, Sequence[int]] | None = None,
                   binds: Mapping[str, Any] | Sequence[str] | None = None, signature: str | None = None,
                   tags: str | None = None, progress: Progress | None = None) -> CompareResult:
    """Size and time one model or more, and compare the others with the first (see the module
    docstring); `compare_models` is this for two or more.

    `inputs`: an .npz keyed by the reference's input names, or images (a folder, glob or file; at
    most `samples`) made into inputs by `preprocess` (a SPEC such as "size=48x48,mean=127.5,std=128";
    default: the one a .tflite among the models stores); default: `samples` seeded random sets.
    `runs`/`warmup`: timed and untimed runs per model (`bench=False` skips the timing).
    `shapes` ({name: dims}) fix unknown input dims. `binds` (NAME=VALUE) feed a constant to every
    model that has that input (a training checkpoint's is_training). `progress(phase, done, total)`
    follows the work.
    Raises UserError (before loading anything) for no models or a missing file.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise UserError("no models given", "give one or more model paths")
    shown = _check_names(names, len(paths)) or default_names(paths)
    formats = [detect_format(p)[0] for p in paths]  # a missing or unknown file fails here, before any work
    load_options = dict(zip(paths, savedmodel_options(paths, signature, tags, formats), strict=True))

    images = inputs is not None and getattr(verification, "is_images", lambda _: False)(inputs)
    if inputs is not None and not images and not Path(inputs).is_file():
        raise UserError(f"{inputs}: no such inputs file", "give an .npz keyed by input name, or images")
    if samples < 1:
        raise UserError(f"samples must be at least 1, not {samples}", "e.g. --samples 3")
    feed_shapes = _npz_shapes(inputs) if inputs is not None and not images else {}
    feed_options: dict[str, Any] = {}
    if images:  # decoded as given, else as the first .tflite that stores its preprocessing says
        if preprocess is None:

            preprocess = first_stored(p for p, f in zip(paths, formats, strict=True) if runtime_of(f) == "litert")
        feed_options["preprocess"] = preprocess


    bind_map = parse_binds(binds)

    def input_names(path: str) -> set[str]:
        with load(path, **load_options[path]) as m:
            return {s.name.split(":")[0] for s in m.inputs}

    def bench_options(path: str) -> dict[str, Any]:
        """Binds and shapes for the inputs this model has: the feeds' shapes (batch 1, as bench
        times) fill unknown dims unless --input-shape gives them."""
        if not bind_map and not feed_shapes:
            return {"input_shapes": shapes, "binds": []}
        names = input_names(path)
        fill = {k: [1, *v[1:]] for k, v in feed_shapes.items() if k in names and v}
        return {"input_shapes": {**fill, **(shapes or {})} or None,
                "binds": [f"{k}={v}" for k, v in bind_map.items() if k in names]}

    def view(model: Any) -> Any:
        return SourceView(model, bound=bound_values(model, bind_map)) if bind_map else model

    timings: list[Any] = [None] * len(paths)
    if bench:

        for i, p in enumerate(paths):
            if progress is not None:
                progress(f"timing {shown[i]}", i, len(paths))
            timings[i] = run_bench(p, runs=runs, warmup=warmup, **bench_options(p), **load_options[p])
    agreements: list[Any] = [None] * len(paths)
    reference = load(paths[0], **load_options[paths[0]]) if len(paths) > 1 else None
    try:
        reference_view = None if reference is None else view(reference)
        feeds = [] if reference_view is None else make_feed_list(reference_view, inputs=inputs, samples=samples,
                                                             seed=seed, shapes=shapes, **feed_options)
        for i, p in enumerate(paths[1:], start=1):
            if progress is not None:
                progress(f"running {shown[i]} against {shown[0]}", i - 1, len(paths) - 1)
            other = load(p, **load_options[p])
            try:
                agreements[i] = compare(reference_view, view(other), feeds, atol=0.0, rtol=0.0)
            finally:
                other.close()
    finally:
        if reference is not None:
            reference.close()
    if progress is not None:
        progress("done", len(paths) - 1, len(paths) - 1)


    models = []
    for i, p in enumerate(paths):
        t = timings[i]
        models.append(ModelComparison(name=shown[i], path=p, format=formats[i],
                                      bytes=disk_bytes(detect_format(p)[1]),
                                      latency_p50_ms=None if t is None else float(t.latency_ms["p50"]),
                                      bench=t, agreement=agreements[i]))
    how = str(inputs) if inputs is not None else f"{samples} seeded random input set(s)"
    return CompareResult(tuple(models), len(feeds) if feeds else samples, how)


def _npz_shapes(path: str | Path) -> dict[str, list[int]]:
    """{input name: shape} of the arrays in an .npz of feeds ({} when it cannot be read: the
    feeds' own loader says why)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return {k.split(":")[0]: list(data[k].shape) for k in data.files}
    except (OSError, ValueError):
        return {}
