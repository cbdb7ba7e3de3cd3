"""Check a converted .tflite against its source: on held-out data (tfshrink.conversion.heldout),
inputs drawn from learned ranges or seeded random inputs; for a model with ops TensorFlow cannot run (the SSD
post-process), against the graph up to those ops."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.conversion.converter import ConvertOptions, convert_graph
from tfshrink.conversion.heldout import CheckData
from tfshrink.conversion.modes import CALIBRATED
from tfshrink.data.calibration import Calibration, InputSpec
from tfshrink.data.feeds import random_feeds
from tfshrink.errors import UserError, first_line
from tfshrink.graph.ir import Graph, parse_tensor, tensor_name
from tfshrink.model import Model, TensorSpec
from tfshrink.model.graphdef import GraphDefModel
from tfshrink.model.tflite import TFLiteModel
from tfshrink.tflite.metadata import rewrite
from tfshrink.tflite.preprocess import Preprocess
from tfshrink.verification import SourceView, VerifyResult, compare


def verify_converted(model: Model, frozen: Any, specs: list[InputSpec], cut: bool, tmp_path: Path, out_path: Path,
            checked: CheckData | None, spec: Preprocess | None, verify: bool, samples: int, seed: int,
            notes: list[str], progress: Callable[[int, int], None] | None,
            random: tuple[list[dict[str, np.ndarray]], list[str]] | None = None,
            bound: Mapping[str, Any] | None = None) -> tuple[VerifyResult | None, str]:
    """Run the converted model (from `tmp_path`) and the source on the same inputs: `checked` (held-out
    data: tfshrink.conversion.heldout), else `random` (feeds, inputs drawn from learned ranges),
    else seeded random inputs (`samples` of them)."""

    try:
        with _tf.quiet_native():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
            tfl = TFLiteModel(tmp_path)
    except UserError as exc:
        reason = exc.message.rsplit("model: ", 1)[-1].split(". ")[0].rstrip(".")
        notes.append(f"not verified: the LiteRT interpreter here cannot load the model ({reason})")
        return None, ""
    try:
        tfl.path = out_path
        if not verify:
            return None, ""
        in_specs = [TensorSpec(s.name, s.dtype, s.shape) for s in specs]
        if cut:  # the source cannot be fed at inner tensors; its frozen graph can

            reference: Model = GraphDefModel(Path(model.path), graph_def=frozen.graph_def, outputs=frozen.outputs)
            reference.inputs = in_specs
            what = "the frozen source graph"
        else:
            reference = SourceView(model, in_specs, frozen.outputs, bound)
            what = "the source"
        try:
            if checked is not None and checked.feeds:
                feeds = checked.feeds
                described = checked.description
            elif random is not None:
                feeds = random[0]
                described = f"{len(feeds)} seeded random input(s)" + (
                    " within the inputs' ranges learned in training" if random[1] else "")
            else:
                feeds = random_inputs(specs, spec, samples, seed)
                described = f"{len(feeds)} seeded random input(s)" + (" (random pixels per --preprocess)" if spec else "")
            result = compare(reference, tfl, feeds, atol=math.inf, rtol=0.0, progress=progress)
        finally:
            if reference is not model:
                reference.close()
        return result, f"{described}, against {what}"
    finally:
        tfl.close()


def unregistered_ops(graph_def: Any) -> tuple[list[str], list[str]]:
    """(op types TensorFlow has no CPU kernel for, such as TFLite_Detection_PostProcess;
    the tensors those ops read from ops TF can run, constants aside). Both empty for most graphs."""

    library = {f.signature.name for f in graph_def.library.function}
    missing = sorted({n.op for n in graph_def.node if n.op not in library and not _tf.has_kernel(n.op)})
    if not missing:
        return [], []
    graph = Graph(graph_def)
    frontier: list[str] = []
    for node in graph:
        if node.op not in missing:
            continue
        for src, index in graph.data_inputs(node.name):
            producer = graph.node(src)
            ref = tensor_name(src, index)
            if producer.op != "Const" and producer.op not in missing and ref not in frontier:
                frontier.append(ref)
    return missing, frontier


def verify_upstream(missing: list[str], frontier: list[str], graph_def: Any, specs: list[InputSpec],
                     options: ConvertOptions, calib: Calibration | None, checked: CheckData | None,
                     spec: Preprocess | None, tmp_path: Path, samples: int, seed: int, notes: list[str],
                     progress: Callable[[int, int], None] | None) -> tuple[VerifyResult | None, str]:
    """Verify a model whose source holds ops TensorFlow cannot run (TFLite_Detection_PostProcess):
    run the converted model once in LiteRT, then convert the graph up to those ops' inputs the same
    way and compare that with TensorFlow on the same inputs."""

    ops = ", ".join(missing)
    if checked is not None and checked.feeds:
        feeds = checked.feeds
        described = checked.description
    else:
        feeds = random_inputs(specs, spec, samples, seed)
        described = f"{len(feeds)} seeded random input(s)"
    try:
        with _tf.quiet_native():
            full = TFLiteModel(tmp_path)
        try:
            full.run({s.name: feeds[0][t.name] for s, t in zip(full.inputs, specs, strict=True)})
        finally:
            full.close()
    except Exception as exc:  # LiteRT lacks the kernel, or the op fails on these inputs
        notes.append(f"not verified: the LiteRT interpreter here cannot run the model ({first_line(exc)})")
        return None, ""
    if not frontier or any(parse_tensor(t)[0] in {parse_tensor(s.name)[0] for s in specs} for t in frontier):
        notes.append(f"ran in LiteRT; not compared with the source: TensorFlow has no kernel for {ops}")
        return None, ""
    graph = Graph(type(graph_def).FromString(graph_def.SerializeToString()))
    graph.prune(parse_tensor(t)[0] for t in frontier)
    upstream = graph.to_graph_def()
    cut_options = ConvertOptions(options.quantize, options.input_type, options.output_type,
                                 options.allow_custom_ops, options.select_tf_ops, options.keep_float, options.ranges,
                                 options.rounding)
    try:
        cut = convert_graph(upstream, specs, frontier, cut_options,
                            calib.samples if (calib and options.quantize in CALIBRATED) else None, "upstream")
    except UserError as exc:
        notes.append(f"ran in LiteRT; not compared with the source ({exc.message})")
        return None, ""
    cut_path = tmp_path.with_name("upstream.tflite")
    cut_path.write_bytes(rewrite(cut.data, {}, signature=([s.name for s in specs], frontier)))
    reference = GraphDefModel(tmp_path, graph_def=upstream, outputs=frontier)
    reference.inputs = [TensorSpec(s.name, s.dtype, s.shape) for s in specs]
    with _tf.quiet_native():
        tfl = TFLiteModel(cut_path)
    try:
        result = compare(reference, tfl, feeds, atol=math.inf, rtol=0.0, progress=progress)
    finally:
        tfl.close()
        reference.close()
    notes.append(f"TensorFlow has no kernel for {ops}, so the source cannot run it: the model ran in LiteRT, and "
                 f"the graph up to {ops}'s inputs ({', '.join(frontier)}), converted the same way, was compared "
                 "with TensorFlow")
    return result, f"{described}, against the source graph up to {ops}"


def random_inputs(specs: Sequence[InputSpec], spec: Preprocess | None, samples: int, seed: int
                  ) -> list[dict[str, np.ndarray]]:

    out = []
    for i in range(max(1, samples)):
        feed = random_feeds([TensorSpec(s.name, s.dtype, s.shape) for s in specs], seed=seed + i)
        if spec is not None:
            for s in specs:
                if s.name == spec.input:
                    feed[s.name] = spec.random_pixels(s.shape, np.random.default_rng(seed + i)).astype(s.dtype)
        out.append(feed)
    return out
