"""`convert()`: freeze the source in memory, derive input specs, calibrate, convert in the chosen
mode (the int8 default's choices, --keep-float, quantization-aware graphs), check the result and
write it atomically. The package docstring (tfshrink.conversion) tells the whole story."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tfshrink.conversion.accuracy import make_target
from tfshrink.conversion.auto import choose as choose_mode
from tfshrink.conversion.check import unregistered_ops, verify_converted, verify_upstream
from tfshrink.conversion.choices import (
    check_plan,
    debugged,
    int8_default,
    mode_notes,
    no_calibration,
    phase,
    qat_source,
)
from tfshrink.conversion.converter import (
    Converted,
    ConvertOptions,
    convert_graph,
    prepare_graph,
)
from tfshrink.conversion.delegation import Delegation, xnnpack_delegation
from tfshrink.conversion.fake_quant import (
    convert_fake_quant_graph,
    has_fake_quant,
    range_feeds,
)
from tfshrink.conversion.heldout import (
    CheckData,
    check,
    check_cosine_value,
    load_eval,
    split_calibration,
    threshold,
)
from tfshrink.conversion.inputs import input_specs, quantized_input, shape_overrides
from tfshrink.conversion.keep_auto import MAX_GROWTH
from tfshrink.conversion.layers import (
    DEBUG_SAMPLES,
    LayerError,
    write_report,
)
from tfshrink.conversion.modes import CALIBRATED, IO_TYPES, MODES, NOTES
from tfshrink.conversion.ranges import METHODS as RANGE_METHODS
from tfshrink.conversion.result import ConvertResult
from tfshrink.conversion.rounding import METHODS as ROUNDING_METHODS
from tfshrink.conversion.rules import (
    check_target,
    target_entry,
)
from tfshrink.data.calibration import image_input, load_calibration
from tfshrink.errors import UserError
from tfshrink.fileio import atomic_write, check_output, disk_bytes, staged_folder
from tfshrink.model import ambiguity_error, load
from tfshrink.model.freezing import parse_binds
from tfshrink.model.tflite import flatbuffer_summary, io_specs
from tfshrink.names import split_names
from tfshrink.tflite.flatbuffer import builtin_ops
from tfshrink.tflite.metadata import precision, rewrite
from tfshrink.tflite.preprocess import METADATA_NAME, Preprocess, parse_preprocess
from tfshrink.verification import VerifyResult, bound_values

Progress = Callable[[str, int, int], None]


def _io_types(mode: str, input_type: str | None, output_type: str | None) -> tuple[str, str]:
    allowed = IO_TYPES.get(mode, ("float32",))
    chosen = []
    for flag, value in (("--input-type", input_type), ("--output-type", output_type)):
        v = (value or "float32").lower()
        if v not in allowed:
            if mode not in IO_TYPES:
                raise UserError(f"{flag} {v} needs --quantize int8 (int8/uint8) or int16x8 (int16)",
                                f"--quantize {mode} keeps float32 inputs and outputs")
            raise UserError(f"{flag} {v} does not go with --quantize {mode}", f"choose one of {', '.join(allowed)}")
        chosen.append(v)
    return chosen[0], chosen[1]


def convert(source: str | Path, output: str | Path, *, quantize: str = "none",
            calibration: str | Path | None = None, calibration_samples: int = 100,
            preprocess: str | Preprocess | None = None, input_type: str | None = None,
            output_type: str | None = None,
            input_shapes: Mapping[str, Sequence[int]] | Sequence[str] | None = None,
            inputs: Sequence[str] | str | None = None, outputs: Sequence[str] | str | None = None,
            allow_custom_ops: bool = False, select_tf_ops: bool = False, keep_float: Sequence[str] = (),
            signature: str | None = None, tags: str | None = None,
            binds: Mapping[str, Any] | Sequence[str] | None = None, verify: bool = True, verify_samples: int = 32,
            seed: int = 0,
            min_cosine: float | None = None, max_top1_drop: float | None = None,
            report: str | Path | None = None, activation_ranges: str = "mse",
            target: str = "cpu", plan: str | Path | None = None, eval: str | Path | None = None,
            eval_samples: int = 100, check_cosine: float | None = None, weight_rounding: str = "adaptive",
            max_size_ratio: float | None = None, calibration_spec: str | Path | None = None,
            progress: Progress | None = None) -> ConvertResult:
    """Convert `source` to a .tflite at `output` and verify it against the source.

    quantize: "none" (float32), "float16", "dynamic" (int8 weights), "int8" (full integer, needs
    `calibration`, except for a quantization-aware trained graph: when the frozen source holds
    FakeQuant nodes, their trained ranges are used and `calibration`, if given, only verifies) or
    "int16x8" (int16 activations, needs `calibration`). Nothing is timed: the same source, options
    and data give the same bytes on every machine. The int8 default follows `target`'s rules
    (tfshrink.conversion.rules): "cpu" (LiteRT with XNNPACK, the default) keeps the output softmax,
    a small first conv (a float32 input of at most 4 channels, under 1,024 weights) and the ops
    XNNPACK has no int8 kernel for (PRELU) in float, so that the model runs in one XNNPACK
    partition; "int8-only" (Edge TPU, NPU, microcontroller) makes every op int8 where an int8
    kernel exists. plan: a JSON file written by tfshrink.conversion.tuning.tune (`tfshrink tune`),
    which measured those choices on a machine: its choices replace the rules (int8, target cpu,
    no keep_float). The result's `delegation` says how XNNPACK splits the model (measured by
    loading it in LiteRT, not timed); the target (and the plan's hash) is stored in the model's
    `tfshrink.target` metadata. keep_float=["none"] is strict full int8: every op that has an int8
    kernel in int8 (an op with none stays float, with a warning). calibration: a folder or
    glob of JPEG/PNG images (needs `preprocess`), an .npy/.npz (keyed by input name), "random", or a
    streamed dataset (TFRecords read per the parse spec `calibration_spec`, a .toml/.json dataset
    file, a module:function entry point; tfshrink.data.stream).
    preprocess: a SPEC such as "size=224x224,mean=127.5,std=127.5,color=rgb", stored in the model.
    input_shapes fix unknown dims (batch defaults to 1). inputs/outputs pick the tensors to convert
    between. keep_float: TFLite ops (CONV_2D) or TF nodes/scopes to leave in float (int8 only),
    ["none"] (strict full int8), or ["auto"]: keep the layers with the worst measured error in float, one at a time, until every
    output's cosine to the source is at least `min_cosine` and/or top-1 agreement dropped by at
    most `max_top1_drop` percentage points (default: min_cosine 0.999). report: a folder for the
    per-layer quantization error (layer_errors.csv, .png, .svg; int8 only). activation_ranges
    (int8): "mse" narrows each calibrated activation range to its least squared error on the
    calibration samples (tfshrink.conversion.ranges); "minmax" keeps TFLite's min/max.
    weight_rounding (int8): "adaptive" rounds each layer's int8 weights to its least output error on
    the calibration samples (tfshrink.conversion.rounding); "nearest" keeps TFLite's rounding.
    quantize="auto": the smallest, fastest-by-rule model among int8, int8 with a few float layers,
    dynamic-range and float16 that meets `min_cosine` / `max_top1_drop` (default min_cosine 0.999)
    on held-out data (tfshrink.conversion.auto); the result's `quantize` is the chosen mode and
    `auto` lists every candidate. max_size_ratio: --keep-float auto's and auto's size budget, times
    the int8 model (default 1.5; tfshrink.conversion.keep_auto). Held-out data: eval (a path read like `calibration`, at most
    `eval_samples` samples), else the last fifth of the calibration samples, which then do not
    calibrate (tfshrink.conversion.heldout). The check after converting runs on that data and
    raises CheckFailed (nothing written) when a source output is constant on it or an output's
    cosine is below `check_cosine` (default: `min_cosine` when given, else 0.99; 0 never passes).
    progress(phase, done, total) is called while loading calibration data, calibrating and verifying.
    Raises UserError for bad input; nothing is written then.
    """
    mode = str(quantize).lower()
    if mode not in MODES:
        raise UserError(f"--quantize {quantize} is not one of {', '.join(MODES)}", "e.g. --quantize int8")
    in_type, out_type = _io_types(mode, input_type, output_type)
    if activation_ranges not in RANGE_METHODS:
        raise UserError(f"--activation-ranges {activation_ranges} is not one of {', '.join(RANGE_METHODS)}",
                        "e.g. --activation-ranges mse")
    if weight_rounding not in ROUNDING_METHODS:
        raise UserError(f"--weight-rounding {weight_rounding} is not one of {', '.join(ROUNDING_METHODS)}",
                        "e.g. --weight-rounding adaptive")
    check_cosine_value(check_cosine)
    keep = tuple(split_names(keep_float))
    if keep and mode != "int8":
        raise UserError(f"--keep-float works with --quantize int8, not {mode}", "add --quantize int8")
    strict = any(k.lower() == "none" for k in keep)
    if strict and len(keep) > 1:
        raise UserError("--keep-float none (strict full int8) cannot be combined with other --keep-float items",
                        "give none alone, or name only the layers/ops to keep in float")
    if strict:
        keep = ()
    auto = any(k.lower() == "auto" for k in keep)
    if auto and len(keep) > 1:
        raise UserError("--keep-float auto picks the layers itself", "give auto alone, or name the layers/ops")
    runtime = check_target(target)
    if mode == "auto" and plan is not None:
        raise UserError("--quantize auto chooses the mode; --plan is for --quantize int8", "drop one of them")
    chosen_plan = check_plan(plan, mode, runtime, bool(keep) or strict)
    if runtime == "int8-only" and mode != "int8":
        raise UserError(f"--target int8-only is for --quantize int8, not {mode}", "add --quantize int8")
    if runtime == "int8-only" and keep:
        raise UserError("--target int8-only makes every op int8: --keep-float cannot keep layers in float",
                        "drop --keep-float, or use --target cpu")
    choosing = auto or mode == "auto"  # an accuracy target picks layers or the mode
    if (min_cosine is not None or max_top1_drop is not None) and not choosing:
        raise UserError("--min-cosine and --max-top1-drop are targets for --keep-float auto and --quantize auto",
                        "add --keep-float auto or --quantize auto")
    auto_target = make_target(min_cosine, max_top1_drop)
    if max_size_ratio is not None and not choosing:
        raise UserError("--max-size-ratio is the size budget of --keep-float auto and --quantize auto",
                        "add --keep-float auto or --quantize auto")
    if max_size_ratio is not None and not max_size_ratio >= 1.0:
        raise UserError(f"--max-size-ratio {max_size_ratio} must be at least 1 (times the int8 model's size)",
                        "e.g. --max-size-ratio 1.5")
    growth = MAX_GROWTH if max_size_ratio is None else max_size_ratio
    if eval is not None and not verify and not choosing:
        raise UserError("--eval is the held-out data convert checks the model on; --no-verify skips that check",
                        "drop one of them")
    if report is not None and mode != "int8":
        raise UserError(f"--report measures per-layer int8 error; --quantize {mode} has none",
                        "add --quantize int8")
    report_dir = Path(report) if report is not None else None
    if report_dir is not None and report_dir.exists() and not report_dir.is_dir():
        raise UserError(f"--report {report_dir}: a file is in the way", "give a folder (it is created)")
    if mode in ("int16x8", "auto") and calibration is None:  # int8 may find its ranges in FakeQuant nodes
        no_calibration(mode)
    spec = parse_preprocess(preprocess)
    out_path = check_output(output, [source], writes="tflite")
    if report_dir is not None and report_dir.resolve() in (out_path.resolve(), Path(source).resolve()):
        raise UserError(f"--report {report_dir} is the {'output' if report_dir.resolve() == out_path.resolve() else 'source'}"
                        " model's own path", "give the report a folder of its own")
    overrides = shape_overrides(input_shapes)
    notes: list[str] = []
    warnings: list[str] = []
    defaults: dict[str, Any] = {"target": runtime}
    model = load(source, signature=signature, outputs=split_names(outputs) or None, tags=tags)
    try:
        if model.format == "tflite":
            raise UserError(f"{source}: already a TFLite model",
                            "convert takes a frozen .pb/.pbtxt, a checkpoint, a SavedModel or a Keras model")
        wanted = split_names(outputs)
        detection = getattr(model, "detection", None)
        if not wanted and detection is not None and detection.ambiguous and model.format != "savedmodel":
            raise ambiguity_error(model)
        signatures = getattr(model, "signature_names", [])
        if model.format == "savedmodel" and len(signatures) > 1:
            notes.append(f"converted signature {getattr(model, 'signature', '?')!r} of {', '.join(signatures)} "
                         "(pick another with --signature)")
        bind_map = parse_binds(binds)
        frozen = model.freeze(wanted or None, bind_map)

        qat = mode in ("int8", "auto") and has_fake_quant(frozen.graph_def)
        if qat and mode == "auto":
            raise UserError("--quantize auto: this graph holds FakeQuant nodes (quantization-aware training); "
                            "its int8 comes from their trained ranges", "convert it with --quantize int8")
        ranges: list[Any] = []
        if qat:
            if chosen_plan is not None:
                raise UserError("--plan chooses float layers for calibrated int8; this graph's ranges come from its "
                                "FakeQuant nodes (quantization-aware training)", "drop --plan")
            frozen, ranges = qat_source(model, frozen, wanted, keep, auto, report_dir, calibration, str(source),
                                         notes, warnings, defaults)
        elif mode == "int8" and calibration is None:
            no_calibration(mode)
        specs = input_specs(model, frozen, split_names(inputs), overrides, spec, notes, defaults, str(source))
        if spec is not None:
            target = image_input(specs, spec)
            spec = spec.resolve(target.name, target.shape)
        calib = None
        if calibration is not None:
            calib = load_calibration(calibration, specs, samples=calibration_samples, preprocess=spec, seed=seed,
                                     progress=phase(progress, "loading calibration images"), spec=calibration_spec)
            notes.extend(calib.notes)
            warnings.extend(calib.warnings)
            if mode not in CALIBRATED and mode != "auto":
                notes.append(f"--quantize {mode} needs no calibration; the calibration samples are used to verify")
        calibrates = (mode in CALIBRATED or mode == "auto") and not qat
        checked: CheckData | None = None
        if eval is not None:
            checked, eval_warnings = load_eval(eval, specs, eval_samples, spec, seed,
                                               phase(progress, "loading --eval samples"),
                                               len(calib.samples) if (calib and calibrates) else None)
            warnings.extend(eval_warnings)
        elif calib is not None and calibrates:
            calib, checked = split_calibration(calib)
        elif calib is not None:
            why = "ranges from training" if qat else f"--quantize {mode} does not calibrate"
            checked = CheckData(calib.samples[:max(verify_samples, 1)], "calibration",
                                f"{min(len(calib.samples), max(verify_samples, 1))} calibration sample(s) ({why})", True,
                                calib.source)
        options = ConvertOptions("int8" if mode == "auto" else mode, in_type, out_type, allow_custom_ops,
                                 select_tf_ops, () if auto else keep, activation_ranges, weight_rounding)
        if mode in ("int8", "auto") and not qat and calib is not None:
            defaults["activation_ranges"] = activation_ranges
            defaults["weight_rounding"] = weight_rounding
        if qat:  # the FakeQuant patterns stay as trained: no activation rewrites
            graph_def = frozen.graph_def
        else:
            graph_def, rewrites = prepare_graph(frozen.graph_def, specs, frozen.outputs)
            notes.extend(rewrites)
        layers: list[LayerError] = []
        auto_keep = None
        converted = None
        default_float: dict[str, int] = {}  # op -> count the int8 default left in float
        delegation: Delegation | None = None
        picked = None
        if mode == "auto" and calib is not None and checked is not None:
            picked = choose_mode(graph_def, specs, frozen.outputs, options, calib, checked, auto_target,
                                 Path(model.path), str(source), progress, growth)
            best = picked.chosen
            mode, converted, default_float, delegation = best.mode, best.converted, best.default_float, best.delegation
            keep, auto_keep = best.keep, best.auto_keep
            notes.extend([*best.notes, NOTES["auto"], f"--quantize auto: {picked.reason}; tried: "
                          + "; ".join(c.text() for c in picked.candidates)])
            defaults.update({k: v for k, v in best.defaults.items() if k != "target"}, quantize="auto")
            if mode != "int8":  # float activations: no ranges, no int8 weights to round
                defaults.pop("activation_ranges", None)
                defaults.pop("weight_rounding", None)
            options = ConvertOptions(mode, in_type, out_type, allow_custom_ops, select_tf_ops, (), activation_ranges,
                                     weight_rounding)
        if qat:

            converted = Converted(convert_fake_quant_graph(graph_def, specs, list(frozen.outputs), in_type, out_type,
                                                           str(source)))
        if converted is None and mode == "int8" and calib is not None and (auto or report_dir is not None):
            converted, layers, auto_keep = debugged(graph_def, specs, frozen.outputs, options, calib, keep, auto,
                                                     auto_target, checked, Path(model.path), str(source), notes,
                                                     warnings, progress, growth)
            if auto:
                keep = tuple(t for ts in converted.kept_float.values() for t in ts)
        if converted is None and mode == "int8" and not keep and not auto and not strict and calib is not None:
            converted, default_float, delegation = int8_default(graph_def, specs, frozen.outputs, options, calib,
                                                                 str(source), notes, defaults, progress, runtime,
                                                                 chosen_plan)
            if default_float:
                keep = tuple(converted.kept_float["default"])
        if converted is None:
            converted = convert_graph(graph_def, specs, frozen.outputs, options,
                                      calib.samples if (calib and mode in CALIBRATED) else None, str(source),
                                      progress=phase(progress, "calibrating"))
        if mode == "int8" and strict:
            defaults["keep_float"] = "none"
        notes.extend(converted.notes)
        mode_notes(mode, (in_type if input_type is None else None, out_type if output_type is None else None),
                    keep, notes, defaults, qat=qat)
        data = converted.data
        spec = quantized_input(spec, data)
        entries = {METADATA_NAME: spec.metadata_bytes()} if spec is not None else {}
        entries.update(target_entry(runtime, mode, chosen_plan.sha256 if chosen_plan is not None else None))
        data = rewrite(data, entries, signature=([s.name for s in specs], list(frozen.outputs)))
        if delegation is None:
            delegation = xnnpack_delegation(data)
        notes.append(f"XNNPACK (LiteRT on CPU, measured by loading the model, not timed): {delegation.describe()}")
        prec = None
        if mode in CALIBRATED:
            prec = precision(data)
            builtins = builtin_ops()
            custom = {op: n for op, n in prec.float_ops.items() if op not in builtins}
            inner = {op: n for op, n in prec.float_ops.items() if op in builtins}
            if custom:
                notes.append(f"custom op(s) {', '.join(custom)} take float inputs (TFLite's quantizer leaves custom "
                             "ops in float; LiteRT's kernel dequantizes into them)")
            if default_float:  # what the int8 default left in float: a note, not a warning
                chosen = {op: min(n, inner[op]) for op, n in default_float.items() if inner.get(op)}
                inner = {op: n - chosen.get(op, 0) for op, n in inner.items() if n - chosen.get(op, 0)}
                if chosen:
                    notes.append(f"{sum(chosen.values())} op(s) stayed float as the int8 default chose (see its "
                                 f"notes): {', '.join(f'{op} x{n}' for op, n in chosen.items())}")
            if inner:
                kept = ((" (as --quantize auto chose)" if picked else " (as --keep-float asked)")
                        if keep and not default_float else "")
                ops = ", ".join(f"{op} x{n}" for op, n in inner.items())
                (notes if keep and not default_float else warnings).append(
                    f"{sum(inner.values())} op(s) stayed float{kept}: {ops}; each is wrapped in "
                    "QUANTIZE/DEQUANTIZE and runs on float kernels")
        with tempfile.TemporaryDirectory(prefix="tfshrink-convert-") as tmp:
            tmp_path = Path(tmp) / out_path.name
            tmp_path.write_bytes(data)
            missing, frontier = unregistered_ops(frozen.graph_def)
            if missing and verify:
                verification, verify_inputs = verify_upstream(
                    missing, frontier, graph_def, specs, options, calib, checked, spec, tmp_path, verify_samples,
                    seed, notes, phase(progress, "verifying"))
            else:
                random = None
                if qat and spec is None and not (checked and checked.feeds):
                    random = range_feeds(frozen.graph_def, specs, ranges, verify_samples, seed)
                verification, verify_inputs = verify_converted(
                    model, frozen, specs, bool(inputs), tmp_path, out_path, checked, spec, verify, verify_samples,
                    seed, notes, phase(progress, "verifying"), random, bound_values(model, bind_map))
        floor = threshold(check_cosine, min_cosine if choosing else None)
        if check_cosine is None and mode not in CALIBRATED and mode != "auto":
            # float16 and dynamic-range keep float activations: a low cosine there is a warning (below)
            # unless --check-cosine asks for more; a constant output or a cosine <= 0 still fails.
            floor = 0.0
        if verification is not None:
            real = checked is not None and bool(checked.feeds) and checked.kind != "random"  # random: warn only
            check(verification if real else _without_constant(verification), floor, verify_inputs,
                  "auto" if picked else mode)
            warnings.extend(verification.warnings)
        expected = {"none": 0.9999, "float16": 0.9999, "dynamic": 0.99}.get(mode)
        if verification is not None and expected is not None:
            worst = min((o.cosine for o in verification.outputs), default=1.0)
            if worst < expected:
                warnings.append(f"the {mode} model differs from the source more than expected (cosine {worst:.6f}; "
                                "--check-cosine makes that a failed check)")

        ops = flatbuffer_summary(data)["ops"]
        io = io_specs(data)
        files: list[Path] = []
        if report_dir is None:
            atomic_write(out_path, data)
        else:  # the model and its report together or not at all
            with staged_folder(report_dir) as staging:
                staged = write_report(staging, layers, f"{Path(str(source)).name} int8: RMSE/scale per layer "
                                      f"({len(layers)} layers, {min(len(calib.samples), DEBUG_SAMPLES) if calib else 0}"
                                      " samples)")
                atomic_write(out_path, data)
            files = [report_dir / f.name for f in staged]
            notes.append(f"per-layer quantization error written to {report_dir} ({', '.join(f.name for f in files)})")
    finally:
        model.close()
    return ConvertResult(mode, disk_bytes(Path(model.path)), defaults, calib, spec, prec, converted.kept_float,
                         tuple(layers), auto_keep, tuple(str(f) for f in files), runtime, delegation,
                         chosen_plan.sha256 if chosen_plan is not None else None,
                         checked if verification is not None else None, floor if verification is not None else None,
                         picked, source=str(source), format=model.format, output=str(out_path), bytes=len(data),
                         inputs=tuple(io[0]), outputs=tuple(io[1]), ops=ops, notes=tuple(notes),
                         warnings=tuple(warnings), verification=verification, verify_inputs=verify_inputs)


def _without_constant(verification: VerifyResult) -> VerifyResult:
    """The result with no output marked constant: on seeded random inputs a saturated output can
    be the same for every input; that is a warning there, not a failed check."""
    return replace(verification, outputs=tuple(replace(o, constant=False) for o in verification.outputs))
