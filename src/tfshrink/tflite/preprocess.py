"""Preprocessing as part of the model: how raw pixels become the input a model expects.

A SPEC such as ``size=224x224,mean=127.5,std=127.5,color=rgb`` says: decode the image, convert it
to RGB (or BGR, or gray), resize it to 224 wide by 224 high, then compute (pixel - mean) / std on
pixels in 0..255. ``mean`` and ``std`` take one value, or one per channel in the spec's color order
(``mean=103.9/116.8/123.7,color=bgr`` for Caffe-style nets). tfshrink calibrates with it, stores it
in the .tflite metadata, and reads it back (`read_preprocess`), so the model and the way to feed it
travel together. For a quantized (int8/uint8) input the stored entry also says how raw pixels map
onto the quantized values: q = round(pixel * pixel_scale + pixel_offset).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink.errors import UserError
from tfshrink.tflite.metadata import read_metadata

METADATA_NAME = "tfshrink.preprocess"
FORMAT = "tfshrink.preprocess/1"
COLORS = ("rgb", "bgr", "gray")
KEYS = ("size", "mean", "std", "color", "input")
SPEC_HINT = "e.g. --preprocess size=224x224,mean=127.5,std=127.5,color=rgb (mean/std per channel: 123.7/116.3/103.5)"
MAX_SIDE = 16384


@dataclass(frozen=True)
class InputQuantization:
    """The (scale, zero point) of a quantized model input, and how raw pixels map onto it."""

    dtype: str
    scale: float
    zero_point: int
    pixel_scale: tuple[float, ...]  # per channel: q = round(pixel * pixel_scale + pixel_offset)
    pixel_offset: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "scale": self.scale, "zero_point": self.zero_point,
                "pixel_scale": list(self.pixel_scale), "pixel_offset": list(self.pixel_offset),
                "formula": "q = round(pixel * pixel_scale + pixel_offset)"}


@dataclass(frozen=True)
class Preprocess:
    """How to turn an image file into model input. ``size`` is (width, height); None fields are
    filled from the model's input (`resolve`)."""

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    color: str | None = None
    input: str | None = None
    quantization: InputQuantization | None = None

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def spec(self) -> str:
        """The canonical SPEC text."""
        parts = []
        if self.size:
            parts.append(f"size={self.size[0]}x{self.size[1]}")
        parts.append("mean=" + "/".join(_num(v) for v in self.mean))
        parts.append("std=" + "/".join(_num(v) for v in self.std))
        if self.color:
            parts.append(f"color={self.color}")
        if self.input:
            parts.append(f"input={self.input}")
        return ",".join(parts)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "spec": self.spec(), "input": self.input,
                               "size": list(self.size) if self.size else None, "color": self.color,
                               "mean": list(self.mean), "std": list(self.std),
                               "pixels": "0..255, height x width x channels in `color` order",
                               "formula": "x = (pixel - mean) / std", "resize": "bilinear, to width x height"}
        if self.quantization is not None:
            out["quantization"] = self.quantization.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Preprocess:
        q = data.get("quantization")
        quant = None
        if q:
            quant = InputQuantization(str(q["dtype"]), float(q["scale"]), int(q["zero_point"]),
                                      tuple(float(v) for v in q["pixel_scale"]),
                                      tuple(float(v) for v in q["pixel_offset"]))
        size = data.get("size")
        return cls(size=(int(size[0]), int(size[1])) if size else None,
                   mean=tuple(float(v) for v in data.get("mean", (0.0,))),
                   std=tuple(float(v) for v in data.get("std", (1.0,))),
                   color=data.get("color"), input=data.get("input"), quantization=quant)

    def resolve(self, input_name: str, shape: tuple[int, ...]) -> Preprocess:
        """Fill size and color from an NHWC input's shape, and check they agree with it."""
        if len(shape) != 4 or shape[3] not in (1, 3):
            raise UserError(f"--preprocess applies to images, but input {input_name!r} has shape "
                            f"{list(shape)}", "the model needs an NHWC input with 1 or 3 channels")
        channels = shape[3]
        color = self.color or ("gray" if channels == 1 else "rgb")
        if (color == "gray") != (channels == 1):
            raise UserError(f"--preprocess color={color} gives {1 if color == 'gray' else 3} channel(s), "
                            f"but input {input_name!r} has {channels}",
                            "use color=gray for 1 channel, rgb or bgr for 3")
        size = self.size or (shape[2], shape[1])
        if (shape[2], shape[1]) != size:
            raise UserError(f"--preprocess size={size[0]}x{size[1]} (width x height) does not match input "
                            f"{input_name!r} of shape {list(shape)}",
                            f"use size={shape[2]}x{shape[1]}, or --input-shape to change the model's")
        resolved = replace(self, size=size, color=color, input=input_name)
        for what, values in (("mean", resolved.mean), ("std", resolved.std)):
            if len(values) not in (1, resolved.channels):
                raise UserError(f"--preprocess {what} has {len(values)} values, input {input_name!r} has "
                                f"{resolved.channels} channel(s)", SPEC_HINT)
        return resolved

    def _per_channel(self, values: tuple[float, ...]) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, dtype=np.float32), (self.channels,)).astype(np.float32)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """(pixel - mean) / std on HxWxC (or NxHxWxC) pixels already in the spec's color order."""
        x = np.asarray(pixels, dtype=np.float32)
        return ((x - self._per_channel(self.mean)) / self._per_channel(self.std)).astype(np.float32)

    def load_image(self, path: str | Path) -> tuple[np.ndarray, bool]:
        """Decode, convert, resize and normalize one image file: (HxWxC float32, was resized).
        Raises OSError / ValueError for a file that is not a readable image."""
        from PIL import Image

        if self.size is None or self.color is None:
            raise ValueError("resolve() the spec against the model input first")
        with Image.open(path) as img:
            img.load()
            img = img.convert("L" if self.color == "gray" else "RGB")
            resized = img.size != self.size
            if resized:
                img = img.resize(self.size, Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if self.color == "bgr":
            pixels = pixels[..., ::-1]
        return self.normalize(pixels), resized

    def random_pixels(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Uniform random pixels in 0..255, normalized: random inputs in the model's input range."""
        return self.normalize(rng.integers(0, 256, size=shape).astype(np.float32))

    def with_quantization(self, dtype: str, scale: float, zero_point: int) -> Preprocess:
        """The spec plus how raw pixels map onto a quantized input:
        q = x / scale + zero_point = pixel / (std * scale) + zero_point - mean / (std * scale)."""
        mean, std = self._per_channel(self.mean).astype(np.float64), self._per_channel(self.std).astype(np.float64)
        pixel_scale = 1.0 / (std * scale)
        pixel_offset = zero_point - mean * pixel_scale
        quant = InputQuantization(dtype, float(scale), int(zero_point),
                                  tuple(round(float(v), 9) for v in pixel_scale),
                                  tuple(round(float(v), 9) for v in pixel_offset))
        return replace(self, quantization=quant)

    def metadata_bytes(self) -> bytes:
        """Deterministic JSON for the .tflite metadata entry."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()


def _num(v: float) -> str:
    return f"{v:g}"


def _floats(key: str, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split("/"))
    except ValueError:
        raise UserError(f"--preprocess {key}={text!r} is not a number or numbers separated by /", SPEC_HINT) from None
    if not all(np.isfinite(values)):
        raise UserError(f"--preprocess {key}={text!r} must be finite", SPEC_HINT)
    return values


def parse_preprocess(spec: str | Preprocess | Mapping[str, Any] | None) -> Preprocess | None:
    """Parse a SPEC string (or pass a Preprocess through); a bad SPEC is a UserError."""
    if spec is None or isinstance(spec, Preprocess):
        return spec
    if isinstance(spec, Mapping):
        return Preprocess.from_json(spec)
    fields: dict[str, str] = {}
    for item in str(spec).split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise UserError(f"--preprocess item {item.strip()!r} is not KEY=VALUE", SPEC_HINT)
        if key not in KEYS:
            raise UserError(f"--preprocess has no key {key!r}", f"keys are {', '.join(KEYS)}; {SPEC_HINT}")
        if key in fields:
            raise UserError(f"--preprocess gives {key} twice", SPEC_HINT)
        fields[key] = value
    if not fields:
        raise UserError("--preprocess is empty", SPEC_HINT)
    size = None
    if "size" in fields:
        w, sep, h = fields["size"].lower().partition("x")
        try:
            size = (int(w), int(h))
        except ValueError:
            raise UserError(f"--preprocess size={fields['size']!r} is not WIDTHxHEIGHT", SPEC_HINT) from None
        if not sep or not all(0 < d <= MAX_SIDE for d in size):
            raise UserError(f"--preprocess size={fields['size']!r} is not WIDTHxHEIGHT with sides 1..{MAX_SIDE}",
                            SPEC_HINT)
    color = fields.get("color", "").lower() or None
    if color is not None and color not in COLORS:
        raise UserError(f"--preprocess color={color!r} is not one of {', '.join(COLORS)}", SPEC_HINT)
    mean = _floats("mean", fields["mean"]) if "mean" in fields else (0.0,)
    std = _floats("std", fields["std"]) if "std" in fields else (1.0,)
    if any(s == 0 for s in std):
        raise UserError("--preprocess std must not be 0", SPEC_HINT)
    channels = 1 if color == "gray" else 3
    for key, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels) or (color is None and len(values) not in (1, 3)):
            raise UserError(f"--preprocess {key} has {len(values)} values; give 1 or one per channel "
                            f"({channels} for color={color or 'rgb'})", SPEC_HINT)
    return Preprocess(size=size, mean=mean, std=std, color=color, input=fields.get("input"))


def first_stored(paths: Iterable[str | Path]) -> Preprocess | None:
    """The preprocessing stored in the first of `paths` (.tflite files) that stores one, else None:
    what verify, compare and report apply to image inputs when no --preprocess is given."""
    return next((found for p in paths for found in [read_preprocess(p)] if found is not None), None)


def read_preprocess(path: str | Path) -> Preprocess | None:
    """The preprocessing stored in a .tflite file by `tfshrink convert --preprocess` (None if none)."""

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise UserError(f"{p}: cannot read: {exc.strerror}", "check the path") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise UserError(f"{p}: not a TFLite flatbuffer (no TFL3 identifier)", "give a .tflite file")
    raw = read_metadata(data).get(METADATA_NAME)
    if raw is None:
        return None
    try:
        return Preprocess.from_json(json.loads(raw.decode("utf-8")))
    except (ValueError, KeyError, TypeError, IndexError):
        raise UserError(f"{p}: the {METADATA_NAME} metadata entry is corrupt", "convert the model again") from None
