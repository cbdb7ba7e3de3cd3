"""SavedModels through TensorFlow's TF1 loader: the fallback when `tf.saved_model.load` gives up.

`tf.saved_model.load` rebuilds the exported Python objects, and fails on folders whose object
graph it cannot restore (an older Keras export with optimizer state: `'_UserObject' object has no
attribute 'add_slot'`). The graph itself is fine: `tf.compat.v1.saved_model.loader.load` imports
the MetaGraphDef for a tag set into a session, restores the variables, and the signature_defs name
the input and output tensors. That is enough to run, freeze and convert the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.errors import UserError, first_line
from tfshrink.graph.inline import inline_calls
from tfshrink.graph.ir import Graph, parse_tensor
from tfshrink.graph.shapes import dtype_name
from tfshrink.model.base import FrozenGraph, TensorSpec
from tfshrink.model.freezing import name_signature, select_outputs
from tfshrink.model.session import SessionModel
from tfshrink.names import split_names, unknown_name_error

LOADER = "TF1 loader (tf.compat.v1.saved_model.loader)"


def saved_model_proto(path: Path) -> Any:
    """The SavedModel protobuf of a SavedModel folder (its MetaGraphs), parsed without loading it."""
    from google.protobuf import text_format

    proto = _tf.saved_model_pb2().SavedModel()
    pb = path / "saved_model.pb"
    try:
        if pb.is_file():
            proto.ParseFromString(pb.read_bytes())
        else:
            text_format.Parse((path / "saved_model.pbtxt").read_text(), proto)
    except Exception:  # protobuf raises DecodeError / ParseError / UnicodeDecodeError
        raise UserError(f"{path}: cannot parse saved_model.pb", "the folder is incomplete or corrupt; re-export it") from None
    return proto


def tag_sets(path: Path) -> list[list[str]]:
    """The tag sets of the MetaGraphs a SavedModel folder holds, in file order."""
    return [list(m.meta_info_def.tags) for m in saved_model_proto(path).meta_graphs]


def pick_tags(path: Path, tags: Sequence[str] | None) -> list[str]:
    """`tags` when given (checked against the folder), else "serve" or the only tag set."""
    sets = tag_sets(path)
    if not sets:
        raise UserError(f"{path}: the SavedModel holds no MetaGraph", "the folder is incomplete or corrupt; re-export it")
    if tags:
        wanted = sorted(tags)
        if not any(sorted(s) == wanted for s in sets):
            raise unknown_name_error("tag set", ",".join(tags), [",".join(s) for s in sets], str(path))
        return list(tags)
    for s in sets:
        if s == ["serve"]:
            return s
    return sets[0]


def _spec(key: str, info: Any) -> TensorSpec:
    shape = None if info.tensor_shape.unknown_rank else tuple(
        None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(key, dtype_name(info.dtype), shape)


class SavedModelV1Model(SessionModel):
    """A SavedModel run in a TF1 session, inputs and outputs named by its signature_def's keys."""

    format = "savedmodel"
    loader = LOADER

    def __init__(self, path: Path, signature: str | None = None, tags: Sequence[str] | None = None):
        super().__init__(path)
        self.tags = pick_tags(path, tags)
        self._graph, self._session, self.meta_graph = self._load()
        signatures = {k: v for k, v in self.meta_graph.signature_def.items() if not k.startswith("__")}
        if not signatures:
            self.close()
            raise UserError(f"{path}: the SavedModel has no signatures",
                            "export it with signatures (tf.saved_model.save(..., signatures=...))")
        key = signature or ("serving_default" if "serving_default" in signatures else sorted(signatures)[0])
        if key not in signatures:
            self.close()
            raise unknown_name_error("signature", key, signatures, str(path))
        self.signature = key
        self.signature_names = sorted(signatures)
        sig = signatures[key]
        self._input_keys = sorted(sig.inputs)
        self._output_keys = sorted(sig.outputs)
        self._input_tensors = {k: sig.inputs[k].name for k in self._input_keys}
        self._output_tensors = {k: sig.outputs[k].name for k in self._output_keys}
        self.inputs = [_spec(k, sig.inputs[k]) for k in self._input_keys]
        self.outputs = [_spec(k, sig.outputs[k]) for k in self._output_keys]

    def stored_graph(self) -> Any:
        return self.meta_graph.graph_def

    def variable_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(n.name, dtype_name(n.attr["dtype"].type), tuple(d.size for d in n.attr["shape"].shape.dim))
                     for n in self.meta_graph.graph_def.node if n.op in ("VarHandleOp", "VariableV2"))

    def signature_info(self) -> dict[str, Any]:
        return {"signature": self.signature, "signatures": self.signature_names, "loader": self.loader,
                "loader_note": self.loader_note}

    def _load(self) -> tuple[Any, Any, Any]:
        tf = _tf.tf()
        graph = tf.Graph()
        sess = tf.compat.v1.Session(graph=graph)
        try:
            with graph.as_default():
                meta = _tf.load_v1_saved_model(sess, self.tags, str(self.path))
        except Exception as exc:  # TF raises many types for a broken SavedModel
            sess.close()
            raise UserError(f"{self.path}: the TF1 loader failed too: {first_line(exc)}",
                            "the folder is incomplete or corrupt; re-export it") from None
        return graph, sess, meta

    def _build_session(self) -> tuple[Any, Any]:
        graph, sess, _ = self._load()
        return graph, sess

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        graph, sess = self.session()
        feed_dict = {}
        for spec in self.inputs:
            if spec.name not in feeds:
                raise UserError(f"{self.path}: input {spec.name!r} was not given",
                                f"inputs are {', '.join(self._input_keys)}")
            feed_dict[self._input_tensors[spec.name]] = np.asarray(feeds[spec.name])
        fetches = [self._output_tensors[k] for k in self._output_keys]
        tf = _tf.tf()
        try:
            values = sess.run(fetches, feed_dict)
        except tf.errors.OpError as exc:
            raise UserError(f"{self.path}: running the model failed: {first_line(exc)}",
                            "check input shapes") from None
        return {k: np.asarray(v) for k, v in zip(self._output_keys, values, strict=True)}

    def freeze(self, outputs: Sequence[str] | None = None,
               binds: Mapping[str, Any] | None = None) -> FrozenGraph:
        tf = _tf.tf()
        graph, sess = self.session()
        refs = [self._output_tensors[k] for k in self._output_keys]
        nodes = sorted({parse_tensor(r)[0] for r in refs})
        with graph.as_default():
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), nodes)
        flat = Graph(frozen)
        try:
            inline_calls(flat, set(nodes))  # TF2 exports wrap the whole model in StatefulPartitionedCall
        except ValueError as exc:
            raise UserError(f"{self.path}: cannot inline the model's functions: {exc}",
                            "the folder is incomplete or corrupt; re-export it") from None
        frozen = flat.to_graph_def()
        in_nodes = [parse_tensor(self._input_tensors[k])[0] for k in self._input_keys]
        dtypes = {o.name: tf.dtypes.as_dtype(o.dtype).as_datatype_enum for o in self.outputs}
        outs = [(r, dtypes[k]) for r, k in zip(refs, self._output_keys, strict=True)]
        graph_def, inputs, names = name_signature(frozen, in_nodes, self._input_keys, outs, self._output_keys, binds)
        graph_def, names = select_outputs(graph_def, names, self._output_keys, split_names(outputs), str(self.path))
        return FrozenGraph(graph_def, inputs, names, notes=[f"loaded with the {self.loader}"])
