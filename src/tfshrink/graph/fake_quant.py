"""The ranges held by a graph's FakeQuant nodes: what training learned, read back for inspect and
for the checks before conversion."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.graph.ir import Graph, parse_tensor

# The ops TensorFlow's quantization-aware training writes, and the names tfshrink's rewrite gives
# its variables (tfshrink.qat.graph): shared by the rewrite, its conversion and inspect.
FAKE_QUANT_TYPES = ("FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel", "FakeQuantWithMinMaxArgs")
# Ops that keep their input's quantization (int8 in, same scale out): an activation quantized
# before one of them is still quantized after it.
PASS_THROUGH_TYPES = ("Identity", "Snapshot", "StopGradient", "Reshape", "Squeeze", "ExpandDims", "MaxPool",
                      "Transpose", "Pad", "PadV2", "MirrorPad", "SpaceToDepth", "DepthToSpace", "SpaceToBatchND",
                      "BatchToSpaceND")
# The initial activation range (tf.contrib.quantize's), and the variables that record training.
INIT_MIN = -6.0
INIT_MAX = 6.0
SCOPE = "tfshrink_qat"
QUANT_DELAY_VAR = f"{SCOPE}/quant_delay"
STEPS_VAR = f"{SCOPE}/steps"
ACT_SUFFIX = "act_quant"

_FORWARDING = ("Identity", "Snapshot", "ReadVariableOp", "StopGradient")
_SOURCES = ("Placeholder", "PlaceholderWithDefault", "VariableV2", "VarHandleOp", "Variable")


@dataclass(frozen=True)
class FakeQuantRange:
    """One FakeQuant node: what it quantizes and its [min, max] (one pair, or one per channel)."""

    node: str
    op: str
    kind: str  # "weights" (computed from constants/variables) | "activation"
    min: list[float] | None  # None: not readable without running the graph
    max: list[float] | None
    num_bits: int
    narrow_range: bool

    @property
    def per_channel(self) -> bool:
        return self.op == "FakeQuantWithMinMaxVarsPerChannel"

    @property
    def learned(self) -> bool:
        """False for an activation range still at the initial [-6, 6] of its variables."""
        if self.kind != "activation" or self.min is None or self.max is None:
            return True
        return not (len(self.min) == 1 and self.min[0] == INIT_MIN and self.max[0] == INIT_MAX)

    def text(self) -> str:
        return range_text(self.min, self.max)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "kind": self.kind, "min": self.min, "max": self.max,
                "num_bits": self.num_bits, "narrow_range": self.narrow_range, "per_channel": self.per_channel,
                "learned": self.learned}


def range_text(lo: list[float] | None, hi: list[float] | None) -> str:
    """[min, max], or a per-channel summary."""
    if lo is None or hi is None:
        return "range read at run time (variables)"
    if len(lo) == 1:
        return f"[{lo[0]:.6g}, {hi[0]:.6g}]"
    return (f"{len(lo)} channels, min in [{min(lo):.4g}, {max(lo):.4g}], "
            f"max in [{min(hi):.4g}, {max(hi):.4g}]")


def fake_quant_ranges(graph_def: Any, variables: Mapping[str, np.ndarray] | None = None,
                      evaluate: bool = True) -> list[FakeQuantRange]:
    """Every FakeQuant node of `graph_def` with its range. Ranges come from Consts (a frozen graph),
    from `variables` (variable name -> value, e.g. a checkpoint's), or, with `evaluate`, from running
    the constant-only subgraph that computes them (weight ranges of a frozen graph)."""
    graph = Graph(graph_def)
    nodes = [n for n in graph_def.node if n.op in FAKE_QUANT_TYPES]
    if not nodes:
        return []
    data_sources = _dynamic_nodes(graph)
    pending: dict[str, Any] = {}
    found: list[tuple[Any, str, Any, Any]] = []
    for node in nodes:
        kind = "activation" if parse_tensor(node.input[0])[0] in data_sources else "weights"
        if node.op == "FakeQuantWithMinMaxArgs":
            found.append((node, kind, [float(node.attr["min"].f)], [float(node.attr["max"].f)]))
            continue
        ends = []
        for ref in node.input[1:3]:
            value = _resolve(graph, ref, variables or {})
            if value is None and evaluate and parse_tensor(ref)[0] not in data_sources and \
                    not _reads_variable(graph, ref):
                pending[ref] = None
                value = ref
            ends.append(value)
        found.append((node, kind, ends[0], ends[1]))
    if pending:
        pending = _evaluate(graph_def, list(pending))
    out = []
    for node, kind, lo, hi in found:
        lo = pending.get(lo) if isinstance(lo, str) else lo
        hi = pending.get(hi) if isinstance(hi, str) else hi
        out.append(FakeQuantRange(node.name, node.op, kind, _floats(lo), _floats(hi),
                                  int(node.attr["num_bits"].i) if "num_bits" in node.attr else 8,
                                  bool(node.attr["narrow_range"].b) if "narrow_range" in node.attr else False))
    return out


def _floats(value: Any) -> list[float] | None:
    if value is None:
        return None
    return [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]


def _dynamic_nodes(graph: Graph) -> set[str]:
    """Nodes that depend on a placeholder (the model's data), found forward from the placeholders."""
    out: set[str] = set()
    for name in graph.topological_order():
        node = graph.node(name)
        if node.op in ("Placeholder", "PlaceholderWithDefault"):
            out.add(name)
            continue
        if any(parse_tensor(r)[0] in out for r in graph.inputs(name) if not r.startswith("^")):
            out.add(name)
    return out


def _resolve(graph: Graph, ref: str, variables: Mapping[str, np.ndarray]) -> Any:
    """The value of `ref` when it forwards a Const or a variable whose value is given."""
    name = parse_tensor(ref)[0]
    for _ in range(16):
        node = graph.node(name)
        if node.op == "Const":
            return _tf.tf().make_ndarray(node.attr["value"].tensor)
        if node.op in ("VariableV2", "VarHandleOp", "Variable"):
            key = node.attr["shared_name"].s.decode() if node.op == "VarHandleOp" and \
                node.attr["shared_name"].s else name
            return variables.get(key, variables.get(name))
        data = [r for r in graph.inputs(name) if not r.startswith("^")]
        if node.op not in _FORWARDING or not data:
            return None
        name = parse_tensor(data[0])[0]
    return None


def _reads_variable(graph: Graph, ref: str) -> bool:
    return any(graph.node(n).op in _SOURCES for n in graph.ancestors([parse_tensor(ref)[0]]))


def _evaluate(graph_def: Any, refs: list[str]) -> dict[str, Any]:
    """Run the constant-only subgraphs computing `refs` once; refs that fail are left out."""
    tf = _tf.tf()
    graph = tf.Graph()
    out: dict[str, Any] = {}
    try:
        with graph.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as sess:
            keys = [f"{parse_tensor(r)[0]}:{parse_tensor(r)[1]}" for r in refs]
            for ref, value in zip(refs, sess.run(keys), strict=True):
                out[ref] = value
    except (ValueError, tf.errors.OpError):
        return {}
    return out


def checkpoint_variables(prefix: str) -> dict[str, np.ndarray]:
    """The fake-quant range variables and tfshrink_qat/* records of a checkpoint."""
    reader = _tf.tf().train.load_checkpoint(str(prefix))
    names = reader.get_variable_to_shape_map()
    wanted = [n for n in names if n.startswith("tfshrink_qat/") or "/act_quant" in n or n == "global_step"]
    return {n: reader.get_tensor(n) for n in wanted}


def unlearned_checkpoint_ranges(values: Mapping[str, np.ndarray]) -> tuple[list[str], int]:
    """(scopes of activation ranges a checkpoint never updated, how many it has)."""
    counts = {n[: -len("/count")]: float(v) for n, v in values.items() if n.endswith("/count") and "/act_quant" in n}
    return sorted(s for s, c in counts.items() if c == 0), len(counts)


def steps_trained(values: Mapping[str, np.ndarray]) -> int | None:
    if STEPS_VAR in values:
        return int(values[STEPS_VAR])
    if "global_step" in values:
        return int(values["global_step"])
    return None
