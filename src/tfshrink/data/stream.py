"""Datasets streamed through tf.data: TFRecord files read per a parse spec, or a Python entry point
``module:function`` that returns a ``tf.data.Dataset``. Nothing is loaded whole: every pass over
the data re-opens the files and reads them record by record, so memory stays flat however many
records there are.

**TFRecords** (files of serialized ``tf.train.Example``) are given as a glob (``shards/*.tfrecord``)
with a **parse spec** that says which features to read and what each becomes::

    FEATURE[=INPUT]:DTYPE[:SHAPE]; ...        e.g.  image=input_1:uint8:64,64,3; label=y:int64

FEATURE is the name in the Example, INPUT the model input it feeds (default: the feature's own
name; for ``tfshrink qat`` ``x`` is the model's input and ``y`` the labels), DTYPE the numpy dtype
it becomes and SHAPE its shape per sample (``28,28,1`` or ``28x28x1``; default: what the first
record holds, a scalar for a one-value feature). How a feature is stored is read from the first
record of the first file: a ``float_list`` or ``int64_list`` is reshaped to SHAPE and cast to
DTYPE; a ``bytes_list`` holding a JPEG, PNG, GIF or BMP is decoded to uint8 pixels (resized to
SHAPE's height and width when it gives them, with its channel count); any other ``bytes_list`` is
the array's raw bytes (``array.tobytes()``), decoded as DTYPE and reshaped to SHAPE.

The same thing as a **dataset file** (``.toml`` or ``.json``), which also names the files, so a
single path says it all (``tfshrink convert --calibration calib.toml``)::

    files = "shards/calib-*.tfrecord"   # a glob, relative to this file
    compression = "GZIP"                # optional: "GZIP" or "ZLIB"
    features = "image=input_1:uint8:64,64,3"
    # or, one table per feature:
    # [features.image]
    # input = "input_1"
    # dtype = "uint8"
    # shape = [64, 64, 3]

Files are read in sorted order, one after another, so the same files and spec give the same
samples in the same order (calibration is deterministic). ``shard=(index, count)`` keeps the files
``index, index + count, ...`` of that order: sharding is by file, one shard per worker.

An **entry point** ``package.module:function`` imports the module (the current folder is searched
first) and calls the function with no arguments; it must return a ``tf.data.Dataset``. Importing a
module runs its code: tfshrink only does so for an entry point the user passed explicitly, never
for a path that exists.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from tfshrink import _tf
from tfshrink.data.sources import (
    X_KEYS,
    Feature,
    Source,
    is_entry_point,
    is_streamed,
    open_source,
    parse_spec,
    shard_files,
)
from tfshrink.errors import UserError, first_line

__all__ = ["Feature", "Source", "Stream", "dataset", "input_samples", "is_entry_point", "is_streamed", "open_source",
           "parse_spec", "shard_files", "tf_errors"]

_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_PARALLEL = 2  # parse calls in flight: a fixed, small number keeps memory flat (AUTOTUNE may grow buffers)

T = TypeVar("T")


# -- building the tf.data pipeline --------------------------------------------------------------------


def dataset(source: Source, *, shard: tuple[int, int] | None = None, shuffle_files: int | None = None,
            what: str = "--data") -> Any:
    """A fresh tf.data.Dataset over `source`, one element per record. TFRecords give dicts
    {INPUT: tensor} per the spec, file after file in sorted order; an entry point gives whatever
    its dataset holds. `shard` = (index, count) keeps that shard of the files (TFRecords only).
    `shuffle_files` (a seed; for training) reads the files in a new seeded order on every pass."""
    tf = _tf.tf()
    if source.kind == "entry-point":
        if shard is not None:
            raise UserError(f"{what} {source.text}: an entry point's dataset cannot be sharded by file",
                            "shard it in the function itself")
        return _entry_dataset(source, what)
    files = shard_files(source.files, *shard) if shard is not None else source.files
    decoders = _decoders(source, what)
    description = {f.name: (tf.io.FixedLenFeature([], tf.string) if kind == "bytes" else
                            tf.io.FixedLenFeature([count], tf.float32 if kind == "float" else tf.int64))
                   for f, (kind, count, _) in zip(source.features, decoders, strict=True)}

    def parse(record: Any) -> dict[str, Any]:
        parsed = tf.io.parse_single_example(record, description)
        return {f.input: decode(parsed[f.name]) for f, (_, _, decode) in zip(source.features, decoders, strict=True)}

    compression = source.compression or None
    if shuffle_files is None:
        records = tf.data.TFRecordDataset(list(files), compression_type=compression)
    else:
        names = tf.data.Dataset.from_tensor_slices(list(files)).shuffle(len(files), seed=shuffle_files,
                                                                        reshuffle_each_iteration=True)
        records = names.flat_map(lambda name: tf.data.TFRecordDataset(name, compression_type=compression))
    return records.map(parse, num_parallel_calls=_PARALLEL, deterministic=True)


def _first_example(source: Source, what: str) -> Any:
    tf = _tf.tf()
    try:
        first = next(iter(tf.data.TFRecordDataset(source.files[0], compression_type=source.compression or None)),
                     None)
        if first is None:
            raise UserError(f"{what} {source.files[0]}: the first TFRecord file holds no records",
                            "check the files (or the compression)")
        return tf.train.Example.FromString(first.numpy())
    except tf_errors() as exc:
        raise UserError(f"{what} {source.files[0]}: cannot read as TFRecords: {first_line(exc)}",
                        "check the files and the compression (GZIP/ZLIB)") from None
    except Exception as exc:  # protobuf's DecodeError
        if isinstance(exc, UserError):
            raise
        raise UserError(f"{what} {source.files[0]}: the first record is not a tf.train.Example ({type(exc).__name__})",
                        "write records with tf.train.Example(...).SerializeToString()") from None


def _decoders(source: Source, what: str) -> list[tuple[str, int, Callable[[Any], Any]]]:
    """Per feature: (stored kind "float"/"int"/"bytes", values per record, decode fn), read from
    the first record of the first file."""
    tf = _tf.tf()
    example = _first_example(source, what)
    stored = example.features.feature
    out = []
    for f in source.features:
        if f.name not in stored:
            raise UserError(f"{what} {source.files[0]}: the records have no feature {f.name!r}",
                            f"they have {', '.join(sorted(stored)) or 'none'}")
        field = stored[f.name].WhichOneof("kind")
        dtype = tf.as_dtype(f.dtype)
        if field in ("float_list", "int64_list"):
            values = len(getattr(stored[f.name], field).value)
            shape = f.shape if f.shape is not None else (() if values == 1 else (values,))
            need = math.prod(shape)
            if need != values:
                raise UserError(f"{what} {source.files[0]}: feature {f.name!r} holds {values} value(s) per record, "
                                f"shape {list(shape)} needs {need}", "fix the shape in the parse spec")
            out.append(("float" if field == "float_list" else "int", values,
                        _reshape_cast(tf, shape, dtype)))
            continue
        if field != "bytes_list":
            raise UserError(f"{what} {source.files[0]}: feature {f.name!r} is empty in the first record",
                            "every record needs a value for every feature of the spec")
        raw = stored[f.name].bytes_list.value[0] if stored[f.name].bytes_list.value else b""
        if raw.startswith(_IMAGE_MAGIC):
            out.append(("bytes", 1, _image_decoder(tf, f, dtype)))
        else:
            itemsize = dtype.size
            if f.shape is None and len(raw) % itemsize:
                raise UserError(f"{what}: feature {f.name!r} holds {len(raw)} bytes, not whole {f.dtype} values",
                                "check its dtype in the parse spec")
            shape = f.shape if f.shape is not None else (len(raw) // itemsize,)
            if math.prod(shape) * itemsize != len(raw):
                raise UserError(f"{what} {source.files[0]}: feature {f.name!r} holds {len(raw)} raw bytes, "
                                f"{f.dtype} of shape {list(shape)} is {math.prod(shape) * itemsize}",
                                "fix the dtype or shape in the parse spec (raw bytes are array.tobytes())")
            out.append(("bytes", 1, _raw_decoder(tf, shape, dtype)))
    return out


def _reshape_cast(tf: Any, shape: tuple[int, ...], dtype: Any) -> Callable[[Any], Any]:
    return lambda value: tf.cast(tf.reshape(value, shape), dtype)


def _raw_decoder(tf: Any, shape: tuple[int, ...], dtype: Any) -> Callable[[Any], Any]:
    decode_as = tf.uint8 if dtype == tf.bool else dtype
    return lambda value: tf.cast(tf.reshape(tf.io.decode_raw(value, decode_as), shape), dtype)


def _image_decoder(tf: Any, feature: Feature, dtype: Any) -> Callable[[Any], Any]:
    shape = feature.shape
    if shape is not None and len(shape) not in (2, 3):
        raise UserError(f"feature {feature.name!r} holds encoded images; its shape {list(shape)} is not H,W[,C]",
                        "e.g. image=input:uint8:224,224,3")
    channels = shape[2] if shape is not None and len(shape) == 3 else (1 if shape is not None else 0)

    def decode(value: Any) -> Any:
        image = tf.io.decode_image(value, channels=channels, dtype=tf.uint8, expand_animations=False)
        if shape is not None:
            size = tf.shape(image)[:2]
            wanted = tf.constant(shape[:2])
            image = tf.cond(tf.reduce_all(tf.equal(size, wanted)), lambda: image,
                            lambda: tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, shape[:2])), 0, 255),
                                            tf.uint8))
            image = tf.reshape(image, (*shape[:2], channels))
            if len(shape) == 2:
                image = tf.reshape(image, shape)
        return tf.cast(image, dtype)

    return decode


def _entry_dataset(source: Source, what: str) -> Any:
    tf = _tf.tf()
    module_name, _, function_name = str(source.entry).partition(":")
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"{what} {source.text}: cannot import module {module_name!r} ({first_line(exc)})",
                        "give an importable module:function (the current folder is searched first), "
                        "or check the path: no file of that name exists") from None
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UserError(f"{what} {source.text}: module {module_name!r} has no function {function_name!r}",
                        "name a function that returns a tf.data.Dataset")
    made = function()
    if not isinstance(made, tf.data.Dataset):
        raise UserError(f"{what} {source.text}: returned {type(made).__name__}, not a tf.data.Dataset",
                        "return tf.data.Dataset.from_tensor_slices(...) or a TFRecordDataset pipeline")
    return made


def input_samples(ds: Any, inputs: Sequence[Any], where: str) -> Any:
    """`ds` as model samples: dicts {input name: tensor of the input's full shape}, batched to the
    inputs' batch dim. `inputs` have `name` and a fully known `shape`. Elements may be a dict
    keyed by input name (``input`` or ``input:0``; for one input also its only key, or x, inputs,
    images or features; extra keys such as labels are left out), a
    tensor (one input) or a tuple whose first item is one of those ((x, y) training pairs);
    batched or not."""
    tf = _tf.tf()
    spec = ds.element_spec
    if isinstance(spec, (tuple, list)):
        if not spec:
            raise UserError(f"{where}: the dataset's elements are empty tuples", "yield x or (x, y)")
        ds = ds.map(lambda *element: element[0])
        spec = spec[0]
    if isinstance(spec, dict):
        keys = list(spec)
        mapping = {}
        for s in inputs:
            short = s.name.split(":")[0]
            key = s.name if s.name in spec else (short if short in spec else None)
            if key is None and len(inputs) == 1:  # the one feature, else the usual name of inputs
                key = keys[0] if len(keys) == 1 else next((k for k in X_KEYS if k in spec), None)
            if key is None:
                raise UserError(f"{where}: the dataset has no {short!r} for model input {s.name!r}",
                                f"it has {', '.join(map(repr, keys))}; key features by input name (FEATURE=INPUT)")
            mapping[s.name] = key
        ds = ds.map(lambda element: {name: element[key] for name, key in mapping.items()})
    elif isinstance(spec, tf.TensorSpec):
        if len(inputs) != 1:
            raise UserError(f"{where}: the dataset yields one tensor, the model has {len(inputs)} inputs",
                            "yield a dict keyed by input name")
        name = inputs[0].name
        ds = ds.map(lambda element: {name: element})
    else:
        raise UserError(f"{where}: cannot feed dataset elements of type {type(spec).__name__}",
                        "yield tensors, dicts keyed by input name, or (x, y) pairs")
    ranks = {name: s.shape.rank for name, s in ds.element_spec.items()}
    described = ", ".join(f"{name}: {ds.element_spec[name].shape}" for name in ranks)
    expected = ", ".join(f"{s.name}: {list(s.shape)}" for s in inputs)
    if all(len(s.shape) == 0 for s in inputs):
        return ds
    if all(ranks[s.name] == len(s.shape) for s in inputs):
        ds = ds.unbatch()  # batched elements: rebatch to the model's batch
    elif not all(ranks[s.name] == len(s.shape) - 1 for s in inputs):
        raise UserError(f"{where}: dataset elements have shapes {described}, the model takes {expected}",
                        "give one sample per element (or batches of them) shaped like the inputs")
    batches = {s.shape[0] for s in inputs}
    if len(batches) != 1:
        raise UserError(f"{where}: the model's inputs have different batch dims ({expected})",
                        "fix them with --input-shape")
    ds = ds.batch(batches.pop(), drop_remainder=True)
    for s in inputs:
        if not ds.element_spec[s.name].shape.is_compatible_with(s.shape):
            raise UserError(f"{where}: dataset elements have shapes {described}, the model takes {expected}",
                            "reshape them in the parse spec (SHAPE) or the dataset, or use --input-shape")
    return ds


def tf_errors() -> tuple[type[BaseException], ...]:
    """What reading a broken dataset raises: TF's op errors (corrupt records, a parse that does not
    fit) and the shape/type errors of building the pipeline."""
    tf = _tf.tf()
    return (tf.errors.OpError, ValueError, TypeError)


# -- a lazy sequence ------------------------------------------------------------------------------------


class Stream(Sequence[T]):
    """`count` items produced afresh by `make()` on every pass: a Sequence that never holds its
    items (len, iteration, indexing and slices; an index or a slice reads from the start). Used for
    calibration and verification samples, so the converter and verify can take them as they take
    a list."""

    def __init__(self, make: Callable[[], Iterator[T]], count: int, source: str = ""):
        self._make = make
        self._count = count
        self.source = source

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[T]:
        return itertools.islice(self._make(), self._count)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            if step < 1:
                return list(self)[index]  # reversed slices need everything; never used on big streams
            return list(itertools.islice(iter(self), start, stop, step))
        i = index + self._count if index < 0 else index
        if not 0 <= i < self._count:
            raise IndexError(index)
        return next(itertools.islice(iter(self), i, None))

    def __repr__(self) -> str:
        return f"Stream({self._count} items from {self.source or '?'})"
