"""Convert any supported model to TFLite: float32, float16, dynamic-range, full int8 or int16x8,
then check the result against the source.

    result = convert("model.keras", "model_int8.tflite", quantize="int8", calibration="photos/",
                     preprocess="mean=127.5,std=127.5")

The source (frozen .pb/.pbtxt, TF1 checkpoint, SavedModel, Keras .keras/.h5) is frozen in memory
and converted with TF's GraphDef converter. Defaults are the fast ones measured in LiteRT (see
`ConvertResult.notes` for what was chosen and why). The output is written only when everything
succeeded, atomically, and the same input and options give the same bytes.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.conversion.converter import (
    CALIBRATED,
    IO_TYPES,
    MODES,
    Converted,
    ConvertOptions,
    convert_graph,
    prepare_graph,
)
from tfshrink.conversion.layers import DEBUG_SAMPLES, FLAG_ABOVE, AutoKeep, LayerError, Target
from tfshrink.conversion.ranges import METHODS as RANGE_METHODS
from tfshrink.data.calibration import Calibration, InputSpec, image_input, load_calibration
from tfshrink.errors import UserError, first_line
from tfshrink.fileio import atomic_write, check_output
from tfshrink.model import Model, TensorSpec, ambiguity_error, load
from tfshrink.model.freezing import parse_binds
from tfshrink.model.tflite import io_specs
from tfshrink.names import resolve_tensors, split_names
from tfshrink.tflite.flatbuffer import builtin_ops
from tfshrink.tflite.metadata import Precision, precision, rewrite
from tfshrink.tflite.preprocess import METADATA_NAME, Preprocess, parse_preprocess, read_preprocess
from tfshrink.verification import SourceView, VerifyResult, bound_values, compare

__all__ = ["MODES", "ConvertResult", "Preprocess", "convert", "parse_preprocess", "read_preprocess"]

Progress = Callable[[str, int, int], None]

# What tfshrink chose and why, from LiteRT 2.3 measurements on an AVX2 x86 CPU (MobileNetV2 224
# with random weights, and the digits CNN of the tests).
NOTES = {
    "io": ("inputs and outputs stay float32: the QUANTIZE/DEQUANTIZE ops at the edges run inside "
           "LiteRT's XNNPACK delegate and measured the same latency as int8 I/O (MobileNetV2, 1 thread: "
           "10.6 vs 10.6 ms); pass --input-type/--output-type int8 or uint8 for integer-only hardware"),
    "int8": "every op restricted to LiteRT's int8 builtins (TFLITE_BUILTINS_INT8), weights per channel",
    "dynamic": ("dynamic-range ops (int8 weights, float activations) are not taken by XNNPACK everywhere: "
                "MobileNetV2 splits into 16 XNNPACK partitions with LiteRT's hybrid kernels between them and "
                "measured 1.4x (1 thread) to 1.8x (2 threads) slower than float; --quantize int8 with calibration "
                "is about as small and faster there (a tiny model XNNPACK takes whole can be fastest dynamic)"),
    "int16x8": ("int16x8 runs on LiteRT's reference kernels (XNNPACK takes no int16 activations): on CPU it "
                "measured ~13x slower than int8 on a small CNN; use it where int8 accuracy is not enough"),
    "float16": ("float16 weights are expanded to float32 when LiteRT loads the model on CPU: half the file, "
                "float speed"),
}


@dataclass(frozen=True)
class ConvertResult:
    """What `convert` did: sizes, the mode and the defaults it chose, and how close the result is."""

    source: str
    format: str
    output: str
    quantize: str
    bytes: int
    source_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    defaults: dict[str, Any]
    calibration: Calibration | None
    preprocess: Preprocess | None
    precision: Precision | None
    kept_float: dict[str, list[str]]
    ops: dict[str, int]
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    verification: VerifyResult | None
    verify_inputs: str = ""
    layers: tuple[LayerError, ...] = ()  # per-layer quantization error (--report, --keep-float auto)
    auto_keep: AutoKeep | None = None
    report_files: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "format": self.format, "output": self.output, "quantize": self.quantize,
            "bytes": self.bytes, "source_bytes": self.source_bytes,
            "inputs": [s.to_json() for s in self.inputs], "outputs": [s.to_json() for s in self.outputs],
            "defaults": self.defaults,
            "calibration": self.calibration.to_json() if self.calibration else None,
            "preprocess": self.preprocess.to_json() if self.preprocess else None,
            "precision": self.precision.to_json() if self.precision else None,
            "kept_float": self.kept_float, "ops": self.ops,
            "notes": list(self.notes), "warnings": list(self.warnings),
            "verification": self._verification_json(),
            "layers": [x.to_json() for x in self.layers],
            "auto_keep_float": self.auto_keep.to_json() if self.auto_keep else None,
            "report_files": list(self.report_files),
        }

    def _verification_json(self) -> dict[str, Any] | None:
        if self.verification is None:
            return None
        v = self.verification
        return {"inputs": self.verify_inputs, "samples": v.samples,
                "outputs": [{"name": o.name_b, "source_name": o.name_a, "cosine": o.cosine,
                             "max_abs_error": o.max_abs, "mean_abs_error": o.mean_abs, "top1_agreement": o.top1}
                            for o in v.outputs]}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.parent.glob(f"{path.name}.*") if f.is_file())  # checkpoint prefix


def _shape_overrides(shapes: Mapping[str, Sequence[int]] | Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    from tfshrink.data.feeds import parse_shape_overrides

    if not shapes:
        return {}
    if isinstance(shapes, Mapping):
        return {k.split(":")[0]: tuple(int(d) for d in v) for k, v in shapes.items()}
    return parse_shape_overrides(list(shapes))


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
            progress: Progress | None = None) -> ConvertResult:
    """Convert `source` to a .tflite at `output` and verify it against the source.

    quantize: "none" (float32), "float16", "dynamic" (int8 weights), "int8" (full integer, needs
    `calibration`, except for a quantization-aware trained graph: when the frozen source holds
    FakeQuant nodes, their trained ranges are used and `calibration`, if given, only verifies) or
    "int16x8" (int16 activations, needs `calibration`). The int8 default times the all-int8 model
    against the one with its small first conv (a model input of at most 4 channels, under 1,024
    weights) in float, in LiteRT on this machine, and keeps that conv in float only when it is
    more than 5% faster; when it did, it times the next layers one at a time in dynamic-range form
    (float activations, int8 weights) the same way (tfshrink.conversion.speed; notes say what and
    both latencies). keep_float=["none"] is strict full int8: every op that has an int8 kernel in
    int8 (an op with none stays float, with a warning), no timing, the same bytes every run. calibration: a folder or
    glob of JPEG/PNG images (needs `preprocess`), an .npy/.npz (keyed by input name), or "random".
    preprocess: a SPEC such as "size=224x224,mean=127.5,std=127.5,color=rgb", stored in the model.
    input_shapes fix unknown dims (batch defaults to 1). inputs/outputs pick the tensors to convert
    between. keep_float: TFLite ops (CONV_2D) or TF nodes/scopes to leave in float (int8 only),
    ["none"] (strict full int8), or ["auto"]: keep the layers with the worst measured error in float, one at a time, until every
    output's cosine to the source is at least `min_cosine` and/or top-1 agreement dropped by at
    most `max_top1_drop` percentage points (default: min_cosine 0.999). report: a folder for the
    per-layer quantization error (layer_errors.csv, .png, .svg; int8 only). activation_ranges
    (int8): "mse" narrows each calibrated activation range to its least squared error on the
    calibration samples (tfshrink.conversion.ranges); "minmax" keeps TFLite's min/max.
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
    if (min_cosine is not None or max_top1_drop is not None) and not auto:
        raise UserError("--min-cosine and --max-top1-drop are targets for --keep-float auto", "add --keep-float auto")
    if min_cosine is not None and not -1.0 <= min_cosine <= 1.0:
        raise UserError(f"--min-cosine {min_cosine} is not a cosine", "give a value in [-1, 1], e.g. 0.999")
    if max_top1_drop is not None and not 0.0 <= max_top1_drop <= 100.0:
        raise UserError(f"--max-top1-drop {max_top1_drop} is not a percentage", "give 0..100 points, e.g. 1")
    auto_target = Target(0.999 if (auto and min_cosine is None and max_top1_drop is None) else min_cosine, max_top1_drop)
    if report is not None and mode != "int8":
        raise UserError(f"--report measures per-layer int8 error; --quantize {mode} has none",
                        "add --quantize int8")
    report_dir = Path(report) if report is not None else None
    if report_dir is not None and report_dir.exists() and not report_dir.is_dir():
        raise UserError(f"--report {report_dir}: a file is in the way", "give a folder (it is created)")
    if mode == "int16x8" and calibration is None:  # int8 may find its ranges in FakeQuant nodes
        _no_calibration(mode)
    spec = parse_preprocess(preprocess)
    out_path = check_output(output, [source])
    overrides = _shape_overrides(input_shapes)
    notes: list[str] = []
    warnings: list[str] = []
    defaults: dict[str, Any] = {}
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
        from tfshrink.conversion.fake_quant import has_fake_quant

        qat = mode == "int8" and has_fake_quant(frozen.graph_def)
        ranges: list[Any] = []
        if qat:
            frozen, ranges = _qat_source(model, frozen, wanted, keep, auto, report_dir, calibration, str(source),
                                         notes, warnings, defaults)
        elif mode == "int8" and calibration is None:
            _no_calibration(mode)
        specs = _input_specs(model, frozen, split_names(inputs), overrides, spec, notes, defaults, str(source))
        if spec is not None:
            target = image_input(specs, spec)
            spec = spec.resolve(target.name, target.shape)
        calib = None
        if calibration is not None:
            calib = load_calibration(calibration, specs, samples=calibration_samples, preprocess=spec, seed=seed,
                                     progress=_phase(progress, "loading calibration images"))
            notes.extend(calib.notes)
            warnings.extend(calib.warnings)
            if mode not in CALIBRATED:
                notes.append(f"--quantize {mode} needs no calibration; the calibration samples are used to verify")
        options = ConvertOptions(mode, in_type, out_type, allow_custom_ops, select_tf_ops, () if auto else keep,
                                 activation_ranges)
        if mode == "int8" and not qat and calib is not None:
            defaults["activation_ranges"] = activation_ranges
        if qat:  # the FakeQuant patterns stay as trained: no activation rewrites
            graph_def = frozen.graph_def
        else:
            graph_def, rewrites = prepare_graph(frozen.graph_def, specs, frozen.outputs)
            notes.extend(rewrites)
        layers: list[LayerError] = []
        auto_keep = None
        converted = None
        if qat:
            from tfshrink.conversion.fake_quant import convert_fake_quant_graph

            converted = Converted(convert_fake_quant_graph(graph_def, specs, list(frozen.outputs), in_type, out_type,
                                                           str(source)))
        if mode == "int8" and calib is not None and (auto or report_dir is not None):
            converted, layers, auto_keep = _debugged(graph_def, specs, frozen.outputs, options, calib, keep, auto,
                                                     auto_target, verify_samples, Path(model.path), str(source), notes,
                                                     warnings, progress)
            if auto:
                keep = tuple(converted.kept_float.get("auto", []))
        default_float: dict[str, int] = {}  # op -> count the int8 default left in float
        if converted is None and mode == "int8" and not keep and not auto and not strict and calib is not None:
            converted, default_float = _int8_default(graph_def, specs, frozen.outputs, options, calib, str(source),
                                                     notes, defaults, progress)
            if default_float:
                keep = tuple(converted.kept_float["default"])
        if converted is None:
            converted = convert_graph(graph_def, specs, frozen.outputs, options,
                                      calib.samples if (calib and mode in CALIBRATED) else None, str(source),
                                      progress=_phase(progress, "calibrating"))
        if mode == "int8" and strict:
            defaults["keep_float"] = "none"
        notes.extend(converted.notes)
        _mode_notes(mode, (in_type if input_type is None else None, out_type if output_type is None else None),
                    keep, notes, defaults, qat=qat)
        data = converted.data
        spec = _quantized_input(spec, data)
        entries = {METADATA_NAME: spec.metadata_bytes()} if spec is not None else {}
        data = rewrite(data, entries, signature=([s.name for s in specs], list(frozen.outputs)))
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
                kept = " (as --keep-float asked)" if keep and not default_float else ""
                ops = ", ".join(f"{op} x{n}" for op, n in inner.items())
                (notes if keep and not default_float else warnings).append(
                    f"{sum(inner.values())} op(s) stayed float{kept}: {ops}; each is wrapped in "
                    "QUANTIZE/DEQUANTIZE and runs on float kernels")
        with tempfile.TemporaryDirectory(prefix="tfshrink-convert-") as tmp:
            tmp_path = Path(tmp) / out_path.name
            tmp_path.write_bytes(data)
            missing, frontier = unregistered_ops(frozen.graph_def)
            if missing and verify:
                verification, verify_inputs = _verify_upstream(
                    missing, frontier, graph_def, specs, options, calib, spec, tmp_path, verify_samples, seed, notes,
                    _phase(progress, "verifying"))
            else:
                random = None
                if qat and spec is None and not (calib and calib.samples):
                    from tfshrink.conversion.fake_quant import range_feeds

                    random = range_feeds(frozen.graph_def, specs, ranges, verify_samples, seed)
                verification, verify_inputs = _verify(
                    model, frozen, specs, bool(inputs), tmp_path, out_path, calib, spec, verify, verify_samples,
                    seed, notes, _phase(progress, "verifying"), random, bound_values(model, bind_map))
        if verification is not None:
            warnings.extend(verification.warnings)
        if verification is not None and mode in ("none", "float16"):
            worst = min((o.cosine for o in verification.outputs), default=1.0)
            if worst < 0.9999:
                warnings.append(f"the {mode} model differs from the source more than expected (cosine {worst:.6f})")
        from tfshrink.model.tflite import flatbuffer_summary

        ops = flatbuffer_summary(data)["ops"]
        io = io_specs(data)
        atomic_write(out_path, data)
        files: list[Path] = []
        if report_dir is not None:
            from tfshrink.conversion.layers import write_report

            files = write_report(report_dir, layers, f"{Path(str(source)).name} int8: RMSE/scale per layer "
                                 f"({len(layers)} layers, {min(len(calib.samples), DEBUG_SAMPLES) if calib else 0} "
                                 "samples)")
            notes.append(f"per-layer quantization error written to {report_dir} ({', '.join(f.name for f in files)})")
    finally:
        model.close()
    return ConvertResult(str(source), model.format, str(out_path), mode, len(data), _size(Path(model.path)),
                         tuple(io[0]), tuple(io[1]), defaults, calib, spec, prec, converted.kept_float, ops,
                         tuple(notes), tuple(warnings), verification, verify_inputs, tuple(layers), auto_keep,
                         tuple(str(f) for f in files))


def _debugged(graph_def: Any, specs: list[InputSpec], outputs: Sequence[str], options: ConvertOptions,
              calib: Calibration, keep: tuple[str, ...], auto: bool, target: Target, verify_samples: int,
              where_path: Path, where: str, notes: list[str], warnings: list[str], progress: Progress | None
              ) -> tuple[Converted | None, list[LayerError], AutoKeep | None]:
    """Calibrate once with TF's QuantizationDebugger, measuring every layer's error; then quantize
    with --keep-float auto's choice or the named layers (None: no --keep-float, convert as usual)."""
    from dataclasses import replace

    from tfshrink.conversion.converter import quantize, refine_ranges, resolve_keep_float
    from tfshrink.conversion.layers import auto_keep_float, debug_layers, float_reference

    debugged = debug_layers(graph_def, specs, outputs, options, calib.samples, where,
                            progress=_phase(progress, "calibrating and measuring layers"))
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
        missing, _ = unregistered_ops(graph_def)
        if missing:
            raise UserError(f"--keep-float auto compares with the source, which TensorFlow cannot run "
                            f"({', '.join(missing)} has no kernel)", "name the layers to keep with --keep-float")
        feeds = [dict(f) for f in calib.samples[:max(1, verify_samples)]]
        reference = float_reference(graph_def, specs, outputs, feeds, where_path)
        chosen = auto_keep_float(debugged, options, specs, outputs, reference, feeds, target, where,
                                 progress=_phase(progress, "keeping layers in float"))
        kept_names = {k.tensor for k in chosen.kept}
        layers = [replace(x, kept_float=x.tensor in kept_names) for x in layers]
        notes.append(_auto_note(chosen))
        if not chosen.reached:
            warnings.append(f"--keep-float auto did not reach {target.describe()} after keeping "
                            f"{len(chosen.kept)} layer(s) in float (best: {_score_text(chosen.scores[-1])})")
        return Converted(chosen.data, kept_float={"auto": [k.tensor for k in chosen.kept]}), layers, chosen
    if not keep:
        return None, layers, None
    ops, nodes, kept = resolve_keep_float(keep, debugged.calibrated)
    layers = [replace(x, kept_float=x.op in ops or x.tensor in nodes) for x in layers]
    return Converted(quantize(debugged.calibrated, options, where, denylisted_ops=ops, denylisted_nodes=nodes),
                     kept_float=kept), layers, None


def _score_text(score: Any) -> str:
    text = f"cosine {score.cosine:.6f}"
    if score.top1_drop is not None:
        text += f", top-1 drop {score.top1_drop:.2f} points"
    return text


def _auto_note(chosen: AutoKeep) -> str:
    first = chosen.scores[0]
    if not chosen.kept:
        return (f"--keep-float auto: all-int8 already meets {chosen.target.describe()} ({_score_text(first)}); "
                "nothing kept in float")
    kept = ", ".join(f"{k.layer} ({k.op}, RMSE/scale {k.rmse_scale:.3g})" for k in chosen.kept)
    size = (f"size {chosen.int8_bytes:,} -> {chosen.bytes:,} bytes "
            f"({100.0 * (chosen.bytes - chosen.int8_bytes) / max(chosen.int8_bytes, 1):+.1f}%)")
    latency = ""
    if chosen.int8_latency_ms is not None and chosen.latency_ms is not None:
        latency = (f", latency p50 {chosen.int8_latency_ms:.4g} -> {chosen.latency_ms:.4g} ms "
                   f"({100.0 * (chosen.latency_ms - chosen.int8_latency_ms) / max(chosen.int8_latency_ms, 1e-9):+.0f}%, "
                   "LiteRT, 1 thread)")
    return (f"--keep-float auto: all-int8 {_score_text(first)} misses {chosen.target.describe()}; kept "
            f"{len(chosen.kept)} layer(s) in float, worst measured error first: {kept} -> "
            f"{_score_text(chosen.scores[-1])}; cost: {size}{latency}")


def _phase(progress: Progress | None, label: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None

    def step(done: int, total: int) -> None:
        progress(label, done, total)

    return step


def _int8_default(graph_def: Any, specs: list[InputSpec], outputs: Sequence[str], options: ConvertOptions,
                  calib: Calibration, where: str, notes: list[str], defaults: dict[str, Any],
                  progress: Progress | None) -> tuple[Converted, dict[str, int]]:
    """int8 with no --keep-float: the output softmax in float, and the small first conv too where
    that measured more than 5% faster here (tfshrink.conversion.speed), all quantized from one
    calibration. Returns (the converted model, op -> count of the ops it left in float)."""
    from tfshrink.conversion.speed import fastest_int8

    choice = fastest_int8(graph_def, specs, outputs, options, calib.samples, where,
                          progress=_phase(progress, "calibrating"))
    notes.extend(choice.notes)
    if choice.softmax:
        defaults["output_softmax"] = {"tensors": list(choice.softmax), "kept_float": True}
    if choice.conv is not None:
        defaults["first_conv"] = {"tensor": choice.conv.tensor, "kept_float": choice.kept,
                                  "int8_p50_ms": choice.int8_ms, "first_conv_float_p50_ms": choice.kept_ms}
    if choice.leading:
        defaults["leading_layers"] = [
            {"tensor": s.tensor, "op": s.op, "between": [t for t, _ in s.between], "dynamic_range": s.hybrid,
             "int8_p50_ms": s.before_ms, "dynamic_range_p50_ms": s.after_ms, "kept": s.kept} for s in choice.leading]
    if not choice.kept_float:
        return Converted(choice.data), {}
    kept_leading = len(choice.kept_leading)
    defaults["keep_float"] = " and ".join([
        *(["output softmax"] if choice.softmax else []),
        *(["first conv (measured faster)"] if choice.kept else []),
        *([f"the next {kept_leading} layer(s) in dynamic-range form (measured faster)"] if kept_leading else [])])
    return Converted(choice.data, kept_float={"default": choice.kept_float}), choice.kept_ops


def _no_calibration(mode: str) -> None:
    raise UserError(f"--quantize {mode} needs calibration data to measure activation ranges",
                    "pass --calibration with a folder or glob of images, or an .npy/.npz "
                    "(--calibration random accepts poor ranges)"
                    + ("; a quantization-aware trained graph (FakeQuant nodes) needs none" if mode == "int8" else ""))


def _qat_source(model: Model, frozen: Any, wanted: list[str], keep: tuple[str, ...], auto: bool,
                report_dir: Path | None, calibration: str | Path | None, where: str, notes: list[str],
                warnings: list[str], defaults: dict[str, Any]) -> tuple[Any, list[Any]]:
    """int8 of a quantization-aware trained graph: check that it can take the QAT path and return
    (the frozen graph, read after the last layers' fake-quants; its FakeQuant ranges)."""
    from tfshrink.conversion.fake_quant import checked_ranges, quantized_outputs

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


def _mode_notes(mode: str, io_defaults: tuple[str | None, str | None], keep: tuple[str, ...], notes: list[str],
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


def _input_specs(model: Model, frozen: Any, wanted: list[str], overrides: dict[str, tuple[int, ...]],
                 spec: Preprocess | None, notes: list[str], defaults: dict[str, Any], where: str) -> list[InputSpec]:
    """The converter's inputs with fully known shapes: --input-shape first, then batch 1 and the
    --preprocess size for images; any other unknown dim is a UserError."""
    from tfshrink.graph.ir import Graph
    from tfshrink.graph.shapes import tensor_specs

    graph = Graph(frozen.graph_def)
    if wanted:
        names = resolve_tensors(wanted, graph.names(), where)
    else:
        names = [n for n in frozen.inputs if graph.node(n).op == "Placeholder"]
        skipped = [n for n in frozen.inputs if n not in names]
        if skipped:
            notes.append(f"inputs with defaults keep them: {', '.join(skipped)} (give --inputs to feed them)")
    if not names:
        raise UserError(f"{where}: the model has no inputs to convert", "give --inputs NODE[,NODE]")
    for key in overrides:
        if key not in {n.split(":")[0] for n in names}:
            from tfshrink.names import unknown_name_error

            raise unknown_name_error("input", key, names, where)
    found = tensor_specs(graph, names)
    by_name = {s.name: s for s in model.inputs}
    out = []
    batch_fixed = {}
    for name in names:
        dtype, shape = found[name]
        if dtype == "unknown" and name in by_name:
            dtype, shape = by_name[name].dtype, by_name[name].shape
        override = overrides.get(name.split(":")[0])
        if override is not None:
            if shape is not None and len(shape) != len(override):
                raise UserError(f"--input-shape {name}={','.join(map(str, override))} has rank {len(override)}, "
                                f"the input has rank {len(shape)} {_shape_text(shape)}", "give every dim")
            if shape is not None and any(k is not None and k != d for k, d in zip(shape, override, strict=True)):
                raise UserError(f"--input-shape {name}={','.join(map(str, override))} contradicts its known shape "
                                f"{_shape_text(shape)}", "only unknown dims (?) can be set")
            out.append(InputSpec(name, _np_dtype(dtype, name, where), tuple(override)))
            continue
        if shape is None:
            raise UserError(f"{where}: input {name!r} has unknown rank", f"give its shape with --input-shape {name}=1,...")
        dims = list(shape)
        if dims and dims[0] is None:
            dims[0] = 1
            batch_fixed[name] = 1
        if spec is not None and spec.size and len(dims) == 4 and (spec.input in (None, name)):
            for axis, size in ((1, spec.size[1]), (2, spec.size[0])):
                if dims[axis] is None:
                    dims[axis] = size
        if any(d is None for d in dims):
            example = ",".join("1" if i == 0 else ("N" if d is None else str(d)) for i, d in enumerate(dims))
            raise UserError(f"{where}: input {name!r} has unknown dims {_shape_text(shape)}",
                            f"fix them with --input-shape {name}={example}")
        out.append(InputSpec(name, _np_dtype(dtype, name, where), tuple(int(d) for d in dims)))
    if batch_fixed:
        defaults["batch"] = batch_fixed
        notes.append(f"batch size fixed to 1 for {', '.join(batch_fixed)} (it was unknown); "
                     "give --input-shape NAME=N,... for another")
    return out


def _shape_text(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "<unknown>"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _np_dtype(dtype: str, name: str, where: str) -> str:
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise UserError(f"{where}: input {name!r} is {dtype}, which TFLite inputs cannot take from numpy",
                        "convert between numeric tensors (--inputs)") from None


def _quantized_input(spec: Preprocess | None, data: bytes) -> Preprocess | None:
    """Add the quantized input's scale and zero point (and the raw pixel map) to the spec."""
    if spec is None:
        return None
    from tfshrink.tflite.flatbuffer import schema, type_names

    model = schema().Model.GetRootAs(data, 0)
    sub = model.Subgraphs(0)
    for i in range(sub.InputsLength()):
        tensor = sub.Tensors(sub.Inputs(i))
        if (tensor.Name() or b"").decode().split(":")[0] != (spec.input or "").split(":")[0]:
            continue
        dtype = type_names().get(tensor.Type(), "").lower()
        q = tensor.Quantization()
        if dtype in ("int8", "uint8", "int16") and q is not None and q.ScaleLength():
            return spec.with_quantization(dtype, float(q.Scale(0)), int(q.ZeroPoint(0)))
    return spec


def _verify(model: Model, frozen: Any, specs: list[InputSpec], cut: bool, tmp_path: Path, out_path: Path,
            calib: Calibration | None, spec: Preprocess | None, verify: bool, samples: int, seed: int,
            notes: list[str], progress: Callable[[int, int], None] | None,
            random: tuple[list[dict[str, np.ndarray]], list[str]] | None = None,
            bound: Mapping[str, Any] | None = None) -> tuple[VerifyResult | None, str]:
    """Run the converted model (from `tmp_path`) and the source on the same inputs: the calibration
    samples, else `random` (feeds, inputs drawn from learned ranges), else seeded random inputs."""
    from tfshrink.model.tflite import TFLiteModel

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
            from tfshrink.model.graphdef import GraphDefModel

            reference: Model = GraphDefModel(Path(model.path), graph_def=frozen.graph_def, outputs=frozen.outputs)
            reference.inputs = in_specs
            what = "the frozen source graph"
        else:
            reference = SourceView(model, in_specs, frozen.outputs, bound)
            what = "the source"
        try:
            if calib is not None and calib.samples:
                feeds = [dict(f) for f in calib.samples[:samples]]
                described = f"{len(feeds)} calibration sample(s)"
            elif random is not None:
                feeds = random[0]
                described = f"{len(feeds)} seeded random input(s)" + (
                    " within the inputs' ranges learned in training" if random[1] else "")
            else:
                feeds = _random_feeds(specs, spec, samples, seed)
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
    from tfshrink.graph.ir import Graph, tensor_name

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


def _verify_upstream(missing: list[str], frontier: list[str], graph_def: Any, specs: list[InputSpec],
                     options: ConvertOptions, calib: Calibration | None, spec: Preprocess | None, tmp_path: Path,
                     samples: int, seed: int, notes: list[str], progress: Callable[[int, int], None] | None
                     ) -> tuple[VerifyResult | None, str]:
    """Verify a model whose source holds ops TensorFlow cannot run (TFLite_Detection_PostProcess):
    run the converted model once in LiteRT, then convert the graph up to those ops' inputs the same
    way and compare that with TensorFlow on the same inputs."""
    from tfshrink.graph.ir import Graph, parse_tensor
    from tfshrink.model.graphdef import GraphDefModel
    from tfshrink.model.tflite import TFLiteModel

    ops = ", ".join(missing)
    if calib is not None and calib.samples:
        feeds = [dict(f) for f in calib.samples[:samples]]
        described = f"{len(feeds)} calibration sample(s)"
    else:
        feeds = _random_feeds(specs, spec, samples, seed)
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
                                 options.allow_custom_ops, options.select_tf_ops, options.keep_float)
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


def _random_feeds(specs: Sequence[InputSpec], spec: Preprocess | None, samples: int, seed: int
                  ) -> list[dict[str, np.ndarray]]:
    from tfshrink.data.feeds import random_feeds

    out = []
    for i in range(max(1, samples)):
        feed = random_feeds([TensorSpec(s.name, s.dtype, s.shape) for s in specs], seed=seed + i)
        if spec is not None:
            for s in specs:
                if s.name == spec.input:
                    feed[s.name] = spec.random_pixels(s.shape, np.random.default_rng(seed + i)).astype(s.dtype)
        out.append(feed)
    return out
