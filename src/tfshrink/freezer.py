"""Freeze a checkpoint, SavedModel or Keras model into one self-contained GraphDef, and prove it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfshrink.conversion.fake_quant import quantized_outputs
from tfshrink.errors import CheckFailed, UserError
from tfshrink.fileio import atomic_write, check_output, serialize_graph_def
from tfshrink.model import Model, ambiguity_error, load
from tfshrink.model.freezing import parse_binds
from tfshrink.model.graphdef import GraphDefModel
from tfshrink.names import split_names
from tfshrink.verification import (
    SourceView,
    VerifyResult,
    bound_values,
    check_tolerances,
    compare,
    make_feed_list,
)


@dataclass(frozen=True)
class FreezeResult:
    """What `freeze` wrote: the GraphDef (`output`, `bytes`, `nodes`), its inputs and outputs and
    where the outputs came from, and the check against the source (None with verify=False)."""

    source: str
    format: str
    output: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    outputs_from: str  # "given" (--outputs), "signature" (SavedModel/Keras) or "detected"
    nodes: int
    bytes: int
    verification: VerifyResult | None
    notes: tuple[str, ...] = ()  # how the source was read, what the freeze folded

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "output": self.output,
                "inputs": list(self.inputs), "outputs": list(self.outputs),
                "outputs_from": self.outputs_from, "nodes": self.nodes, "bytes": self.bytes,
                "verification": self.verification.to_json() if self.verification else None,
                "notes": list(self.notes)}


def freeze(source: str | Path, output: str | Path, *, outputs: Sequence[str] | str | None = None,
           binds: Mapping[str, Any] | Sequence[str] | None = None, text: bool = False,
           verify: bool = True, inputs: str | Path | None = None, signature: str | None = None,
           tags: str | Sequence[str] | None = None,
           samples: int = 2, atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0,
           shapes: Mapping[str, Sequence[int]] | None = None) -> FreezeResult:
    """Freeze `source` to `output` (.pb, or text with `text`), then compare the two on the same inputs.

    `outputs` may be node or tensor names; without them the real inference outputs are detected.
    `binds` replace placeholders by constants (is_training=false, keep_prob=1.0) and prune what
    they switch off. Raises CheckFailed when outputs differ beyond atol + rtol*|x|.
    """
    out_path = check_output(output, [source], writes="graphdef")
    check_tolerances(atol, rtol)
    wanted = split_names(outputs)
    bind_map = parse_binds(binds)
    model = load(source, signature=signature, outputs=wanted or None, tags=tags)
    notes: list[str] = []
    if wanted:  # a quantization-aware graph's last layer is read after its output fake-quant

        swapped = quantized_outputs(model, wanted, notes)
        if swapped != wanted:
            model.close()
            wanted = swapped
            model = load(source, signature=signature, outputs=wanted, tags=tags)
    try:
        if not model.is_tensorflow:
            raise UserError(f"{source}: a TFLite model is already frozen", "freeze takes a checkpoint, SavedModel, Keras model or GraphDef")
        detection = getattr(model, "detection", None)
        if not wanted and detection is not None and detection.ambiguous and model.format != "savedmodel":
            raise ambiguity_error(model)
        for name in bind_map:
            if wanted and name in {w.split(":")[0] for w in wanted}:
                raise UserError(f"--bind {name} also names an output", "bind placeholders, not outputs")
        frozen = model.freeze(wanted or None, bind_map)
        data = serialize_graph_def(frozen.graph_def, text)
        verification = None
        if verify:  # runs the in-memory graph: an input error here must leave no output file
            verification = _verify_frozen(model, frozen, out_path, bind_map, inputs, samples, seed, atol, rtol, shapes)
        atomic_write(out_path, data)
    finally:
        model.close()
    result = FreezeResult(str(source), model.format, str(out_path), tuple(frozen.inputs), tuple(frozen.outputs),
                          _outputs_from(wanted, frozen), len(frozen.graph_def.node), out_path.stat().st_size, verification,
                          tuple(notes + frozen.notes))
    if verification is not None and not verification.passed:
        raise CheckFailed(f"{out_path}: frozen outputs differ from {source} by up to {verification.max_abs:.3g}",
                          f"tolerance atol={atol} rtol={rtol}; inspect the graph or pass --no-verify")
    return result


def _outputs_from(wanted: list[str], frozen: Any) -> str:
    if wanted:
        return "given"
    return "detected" if frozen.detected else "signature"


def _verify_frozen(model: Model, frozen: Any, path: Path, binds: Mapping[str, Any],
                   inputs: str | Path | None, samples: int, seed: int, atol: float, rtol: float,
                   shapes: Mapping[str, Sequence[int]] | None) -> VerifyResult:
    frozen_model = GraphDefModel(path, graph_def=frozen.graph_def, outputs=frozen.outputs)
    try:
        feeds = make_feed_list(frozen_model, inputs=inputs, samples=samples, seed=seed, shapes=shapes)
        bound = bound_values(model, binds)  # a bound placeholder the outputs do not need is not fed
        source_view = SourceView(model, frozen_model.inputs, [o.name for o in frozen_model.outputs])
        return compare(source_view, frozen_model, feeds, atol=atol, rtol=rtol, extra_a=bound)
    finally:
        frozen_model.close()
