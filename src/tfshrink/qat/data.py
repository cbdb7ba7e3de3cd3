"""Training and validation data for quantization-aware training: an .npz with x and y, or a streamed
dataset (TFRecords with a parse spec, a dataset file, an entry point) read batch by batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.data import stream
from tfshrink.errors import UserError, first_line

X_KEYS = stream.X_KEYS


Y_KEYS = ("y", "labels", "targets")


SHUFFLE_BUFFER = 1024  # streamed training records held for shuffling (with the files' order, reshuffled each epoch)


SCAN_BATCH = 1024


@dataclass(frozen=True)
class Labels:
    """What the loss is chosen from: the labels' dtype kind, rank (with the batch dim), width (of
    2-D labels), range, and whether every value is 0 or 1."""

    kind: str
    ndim: int
    width: int | None
    low: float
    high: float
    binary: bool

    @classmethod
    def of(cls, y: np.ndarray) -> Labels:
        return cls(y.dtype.kind, y.ndim, int(y.shape[1]) if y.ndim == 2 else None, float(y.min()), float(y.max()),
                   bool(np.all((y == 0) | (y == 1))))

    def merge(self, other: Labels) -> Labels:
        return Labels(self.kind, self.ndim, self.width, min(self.low, other.low), max(self.high, other.high),
                      self.binary and other.binary)


@dataclass(frozen=True)
class Dataset:
    """Training or validation arrays from an .npz, held whole."""

    path: str
    x: np.ndarray
    y: np.ndarray

    @property
    def count(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def labels(self) -> Labels:
        return Labels.of(self.y)


@dataclass(frozen=True)
class Streamed:
    """Training or validation (x, y) pairs streamed from `source`: `count` pairs, never held."""

    path: str
    source: stream.Source
    count: int
    sample_shape: tuple[int, ...]
    label_summary: Labels
    make: Callable[..., Any]  # (shard=None, shuffle_files=None) -> tf.data.Dataset of (x, y) pairs

    def labels(self) -> Labels:
        return self.label_summary

    def pairs(self, **options: Any) -> Any:
        return self.make(**options)

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        try:
            yield from self.make().batch(size).as_numpy_iterator()
        except stream.tf_errors() as exc:
            raise UserError(f"{self.path}: cannot read the dataset: {first_line(exc)}",
                            "check the files against the parse spec") from None


def load_dataset(path: str | Path, input_name: str, what: str) -> Dataset:
    """Inputs and labels from an .npz: inputs under `x` (or the model's input name), labels under `y`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p}: no such file", "give an .npz with arrays x (inputs) and y (labels)")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception:
        raise UserError(f"{what} {p}: cannot read as .npz", "save it with numpy.savez(path, x=inputs, y=labels)") from None
    x_key = next((k for k in (input_name, *X_KEYS) if k in arrays), None)
    y_key = next((k for k in Y_KEYS if k in arrays), None)
    if x_key is None or y_key is None:
        raise UserError(f"{what} {p}: needs arrays x (inputs) and y (labels); it has {', '.join(arrays) or 'none'}",
                        "save it with numpy.savez(path, x=inputs, y=labels)")
    x, y = arrays[x_key], arrays[y_key]
    if len(x) != len(y) or not len(x):
        raise UserError(f"{what} {p}: {len(x)} inputs but {len(y)} labels", "give one label per input")
    for name, array in ((x_key, x), (y_key, y)):
        if array.dtype.kind not in "fiub":
            raise UserError(f"{what} {p}: array {name} holds {array.dtype}, not numbers", "save numeric arrays")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise UserError(f"{what} {p}: array {name} holds NaN or infinite values", "clean the data first")
    return Dataset(str(p), x.astype(np.float32) if x.dtype.kind == "f" else x, y)


def load_data(path: str | Path, input_name: str, what: str, spec: str | Path | None = None,
              sample_shape: tuple[Any, ...] | None = None) -> Dataset | Streamed:
    """Training or validation data: an .npz (load_dataset), or a streamed dataset when `path` is
    TFRecords (read per the parse `spec`), a .toml/.json dataset file or a module:function entry
    point."""
    if stream.is_streamed(path, spec):
        return load_streamed(path, input_name, what, spec, sample_shape)
    return load_dataset(path, input_name, what)


def load_streamed(path: str | Path, input_name: str, what: str, spec: str | Path | None = None,
                  sample_shape: tuple[Any, ...] | None = None) -> Streamed:
    """(x, y) pairs streamed from `path` (see load_data). One pass now counts them, checks their
    shapes and values and summarizes the labels (memory stays flat); training reads them again.
    Features or dict keys name x (the model's input name, or x/inputs/images/features) and y
    (y/labels/targets); an entry point may also yield (x, y) tuples, batched or not."""
    tf = _tf.tf()
    text = str(path)
    where = f"{what} {text}"
    source = stream.open_source(text, spec, what=what)
    ds0 = stream.dataset(source, what=what)
    element = ds0.element_spec
    if isinstance(element, dict):
        names = (input_name, input_name.split(":")[0], *X_KEYS)
        x_key = next((k for k in names if k in element), None)
        y_key = next((k for k in Y_KEYS if k in element), None)
        if x_key is None or y_key is None:
            raise UserError(f"{where}: needs x (inputs) and y (labels); it has {', '.join(element) or 'none'}",
                            'name them in the parse spec, e.g. "image=x:float32:28,28,1; label=y:int64"')

        def split(ds: Any) -> Any:
            return ds.map(lambda e: (e[x_key], e[y_key]))
    elif isinstance(element, (tuple, list)) and len(element) >= 2:
        def split(ds: Any) -> Any:
            return ds.map(lambda *e: (e[0], e[1]))
    else:
        raise UserError(f"{where}: the dataset must yield (x, y) pairs or dicts with x and y",
                        "return a dataset of (inputs, labels)")
    x_spec, y_spec = split(ds0).element_spec
    batched = sample_shape is not None and x_spec.shape.rank == len(sample_shape) + 1

    def make(shard: tuple[int, int] | None = None, shuffle_files: int | None = None) -> Any:
        ds = split(stream.dataset(source, shard=shard, shuffle_files=shuffle_files, what=what))
        if batched:
            ds = ds.unbatch()
        return ds.map(lambda x, y: (tf.cast(x, tf.float32) if x.dtype.is_floating else x, y))

    count = 0
    labels: Labels | None = None
    shape: tuple[int, ...] | None = None
    try:
        for x, y in make().batch(SCAN_BATCH).as_numpy_iterator():
            shape = shape or tuple(x.shape[1:])
            if tuple(x.shape[1:]) != shape:
                raise UserError(f"{where}: inputs change shape from {list(shape)} to {list(x.shape[1:])}",
                                "give every sample the same shape (SHAPE in the parse spec)")
            for name, array in (("x", x), ("y", y)):
                if array.dtype.kind not in "fiub":
                    raise UserError(f"{where}: {name} holds {array.dtype}, not numbers", "feed numeric tensors")
                if array.dtype.kind == "f" and not np.isfinite(array).all():
                    raise UserError(f"{where}: {name} holds NaN or infinite values", "clean the data first")
            summary = Labels.of(y)
            labels = summary if labels is None else labels.merge(summary)
            count += len(x)
    except stream.tf_errors() as exc:
        raise UserError(f"{where}: cannot read the dataset: {first_line(exc)}",
                        "check the files against the parse spec") from None
    if not count or labels is None or shape is None:
        raise UserError(f"{where}: the dataset holds no samples", "check that it holds records")
    return Streamed(text, source, count, shape, labels, make)
