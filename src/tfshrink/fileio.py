"""Safe output files: never a partial file, never an input overwritten, same bytes every time."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tfshrink.errors import UserError


def _model_files(path: Path) -> set[Path]:
    """Files that make up the model at `path` (a checkpoint prefix covers its .meta/.index/.data)."""
    p = Path(path)
    files = {p.resolve()}
    if p.is_dir():
        files |= {f.resolve() for f in p.rglob("*")}
    parent = p.parent if p.parent.exists() and not p.is_dir() else None
    if parent is not None:  # a checkpoint prefix: model.ckpt-5 -> model.ckpt-5.index, .meta, .data-*
        files |= {f.resolve() for f in parent.glob(f"{p.name}.*")}
    return files


# What each kind of output is called; an output named like another kind is refused.
SUFFIXES = {"graphdef": (".pb", ".pbtxt", ".graphdef"), "tflite": (".tflite", ".lite"),
            "keras": (".keras", ".h5", ".hdf5")}


def check_output(output: str | Path, inputs: Iterable[str | Path], writes: str | None = None) -> Path:
    """Refuse an output path that is (part of) an input model or an existing folder, or that is
    named like another kind of model than the `writes` kind ("graphdef", "tflite", "keras")."""
    out = Path(output)
    resolved = out.resolve()
    for src in inputs:
        src_p = Path(src)
        if resolved in _model_files(src_p) or (src_p.is_dir() and src_p.resolve() in resolved.parents):
            raise UserError(f"{out}: the output would overwrite the input model {src}",
                            "choose another output path")
    if out.is_dir():
        raise UserError(f"{out}: the output path is a folder", "give a file name, e.g. model.pb")
    suffix = out.suffix.lower()
    if writes is not None:
        other = next((kind for kind, names in SUFFIXES.items() if kind != writes and suffix in names), None)
        if other is not None:
            raise UserError(f"{out}: this writes a {writes} model, but the name says {other}",
                            f"name it {out.stem}{SUFFIXES[writes][0]}")
    if not out.parent.exists():
        raise UserError(f"{out}: the output folder {out.parent} does not exist", "create it first")
    _check_writable(out.parent)
    return out


MIN_FREE_BYTES = 1 << 20  # less than this free in the output folder: refused before any work


def _check_writable(folder: Path) -> None:
    """Fail before any work, not after it, when `folder` cannot take a new file: read-only, not
    ours, or (nearly) full."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".tfshrink-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{folder}: cannot write there ({exc.strerror or type(exc).__name__})",
                        "choose a folder you can write to") from None
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise UserError(f"{folder}: the disk is full ({free:,} bytes free)", "free some space, or write elsewhere")


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path` (flushed to disk), then rename it into place.
    The file gets the permissions a plain open() would give it (mkstemp's are owner-only)."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_error(target: Path, exc: OSError) -> UserError:
    """A failed write (disk full, read-only, gone), said in one line; nothing was left behind."""
    if exc.errno == errno.ENOSPC:
        return UserError(f"{target}: the disk is full; nothing was written", "free some space, or write elsewhere")
    return UserError(f"{target}: cannot write it ({exc.strerror or type(exc).__name__}); nothing was written",
                     "choose a folder you can write to")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, for writers that go by it, such as Keras) to
    write to; renamed into place when the block ends without error, removed otherwise."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    except OSError as exc:
        raise write_error(target, exc) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(target, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside `path` to write a folder of outputs into (a report's CSV and
    charts). When the block ends without error its files move into `path` (created if need be),
    each by a rename; on any error or interrupt the temporary folder goes and `path` is untouched.
    Another output written inside the block (the model the report describes) therefore lands with
    the folder or not at all. A disk-full or read-only error is a UserError naming `path`."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise write_error(target, exc) from None
    try:
        yield tmp
        target.mkdir(exist_ok=True)
        for f in sorted(tmp.iterdir()):
            os.replace(f, target / f.name)
    except OSError as exc:
        raise write_error(target, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def serialize_graph_def(graph_def: Any, text: bool) -> bytes:
    """Deterministic bytes for a GraphDef (binary, or protobuf text with --text)."""
    if text:
        from google.protobuf import text_format

        return text_format.MessageToString(graph_def).encode()
    return graph_def.SerializeToString(deterministic=True)


def disk_bytes(path: Path) -> int:
    """Bytes on disk: a file, a folder's files, or all files of a checkpoint prefix."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.parent.glob(f"{path.name}.*") if f.is_file())
