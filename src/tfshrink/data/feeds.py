"""Inputs to run models on: seeded random feeds that respect dtype and shape, an .npz file, or a
streamed dataset (TFRecords with a parse spec, a dataset file, a `module:function` entry point),
read sample by sample, never whole."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink.data.calibration import InputSpec, image_input, streamed
from tfshrink.errors import UserError
from tfshrink.model.base import TensorSpec
from tfshrink.tflite.preprocess import parse_preprocess

DEFAULT_BATCH = 1
DEFAULT_DIM = 64  # an unknown non-batch dim (e.g. [?,?,?,3] fully convolutional nets)


def parse_shape_overrides(items: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """["input=1,48,48,3"] -> {"input": (1, 48, 48, 3)}."""
    out = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip().split(":")[0]] = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            raise UserError(f"--input-shape {item!r} is not NAME=D1,D2,...", "e.g. --input-shape input=1,48,48,3") from None
        if any(d < 1 for d in out[name.strip().split(":")[0]]):
            raise UserError(f"--input-shape {item!r}: every dimension must be at least 1", "e.g. --input-shape input=1,48,48,3")
    return out


def concrete_shape(spec: TensorSpec, override: Sequence[int] | None = None) -> tuple[int, ...]:
    if override is not None:
        if spec.shape is not None and len(override) != len(spec.shape):
            given = ",".join(str(d) for d in override)
            raise UserError(f"--input-shape {spec.name}={given} has rank {len(override)}, but input {spec.name!r} "
                            f"is {spec.shape_text()}", f"give {len(spec.shape)} dims")
        return tuple(override)
    if spec.shape is None:
        raise UserError(f"input {spec.name!r} has unknown rank",
                        f"give its shape with --input-shape {spec.name}=1,...")
    return tuple((DEFAULT_BATCH if i == 0 else DEFAULT_DIM) if d is None else d for i, d in enumerate(spec.shape))


def random_feeds(specs: Sequence[TensorSpec], *, seed: int = 0,
                 shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """One seeded random value per input: floats in [-1, 1), small non-negative ints, bools.

    Quantized (TFLite int8/uint8) inputs get floats too; the model layer quantizes them.
    """
    rng = np.random.default_rng(seed)
    shapes = shapes or {}
    known = {spec.name.split(":")[0] for spec in specs}
    for name in shapes:
        if name.split(":")[0] not in known:
            raise UserError(f"--input-shape names {name!r}, which is not an input",
                            f"inputs are {', '.join(sorted(known)) or 'none'}")
    feeds = {}
    for spec in specs:
        shape = concrete_shape(spec, shapes.get(spec.name))
        dtype = "float32" if spec.quantization else spec.dtype
        if dtype in ("float16", "float32", "float64", "bfloat16"):
            value = rng.uniform(-1.0, 1.0, size=shape).astype("float32" if dtype == "bfloat16" else dtype)
        elif dtype == "bool":
            value = rng.integers(0, 2, size=shape).astype(bool)
        elif dtype.startswith(("int", "uint")):
            value = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            raise UserError(f"cannot make random values for input {spec.name!r} of type {dtype}",
                            "pass real inputs with --inputs FEEDS.npz")
        feeds[spec.name] = value
    return feeds


def load_feeds(path: str | Path, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """An .npz keyed by input name (`input` or `input:0`); a single array fits a single input."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such inputs file", "give an .npz keyed by input name")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k.split(":")[0]: data[k] for k in data.files}
    except PermissionError as exc:
        raise UserError(f"{p}: cannot read the file ({exc.strerror})", "check its permissions") from None
    except Exception:
        raise UserError(f"{p}: cannot read as .npz", "save it with numpy.savez(path, input=array)") from None
    feeds = {}
    for i, spec in enumerate(specs):
        key = spec.name.split(":")[0]
        if key in arrays:
            feeds[spec.name] = arrays[key]
        elif len(arrays) == len(specs) and list(arrays)[i:i + 1]:
            feeds[spec.name] = arrays[list(arrays)[i]]  # same count: pair by order
        else:
            raise UserError(f"{p}: no array for input {spec.name!r}",
                            f"the file has {', '.join(arrays) or 'nothing'}; key arrays by input name")
        _check_feed(p, spec, feeds[spec.name])
    return feeds


def _check_feed(path: Path, spec: TensorSpec, value: np.ndarray) -> None:
    """An array of the input's kind of values and rank (its dims are the runtime's to check: a
    TFLite model resizes, a batch-1 one runs a larger batch sample by sample)."""
    kind = value.dtype.kind
    if spec.dtype in ("string", "object", "bytes", "bytes_", "str"):  # TF's name, numpy's (TFLite)
        fits = kind in "USO"
    elif spec.dtype.startswith("complex"):
        fits = kind in "biufc"
    else:  # numbers and bools (float feeds for a quantized input are quantized by the model layer)
        fits = kind in "biuf"
    if not fits:
        raise UserError(f"{path}: the array for input {spec.name!r} holds {value.dtype} values; the input takes "
                        f"{spec.dtype}", f"save {spec.dtype} values for it")
    if spec.shape is not None and value.ndim != len(spec.shape):
        raise UserError(f"{path}: the array for input {spec.name!r} has shape {list(value.shape)}, but the input is "
                        f"{spec.shape_text()}", f"save it with {len(spec.shape)} dims")


def streamed_feeds(source: str | Path, specs: Sequence[TensorSpec], *, samples: int, spec: str | Path | None = None,
                   shapes: Mapping[str, Sequence[int]] | None = None, preprocess: Any = None,
                   progress: Callable[[int, int], None] | None = None,
                   shard: tuple[int, int] | None = None) -> Sequence[dict[str, np.ndarray]]:
    """Up to `samples` feeds for inputs `specs` from a streamed dataset (see tfshrink.data.stream),
    one batch of the input's batch dim (1 when unknown) per feed, read again on every pass.
    `preprocess` (a SPEC or a Preprocess) normalizes uint8 pixels fed to a float image input."""
    if samples < 1:
        raise UserError(f"--samples {samples} must be at least 1", "e.g. --samples 100")
    inputs = [InputSpec(s.name, "float32" if s.quantization else s.dtype, concrete_shape(s, (shapes or {}).get(s.name)))
              for s in specs]
    resolved = parse_preprocess(preprocess)
    if resolved is not None:
        target = image_input(inputs, resolved)
        resolved = resolved.resolve(target.name, target.shape)
    return streamed(str(source), inputs, samples, resolved, progress, spec, what="--inputs", shard=shard).samples
