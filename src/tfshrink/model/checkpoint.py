"""TF1 training checkpoints: model.ckpt-N.meta / .index / .data-*-of-* (+ the `checkpoint` file)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tfshrink import _tf
from tfshrink.errors import UserError, first_line
from tfshrink.graph.detect import Detection, detect_io, is_mutator
from tfshrink.graph.fake_quant import checkpoint_variables
from tfshrink.graph.io_ops import io_nodes, refuse_io_ops
from tfshrink.graph.ir import Graph, parse_tensor
from tfshrink.graph.shapes import check_constants, dtype_name, tensor_specs
from tfshrink.model.base import FrozenGraph, TensorSpec
from tfshrink.model.freezing import finish_frozen, fold_constants, placeholder_names, replace_placeholders
from tfshrink.model.session import SessionModel, placeholder_spec
from tfshrink.names import resolve_tensors

_SUFFIX = re.compile(r"\.(meta|index|data-\d+-of-\d+)$")


def checkpoint_prefix(path: Path) -> Path | None:
    """The checkpoint prefix `path` names (a prefix, one of its files, or a folder), or None."""
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            text = state.read_text(errors="replace")
            m = re.search(r'^model_checkpoint_path:\s*"(.*)"', text, re.MULTILINE)
            if m:
                prefix = Path(m.group(1))
                prefix = prefix if prefix.is_absolute() else path / prefix
                if Path(f"{prefix}.index").exists() or Path(f"{prefix}.meta").exists():
                    return prefix
                # The file may name a path from another machine; fall back to this folder's own.
                local = path / prefix.name
                if Path(f"{local}.index").exists() or Path(f"{local}.meta").exists():
                    return local
        metas = sorted(path.glob("*.meta"), key=lambda p: (p.stat().st_mtime, _step(p)))
        if metas:
            return metas[-1].with_suffix("")
        return None
    m = _SUFFIX.search(path.name)
    if m:
        return path.with_name(path.name[: m.start()])
    if Path(f"{path}.meta").exists() or Path(f"{path}.index").exists():
        return path
    return None


def _step(p: Path) -> int:
    m = re.search(r"-(\d+)\.meta$", p.name)
    return int(m.group(1)) if m else -1


class CheckpointModel(SessionModel):
    format = "checkpoint"

    def __init__(self, prefix: Path, outputs: Sequence[str] | None = None):
        super().__init__(prefix)
        meta_path = Path(f"{prefix}.meta")
        index_path = Path(f"{prefix}.index")
        if not meta_path.exists():
            raise UserError(f"{prefix}: checkpoint has no .meta graph file",
                            "tfshrink needs model.ckpt.meta; re-save with tf.compat.v1.train.Saver")
        if not index_path.exists() or not list(prefix.parent.glob(f"{prefix.name}.data-*")):
            raise UserError(f"{meta_path}: the checkpoint's .index/.data files are missing",
                            f"copy {prefix.name}.index and {prefix.name}.data-* next to the .meta")
        self.meta_graph = _tf.meta_graph_pb2().MetaGraphDef()
        try:
            self.meta_graph.ParseFromString(meta_path.read_bytes())
        except Exception:
            raise UserError(f"{meta_path}: cannot parse the .meta graph", "the file is truncated or corrupt") from None
        if not self.meta_graph.graph_def.node:
            raise UserError(f"{meta_path}: the .meta graph holds no nodes", "the file is truncated or corrupt")
        check_constants(self.meta_graph.graph_def, str(meta_path))
        self.ir = Graph(self.meta_graph.graph_def)
        self.detection: Detection = self._detect()
        if outputs:
            names = resolve_tensors(outputs, self.ir.names(), str(prefix))
        else:
            names = self.detection.outputs or [c.name for c in self.detection.candidates]
        needed = self.ir.ancestors(parse_tensor(n)[0] for n in names)
        inputs = self.detection.inputs + self.detection.optional_inputs
        self.inputs = [placeholder_spec(self.ir, p) for p in inputs if p in needed]
        specs = tensor_specs(self.ir, names)
        self.outputs = [TensorSpec(n, *specs[n], self.ir.node(parse_tensor(n)[0]).op) for n in names]

    def _detect(self) -> Detection:
        detection = detect_io(self.ir)
        signature = self.meta_graph.signature_def
        sig = signature.get("serving_default") or (next(iter(signature.values())) if signature else None)
        if sig is not None and sig.outputs:
            detection.outputs = [_short(t.name) for _, t in sorted(sig.outputs.items())]
            detection.inputs = [parse_tensor(t.name)[0] for _, t in sorted(sig.inputs.items())]
            detection.ambiguous = False
        return detection

    def stored_graph(self) -> Any:
        return self.meta_graph.graph_def

    def variable_specs(self) -> tuple[TensorSpec, ...]:
        """The variables the outputs need, with their shapes from the checkpoint index."""
        needed = self.ir.ancestors(parse_tensor(o.name)[0] for o in self.outputs)
        shapes = self.variable_shapes()
        dtypes = {n.name: n.attr["dtype"].type for n in self.ir if n.op in ("VariableV2", "VarHandleOp")}
        return tuple(TensorSpec(v, dtype_name(dtypes[v]) if v in dtypes else "?", tuple(shapes[v]))
                     for v in sorted(shapes) if v in needed)

    def checkpoint_values(self) -> Mapping[str, Any]:
        return checkpoint_variables(str(self.path))

    def variable_shapes(self) -> dict[str, list[int]]:
        """Variable name -> shape, read from the checkpoint index (no values are loaded)."""
        tf = _tf.tf()
        try:
            reader = tf.train.load_checkpoint(str(self.path))
            return reader.get_variable_to_shape_map()
        except (tf.errors.OpError, ValueError) as exc:
            raise UserError(f"{self.path}: cannot read the checkpoint index: {first_line(exc)}",
                            "the .index file is truncated or corrupt; copy it again") from None

    def _build_session(self) -> tuple[Any, Any]:
        refuse_io_ops(io_nodes(self.meta_graph.graph_def, [o.name for o in self.outputs], graph=self.ir),
                      f"{self.path}.meta")
        return self._restore(self.meta_graph)

    def _restore(self, meta_graph: Any) -> tuple[Any, Any]:
        tf = _tf.tf()
        graph = tf.Graph()
        with graph.as_default():
            try:
                saver = tf.compat.v1.train.import_meta_graph(meta_graph, clear_devices=True)
            except (ValueError, KeyError, tf.errors.OpError) as exc:
                first = first_line(exc)
                raise UserError(f"{self.path}.meta: TensorFlow cannot load this graph: {first}",
                                "it may use ops this TensorFlow lacks") from None
            sess = tf.compat.v1.Session(graph=graph)
            if saver is None:
                raise UserError(f"{self.path}: the graph has no variables to restore",
                                "it is already frozen; pass it as a .pb")
            try:
                saver.restore(sess, str(self.path))
            except (tf.errors.OpError, ValueError) as exc:
                sess.close()
                first = first_line(exc)
                raise UserError(f"{self.path}: cannot restore the checkpoint: {first}",
                                "the .data/.index files are truncated or do not match the .meta") from None
        return graph, sess

    def freeze(self, outputs: Sequence[str] | None = None,
               binds: Mapping[str, Any] | None = None) -> FrozenGraph:
        tf = _tf.tf()
        names = resolve_tensors(outputs, self.ir.names(), str(self.path)) if outputs else \
            [o.name for o in self.outputs]
        meta = type(self.meta_graph)()
        meta.CopyFrom(self.meta_graph)
        meta.graph_def.CopyFrom(self._inference_graph(names, binds or {}))
        meta.ClearField("collection_def")  # they name training ops the cut graph no longer has
        graph, sess = self._restore(meta)
        try:
            with graph.as_default():
                output_nodes = sorted({parse_tensor(n)[0] for n in names})
                frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                    sess, graph.as_graph_def(), output_nodes)
        finally:
            sess.close()
        frozen = finish_frozen(frozen, names)
        inputs = placeholder_names(frozen)
        updates = sorted(n.name for n in frozen.node if is_mutator(n.op))
        updates += sorted(f"{f.signature.name}/{n.name}" for f in frozen.library.function
                          for n in f.node_def if is_mutator(n.op))
        if updates:
            flags = [n for n in inputs if self.ir.node(n).attr["dtype"].type == 10]  # DT_BOOL
            binds_hint = " ".join(f"--bind {f}=false" for f in flags) or "--bind FLAG=VALUE"
            raise UserError(f"{self.path}: the outputs depend on variable updates ({updates[0]}"
                            f"{f' and {len(updates) - 1} more' if len(updates) > 1 else ''}), "
                            "which a frozen graph cannot run",
                            f"switch training off with {binds_hint}")
        return FrozenGraph(frozen, inputs, names, detected=not outputs)


    def _inference_graph(self, outputs: list[str], binds: Mapping[str, Any]) -> Any:
        """The .meta graph cut down to what `outputs` and the saver's restore need, with `binds`
        as constants and the conditionals they decide folded.

        Folding before the variables are converted matters for TF2-style graphs: an If's
        branches read resource variables inside functions, and the untaken training branch
        assigns to them, which no constant can stand in for.
        """
        graph_def = replace_placeholders(self.meta_graph.graph_def, binds, str(self.path))
        graph = Graph(graph_def)
        saver = self.meta_graph.saver_def
        roots = [parse_tensor(n)[0] for n in outputs]
        roots += [parse_tensor(r)[0] for r in (saver.restore_op_name, saver.filename_tensor_name) if r]
        graph_def = graph.to_graph_def()  # the untouched graph, to find each variable's read op
        graph.prune(r for r in roots if r in graph)
        fold_constants(graph)
        graph.prune(r for r in roots if r in graph)
        # TF's converter fetches a resource variable's value through its `Read/ReadVariableOp`.
        reads = [f"{n.name}/Read/ReadVariableOp" for n in graph if n.op == "VarHandleOp"]
        full = Graph(graph_def)
        keep = full.ancestors([r for r in reads if r in full]) - set(graph.names())
        for name in full.topological_order():
            if name in keep:
                graph.add(full.node(name))
        graph.drop_unused_functions()  # the gradients' functions name nodes that are gone
        return graph.to_graph_def()


def _short(tensor: str) -> str:
    node, index, _ = parse_tensor(tensor)
    return node if index == 0 else f"{node}:{index}"


# -- the format registry's entry (tfshrink.model.FORMATS) ---------------------------------------

FORMAT = "checkpoint"


def detect(path: Path) -> Path | None:
    """The checkpoint prefix `path` names (a prefix, one of its files, or a folder), else None."""
    return checkpoint_prefix(path)


def open_model(path: Path, *, outputs: Sequence[str] | None = None, **_: Any) -> CheckpointModel:
    return CheckpointModel(path, outputs=outputs)
