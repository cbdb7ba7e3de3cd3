"""The int8 choices `convert()` makes, apart from its main line: the default rules or a tune plan,
--keep-float auto's search with the QuantizationDebugger, quantization-aware sources, and the notes
that say what each mode chose."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink.conversion.accuracy import Target, float_reference
from tfshrink.conversion.check import unregistered_ops
from tfshrink.conversion.converter import (
    Converted,
    ConvertOptions,
    calibrate,
    quantize,
    refine_ranges,
    resolve_keep_float,
    rounded,
)
from tfshrink.conversion.delegation import Delegation
from tfshrink.conversion.fake_quant import (
    checked_ranges,
    quantized_outputs,
)
from tfshrink.conversion.heldout import CheckData
from tfshrink.conversion.keep_auto import MAX_GROWTH, AutoKeep, auto_keep_float
from tfshrink.conversion.keep_auto import note as keep_note
from tfshrink.conversion.layers import (
    DEBUG_SAMPLES,
    FLAG_ABOVE,
    MAX_AUTO_STEPS,
    Debugged,
    LayerError,
    debug_layers,
)
from tfshrink.conversion.modes import CALIBRATED, NOTES
from tfshrink.conversion.rules import (
    TUNER,
    Plan,
    planned_int8,
    read_plan,
    rules_int8,
)
from tfshrink.data.calibration import Calibration, InputSpec
from tfshrink.errors import CheckFailed, UserError
from tfshrink.model import Model

Progress = Callable[[str, int, int], None]


def debugged(graph_def: Any, specs: list[InputSpec], outputs: Sequence[str], options: ConvertOptions,
              calib: Calibration, keep: tuple[str, ...], auto: bool, target: Target, checked: CheckData | None,
              where_path: Path, where: str, notes: list[str], warnings: list[str], progress: Progress | None,
              growth: float = MAX_GROWTH) -> tuple[Converted | None, list[LayerError], AutoKeep | None]:
    """Calibrate once with TF's QuantizationDebugger, measuring every layer's error; then quantize
    with --keep-float auto's choice (on the held-out data `checked`; CheckFailed when it cannot reach
    `target` within its budget) or the named layers (None: no --keep-float, convert as usual)."""
    debugged = debug_layers(graph_def, specs, outputs, options, calib.samples, where,
                            progress=phase(progress, "calibrating and measuring layers"))
    if keep or auto:  # quantize from the ranges the other int8 paths use; the layer errors stay min/max's
        debugged = replace(debugged, calibrated=refine_ranges(debugged.calibrated, specs, calib.samples, options,
                                                              notes))
    layers = debugged.layers
    flagged = [x for x in layers if x.flagged]
    if flagged:
        worst = sorted(flagged, key=lambda x: -x.rmse_scale)[:3]
        notes.append(f"{len(flagged)} layer(s) with RMSE/scale above {FLAG_ABOVE} (rounding alone gives 0.289): "
                     + ", ".join(f"{x.layer} {x.op} {x.rmse_scale:.3g}" for x in worst))

    if auto:
        said: list[str] = []
        chosen = keep_float_auto(debugged, graph_def, specs, outputs, options, calib, target, checked, where_path,
                                 where, said, progress, growth)
        if not chosen.reached:
            raise CheckFailed(f"--keep-float auto could not reach {target.describe()} on {chosen.checked_on} within "
                              f"its budget ({growth:g}x the int8 model's {chosen.int8_bytes:,} bytes, no more "
                              f"XNNPACK partitions, at most {MAX_AUTO_STEPS} layers); tried: {chosen.tried()}; "
                              "nothing written", "--quantize auto also tries dynamic-range and float16; or raise "
                              "--max-size-ratio, or lower the target (--min-cosine / --max-top1-drop)")
        kept_names = {k.tensor for k in chosen.kept}
        layers = [replace(x, kept_float=x.tensor in kept_names or x.tensor in chosen.base) for x in layers]
        notes.extend([keep_note(chosen), *said])
        kept = {**({"default": list(chosen.base)} if chosen.base else {}), "auto": [k.tensor for k in chosen.kept]}
        return Converted(chosen.data, kept_float=kept), layers, chosen
    if not keep:
        return None, layers, None
    ops, nodes, kept_map = resolve_keep_float(keep, debugged.calibrated)
    layers = [replace(x, kept_float=x.op in ops or x.tensor in nodes) for x in layers]
    data = quantize(debugged.calibrated, options, where, denylisted_ops=ops, denylisted_nodes=nodes)
    return Converted(rounded(data, debugged.calibrated, specs, calib.samples, options, notes),
                     kept_float=kept_map), layers, None


def keep_float_auto(debugged: Debugged, graph_def: Any, specs: list[InputSpec], outputs: Sequence[str],
                    options: ConvertOptions, calib: Calibration, target: Target, checked: CheckData | None,
                    where_path: Path, where: str, said: list[str], progress: Progress | None,
                    growth: float = MAX_GROWTH, reference: list[dict[str, np.ndarray]] | None = None) -> AutoKeep:
    """--keep-float auto's search (tfshrink.conversion.keep_auto) from the cpu target's int8,
    scored on `checked` (else the calibration samples, which the note then says); `reference`: the
    float source's outputs on those feeds when the caller already ran it (--quantize auto). Each
    model is finished with its weights rounded as convert rounds them; `said` gets the rounding's
    note on the last one finished (the chosen model)."""

    def finish(data: bytes) -> bytes:
        said.clear()
        return rounded(data, debugged.calibrated, specs, calib.samples, options, said)

    if checked is not None:
        feeds, described = list(checked.feeds), checked.description
    else:
        feeds = list(calib.samples[:DEBUG_SAMPLES])
        described = f"{len(feeds)} calibration sample(s), not held out"
    if reference is None:
        missing, _ = unregistered_ops(graph_def)
        if missing:
            raise UserError(f"--keep-float auto compares with the source, which TensorFlow cannot run "
                            f"({', '.join(missing)} has no kernel)", "name the layers to keep with --keep-float")
        reference = float_reference(graph_def, specs, outputs, feeds, where_path)
    rules = rules_int8(debugged.calibrated, options, where, "cpu")
    return auto_keep_float(debugged, options, specs, outputs, reference, feeds, target, where,
                           tuple(rules.kept_float), rules.data, finish, described, growth=growth,
                           progress=phase(progress, "keeping layers in float"))


def phase(progress: Progress | None, label: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None

    def step(done: int, total: int) -> None:
        progress(label, done, total)

    return step


def check_plan(plan: str | Path | None, mode: str, target: str, keep: bool) -> Plan | None:
    """The plan file read and checked against the options (None: no plan)."""
    if plan is None:
        return None
    if mode != "int8":
        raise UserError(f"--plan chooses int8 layers; --quantize {mode} has none", "add --quantize int8")
    if keep:
        raise UserError("--plan and --keep-float both choose the float layers", "give one of them")
    chosen = read_plan(plan)
    if chosen.target != target:
        raise UserError(f"--plan {plan} was tuned for --target {chosen.target}, not {target}",
                        f"add --target {chosen.target}, or tune again")
    return chosen


def int8_default(graph_def: Any, specs: list[InputSpec], outputs: Sequence[str], options: ConvertOptions,
                  calib: Calibration, where: str, notes: list[str], defaults: dict[str, Any],
                  progress: Progress | None, target: str, plan: Plan | None
                  ) -> tuple[Converted, dict[str, int], Delegation | None]:
    """int8 with no --keep-float, from one calibration: the target's rules
    (tfshrink.conversion.rules), or the plan's choices. Nothing is timed here unless tune() is
    running (rules.TUNER). Returns (the converted model, op -> count of the ops it left in float,
    XNNPACK's split of it)."""
    calibrated = calibrate(graph_def, specs, outputs, options, calib.samples, where,
                           phase(progress, "calibrating"), notes)
    if plan is not None:
        choice = planned_int8(calibrated, options, where, plan)
        defaults["plan"] = {"path": plan.path, "sha256": plan.sha256, "machine": plan.machine,
                            "float": list(plan.float_tensors), "dynamic_range": list(choice.dynamic_range)}
    else:
        choice = rules_int8(calibrated, options, where, target)
        tuner = TUNER.get()
        if tuner is not None:
            choice = tuner(calibrated, options, where, choice)
    notes.extend(choice.notes)
    choice = replace(choice, data=rounded(choice.data, calibrated, specs, calib.samples, options, notes))
    if choice.softmax:
        defaults["output_softmax"] = {"tensors": list(choice.softmax), "kept_float": True}
    if choice.conv is not None:
        defaults["first_conv"] = {"tensor": choice.conv.tensor, "kept_float": True, "channels": choice.conv.channels,
                                  "weights": choice.conv.weights}
    if choice.islands:
        defaults["xnnpack_float_ops"] = [{"op": op, "tensor": t} for op, t in choice.islands]
    if choice.dynamic_range:
        defaults["dynamic_range_layers"] = list(choice.dynamic_range)
    if choice.delegation is not None and choice.delegation.partitions is not None:
        defaults["xnnpack_partitions"] = choice.delegation.partitions
    if not choice.kept_float and not choice.dynamic_range:
        return Converted(choice.data), {}, choice.delegation
    parts = [*(["output softmax"] if choice.softmax else []), *(["small first conv"] if choice.conv else []),
             *([f"{len(choice.islands)} op(s) XNNPACK takes only in float"] if choice.islands else []),
             *([f"{len(choice.kept_float) - len(choice.softmax) - (1 if choice.conv else 0) - len(choice.islands)} "
                "tensor(s) from the plan"] if choice.extra_float else []),
             *([f"{len(choice.dynamic_range)} layer(s) in dynamic-range form"] if choice.dynamic_range else [])]
    defaults["keep_float"] = " and ".join(parts)
    return (Converted(choice.data, kept_float={"default": choice.kept_float}), choice.kept_ops(calibrated),
            choice.delegation)


def no_calibration(mode: str) -> None:
    raise UserError(f"--quantize {mode} needs calibration data to measure activation ranges",
                    "pass --calibration with a folder or glob of images, or an .npy/.npz "
                    "(--calibration random accepts poor ranges)"
                    + ("; a quantization-aware trained graph (FakeQuant nodes) needs none" if mode == "int8" else ""))


def qat_source(model: Model, frozen: Any, wanted: list[str], keep: tuple[str, ...], auto: bool,
                report_dir: Path | None, calibration: str | Path | None, where: str, notes: list[str],
                warnings: list[str], defaults: dict[str, Any]) -> tuple[Any, list[Any]]:
    """int8 of a quantization-aware trained graph: check that it can take the QAT path and return
    (the frozen graph, read after the last layers' fake-quants; its FakeQuant ranges)."""

    if keep or auto:
        raise UserError("--keep-float picks layers for calibrated int8; this graph's ranges come from its FakeQuant "
                        "nodes (quantization-aware training), which quantize every layer they cover",
                        "drop --keep-float (or give --keep-float none)")
    if report_dir is not None:
        raise UserError("--report measures calibrated int8; this graph's ranges come from its FakeQuant nodes",
                        "drop --report (tfshrink inspect lists the learned ranges)")
    outputs = quantized_outputs(model, wanted, notes)
    if outputs and outputs != list(frozen.outputs):
        frozen = model.freeze(outputs)
    ranges, note = checked_ranges(model, frozen.graph_def, where, warnings)
    notes.insert(0, note)
    if calibration is not None:
        notes.append("--calibration is not used for the ranges (they come from training); its samples verify "
                     "the result")
    defaults["ranges"] = "training"
    return frozen, ranges


def mode_notes(mode: str, io_defaults: tuple[str | None, str | None], keep: tuple[str, ...], notes: list[str],
                defaults: dict[str, Any], *, qat: bool = False) -> None:
    """Say what tfshrink chose where the caller left it open (`io_defaults`: the input and output
    types it picked, None where the caller gave one; `qat`: ranges from FakeQuant nodes)."""
    if mode in CALIBRATED:
        for key, value in zip(("input_type", "output_type"), io_defaults, strict=True):
            if value is not None:
                defaults[key] = value
        if io_defaults == ("float32", "float32"):
            notes.append(NOTES["io"] if mode == "int8" else
                         "inputs and outputs stay float32 (--input-type/--output-type int16 to change)")
    if mode == "int8" and qat:
        defaults["ops"] = "TFLITE_BUILTINS"
    elif mode == "int8":
        defaults["ops"] = "TFLITE_BUILTINS" if keep else "TFLITE_BUILTINS_INT8"
        if not keep:
            notes.append(NOTES["int8"])
    if mode in ("dynamic", "int16x8", "float16"):
        notes.append(NOTES[mode])


