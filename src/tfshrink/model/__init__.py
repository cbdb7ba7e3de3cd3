"""One model layer for every format: `load(path)` returns a Model with a signature and a runtime."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfshrink.errors import UserError
from tfshrink.model.base import FrozenGraph, Model, TensorSpec

# The model formats, each one module with FORMAT, detect(path) -> the path it reads or None,
# open_model(path, **options) -> Model and, optionally, sniff(first bytes) -> bool. The first
# detector that claims a path wins, so the order matters (saved_model.pb is a SavedModel, not a
# GraphDef; a checkpoint prefix is tried once the named file formats have declined). Adding a
# format is one module and one line here.
FORMAT_MODULES = {
    "savedmodel": "tfshrink.model.savedmodel",
    "keras": "tfshrink.model.keras",
    "tflite": "tfshrink.model.tflite",
    "graphdef": "tfshrink.model.graphdef",
    "checkpoint": "tfshrink.model.checkpoint",
}
FORMATS = tuple(FORMAT_MODULES)

__all__ = ["FORMATS", "FrozenGraph", "Model", "TensorSpec", "ambiguity_error", "detect_format", "load",
           "runtime_of", "savedmodel_options"]


def _module(fmt: str) -> Any:
    # Lazy: a format's module imports TensorFlow, Keras or LiteRT; `tfshrink --help` and a
    # command on one format should not pay for the others.
    return importlib.import_module(FORMAT_MODULES[fmt])


def runtime_of(fmt: str) -> str:
    """The runtime a format's models run in ("tensorflow" or "litert"), without loading any."""
    return str(getattr(_module(fmt), "RUNTIME", "tensorflow"))


def detect_format(path: str | Path) -> tuple[str, Path]:
    """(format, normalized path) for a model path; a UserError says why when it is none."""
    p = Path(path)
    if p.exists() and not p.is_dir() and not p.is_file():
        raise UserError(f"{p}: not a regular file (a FIFO, socket or device)", "give a model file")
    head = b""
    if p.is_file():  # an unreadable file is said to be one, whichever reader would have met it
        try:
            with p.open("rb") as f:
                head = f.read(8)
        except OSError as exc:
            raise UserError(f"{p}: cannot read the file ({exc.strerror or type(exc).__name__})",
                            "check its permissions") from None
    for fmt in FORMAT_MODULES:
        found = _module(fmt).detect(p)
        if found is not None:
            return fmt, found
    if p.is_dir():
        raise UserError(f"{p}: the folder holds no model",
                        "expected a SavedModel (saved_model.pb) or a TF1 checkpoint (checkpoint, *.meta)")
    if not p.exists():
        raise UserError(f"{p}: no such file or folder", "check the path")
    for fmt in FORMAT_MODULES:
        sniff = getattr(_module(fmt), "sniff", None)
        if sniff is not None and sniff(head):
            return fmt, p
    raise UserError(f"{p}: unrecognized model file",
                    "expected .pb/.pbtxt, .keras/.h5, .tflite, a SavedModel folder or a checkpoint")


def load(path: str | Path, *, signature: str | None = None, outputs: Sequence[str] | None = None,
         tags: Sequence[str] | str | None = None) -> Model:
    """Load any supported model. `signature` and `tags` pick a SavedModel signature and MetaGraph
    (tags comma-separated or a list); `outputs` overrides detected outputs of graph formats
    (checkpoint, GraphDef)."""
    fmt, p = detect_format(path)
    for flag, value in (("--signature", signature), ("--tags", tags)):
        if value and fmt != "savedmodel":
            raise UserError(f"{p}: {flag} picks from a SavedModel's signatures; this is a {fmt} model",
                            f"drop {flag}")
    tag_list = [t.strip() for t in tags.split(",") if t.strip()] if isinstance(tags, str) else tags
    return _module(fmt).open_model(p, signature=signature, outputs=outputs, tags=tag_list or None)


def savedmodel_options(paths: Sequence[str | Path], signature: str | None,
                       tags: Sequence[str] | str | None,
                       formats: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The load options for each of `paths`: `signature` and `tags` go to the SavedModels among
    them (verify and compare take models of several formats). `formats`: the paths' formats when
    the caller has detected them already. A UserError when they are given but no path is a
    SavedModel."""
    kinds = list(formats) if formats is not None else [detect_format(p)[0] for p in paths]
    if (signature or tags) and "savedmodel" not in kinds:
        raise UserError("--signature/--tags pick from a SavedModel's signatures; none of the models is one",
                        "drop --signature and --tags")
    return [{"signature": signature, "tags": tags} if k == "savedmodel" else {} for k in kinds]


def ambiguity_error(model: Model) -> UserError:
    det = model.detection  # type: ignore[attr-defined]
    lines = ", ".join(f"{c.name} ({c.op}{'' if c.strong else ', weak'})" for c in det.candidates[:8])
    suggestion = ",".join(det.suggested_outputs)
    return UserError(f"{model.path}: cannot tell the outputs apart; candidates, best first: {lines or 'none'}",
                     f"pass --outputs {suggestion}" if suggestion else "pass --outputs NODE[,NODE]")
