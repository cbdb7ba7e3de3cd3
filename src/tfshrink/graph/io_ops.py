"""Ops that reach outside the model: files, the network, other processes.

A downloaded model is a program. A GraphDef can hold a WriteFile on a control edge of its output,
and running it writes the file; a SavedModel's initializers run when it loads. tfshrink looks for
these ops before it runs any graph and refuses, naming the nodes, unless the user allows them
(`tfshrink --allow-io-ops ...`, or `allow_io_ops(True)` from Python). Freezing and transforming
drop the ones that only hang on control edges: the outputs never read them.

Left out on purpose: `InitializeTableFromTextFile`, which a vocabulary table reads from the
model's own assets. A table filled from a file outside the model is not caught here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tfshrink.errors import UserError
from tfshrink.graph.ir import Graph, parse_tensor

# Checkpoint reading and writing: every SavedModel has them in its saver functions, and a TF1
# checkpoint's restore runs them, so they are refused only where a model's outputs need them.
CHECKPOINT_OPS = frozenset({"Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
                            "MergeV2Checkpoints", "ShardedFilename", "ShardedFilespec"})
IO_OPS = frozenset({
    # files
    "WriteFile", "ReadFile", "MatchingFiles", "ImmutableConst", "DeleteSessionTensor",
    "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "TFRecordReader",
    "TFRecordReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "LMDBReader",
    "IdentityReader", "IdentityReaderV2", "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset",
    "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2", "DatasetToTFRecord",
    "ExperimentalDatasetToTFRecord", "SaveDataset", "SaveDatasetV2", "LoadDataset", "SnapshotDataset",
    "SnapshotDatasetV2", "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteScalarSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteSummary",
    "WriteRawProtoSummary", "WriteGraphSummary", "FlushSummaryWriter", "CloseSummaryWriter",
    "ImportEvent",
    # Python code and debugger sinks (files or sockets)
    "PyFunc", "PyFuncStateless", "EagerPyFunc", "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3",
    "DebugNanCount", "DebugNumericSummary", "DebugNumericSummaryV2",
    # the network
    "GcsConfigureCredentials", "GcsConfigureBlockCache", "BigQueryReader", "GenerateBigQueryReaderPartitions",
})

_ALLOWED = [False]


def allow_io_ops(allowed: bool = True) -> None:
    """Let tfshrink run models that hold I/O ops (the CLI's --allow-io-ops)."""
    _ALLOWED[0] = bool(allowed)


def io_ops_allowed() -> bool:
    return _ALLOWED[0]


def _called(node: Any) -> list[str]:
    names = []
    for attr in node.attr.values():
        if attr.HasField("func"):
            names.append(attr.func.name)
        names.extend(f.name for f in attr.list.func)
    return names


def io_nodes(graph_def: Any, roots: Iterable[str] | None = None, *,
             ops: frozenset[str] = IO_OPS | CHECKPOINT_OPS, graph: Graph | None = None) -> list[tuple[str, str]]:
    """(node, op) of every I/O op that running `roots` (node names; all nodes when None) would run,
    inside the functions they call too (a function's node as "function/node"). `graph`: the IR of
    `graph_def` when the caller has one already."""
    graph = graph if graph is not None else Graph(graph_def)
    scope = graph.names() if roots is None else graph.ancestors(parse_tensor(r)[0] for r in roots)
    functions = {f.signature.name: f for f in graph_def.library.function}
    found = []
    todo = []
    for name in sorted(scope):
        node = graph.node(name)
        if node.op in ops:
            found.append((name, node.op))
        todo.extend(_called(node))
    seen: set[str] = set()
    while todo:
        fname = todo.pop()
        if fname in seen or fname not in functions:
            continue
        seen.add(fname)
        for node in functions[fname].node_def:
            if node.op in ops:
                found.append((f"{fname}/{node.name}", node.op))
            todo.extend(_called(node))
    return found


def refuse_io_ops(found: list[tuple[str, str]], where: str) -> None:
    """The one-line refusal for `found`, unless I/O ops are allowed."""
    if not found or io_ops_allowed():
        return
    listed = ", ".join(f"{name} ({op})" for name, op in found[:4])
    more = f" and {len(found) - 4} more" if len(found) > 4 else ""
    raise UserError(f"{where}: the model holds ops that touch files, the network or other processes: "
                    f"{listed}{more}; tfshrink does not run them",
                    "if you trust this model, pass tfshrink --allow-io-ops")


def drop_io_control_inputs(graph: Graph) -> list[str]:
    """Remove every control edge from an I/O op (the outputs never read its value). Returns the
    I/O nodes that hung on control edges only (now unread, to be pruned)."""
    dropped = []
    io = {n.name for n in graph if n.op in IO_OPS}
    for name in list(graph.names()):
        bad = [c for c in graph.control_inputs(name) if c in io]
        if bad:
            graph.drop_control_inputs(name, bad)
    for name in sorted(io):
        if name in graph and not graph.consumers(name):
            dropped.append(name)
    return dropped
