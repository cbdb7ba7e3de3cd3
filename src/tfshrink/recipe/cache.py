"""Content hashes of step inputs, and the cache of finished steps kept in the output folder.

A step's key is the SHA-256 of its kind, its options (every file replaced by the hash of its
contents), its output file name and the tfshrink version. A finished step is recorded in
``OUT/.tfshrink-cache/<key>.json`` with the hash of the file it wrote; it is reused when the key
matches and that file is still there, unchanged.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
from pathlib import Path
from typing import Any

from tfshrink.data.sources import DATASET_FILE_SUFFIXES, open_source
from tfshrink.errors import TfshrinkError
from tfshrink.fileio import atomic_write

__all__ = ["CACHE_DIR", "cache_key", "content_hash", "load_entry", "recorded_outputs", "store_entry"]

CACHE_DIR = ".tfshrink-cache"
_CHUNK = 1 << 20


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(path: Path) -> list[tuple[str, Path]]:
    """(name used in the hash, file) for a file, a folder's files, a checkpoint prefix's files or a glob."""
    if path.is_file():
        return [(path.name, path)]
    if path.is_dir():
        return [(f.relative_to(path).as_posix(), f) for f in sorted(path.rglob("*")) if f.is_file()]
    if any(c in str(path) for c in "*?["):
        return [(Path(f).name, Path(f)) for f in sorted(glob.glob(str(path))) if Path(f).is_file()]
    return [(f.name, f) for f in sorted(path.parent.glob(f"{glob.escape(path.name)}.*")) if f.is_file()]


def content_hash(path: str | Path) -> str:
    """SHA-256 over the contents (and relative names) of the files that make up `path`; for a
    dataset file (.toml/.json naming TFRecord files), of the files it names too, so that changing
    a shard invalidates the steps that read it."""
    h = hashlib.sha256()
    for name, f in _files(Path(path)):
        h.update(name.encode() + b"\0" + _file_digest(f).encode() + b"\n")
        for named in _dataset_files(f):
            h.update(b"dataset:" + named.name.encode() + b"\0" + _file_digest(named).encode() + b"\n")
    return h.hexdigest()


def _dataset_files(path: Path) -> list[Path]:
    """The TFRecord files a dataset file names (none for any other file, or one that is not valid:
    the step that reads it reports that)."""
    if path.suffix.lower() not in DATASET_FILE_SUFFIXES:
        return []
    try:
        source = open_source(path)
    except TfshrinkError:
        return []
    return [Path(f) for f in source.files]


def cache_key(payload: dict[str, Any]) -> str:
    """The SHA-256 of a JSON-able description of a step (sorted keys, so order does not matter)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def load_entry(out_dir: Path, key: str) -> dict[str, Any] | None:
    """The cache entry for `key` when its output is still there with the same contents, else None."""
    entry_path = out_dir / CACHE_DIR / f"{key}.json"
    try:
        entry = json.loads(entry_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not _valid(entry):
        return None  # a damaged entry: the step runs again and writes a good one
    output = entry.get("output")
    if output is not None:
        p = out_dir / output
        if not p.is_file() or _file_digest(p) != entry.get("output_sha256"):
            return None
    for name, digest in entry.get("extra_sha256", {}).items():  # folders a step writes besides its output
        if not (out_dir / name).exists() or content_hash(out_dir / name) != digest:
            return None
    return entry


def _valid(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("output"), str | None)
            and isinstance(entry.get("extra_sha256", {}), dict))


def recorded_outputs(out_dir: Path) -> set[str]:
    """The names of the files earlier runs wrote into `out_dir`, as their cache entries record."""
    names = set()
    for path in (out_dir / CACHE_DIR).glob("*.json") if (out_dir / CACHE_DIR).is_dir() else ():
        with contextlib.suppress(OSError, ValueError):
            entry = json.loads(path.read_text(encoding="utf-8"))
            if _valid(entry) and entry.get("output"):
                names.add(entry["output"])
    return names


def store_entry(out_dir: Path, key: str, entry: dict[str, Any]) -> None:
    """Record a finished step (its output's hash is added here)."""
    folder = out_dir / CACHE_DIR
    folder.mkdir(exist_ok=True)
    entry = dict(entry)
    entry["extra_sha256"] = {name: content_hash(out_dir / name) for name in entry.pop("extra", None) or []}
    if entry.get("output") is not None:
        entry["output_sha256"] = _file_digest(out_dir / entry["output"])
        for old in folder.glob("*.json"):  # entries for an earlier version of the same file are stale now
            with contextlib.suppress(OSError, ValueError):
                found = json.loads(old.read_text(encoding="utf-8"))
                stale = not _valid(found) or found.get("output") == entry["output"]
                if stale and old.stem != key:
                    old.unlink()
    atomic_write(folder / f"{key}.json", json.dumps(entry, indent=2, sort_keys=True, default=str).encode())
