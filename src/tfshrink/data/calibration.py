"""Calibration data for full-integer quantization: images, arrays, streamed datasets, or (with a
warning) random.

Images (a folder or a glob of JPEG/PNG files) are decoded, converted and resized per the
preprocessing SPEC; unreadable ones are skipped and counted. Arrays come from .npy (one input)
or .npz (keyed by input name). Both are loaded before the converter runs, in sorted file order, so
the same files give the same model bytes.

Streamed datasets (tfshrink.data.stream: TFRecord files with a parse spec, a dataset file, or a
`module:function` entry point) are never loaded whole: one pass reads and checks the samples
(shapes, finite values; `progress` counts them), and every later pass (the converter's
calibration, range refinement, verification) reads the files again, in the same sorted order, so
memory stays flat as the dataset grows and the same files give the same model bytes.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink.data import stream
from tfshrink.errors import UserError, first_line
from tfshrink.tflite.preprocess import SPEC_HINT, Preprocess

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RANDOM = "random"
RANDOM_WARNING = ("--calibration random: activation ranges come from random inputs, not real data, "
                  "so they are poor and int8 accuracy on real inputs will suffer; pass real samples")


@dataclass(frozen=True)
class InputSpec:
    """A model input as the converter sees it: name, numpy dtype name and a fully known shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass
class Calibration:
    """Calibration samples (each a dict input name -> array) and what happened loading them.
    `samples` is a list, or for a streamed dataset a `stream.Stream` that reads them again on
    every pass (a Sequence: len, iteration, slices)."""

    source: str
    kind: str  # "images" | "arrays" | "random" | "tfrecord" | "dataset"
    samples: Sequence[dict[str, np.ndarray]]
    candidates: int = 0  # image files found (TFRecord files for "tfrecord")
    skipped: list[str] = field(default_factory=list)  # "file: reason" of unreadable images
    resized: int = 0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.kind == "random":
            return f"{len(self.samples)} random samples"
        if self.kind in ("tfrecord", "dataset"):
            files = f", {self.candidates} file(s)" if self.kind == "tfrecord" else ""
            return f"{len(self.samples)} samples streamed from {self.source}{files}"
        text = f"{len(self.samples)} {'images' if self.kind == 'images' else 'samples'} from {self.source}"
        extra = []
        if self.skipped:
            extra.append(f"{len(self.skipped)} unreadable skipped")
        if self.resized:
            extra.append(f"{self.resized} resized")
        return text + (f" ({', '.join(extra)})" if extra else "")

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "samples": len(self.samples),
                "image_files": self.candidates, "skipped": len(self.skipped), "skipped_files": self.skipped,
                "resized": self.resized}


def load_calibration(source: str | Path, inputs: Sequence[InputSpec], *, samples: int = 100,
                     preprocess: Preprocess | None = None, seed: int = 0,
                     progress: Callable[[int, int], None] | None = None,
                     spec: str | Path | None = None) -> Calibration:
    """Load up to `samples` calibration samples for `inputs` from `source`: a folder or glob of
    images, an .npy/.npz file, "random", or a streamed dataset (TFRecord files read per the parse
    `spec`, a .toml/.json dataset file, or a `module:function` entry point; see
    tfshrink.data.stream). `preprocess` must be resolved against the image input; it also
    normalizes uint8 pixels that a dataset feeds to a float input. `progress(done, total)` counts
    the samples read."""
    if samples < 1:
        raise UserError(f"--calibration-samples {samples} must be at least 1", "e.g. --calibration-samples 100")
    text = str(source)
    if text == RANDOM:
        return _random(inputs, samples, preprocess, seed)
    if stream.is_streamed(text, spec):
        return streamed(text, inputs, samples, preprocess, progress, spec)
    path = Path(text)
    if path.is_file() and path.suffix.lower() in (".npy", ".npz"):
        return _finite(_arrays(path, inputs, samples, preprocess), path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"{path}: the calibration folder holds no JPEG or PNG images",
                            "put real sample images there, or pass an .npz keyed by input name")
        return _images(text, files, inputs, samples, preprocess, progress)
    if any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True)
                       if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"{text}: the calibration pattern matches no JPEG or PNG images",
                            "check the pattern (quote it so the shell leaves it alone)")
        return _images(text, files, inputs, samples, preprocess, progress)
    if path.is_file():
        raise UserError(f"{path}: calibration data must be a folder or glob of JPEG/PNG images, .npy/.npz, "
                        "TFRecords (a .toml/.json dataset file) or a module:function entry point",
                        "e.g. --calibration photos/ or --calibration 'photos/*.jpg' or --calibration samples.npz "
                        "or --calibration calib.toml")
    raise UserError(f"{path}: no such calibration file or folder", "check the path, or pass --calibration random")


def _finite(calibration: Calibration, path: Path) -> Calibration:
    """NaN or infinite calibration values would give ranges LiteRT cannot load: refuse them."""
    for feed in calibration.samples:
        for name, value in feed.items():
            if np.asarray(value).dtype.kind == "f" and not np.isfinite(value).all():
                raise UserError(f"{path}: calibration input {name!r} holds NaN or infinite values",
                                "clean the data first")
    return calibration


def image_input(inputs: Sequence[InputSpec], preprocess: Preprocess | None) -> InputSpec:
    """The one image input (NHWC, 1 or 3 channels) that images and --preprocess apply to."""
    if preprocess is not None and preprocess.input:
        for spec in inputs:
            if spec.name.split(":")[0] == preprocess.input.split(":")[0]:
                return spec
        raise UserError(f"--preprocess input={preprocess.input} is not a model input",
                        f"inputs are {', '.join(s.name for s in inputs)}")
    images = [s for s in inputs if len(s.shape) == 4 and s.shape[3] in (1, 3)]
    if len(images) == 1:
        return images[0]
    if not images:
        raise UserError("the model has no image input (NHWC with 1 or 3 channels) for images or --preprocess",
                        f"inputs are {', '.join(f'{s.name}{list(s.shape)}' for s in inputs)}; "
                        "calibrate with an .npz keyed by input name")
    raise UserError(f"the model has several image inputs ({', '.join(s.name for s in images)})",
                    "name one with --preprocess input=NAME,...")


def _images(source: str, files: list[Path], inputs: Sequence[InputSpec], samples: int,
            preprocess: Preprocess | None, progress: Callable[[int, int], None] | None) -> Calibration:
    target = image_input(inputs, preprocess)
    if len(inputs) > 1:
        raise UserError(f"calibrating on images feeds one input, but the model has {len(inputs)} "
                        f"({', '.join(s.name for s in inputs)})", "pass an .npz keyed by input name")
    if preprocess is None:
        raise UserError("calibration images need --preprocess: how pixels become the model's input",
                        "e.g. --preprocess mean=127.5,std=127.5 for inputs in [-1,1], mean=0,std=255 for [0,1]")
    batch = target.shape[0]
    out = Calibration(source, "images", [], candidates=len(files))
    pending: list[np.ndarray] = []
    total = min(len(files), samples * batch)
    for path in files:
        if len(out.samples) >= samples:
            break
        try:
            image, resized = preprocess.load_image(path)
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
            out.skipped.append(f"{path.name}: {type(exc).__name__}")
            continue
        out.resized += int(resized)
        pending.append(image)
        if len(pending) == batch:
            out.samples.append({target.name: np.stack(pending).astype(target.dtype)})
            pending = []
        if progress is not None:
            progress(min(len(out.samples) * batch + len(pending), total), total)
    if not out.samples:
        reasons = "; ".join(out.skipped[:3]) or "none complete a batch"
        raise UserError(f"{source}: none of the {len(files)} images is usable for calibration ({reasons})",
                        "give readable JPEG or PNG files")
    if out.skipped:
        out.warnings.append(f"skipped {len(out.skipped)} unreadable calibration image(s): "
                            + ", ".join(s.split(":")[0] for s in out.skipped[:5])
                            + (" ..." if len(out.skipped) > 5 else ""))
    if out.resized:
        out.notes.append(f"{out.resized} calibration image(s) resized to {preprocess.size[0]}x{preprocess.size[1]}"
                         if preprocess.size else f"{out.resized} calibration image(s) resized")
    return out


def _random(inputs: Sequence[InputSpec], samples: int, preprocess: Preprocess | None, seed: int) -> Calibration:
    rng = np.random.default_rng(seed)
    target = image_input(inputs, preprocess).name if preprocess is not None else None
    out = Calibration(RANDOM, "random", [], warnings=[RANDOM_WARNING])
    for _ in range(samples):
        feed = {}
        for spec in inputs:
            if spec.name == target and preprocess is not None:
                feed[spec.name] = preprocess.random_pixels(spec.shape, rng).astype(spec.dtype)
            elif np.dtype(spec.dtype).kind == "f":
                feed[spec.name] = rng.uniform(-1.0, 1.0, size=spec.shape).astype(spec.dtype)
            elif np.dtype(spec.dtype).kind == "b":
                feed[spec.name] = rng.integers(0, 2, size=spec.shape).astype(bool)
            else:
                feed[spec.name] = rng.integers(0, 10, size=spec.shape).astype(spec.dtype)
        out.samples.append(feed)
    return out


def _arrays(path: Path, inputs: Sequence[InputSpec], samples: int, preprocess: Preprocess | None) -> Calibration:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays = {"": loaded}
        else:
            with loaded:
                arrays = {k.split(":")[0]: loaded[k] for k in loaded.files}
    except Exception:
        raise UserError(f"{path}: cannot read the calibration arrays",
                        "save them with numpy.save / numpy.savez(path, input_name=array)") from None
    if not arrays:
        raise UserError(f"{path}: the calibration file holds no arrays", "numpy.savez(path, input_name=array)")
    out = Calibration(str(path), "arrays", [])
    per_input: dict[str, list[np.ndarray]] = {}
    for i, spec in enumerate(inputs):
        key = spec.name.split(":")[0]
        if key in arrays:
            array = arrays[key]
        elif len(arrays) == 1 and len(inputs) == 1:
            array = next(iter(arrays.values()))
        elif len(arrays) == len(inputs) and "" not in arrays and not any(s.name.split(":")[0] in arrays for s in inputs):
            array = list(arrays.values())[i]
            out.notes.append(f"calibration array {list(arrays)[i]!r} feeds input {spec.name!r} (paired by order)")
        else:
            raise UserError(f"{path}: no calibration array for input {spec.name!r}",
                            f"the file has {', '.join(repr(k) for k in arrays)}; key arrays by input name")
        per_input[spec.name] = _split(path, spec, _as_input(path, spec, array, preprocess, out))
    counts = {len(v) for v in per_input.values()}
    if len(counts) != 1:
        raise UserError(f"{path}: the calibration arrays hold different sample counts "
                        f"({', '.join(f'{k}: {len(v)}' for k, v in per_input.items())})",
                        "give the same number of samples for every input")
    count = min(counts.pop(), samples)
    out.samples = [{name: chunks[i] for name, chunks in per_input.items()} for i in range(count)]
    return out


def _as_input(path: Path, spec: InputSpec, array: np.ndarray, preprocess: Preprocess | None,
              out: Calibration) -> np.ndarray:
    return _input_conversion(str(path), spec, array.dtype, preprocess, out, "calibration array")(array)


def _input_conversion(where: str, spec: InputSpec, dtype: np.dtype, preprocess: Preprocess | None,
                      out: Calibration, what: str) -> Callable[[np.ndarray], np.ndarray]:
    """How values of `dtype` become the input `spec`: uint8 pixels for a float input normalized
    per `preprocess` (or fed as 0..255, with a warning), everything else cast. Notes and warnings
    go to `out` once."""
    target = np.dtype(spec.dtype)
    if dtype == np.uint8 and target.kind == "f":
        if preprocess is not None and preprocess.input == spec.name:
            out.notes.append(f"uint8 {what} for {spec.name!r} normalized per --preprocess "
                             "(taken as pixels already in its size and color order)")
            return lambda array: preprocess.normalize(array).astype(target)
        out.warnings.append(f"{what} for {spec.name!r} is uint8 pixels but the input is {target.name} "
                            f"and no --preprocess says how to normalize them; fed as 0..255 ({SPEC_HINT})")
    if np.dtype(dtype).kind not in "fiub":
        raise UserError(f"{where}: {what} for {spec.name!r} is {dtype}", "give numeric arrays")
    return lambda array: array.astype(target, copy=False)


def streamed(text: str, inputs: Sequence[InputSpec], samples: int, preprocess: Preprocess | None,
             progress: Callable[[int, int], None] | None, spec: str | Path | None,
             what: str = "--calibration", shard: tuple[int, int] | None = None) -> Calibration:
    """Up to `samples` samples for `inputs` streamed from a tf.data pipeline (see load_calibration):
    one checking pass now, a fresh read of the same files on every later pass. `what` names the
    option in messages; `shard` = (index, count) reads that shard of the files."""
    where = f"{what} {text}"
    source = stream.open_source(text, spec, what=what)
    out = Calibration(text, "tfrecord" if source.kind == "tfrecord" else "dataset", [],
                      candidates=len(source.files))

    def batches() -> Iterator[dict[str, np.ndarray]]:
        try:
            ds = stream.input_samples(stream.dataset(source, shard=shard, what=what), inputs, where).take(samples)
            yield from ds.as_numpy_iterator()
        except stream.tf_errors() as exc:
            raise UserError(f"{where}: cannot read the dataset: {first_line(exc)}",
                            "check the files against the parse spec") from None

    convert: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    count = 0
    for raw in batches():
        if not convert:
            convert = {s.name: _input_conversion(where, s, raw[s.name].dtype, preprocess, out, f"{what} data")
                       for s in inputs}
        for s in inputs:
            value = convert[s.name](raw[s.name])
            if tuple(value.shape) != s.shape:
                raise UserError(f"{where}: sample {count + 1} of {s.name!r} has shape {list(value.shape)}, "
                                f"the input is {list(s.shape)}", "fix the SHAPE in the parse spec")
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise UserError(f"{where}: input {s.name!r} holds NaN or infinite values "
                                f"(sample {count + 1})", "clean the data first")
        count += 1
        if progress is not None:
            progress(count, samples)
    if not count:
        raise UserError(f"{where}: the dataset gives no complete sample", "check that it holds records")
    if progress is not None and count < samples:
        progress(count, count)
    if count < samples:
        out.notes.append(f"{where} holds {count} sample(s), fewer than the {samples} asked for")
    out.samples = stream.Stream(lambda: ({n: convert[n](v) for n, v in raw.items()} for raw in batches()),
                                count, text)
    return out


def _split(path: Path, spec: InputSpec, array: np.ndarray) -> list[np.ndarray]:
    """Cut an array into samples of the input's shape: [N, *shape[1:]] gives N / batch samples,
    the exact shape one, and the shape without its batch dim one."""
    shape = spec.shape
    if tuple(array.shape) == shape:
        return [array]
    if len(shape) >= 1 and tuple(array.shape) == shape[1:] and shape[0] == 1:
        return [array[None]]
    if array.ndim == len(shape) and tuple(array.shape[1:]) == shape[1:] and shape and shape[0] >= 1:
        batch = shape[0]
        n = array.shape[0] // batch
        if n == 0:
            raise UserError(f"{path}: {array.shape[0]} calibration rows for {spec.name!r} do not fill a batch of {batch}",
                            f"give at least {batch}")
        return [array[i * batch:(i + 1) * batch] for i in range(n)]
    raise UserError(f"{path}: calibration array for {spec.name!r} has shape {list(array.shape)}, "
                    f"the input is {list(shape)}",
                    f"give [N, {', '.join(map(str, shape[1:]))}] (N samples) or fix the input with --input-shape")
