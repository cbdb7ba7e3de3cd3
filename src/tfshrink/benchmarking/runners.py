"""The two runtimes bench drives, each holding one model ready to run on fixed inputs.

* ``SessionRunner``: TensorFlow. A frozen GraphDef runs as is; a checkpoint, SavedModel or Keras
  model is frozen first (what `tfshrink freeze` writes, and what benchmark_model runs). The graph
  runs in a tf.compat.v1.Session through ``Session.make_callable``, with the feeds built once, so a
  run costs the graph plus the copy of the inputs in and the outputs out.
* ``LiteRTRunner``: the LiteRT interpreter (ai-edge-litert), with or without its default XNNPACK
  delegate. Inputs are set once; a run is one ``Interpreter.invoke()``.

``invoke`` is the callable bench times; nothing else happens between two runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.benchmarking.flops import FlopCount, graph_flops, tflite_flops
from tfshrink.benchmarking.profile import Profile, from_step_stats
from tfshrink.data.feeds import random_feeds
from tfshrink.errors import UserError, first_line
from tfshrink.graph.io_ops import io_nodes, refuse_io_ops
from tfshrink.model import TensorSpec, detect_format, load, runtime_of, savedmodel_options
from tfshrink.model.freezing import parse_binds
from tfshrink.model.graphdef import GraphDefModel
from tfshrink.model.tflite import TFLiteModel
from tfshrink.names import feed_key
from tfshrink.tflite.preprocess import read_preprocess

UNKNOWN_DIM_EXAMPLE = 224  # what the --input-shape hint suggests for an unknown non-batch dim


def _example_dims(spec: TensorSpec, batch: int) -> str:
    if spec.shape is None:
        return f"{batch},224,224,3"
    dims = [(batch if i == 0 else UNKNOWN_DIM_EXAMPLE) if d is None else d for i, d in enumerate(spec.shape)]
    return ",".join(str(d) for d in dims)


def resolve_shapes(specs: Sequence[TensorSpec], batch: int, overrides: Mapping[str, Sequence[int]],
                   where: str) -> tuple[dict[str, tuple[int, ...]], int]:
    """The concrete shape to bench each input at, and the batch those shapes carry.

    An unknown first dim takes `batch`; any other unknown dim (or an unknown rank) must come from
    `overrides` (``--input-shape NAME=dims``), or a UserError names the input and the flag.
    """
    names = [s.name for s in specs]
    for name in overrides:
        if name not in names:
            raise UserError(f"{where}: --input-shape names {name!r}, which is not an input",
                            f"inputs are {', '.join(names) or '(none)'}")
    shapes: dict[str, tuple[int, ...]] = {}
    effective = None
    batch_used = False
    for spec in specs:
        if spec.name in overrides:
            shape = tuple(int(d) for d in overrides[spec.name])
            if spec.shape is not None and len(shape) != len(spec.shape):
                raise UserError(f"{where}: --input-shape {spec.name}={','.join(map(str, shape))} has rank "
                                f"{len(shape)}, but input {spec.name!r} is {spec.shape_text()}",
                                f"give {len(spec.shape)} dims")
            if shape and effective is None:
                effective = shape[0]
        elif spec.shape is None:
            raise UserError(f"{where}: input {spec.name!r} has an unknown shape",
                            f"give it with --input-shape {spec.name}={_example_dims(spec, batch)}")
        else:
            if any(d is None for d in spec.shape[1:]):
                raise UserError(f"{where}: input {spec.name!r} has unknown dims {spec.shape_text()}",
                                f"give them with --input-shape {spec.name}={_example_dims(spec, batch)}")
            shape = tuple(batch if (i == 0 and d is None) else int(d)  # type: ignore[arg-type]
                          for i, d in enumerate(spec.shape))
            if spec.shape and spec.shape[0] is None:
                batch_used = True
                if effective is None:
                    effective = batch
        shapes[spec.name] = shape
    if batch != 1 and not batch_used:
        raise UserError(f"{where}: --batch {batch} needs an input with an unknown batch dim, and none has one "
                        f"({', '.join(s.name + s.shape_text() for s in specs) or 'no inputs'})",
                        "give whole shapes with --input-shape NAME=dims instead")
    return shapes, effective or 1


class Runner:
    """A model loaded for benchmarking: ``invoke()`` runs it once on inputs fixed at load time."""

    runtime = "?"
    version = "?"

    def __init__(self, path: Path, fmt: str, threads: int | None) -> None:
        self.path = path
        self.format = fmt
        self.threads = threads
        self.xnnpack: bool | None = None
        self.inputs: list[TensorSpec] = []  # with the benched shapes
        self.batch = 1
        self.init_ms = 0.0
        self.notes: list[str] = []
        self.invoke: Callable[[], Any] = lambda: None

    def first_run(self) -> float:
        """Run once (the first run) and return its time in ms; a runtime failure is a UserError."""
        raise NotImplementedError

    def _preprocessed_feeds(self, path: Path, specs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]],
                            feeds: dict[str, np.ndarray]) -> None:
        """Where convert recorded the model's preprocessing, its image input gets random pixels put
        through it (quantized for an int8/uint8 input), so the values are the ones the model sees
        in use: a detector's post-processing, for one, runs longer on some scores than others."""

        recorded = read_preprocess(path)
        if recorded is None:
            return
        targets = [s for s in specs if recorded.input in (None, s.name) and len(shapes[s.name]) == 4]
        if len(targets) != 1:
            return
        spec = targets[0]
        shape = shapes[spec.name]
        x = recorded.resolve(spec.name, shape).random_pixels(shape, np.random.default_rng(0))
        if spec.quantization and spec.dtype in ("int8", "uint8"):
            scale, zero = spec.quantization
            info = np.iinfo(spec.dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        feeds[spec.name] = x.astype(spec.dtype)
        self.notes.append(f"input {spec.name}: random pixels through the recorded preprocessing ({recorded.spec()})")

    def profile(self, runs: int, max_seconds: float) -> Profile:
        raise NotImplementedError

    def flops(self) -> FlopCount:
        raise NotImplementedError

    def close(self) -> None:
        """Release the session or interpreter."""


def _input_summary(specs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]]) -> list[TensorSpec]:
    return [replace(s, shape=shapes[s.name]) for s in specs]


class SessionRunner(Runner):
    """A frozen GraphDef in a tf.compat.v1.Session (see the module docstring)."""

    runtime = "tensorflow"

    def __init__(self, path: Path, fmt: str, *, threads: int | None, batch: int,
                 overrides: Mapping[str, Sequence[int]], binds: Mapping[str, Any] | None = None,
                 load_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(path, fmt, threads)
        if threads:
            # Without this, every session shares the intra-op pool of the process's first TF device,
            # sized before our ConfigProto is seen. Read once, when TF creates its first device.
            os.environ.setdefault("TF_OVERRIDE_GLOBAL_THREADPOOL", "1")
        tf = _tf.tf()
        self.version = tf.__version__

        start = time.perf_counter()
        model = load(path, **(load_options or {}))
        bind_map = parse_binds(binds)
        if isinstance(model, GraphDefModel) and not bind_map:
            gdm = model
        else:
            try:
                frozen = model.freeze(binds=bind_map)
            finally:
                model.close()
            gdm = GraphDefModel(model.path, graph_def=frozen.graph_def, outputs=frozen.outputs)
            if not isinstance(model, GraphDefModel):
                self.notes.append(f"benched the GraphDef frozen from the {fmt} model (what `tfshrink freeze` writes)")
            if bind_map:
                self.notes.append("bound " + ", ".join(f"{k}={v}" for k, v in bind_map.items()))
        self.graph_def = gdm.graph_def
        self.output_names = [o.name for o in gdm.outputs]
        if not self.output_names:
            raise UserError(f"{path}: the graph has no outputs to run", "check that this is the right file")
        refuse_io_ops(io_nodes(self.graph_def, self.output_names), str(path))
        shapes, self.batch = resolve_shapes(gdm.inputs, batch, overrides, str(path))
        self.shapes = shapes
        graph = tf.Graph()
        with graph.as_default():
            try:
                tf.graph_util.import_graph_def(self.graph_def, name="")
            except (ValueError, tf.errors.OpError) as exc:
                raise UserError(f"{path}: TensorFlow cannot load this graph: {first_line(exc)}",
                                "it may use ops this TensorFlow lacks") from None
        config = tf.compat.v1.ConfigProto()
        if threads:
            config.intra_op_parallelism_threads = threads
            config.inter_op_parallelism_threads = threads
        self.graph = graph
        self.session = tf.compat.v1.Session(graph=graph, config=config)
        self.feed_tensors = [graph.get_tensor_by_name(feed_key(s.name)) for s in gdm.inputs]
        self.fetches = [graph.get_tensor_by_name(feed_key(o)) for o in self.output_names]
        self._call = self.session.make_callable(self.fetches, feed_list=self.feed_tensors, accept_options=True)
        self.init_ms = (time.perf_counter() - start) * 1e3
        feeds = random_feeds(gdm.inputs, shapes=shapes)
        self.inputs = _input_summary(gdm.inputs, shapes)
        self.feed_dict = {t: feeds[s.name] for t, s in zip(self.feed_tensors, gdm.inputs, strict=True)}
        self._args = [feeds[s.name] for s in gdm.inputs]
        self.invoke = partial(self._call, *self._args)

    def first_run(self) -> float:
        tf = _tf.tf()
        start = time.perf_counter()
        try:
            self.invoke()
        except tf.errors.OpError as exc:
            raise UserError(f"{self.path}: running the model failed: {first_line(exc)}",
                            "check the input shapes (--input-shape NAME=dims) and that every placeholder "
                            "is fed (freeze with --bind NAME=VALUE for flags like is_training)") from None
        return (time.perf_counter() - start) * 1e3

    def profile(self, runs: int, max_seconds: float) -> Profile:
        tf = _tf.tf()
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        stats = []
        deadline = time.perf_counter() + max_seconds
        for _ in range(max(1, runs)):
            metadata = tf.compat.v1.RunMetadata()
            self._call(*self._args, options=options, run_metadata=metadata)
            stats.append(metadata.step_stats)
            if time.perf_counter() > deadline:
                break
        op_types = {n.name: n.op for n in self.graph_def.node}
        return from_step_stats(stats, op_types)

    def flops(self) -> FlopCount:
        return graph_flops(self.graph_def, self.output_names, self.shapes)

    def close(self) -> None:
        self.session.close()


LITERT_PROFILE_NOTE = (
    "per-op times are not available for TFLite: ai-edge-litert {version}'s Python Interpreter exposes no "
    "op profiler (the C++ benchmark_model's --enable_op_profiling has no Python counterpart); "
    "bench the source GraphDef with --profile, or run benchmark_model --enable_op_profiling=true")


class LiteRTRunner(Runner):
    """A .tflite model in the LiteRT interpreter (see the module docstring)."""

    runtime = "litert"

    def __init__(self, path: Path, *, threads: int | None, batch: int,
                 overrides: Mapping[str, Sequence[int]], xnnpack: bool) -> None:
        super().__init__(path, "tflite", threads)
        from importlib.metadata import PackageNotFoundError, version


        try:
            self.version = version("ai-edge-litert")
        except PackageNotFoundError:
            self.version = "?"
        self.xnnpack = xnnpack
        start = time.perf_counter()
        model = TFLiteModel(path, num_threads=threads, xnnpack=xnnpack)
        shapes, self.batch = resolve_shapes(model.inputs, batch, overrides, str(path))
        interp = model.interpreter
        details = model.input_details
        self.resized: dict[int, tuple[int, ...]] = {}
        try:
            for detail, spec in zip(details, model.inputs, strict=True):
                if tuple(int(d) for d in detail["shape"]) != shapes[spec.name]:
                    interp.resize_tensor_input(detail["index"], list(shapes[spec.name]))
                    self.resized[int(detail["index"])] = shapes[spec.name]
            if self.resized:
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"{path}: LiteRT cannot run this model at shapes "
                            f"{', '.join(f'{k}{list(v)}' for k, v in shapes.items())}: {first_line(exc)}",
                            "the model may only take the shapes it was converted with") from None
        self.init_ms = (time.perf_counter() - start) * 1e3
        self.model = model
        self.interpreter = interp
        plain = [replace(s, quantization=None) for s in model.inputs]  # raw int8/uint8 values for quantized inputs
        feeds = random_feeds(plain, shapes=shapes)
        self._preprocessed_feeds(path, model.inputs, shapes, feeds)
        for detail, spec in zip(details, model.inputs, strict=True):
            interp.set_tensor(detail["index"], np.asarray(feeds[spec.name]).astype(detail["dtype"], copy=False))
        self.inputs = _input_summary(model.inputs, shapes)
        self.invoke = interp.invoke

    def first_run(self) -> float:
        start = time.perf_counter()
        try:
            self.invoke()
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"{self.path}: running the model failed: {first_line(exc)}",
                            f"the model expects {', '.join(s.name + s.shape_text() for s in self.model.inputs)}"
                            ) from None
        return (time.perf_counter() - start) * 1e3

    def profile(self, runs: int, max_seconds: float) -> Profile:
        return Profile(available=False, note=LITERT_PROFILE_NOTE.format(version=self.version))

    def flops(self) -> FlopCount:
        runtime_shapes = None
        if self.resized:  # shapes after the resize, from an undelegated interpreter (XNNPACK partitions
            # don't update the shapes of the tensors inside them)
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            shaper = Interpreter(model_content=self.model.model_bytes, num_threads=1,
                                 experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            for index, shape in self.resized.items():
                shaper.resize_tensor_input(index, list(shape))
            shaper.allocate_tensors()
            runtime_shapes = {int(d["index"]): [int(x) for x in d["shape"]] for d in shaper.get_tensor_details()}
            del shaper
        return tflite_flops(self.model.model_bytes, runtime_shapes)

    def close(self) -> None:
        self.model.close()


def open_runner(model_path: str | Path, *, threads: int | None = None, batch: int = 1,
                input_shapes: Mapping[str, Sequence[int]] | None = None, xnnpack: bool = True,
                binds: Mapping[str, Any] | Sequence[str] | None = None, signature: str | None = None,
                tags: str | None = None) -> Runner:
    """Load `model_path` (any format) into the runtime that runs it, with random inputs set.
    `binds` (TF formats) replace placeholders by constants before freezing, as `tfshrink freeze
    --bind` does (is_training=false)."""
    fmt, path = detect_format(model_path)
    overrides = dict(input_shapes or {})
    (options,) = savedmodel_options([path], signature, tags)
    if runtime_of(fmt) == "litert":
        if binds:
            raise UserError(f"{path}: --bind applies to TensorFlow models, not TFLite",
                            "a .tflite model has no placeholders to bind")
        return LiteRTRunner(path, threads=threads, batch=batch, overrides=overrides, xnnpack=xnnpack)
    runner = SessionRunner(path, fmt, threads=threads, batch=batch, overrides=overrides,
                           binds=binds, load_options=options)  # type: ignore[arg-type]
    if not xnnpack:
        runner.notes.append("--no-xnnpack applies to TFLite models only; ignored")
    return runner
