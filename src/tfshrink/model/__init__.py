"""One model layer for every format: `load(path)` returns a Model with a signature and a runtime."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tfshrink.errors import UserError
from tfshrink.model.base import FrozenGraph, Model, TensorSpec

FORMATS = ("checkpoint", "savedmodel", "keras", "graphdef", "tflite")

__all__ = ["FORMATS", "FrozenGraph", "Model", "TensorSpec", "ambiguity_error", "detect_format", "load"]


def detect_format(path: str | Path) -> tuple[str, Path]:
    """(format, normalized path) for a model path; a UserError says why when it is none."""
    from tfshrink.model.checkpoint import checkpoint_prefix

    p = Path(path)
    if p.is_dir():
        if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
            return "savedmodel", p
        prefix = checkpoint_prefix(p)
        if prefix is not None:
            return "checkpoint", prefix
        raise UserError(f"{p}: the folder holds no model",
                        "expected a SavedModel (saved_model.pb) or a TF1 checkpoint (checkpoint, *.meta)")
    if not p.exists():
        prefix = checkpoint_prefix(p)
        if prefix is not None:
            return "checkpoint", prefix
        raise UserError(f"{p}: no such file or folder", "check the path")
    name = p.name.lower()
    if name in ("saved_model.pb", "saved_model.pbtxt"):
        return "savedmodel", p.parent
    if name.endswith(".keras") or name.endswith(".h5") or name.endswith(".hdf5"):
        return "keras", p
    if name.endswith(".tflite") or name.endswith(".lite"):
        return "tflite", p
    if name.endswith(".pb") or name.endswith(".pbtxt") or name.endswith(".graphdef"):
        return "graphdef", p
    prefix = checkpoint_prefix(p)
    if prefix is not None:
        return "checkpoint", prefix
    head = p.read_bytes()[:8]
    if head[4:8] == b"TFL3":
        return "tflite", p
    if head.startswith(b"PK") or head.startswith(b"\x89HDF"):
        return "keras", p
    raise UserError(f"{p}: unrecognized model file",
                    "expected .pb/.pbtxt, .keras/.h5, .tflite, a SavedModel folder or a checkpoint")


def load(path: str | Path, *, signature: str | None = None, outputs: Sequence[str] | None = None,
         tags: Sequence[str] | str | None = None) -> Model:
    """Load any supported model. `signature` and `tags` pick a SavedModel signature and MetaGraph
    (tags comma-separated or a list); `outputs` overrides detected outputs of graph formats
    (checkpoint, GraphDef)."""
    fmt, p = detect_format(path)
    if fmt == "checkpoint":
        from tfshrink.model.checkpoint import CheckpointModel

        return CheckpointModel(p, outputs=outputs)
    if fmt == "graphdef":
        from tfshrink.model.graphdef import GraphDefModel

        return GraphDefModel(p, outputs=outputs)
    if fmt == "savedmodel":
        from tfshrink.model.savedmodel import load_saved_model

        tag_list = [t.strip() for t in tags.split(",") if t.strip()] if isinstance(tags, str) else tags
        return load_saved_model(p, signature, tag_list or None)
    if fmt == "keras":
        from tfshrink.model.keras import KerasModel

        return KerasModel(p)
    from tfshrink.model.tflite import TFLiteModel

    return TFLiteModel(p)


def ambiguity_error(model: Model) -> UserError:
    det = model.detection  # type: ignore[attr-defined]
    lines = ", ".join(f"{c.name} ({c.op}{'' if c.strong else ', weak'})" for c in det.candidates[:8])
    suggestion = ",".join(det.suggested_outputs)
    return UserError(f"{model.path}: cannot tell the outputs apart; candidates, best first: {lines or 'none'}",
                     f"pass --outputs {suggestion}" if suggestion else "pass --outputs NODE[,NODE]")
