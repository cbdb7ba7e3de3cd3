"""The common face of every loaded model: its signature, a way to run it, a way to freeze it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink.errors import UserError


def shape_text(shape: Sequence[int | None] | None) -> str:
    """A shape as text: [1,?,?,3] (? for an unknown dim), <unknown> for an unknown rank."""
    if shape is None:
        return "<unknown>"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. ``shape`` is None when the rank is unknown; unknown dims are None."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None
    op: str | None = None
    quantization: tuple[float, int] | None = None  # (scale, zero_point) of a quantized TFLite tensor

    def shape_text(self) -> str:
        return shape_text(self.shape)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
        }
        if self.op is not None:
            out["op"] = self.op
        if self.quantization is not None:
            out["quantization"] = {"scale": self.quantization[0], "zero_point": self.quantization[1]}
        return out


@dataclass
class FrozenGraph:
    """A self-contained inference GraphDef with the names of its inputs and outputs."""

    graph_def: Any
    inputs: list[str]
    outputs: list[str]
    detected: bool = False  # outputs came from detection rather than from the user or a signature
    notes: list[str] = field(default_factory=list)


def variable_spec(v: Any) -> TensorSpec:
    """A TF or Keras variable's name (without ":0"), dtype and shape."""
    name = getattr(v, "path", None) or v.name
    dtype = getattr(v.dtype, "name", str(v.dtype))  # Keras 3: dtype is a str
    shape = tuple(v.shape.as_list()) if hasattr(v.shape, "as_list") else tuple(v.shape)
    return TensorSpec(name[:-2] if name.endswith(":0") else name, dtype, shape)


class Model:
    """Base class of the per-format loaders."""

    format: str = "?"
    loader: str | None = None  # how a format with several loaders was read (SavedModel)

    def __init__(self, path: Path):
        self.path = path
        self.loader_note: str | None = None  # set when the usual loader failed and another one worked
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []

    # -- running ------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on `feeds` (input name -> array); returns output name -> array."""
        raise NotImplementedError

    # -- what the model is made of (inspect, bench and verify ask these, never the format's name) --
    runtime: str = "tensorflow"  # the runtime that runs it: "tensorflow" or "litert"

    @property
    def is_tensorflow(self) -> bool:
        return self.runtime == "tensorflow"

    def stored_graph(self) -> Any | None:
        """The GraphDef the file stores (a frozen GraphDef, a checkpoint's or TF1 SavedModel's
        MetaGraph); None when the graph is built by tracing functions (Keras, TF2 SavedModel)."""
        return None

    def function_graph(self) -> Any | None:
        """The traced graph of the function that serves the model (Keras, TF2 SavedModel), else None."""
        return None

    def variable_specs(self) -> tuple[TensorSpec, ...]:
        """The variables the model's outputs read (name, dtype, shape); none for a frozen graph."""
        return ()

    def checkpoint_values(self) -> Mapping[str, Any] | None:
        """Variable name -> value, where the values are in a checkpoint the model was read from."""
        return None

    def signature_info(self) -> dict[str, Any]:
        """Which signature of how many is shown, and how the file was read (SavedModels)."""
        return {}

    # -- TF graph access -------------------------------------------------------------------------

    def freeze(self, outputs: Sequence[str] | None = None,
               binds: Mapping[str, Any] | None = None) -> FrozenGraph:
        raise UserError(f"{self.path}: a {self.format} model cannot be frozen",
                        "freeze takes a checkpoint, SavedModel, Keras model or GraphDef")

    def close(self) -> None:
        """Release sessions and interpreters."""

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def input_spec(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise UserError(f"{self.path}: no input named {name!r}",
                        f"inputs are {', '.join(s.name for s in self.inputs)}")

    def describe(self) -> str:
        return f"{self.format} model {self.path}"
