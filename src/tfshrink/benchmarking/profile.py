"""Per-op time: TensorFlow step stats (RunOptions FULL_TRACE) summed per node and per op type.

Each node's time is its ``all_end_rel`` time (from being scheduled to its outputs being ready),
what TensorFlow's StatSummarizer (benchmark_model's per-node table) reports, averaged over the
traced runs. Op types come from the trace's timeline label, so nodes Grappler rewrote show what
actually ran (e.g. ``_FusedConv2D`` for a Conv2D + BiasAdd + Relu); shares are of the sum of node
times, which can exceed the wall time when TensorFlow runs independent nodes in parallel.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

_LABEL = re.compile(r"^\S+ = ([^\s(]+)\(")


@dataclass(frozen=True)
class _Time:
    """Time spent in an op type, or in one node of it: mean ms per run and share of the summed node time."""

    op_type: str
    ms: float
    share: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OpTime(_Time):
    """One node (`name`)."""

    name: str = ""


@dataclass(frozen=True)
class TypeTime(_Time):
    """One op type, summed over its `nodes`."""

    nodes: int = 0


@dataclass
class Profile:
    """Per-op times of `runs` traced runs, or `available` False with a `note` saying why not."""

    available: bool
    runs: int = 0
    ops: list[OpTime] = field(default_factory=list)
    by_type: list[TypeTime] = field(default_factory=list)
    note: str | None = None

    @property
    def total_ms(self) -> float:
        return sum(o.ms for o in self.ops)

    def to_json(self) -> dict[str, Any]:
        return {"available": self.available, "runs": self.runs, "total_node_ms": self.total_ms,
                "ops": [o.to_json() for o in self.ops], "by_op_type": [t.to_json() for t in self.by_type],
                "note": self.note}


def _node_ns(ns: Any) -> int:
    return int(ns.all_end_rel_nanos) or int(ns.all_end_rel_micros) * 1000


def from_step_stats(step_stats: Iterable[Any], op_types: Mapping[str, str]) -> Profile:
    """Aggregate the StepStats of several traced runs; `op_types` maps node names to graph op types
    (used when a node's timeline label names none)."""
    total_ns: dict[str, int] = {}
    types: dict[str, str] = {}
    runs = 0
    for stats in step_stats:
        runs += 1
        for dev in stats.dev_stats:
            for ns in dev.node_stats:
                name = ns.node_name
                if name == "_SOURCE":
                    continue
                total_ns[name] = total_ns.get(name, 0) + _node_ns(ns)
                if name not in types:
                    m = _LABEL.match(ns.timeline_label)
                    types[name] = m.group(1) if m else op_types.get(name.split(":")[0], "?")
    if not runs:
        return Profile(available=False, note="no traced runs")
    grand = sum(total_ns.values()) or 1
    ops = sorted((OpTime(types[n], t / runs / 1e6, t / grand, name=n) for n, t in total_ns.items()),
                 key=lambda o: -o.ms)
    by_type: dict[str, list[float]] = {}
    for o in ops:
        acc = by_type.setdefault(o.op_type, [0.0, 0.0, 0])
        acc[0] += o.ms
        acc[1] += o.share
        acc[2] += 1
    summary = sorted((TypeTime(k, v[0], v[1], nodes=int(v[2])) for k, v in by_type.items()), key=lambda t: -t.ms)
    return Profile(available=True, runs=runs, ops=ops, by_type=summary)
