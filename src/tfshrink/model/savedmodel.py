"""SavedModel directories (TF2 `tf.saved_model.save`, Keras `model.export`, TF1 builders)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.errors import UserError, first_line, note
from tfshrink.graph.io_ops import IO_OPS, io_nodes, refuse_io_ops
from tfshrink.model.base import FrozenGraph, Model, TensorSpec, variable_spec
from tfshrink.model.freezing import freeze_function, select_outputs
from tfshrink.model.savedmodel_v1 import SavedModelV1Model, saved_model_proto
from tfshrink.names import split_names, unknown_name_error


def _spec(name: str, tensor_spec: Any) -> TensorSpec:
    shape = None if tensor_spec.shape.rank is None else tuple(tensor_spec.shape.as_list())
    return TensorSpec(name, tensor_spec.dtype.name, shape)


class LoadFailed(UserError):
    """tf.saved_model.load could not restore the folder (the TF1 loader may still read it)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: cannot load the SavedModel: {reason}",
                         "the folder is incomplete or corrupt; re-export it")
        self.reason = reason


def load_saved_model(path: Path, signature: str | None = None, tags: Sequence[str] | None = None) -> Model:
    """The SavedModel at `path`: through tf.saved_model.load, or, when that cannot restore it (an
    older Keras export with optimizer state, a TF1 builder export), through the TF1 loader and the
    folder's signature_defs. Only when both fail is the folder called broken, with both reasons."""
    # Loading runs the SavedModel's initializers: look for I/O ops in every graph and function first.
    for meta in saved_model_proto(path).meta_graphs:
        refuse_io_ops(io_nodes(meta.graph_def, ops=IO_OPS), str(path))
    try:
        return SavedModelModel(path, signature, tags)
    except LoadFailed as tf2:
        try:
            model = SavedModelV1Model(path, signature, tags)
        except UserError as tf1:
            if "TF1 loader failed" not in tf1.message:
                raise  # the folder loads, but the signature or tag set asked for is not in it
            raise UserError(f"{path}: cannot load the SavedModel: tf.saved_model.load: {tf2.reason}; "
                            f"TF1 loader: {tf1.message.split('failed too: ', 1)[1]}",
                            "the folder is incomplete or corrupt; re-export it") from None
        model.loader_note = f"{path}: loaded with the {model.loader}; tf.saved_model.load failed ({tf2.reason})"
        note(model.loader_note)
        return model


class SavedModelModel(Model):
    format = "savedmodel"
    loader = "tf.saved_model.load"

    def __init__(self, path: Path, signature: str | None = None, tags: Sequence[str] | None = None):
        super().__init__(path)
        tf = _tf.tf()
        try:
            self.loaded = tf.saved_model.load(str(path), tags=list(tags) if tags else None)
        except Exception as exc:  # TF raises many types for a broken SavedModel
            raise LoadFailed(path, first_line(exc)) from None
        signatures = dict(self.loaded.signatures)
        if not signatures:
            raise UserError(f"{path}: the SavedModel has no signatures",
                            "export it with signatures (tf.saved_model.save(..., signatures=...))")
        key = signature or ("serving_default" if "serving_default" in signatures else sorted(signatures)[0])
        if key not in signatures:
            raise unknown_name_error("signature", key, signatures, str(path))
        self.signature = key
        self.signature_names = sorted(signatures)
        self.fn = signatures[key]
        kwargs = self.fn.structured_input_signature[1]
        self._input_keys = sorted(kwargs)
        self.inputs = [_spec(k, kwargs[k]) for k in self._input_keys]
        outs = self.fn.structured_outputs
        self._output_keys = sorted(outs)
        self.outputs = [_spec(k, outs[k]) for k in self._output_keys]

    def function_graph(self) -> Any:
        return self.fn.graph

    def variable_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(variable_spec(v) for v in list(self.fn.graph.variables) or list(getattr(self.loaded, "variables", [])))

    def signature_info(self) -> dict[str, Any]:
        return {"signature": self.signature, "signatures": self.signature_names, "loader": self.loader}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = _tf.tf()
        args = {}
        for spec in self.inputs:
            if spec.name not in feeds:
                raise UserError(f"{self.path}: input {spec.name!r} was not given",
                                f"inputs are {', '.join(self._input_keys)}")
            args[spec.name] = tf.constant(np.asarray(feeds[spec.name]), dtype=spec.dtype)
        result = self.fn(**args)
        return {k: np.asarray(result[k]) for k in self._output_keys}

    def freeze(self, outputs: Sequence[str] | None = None,
               binds: Mapping[str, Any] | None = None) -> FrozenGraph:
        graph_def, inputs, outs = freeze_function(self.fn, self._input_keys, self._output_keys, binds)
        graph_def, outs = select_outputs(graph_def, outs, self._output_keys, split_names(outputs), str(self.path))
        return FrozenGraph(graph_def, inputs, outs)


# -- the format registry's entry (tfshrink.model.FORMATS) ---------------------------------------

FORMAT = "savedmodel"


def detect(path: Path) -> Path | None:
    """The SavedModel folder `path` names (the folder, or its saved_model.pb), else None."""
    if path.is_dir() and ((path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()):
        return path
    if path.is_file() and path.name.lower() in ("saved_model.pb", "saved_model.pbtxt"):
        return path.parent
    return None


def open_model(path: Path, *, signature: str | None = None, tags: Sequence[str] | None = None, **_: Any) -> Model:
    return load_saved_model(path, signature, tags)
