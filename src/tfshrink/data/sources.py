"""Recognising and opening a streamed dataset: a TFRecord glob with its parse spec, a dataset file
(.toml/.json) that names files and spec, or a module:function entry point; and the parse spec
itself. The formats are described in tfshrink.data.stream."""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfshrink.errors import UserError, first_line

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")


DATASET_FILE_SUFFIXES = (".toml", ".json")


SPEC_HINT = 'e.g. "image=input:uint8:28,28,1; label=y:int64" (FEATURE[=INPUT]:DTYPE[:SHAPE]; ...)'


DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "bool")


COMPRESSIONS = ("", "GZIP", "ZLIB")


X_KEYS = ("x", "inputs", "images", "features")  # what a dataset may call a single input (and qat's x)


_ENTRY = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*\Z")


@dataclass(frozen=True)
class Feature:
    """One feature of a parse spec: read `name` from each Example, feed it to `input` as `dtype`
    with `shape` per sample (None: what the first record holds)."""

    name: str
    input: str
    dtype: str
    shape: tuple[int, ...] | None = None

    def text(self) -> str:
        shape = f":{','.join(map(str, self.shape))}" if self.shape is not None else ""
        return f"{self.name}{'' if self.input == self.name else '=' + self.input}:{self.dtype}{shape}"


@dataclass(frozen=True)
class Source:
    """A streamed dataset: TFRecord `files` read per `features`, or an `entry` point."""

    text: str  # as the user gave it
    kind: str  # "tfrecord" | "entry-point"
    files: tuple[str, ...] = ()
    features: tuple[Feature, ...] = ()
    compression: str = ""
    entry: str | None = None


def is_entry_point(text: str) -> bool:
    """`package.module:function`, and no file or folder of that name exists."""
    return bool(_ENTRY.match(text)) and not Path(text).exists()


def _dataset_file(path: Path) -> bool:
    """A .toml/.json dataset (or parse spec) file that exists."""
    return path.suffix.lower() in DATASET_FILE_SUFFIXES and path.is_file()


def _tfrecord_name(name: str) -> bool:
    lower = name.lower()
    return any(lower.endswith(s) or f"{s}-" in lower for s in TFRECORD_SUFFIXES)  # x.tfrecord-00001-of-00010


def is_streamed(source: str | Path, spec: str | Path | None = None) -> bool:
    """Is `source` a streamed dataset (TFRecords, a dataset file, an entry point) rather than
    images or arrays? True whenever a parse `spec` is given."""
    text = str(source)
    if spec is not None:
        return True
    path = Path(text)
    if _dataset_file(path):
        return True
    if is_entry_point(text):
        return True
    if path.is_dir():
        return False
    return _tfrecord_name(path.name)


def open_source(source: str | Path, spec: str | Path | None = None, *, what: str = "--data") -> Source:
    """The streamed dataset `source` names: a TFRecord glob (or file) read per `spec` (inline text
    or a .toml/.json file), a dataset file (.toml/.json: files and features; a `spec` given too
    replaces its features), or an entry point."""
    text = str(source)
    path = Path(text)
    if _dataset_file(path):
        table = _read_table(path, what)
        if "files" not in table:
            raise UserError(f"{what} {path}: a dataset file needs `files` (a glob of TFRecord files)",
                            'e.g. files = "shards/*.tfrecord" and features = "image=input:uint8:28,28,1"')
        _only(table, ("files", "features", "compression"), f"{what} {path}",
              "a dataset file holds files, features and (optionally) compression")
        pattern = str(table["files"])
        if not Path(pattern).is_absolute():
            pattern = str(path.parent / pattern)
        features = parse_spec(spec, what) if spec is not None else _features(table.get("features"), f"{what} {path}")
        return _tfrecords(text, pattern, features, table.get("compression", ""), what)
    if spec is None and is_entry_point(text):
        return Source(text, "entry-point", entry=text)
    if spec is None:
        raise UserError(f"{what} {text}: TFRecord files need a parse spec: which features to read and "
                        "what each becomes", f"give one ({SPEC_HINT}), or pass a dataset file (.toml/.json) "
                        "with files and features")
    return _tfrecords(text, text, parse_spec(spec, what), "", what)


def _only(table: dict[str, Any], keys: tuple[str, ...], where: str, hint: str) -> None:
    """Refuse keys of a TOML/JSON table other than `keys`."""
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}", hint)


def _tfrecords(text: str, pattern: str, features: tuple[Feature, ...], compression: Any, what: str) -> Source:
    files = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not files:
        raise UserError(f"{what} {pattern}: matches no TFRecord files", "check the glob (quote it so the shell "
                        "leaves it alone)")
    mode = str(compression or "").upper().replace("NONE", "")
    if mode not in COMPRESSIONS:
        raise UserError(f"{what}: compression {compression!r} is not GZIP or ZLIB", "leave it out for plain files")
    return Source(text, "tfrecord", tuple(files), features, mode)


def _read_table(path: Path, what: str) -> dict[str, Any]:
    try:
        if path.suffix.lower() == ".json":
            table = json.loads(path.read_text())
        else:
            import tomllib

            table = tomllib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} {path}: cannot read: {first_line(exc)}", "check its TOML/JSON syntax") from None
    if not isinstance(table, dict):
        raise UserError(f"{what} {path}: expected a table of keys", "e.g. files = ..., features = ...")
    return table


def parse_spec(spec: str | Path, what: str = "--data") -> tuple[Feature, ...]:
    """A parse spec from inline text (``image=input:uint8:28,28,1; label=y:int64``) or a .toml/.json
    file whose `features` key holds that text or one table per feature."""
    text = str(spec)
    path = Path(text)
    if _dataset_file(path):
        return _features(_read_table(path, what).get("features"), f"{what} spec {path}")
    return _features(text, f"{what} spec")


def _features(value: Any, where: str) -> tuple[Feature, ...]:
    if isinstance(value, dict):
        out = []
        for name, entry in value.items():
            if isinstance(entry, str):  # image = "input:uint8:28,28,1"
                out.append(_entry(f"{name}={entry}" if "=" not in entry.split(":")[0] else entry, where))
                continue
            if not isinstance(entry, dict) or "dtype" not in entry:
                raise UserError(f"{where}: feature {name!r} needs at least a dtype",
                                'e.g. [features.image] input = "input_1", dtype = "uint8", shape = [28, 28, 1]')
            _only(entry, ("input", "dtype", "shape"), f"{where}: feature {name!r}", "a feature takes input, dtype and shape")
            shape = entry.get("shape")
            out.append(_checked(Feature(str(name), str(entry.get("input", name)), str(entry["dtype"]),
                                        None if shape is None else tuple(int(d) for d in shape)), where))
        features = tuple(out)
    elif isinstance(value, str):
        features = tuple(_entry(part, where) for part in re.split(r"[;\n]", value) if part.strip())
    else:
        raise UserError(f"{where}: no features to read", f"give a parse spec ({SPEC_HINT})")
    if not features:
        raise UserError(f"{where}: no features to read", f"give a parse spec ({SPEC_HINT})")
    inputs = [f.input for f in features]
    if len(set(inputs)) != len(inputs):
        raise UserError(f"{where}: two features feed the same input", "give each feature its own =INPUT")
    return features


def _entry(text: str, where: str) -> Feature:
    parts = [p.strip() for p in text.strip().split(":")]
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UserError(f"{where}: {text.strip()!r} is not FEATURE[=INPUT]:DTYPE[:SHAPE]", SPEC_HINT)
    name, _, target = parts[0].partition("=")
    shape = None
    if len(parts) == 3 and parts[2]:
        try:
            shape = tuple(int(d) for d in parts[2].replace("x", ",").split(",") if d.strip())
        except ValueError:
            raise UserError(f"{where}: shape {parts[2]!r} of {name!r} is not D1,D2,...", SPEC_HINT) from None
    return _checked(Feature(name.strip(), (target or name).strip(), parts[1].lower(), shape), where)


def _checked(feature: Feature, where: str) -> Feature:
    if feature.dtype not in DTYPES:
        raise UserError(f"{where}: feature {feature.name!r} has dtype {feature.dtype!r}",
                        f"choose one of {', '.join(DTYPES)}")
    if feature.shape is not None and any(d < 1 for d in feature.shape):
        raise UserError(f"{where}: feature {feature.name!r} has shape {list(feature.shape)}",
                        "every dim must be at least 1")
    return feature


def shard_files(files: Sequence[str], index: int, count: int) -> tuple[str, ...]:
    """The files of shard `index` of `count`: every count-th file from the index-th, in order."""
    if count < 1 or not 0 <= index < count:
        raise UserError(f"shard {index} of {count} does not exist", "give 0 <= index < count")
    if count > len(files):
        raise UserError(f"{len(files)} TFRecord file(s) cannot be sharded by file among {count} workers",
                        f"split the data into at least {count} files")
    return tuple(files[index::count])
