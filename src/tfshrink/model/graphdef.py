"""Frozen GraphDef (.pb binary or .pbtxt text)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tfshrink import _tf
from tfshrink.errors import UserError, first_line
from tfshrink.graph.detect import Detection, detect_io
from tfshrink.graph.io_ops import io_nodes, refuse_io_ops
from tfshrink.graph.ir import Graph, GraphError, cycle_nodes, parse_tensor, producer
from tfshrink.graph.shapes import check_constants, tensor_specs
from tfshrink.model.base import FrozenGraph, TensorSpec
from tfshrink.model.freezing import drop_io_ops, finish_frozen, placeholder_names, replace_placeholders
from tfshrink.model.session import SessionModel, placeholder_spec
from tfshrink.names import resolve_tensors


def read_graph_def(path: Path) -> Any:
    """Parse a .pb or .pbtxt file; a missing, unreadable, corrupt or truncated file is a UserError."""
    if not path.exists():
        raise UserError(f"{path}: no such file", "check the path")
    if path.is_dir():
        raise UserError(f"{path}: a folder, not a GraphDef file", "give a .pb/.pbtxt (tfshrink freeze makes one)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.strerror or type(exc).__name__})",
                        "check its permissions") from None
    graph_def = _tf.graph_pb2().GraphDef()
    hint = "the file is truncated or not a GraphDef; re-export it or pass the SavedModel/checkpoint"
    try:
        if path.suffix == ".pbtxt":
            from google.protobuf import text_format

            text_format.Parse(data.decode("utf-8"), graph_def)
        else:
            graph_def.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError / ParseError / UnicodeDecodeError
        raise UserError(f"{path}: cannot parse as a GraphDef ({type(exc).__name__})", hint) from None
    if not graph_def.node:
        raise UserError(f"{path}: the GraphDef holds no nodes", hint)
    check_constants(graph_def, str(path))
    names = {n.name for n in graph_def.node}
    for node in graph_def.node:
        for ref in node.input:
            if producer(ref) not in names:
                raise UserError(f"{path}: node {node.name!r} reads {ref!r}, which is missing", hint)
    stuck = cycle_nodes(graph_def)
    if stuck:
        raise UserError(f"{path}: the graph has a cycle through {', '.join(stuck[:3])}"
                        + (f" (and {len(stuck) - 3} more)" if len(stuck) > 3 else ""),
                        "a GraphDef must be acyclic apart from TF loops; re-export it")
    return graph_def


class GraphDefModel(SessionModel):
    format = "graphdef"

    def __init__(self, path: Path, graph_def: Any | None = None, outputs: Sequence[str] | None = None):
        super().__init__(path)
        self.graph_def = graph_def if graph_def is not None else read_graph_def(path)
        try:
            self.ir = Graph(self.graph_def)
        except GraphError as exc:
            raise UserError(f"{path}: {exc}", "the GraphDef is malformed; re-export it") from None
        self.detection: Detection = detect_io(self.ir)
        if outputs:
            names = resolve_tensors(outputs, self.ir.names(), str(path))
        else:
            names = self.detection.outputs or [c.name for c in self.detection.candidates]
        needed = self.ir.ancestors(parse_tensor(n)[0] for n in names)
        self.inputs = [placeholder_spec(self.ir, p) for p in self.detection.inputs if p in needed]
        self.outputs = self._output_specs(names)

    def stored_graph(self) -> Any:
        return self.graph_def

    def _output_specs(self, names: Sequence[str]) -> list[TensorSpec]:
        specs = tensor_specs(self.ir, names)
        return [TensorSpec(n, specs[n][0], specs[n][1], self.ir.node(parse_tensor(n)[0]).op)
                for n in names]

    def _build_session(self) -> tuple[Any, Any]:
        tables = [n.name for n in self.graph_def.node if n.op.startswith("InitializeTable")]
        refuse_io_ops(io_nodes(self.graph_def, [o.name for o in self.outputs] + tables, graph=self.ir), str(self.path))
        tf = _tf.tf()
        graph = tf.Graph()
        with graph.as_default():
            try:
                tf.graph_util.import_graph_def(self.graph_def, name="")
            except (ValueError, tf.errors.OpError) as exc:
                first = first_line(exc)
                raise UserError(f"{self.path}: TensorFlow cannot load this graph: {first}",
                                "it may use ops this TensorFlow lacks") from None
        session = tf.compat.v1.Session(graph=graph)
        # Lookup tables (sparsify_gather's, or a vocabulary's) start empty in a fresh session: fill
        # them once, as a serving binary would by running the graph's init op.
        tables = [op for op in graph.get_operations() if op.type.startswith("InitializeTable")]
        if tables:
            session.run(tables)
        return graph, session

    def freeze(self, outputs: Sequence[str] | None = None,
               binds: Mapping[str, Any] | None = None) -> FrozenGraph:
        names = resolve_tensors(outputs, self.ir.names(), str(self.path)) if outputs else \
            [o.name for o in self.outputs]
        # The freeze drops them, and the source it is checked against must not run them either:
        # drop them here, from this model's own graph (its IR and GraphDef share the nodes).
        drop_io_ops(self.ir)
        graph_def = replace_placeholders(self.graph_def, binds or {}, str(self.path))
        frozen = finish_frozen(graph_def, names)
        return FrozenGraph(frozen, placeholder_names(frozen), names, detected=not outputs)


# -- the format registry's entry (tfshrink.model.FORMATS) ---------------------------------------

FORMAT = "graphdef"
SUFFIXES = (".pb", ".pbtxt", ".graphdef")


def detect(path: Path) -> Path | None:
    """`path` when it is a file named like a frozen GraphDef, else None."""
    return path if path.is_file() and path.suffix.lower() in SUFFIXES else None


def open_model(path: Path, *, outputs: Sequence[str] | None = None, **_: Any) -> GraphDefModel:
    return GraphDefModel(path, outputs=outputs)
