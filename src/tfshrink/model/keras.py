"""Keras models: .keras (Keras 3) and .h5 (Keras 3, and legacy Keras 2 HDF5 files)."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.errors import UserError, first_line
from tfshrink.model.base import FrozenGraph, Model, TensorSpec, variable_spec
from tfshrink.model.freezing import freeze_function, select_outputs
from tfshrink.names import split_names


class KerasModel(Model):
    format = "keras"

    def __init__(self, path: Path):
        super().__init__(path)
        tf = _tf.tf()
        if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
            # Keras would report "File not found" for a .keras file that is not a whole zip archive.
            raise UserError(f"{path}: not a readable .keras archive (the zip file is truncated or corrupt)",
                            "re-save it with model.save('model.keras')")
        # Lazy, to keep Keras out of start-up until a Keras file is opened: registers the QAT
        # layers, so quantize_model models load.
        import tfshrink.model.keras_layers  # noqa: F401

        try:
            self.keras_model = tf.keras.models.load_model(str(path), compile=False)
        except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, ...
            first = first_line(exc)
            raise UserError(f"{path}: cannot load the Keras model: {first[:200]}",
                            "the file is truncated or corrupt, or needs custom objects") from None
        model = self.keras_model
        if not getattr(model, "inputs", None):
            raise UserError(f"{path}: the Keras model has no known inputs (a subclassed model?)",
                            "save a Functional or Sequential model, or export a SavedModel")
        self._input_names = [str(t.name) for t in model.inputs]
        self._output_names = list(model.output_names)
        # Call the model with its inputs in the structure it was built with: a legacy .h5 model
        # built on a one-element list warns ("The structure of `inputs` doesn't match") when
        # given a bare tensor.
        self._as_list = len(model.inputs) > 1 or isinstance(model.input, list)
        self.inputs = [TensorSpec(n, str(t.dtype), tuple(t.shape)) for n, t in zip(self._input_names, model.inputs, strict=True)]
        self.outputs = [TensorSpec(n, str(t.dtype), tuple(t.shape)) for n, t in zip(self._output_names, model.outputs, strict=True)]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = []
        for name in self._input_names:
            if name not in feeds:
                raise UserError(f"{self.path}: input {name!r} was not given",
                                f"inputs are {', '.join(self._input_names)}")
            args.append(np.asarray(feeds[name]))
        tf = _tf.tf()
        try:
            result = self.keras_model(args if self._as_list else args[0], training=False)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:  # inputs of the wrong shape or type
            raise UserError(f"{self.path}: running the model failed: {first_line(exc)}",
                            f"the model expects {', '.join(s.name + s.shape_text() for s in self.inputs)}") from None
        if not isinstance(result, (list, tuple)):
            result = [result]
        return {n: np.asarray(r) for n, r in zip(self._output_names, result, strict=True)}

    def function_graph(self) -> Any:
        return self.concrete_function().graph

    def variable_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(variable_spec(v) for v in self.keras_model.variables)

    def concrete_function(self) -> Any:
        tf = _tf.tf()
        model = self.keras_model
        specs = [tf.TensorSpec(t.shape, t.dtype, name=n) for n, t in zip(self._input_names, model.inputs, strict=True)]
        as_list = self._as_list

        @tf.function(input_signature=specs)
        def serve(*args: Any) -> Any:
            out = model(list(args) if as_list else args[0], training=False)
            return list(out) if isinstance(out, (list, tuple)) else [out]

        return serve.get_concrete_function()

    def freeze(self, outputs: Sequence[str] | None = None,
               binds: Mapping[str, Any] | None = None) -> FrozenGraph:
        graph_def, inputs, outs = freeze_function(self.concrete_function(), self._input_names, self._output_names, binds)
        graph_def, outs = select_outputs(graph_def, outs, self._output_names, split_names(outputs), str(self.path))
        return FrozenGraph(graph_def, inputs, outs)


# -- the format registry's entry (tfshrink.model.FORMATS) ---------------------------------------

FORMAT = "keras"
SUFFIXES = (".keras", ".h5", ".hdf5")


def detect(path: Path) -> Path | None:
    """`path` when it is a file named like a Keras model, else None."""
    return path if path.is_file() and path.suffix.lower() in SUFFIXES else None


def sniff(head: bytes) -> bool:
    """A .keras zip or an HDF5 file, by its first bytes (for a file named otherwise)."""
    return head.startswith(b"PK") or head.startswith(b"\x89HDF")


def open_model(path: Path, **_: Any) -> KerasModel:
    return KerasModel(path)
