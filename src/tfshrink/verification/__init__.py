"""Do two models compute the same thing? Run both on the same inputs and compare every output."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink.data.calibration import IMAGE_SUFFIXES, InputSpec, image_input, load_calibration
from tfshrink.data.feeds import concrete_shape, load_feeds, random_feeds, streamed_feeds
from tfshrink.data.stream import is_streamed
from tfshrink.errors import UserError
from tfshrink.model import Model, load, savedmodel_options
from tfshrink.model.base import TensorSpec
from tfshrink.model.freezing import parse_bind_value, parse_binds
from tfshrink.names import unknown_name_error
from tfshrink.tflite.preprocess import first_stored, parse_preprocess
from tfshrink.verification.stats import OutputStats


@dataclass(frozen=True)
class OutputComparison:
    """One output of A against its counterpart in B over every input set: the largest and mean
    absolute difference, the cosine of the two flattened, and top-1 agreement for class scores."""

    name_a: str
    name_b: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    cosine: float
    top1: float | None  # agreement of argmax over classes, for [batch, classes] outputs
    passed: bool
    constant: bool = False  # A's output was the same for every input: agreement on it proves little

    def to_json(self) -> dict[str, Any]:
        return {"name_a": self.name_a, "name_b": self.name_b, "shape": list(self.shape),
                "max_abs_error": self.max_abs, "mean_abs_error": self.mean_abs,
                "cosine": self.cosine, "top1_agreement": self.top1, "passed": self.passed,
                "constant_reference": self.constant}


@dataclass(frozen=True)
class VerifyResult:
    a: str
    b: str
    samples: int
    atol: float
    rtol: float
    outputs: tuple[OutputComparison, ...]
    stats: tuple[OutputStats, ...] = field(default=(), repr=False, compare=False)  # to merge shards

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def warnings(self) -> list[str]:
        """Outputs of A that did not change with the input: a check on them passes trivially."""
        return [f"output {o.name_a} of {self.a} is the same for every input ({self.samples} input set(s)), so "
                "agreement on it proves little: the model may have untrained weights or default batch-norm "
                "statistics; check with real weights and real inputs" for o in self.outputs if o.constant]

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "samples": self.samples, "atol": self.atol,
                "rtol": self.rtol, "passed": self.passed, "max_abs_error": self.max_abs,
                "outputs": [o.to_json() for o in self.outputs], "warnings": self.warnings}


def _short(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def pair_by_name_or_order(a: Sequence[TensorSpec], b: Sequence[TensorSpec], what: str,
                          where: str) -> list[tuple[TensorSpec, TensorSpec]]:
    """Pair specs by name when every name of `a` is in `b`, else by order (same count)."""
    by_name = {_short(s.name): s for s in b}
    if all(_short(s.name) in by_name for s in a):
        return [(s, by_name[_short(s.name)]) for s in a]
    if len(a) == len(b):
        return list(zip(a, b, strict=True))
    raise UserError(f"{where}: cannot pair {what}s: {len(a)} vs {len(b)} with different names",
                    f"the models' {what}s are {', '.join(s.name for s in a)} and {', '.join(s.name for s in b)}")


def check_tolerances(atol: float, rtol: float) -> None:
    """Tolerances are finite and not negative (a negative one would fail every check)."""
    for name, value in (("atol", atol), ("rtol", rtol)):
        if not np.isfinite(value) or value < 0:
            raise UserError(f"--{name} {value} must be a number >= 0", f"e.g. --{name} 1e-4")


def compare(a: Model, b: Model, feed_list: Sequence[Mapping[str, np.ndarray]], *, atol: float,
            rtol: float, extra_a: Mapping[str, Any] | None = None,
            extra_b: Mapping[str, Any] | None = None,
            progress: Callable[[int, int], None] | None = None) -> VerifyResult:
    """Run both models on each feed (keyed by A's input names) and compare paired outputs.
    `progress(done, total)` is called after each feed."""
    where = f"{a.path} vs {b.path}"
    for model in (a, b):
        if not model.outputs:
            raise UserError(f"{model.path}: the model has no outputs to compare",
                            "name them with --outputs, or check that this is the right file")
    in_pairs = pair_by_name_or_order(a.inputs, b.inputs, "input", where)
    out_pairs = pair_by_name_or_order(a.outputs, b.outputs, "output", where)
    stats = [OutputStats(atol, rtol) for _ in out_pairs]
    total = len(feed_list) if hasattr(feed_list, "__len__") else 0
    done = 0
    for done, feeds in enumerate(feed_list, start=1):
        ra = a.run({**feeds, **(extra_a or {})})
        rb = b.run({**{sb.name: feeds[sa.name] for sa, sb in in_pairs}, **(extra_b or {})})
        for (sa, sb), acc in zip(out_pairs, stats, strict=True):
            va, vb = np.asarray(ra[sa.name]), np.asarray(rb[sb.name])
            if va.shape != vb.shape:
                if va.size != vb.size:
                    raise UserError(f"{where}: output {sa.name} has shape {va.shape} in A and {vb.shape} in B",
                                    "the models do not compute the same tensor; pick outputs with --outputs")
                vb = vb.reshape(va.shape)
            if va.dtype.kind not in "fiub":
                raise UserError(f"{where}: output {sa.name} is {va.dtype}, which cannot be compared numerically",
                                "choose numeric outputs with --outputs")
            acc.add(va, vb)
        if progress is not None:
            progress(done, total)
    return result_of(str(a.path), str(b.path), done, atol, rtol,
                     [(sa.name, sb.name) for sa, sb in out_pairs], stats)


def result_of(a: str, b: str, samples: int, atol: float, rtol: float, names: Sequence[tuple[str, str]],
              stats: Sequence[OutputStats]) -> VerifyResult:
    """The VerifyResult of output pairs `names` from their running sums."""
    comparisons = tuple(OutputComparison(na, nb, acc.shape, acc.max_abs, acc.mean_abs, acc.cosine, acc.top1,
                                         acc.within, acc.constant) for (na, nb), acc in zip(names, stats, strict=True))
    return VerifyResult(a, b, samples, atol, rtol, comparisons, tuple(stats))


def merge_results(results: Sequence[VerifyResult]) -> VerifyResult:
    """Comparisons of the same two models over shards of one dataset, as one over the whole: the
    sums merged in the order given (a sharded verify gives the same figures however it ran)."""
    first = results[0]
    stats = list(first.stats)
    for r in results[1:]:
        stats = [x.merge(y) for x, y in zip(stats, r.stats, strict=True)]
    return result_of(first.a, first.b, sum(r.samples for r in results), first.atol, first.rtol,
                     [(o.name_a, o.name_b) for o in first.outputs], stats)


class SourceView(Model):
    """`source` seen with other inputs and outputs, to pair it with its own frozen or converted
    self: `inputs` (default: the source's, less the bound ones), the source's outputs named like
    `outputs` (by name, else by order), and bound placeholders (is_training, keep_prob) fed the
    constants `bound` holds on every run."""

    def __init__(self, source: Model, inputs: Sequence[TensorSpec] | None = None,
                 outputs: Sequence[str] | None = None, bound: Mapping[str, Any] | None = None):
        super().__init__(source.path)
        self.format = source.format
        self._source = source
        self._bound = dict(bound or {})
        self.inputs = list(inputs) if inputs is not None else [
            s for s in source.inputs if _short(s.name).split(":")[0] not in self._bound]
        wanted = list(outputs) if outputs is not None else [s.name for s in source.outputs]
        by_name = {s.name: s for s in source.outputs}
        if all(o in by_name for o in wanted):
            self.outputs = [by_name[o] for o in wanted]
        elif len(source.outputs) == len(wanted):
            self.outputs = list(source.outputs)
        else:
            self.outputs = [TensorSpec(o, "float32", None) for o in wanted]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._source.run({**feeds, **self._bound})


def bound_values(model: Model, binds: Mapping[str, Any]) -> dict[str, Any]:
    """{input name: value} for `binds` ({name: raw text or value}), each parsed as the dtype of the
    model's input of that name; names the model lacks are left out (the other model may have them)."""

    out = {}
    for name, raw in binds.items():
        spec = next((s for s in model.inputs if _short(s.name).split(":")[0] == name), None)
        if spec is None:
            continue
        out[spec.name] = parse_bind_value(raw, spec.dtype) if isinstance(raw, str) else raw
    return out


def is_images(inputs: str | Path) -> bool:
    """Does --inputs name images (a folder, a glob, or one JPEG/PNG file) rather than an .npz?"""

    text = str(inputs)
    p = Path(text)
    return p.is_dir() or any(c in text for c in "*?[") or p.suffix.lower() in IMAGE_SUFFIXES


def stored_preprocess(*models: Model) -> Any:
    """The preprocessing stored in the first .tflite among `models` that has one (else None)."""

    return first_stored(m.path for m in models if not m.is_tensorflow)


def image_feed_list(model: Model, images: str | Path, preprocess: Any, samples: int,
                    shapes: Mapping[str, Sequence[int]] | None = None) -> list[dict[str, np.ndarray]]:
    """Feeds for `model` from image files, decoded, resized and normalized per `preprocess`
    (a SPEC string or a Preprocess), one image per feed (batch 1 unless the input fixes it)."""
    import shutil
    import tempfile


    spec = parse_preprocess(preprocess)
    if spec is None:
        raise UserError(f"{images}: images need preprocessing to become model inputs",
                        "pass --preprocess SPEC, or compare with a .tflite that stores it (tfshrink convert --preprocess)")
    specs = []
    for s in model.inputs:
        dims = list(s.shape or ())
        if dims and dims[0] is None:
            dims[0] = 1
        if spec.size and len(dims) == 4:
            dims[1] = dims[1] or spec.size[1]
            dims[2] = dims[2] or spec.size[0]
        shape = concrete_shape(TensorSpec(s.name, s.dtype, tuple(dims) if dims else s.shape),
                               (shapes or {}).get(s.name))
        specs.append(InputSpec(s.name, s.dtype, tuple(shape)))
    target = image_input(specs, spec)
    spec = spec.resolve(target.name, target.shape)
    path = Path(str(images))
    tmp = None
    try:
        if path.is_file():  # one image: calibration loads folders and globs
            tmp = tempfile.mkdtemp(prefix="tfshrink-verify-")
            shutil.copy(path, Path(tmp) / path.name)
            images = tmp
        loaded = load_calibration(images, specs, samples=samples, preprocess=spec)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return loaded.samples


def make_feed_list(model: Model, *, inputs: str | Path | None = None, samples: int = 1, seed: int = 0,
                   shapes: Mapping[str, Sequence[int]] | None = None,
                   preprocess: Any = None, inputs_spec: str | Path | None = None,
                   shard: tuple[int, int] | None = None) -> Sequence[dict[str, np.ndarray]]:
    """Feeds: from an .npz, from images (per `preprocess`; `samples` images at most), from a
    streamed dataset (TFRecords read per `inputs_spec`, a .toml/.json dataset file, or a
    module:function entry point; `samples` feeds at most, read as they are compared), or
    `samples` seeded random sets."""
    if inputs is not None and is_streamed(inputs, inputs_spec):
        return streamed_feeds(inputs, model.inputs, samples=max(samples, 1), spec=inputs_spec, shapes=shapes,
                              preprocess=preprocess, shard=shard)
    if shard is not None:
        raise UserError("only a streamed dataset (TFRecords, a dataset file) can be read in shards",
                        "give the inputs as TFRecords with a parse spec, or a .toml/.json dataset file")
    if inputs is not None and is_images(inputs):
        return image_feed_list(model, inputs, preprocess, max(samples, 1), shapes)
    if inputs is not None:
        return [load_feeds(inputs, model.inputs)]
    if samples < 1:
        raise UserError(f"--samples {samples} must be at least 1", "e.g. --samples 3")
    return [random_feeds(model.inputs, seed=seed + i, shapes=shapes) for i in range(samples)]


def verify(a: str | Path | Model, b: str | Path | Model, *, inputs: str | Path | None = None,
           samples: int = 3, atol: float = 1e-4, rtol: float = 1e-3, seed: int = 0,
           shapes: Mapping[str, Sequence[int]] | None = None,
           progress: Callable[[int, int], None] | None = None, preprocess: Any = None,
           binds: Mapping[str, Any] | Sequence[str] | None = None, signature: str | None = None,
           tags: str | None = None, inputs_spec: str | Path | None = None,
           shard: tuple[int, int] | None = None) -> VerifyResult:
    """Compare two models of any formats on the same inputs: random and seeded, an .npz, or images
    (a folder, glob or file; at most `samples` of them) turned into inputs by `preprocess` or, when
    it is None, by the preprocessing a .tflite among the two stores (tfshrink convert --preprocess).
    `binds` (NAME=VALUE, or {name: value}) feed a constant to whichever model has that input
    (is_training=false for a training checkpoint against its frozen graph). `signature` and `tags`
    pick the signature and MetaGraph of the SavedModel(s) among the two. `inputs` may also be a
    streamed dataset (tfshrink.data.stream: TFRecords read per the parse spec `inputs_spec`, a
    .toml/.json dataset file, a module:function entry point): at most `samples` feeds, read one
    at a time; `shard` = (index, count) reads only that shard of its files (merge_results joins
    the shards' results)."""

    check_tolerances(atol, rtol)
    bind_map = parse_binds(binds)
    paths = [m for m in (a, b) if not isinstance(m, Model)]
    options = iter(savedmodel_options(paths, signature, tags))
    ma = a if isinstance(a, Model) else load(a, **next(options))
    mb = b if isinstance(b, Model) else load(b, **next(options))
    try:
        va, vb = ma, mb
        if bind_map:
            known = {_short(s.name).split(":")[0] for m in (ma, mb) for s in m.inputs}
            for name in bind_map:
                if name not in known:

                    raise unknown_name_error("input", name, sorted(known), f"{ma.path} / {mb.path}")
            va = SourceView(ma, bound=bound_values(ma, bind_map))
            vb = SourceView(mb, bound=bound_values(mb, bind_map))
        streamed = inputs is not None and is_streamed(inputs, inputs_spec)
        if inputs is not None and (streamed or is_images(inputs)) and preprocess is None:
            preprocess = stored_preprocess(mb, ma)
        feeds = make_feed_list(va, inputs=inputs, samples=samples, seed=seed, shapes=shapes, preprocess=preprocess,
                               inputs_spec=inputs_spec, shard=shard)
        return compare(va, vb, feeds, atol=atol, rtol=rtol, progress=progress)
    finally:
        if not isinstance(a, Model):
            ma.close()
        if not isinstance(b, Model):
            mb.close()
