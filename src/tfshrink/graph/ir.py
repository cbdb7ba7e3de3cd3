"""A small mutable IR over a GraphDef.

The NodeDef protos stay the storage (so serializing back is cheap and lossless); the Graph keeps a
name map and a consumer index beside them and updates both in its own methods. Passes change the
graph only through these methods, so no pass can leave a dangling edge or a stale consumer list.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any


def parse_tensor(ref: str) -> tuple[str, int, bool]:
    """Split a NodeDef input string ("^ctrl", "node", "node:2") into (node, index, is_control)."""
    if ref.startswith("^"):
        return ref[1:], -1, True
    name, sep, idx = ref.rpartition(":")
    if sep and idx.isdigit():
        return name, int(idx), False
    return ref, 0, False


def tensor_name(node: str, index: int = 0) -> str:
    """The short tensor name users see: "node" for output 0, "node:k" otherwise."""
    return node if index == 0 else f"{node}:{index}"


class GraphError(ValueError):
    """A requested edit would leave the graph inconsistent."""


class Graph:
    """Nodes by name, consumers by producer, kept consistent by the methods below."""

    def __init__(self, graph_def: Any):
        self._proto = graph_def  # kept for versions and the function library
        self._nodes: dict[str, Any] = {}
        self._consumers: dict[str, set[str]] = {}
        for node in graph_def.node:
            if node.name in self._nodes:
                raise GraphError(f"duplicate node name {node.name!r}")
            self._nodes[node.name] = node
        for node in self._nodes.values():
            for ref in node.input:
                self._consumers.setdefault(parse_tensor(ref)[0], set()).add(node.name)

    # ---- reading -------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._nodes.values()))

    def names(self) -> list[str]:
        return list(self._nodes)

    def node(self, name: str) -> Any:
        return self._nodes[name]

    def get(self, name: str) -> Any | None:
        return self._nodes.get(name)

    def consumers(self, name: str) -> set[str]:
        """Every node that takes `name` as a data or control input."""
        return set(self._consumers.get(name, ()))

    def data_consumers(self, name: str) -> set[str]:
        out = set()
        for c in self._consumers.get(name, ()):
            for ref in self._nodes[c].input:
                producer, _, control = parse_tensor(ref)
                if producer == name and not control:
                    out.add(c)
                    break
        return out

    def data_inputs(self, name: str) -> list[tuple[str, int]]:
        return [(p, i) for p, i, c in map(parse_tensor, self._nodes[name].input) if not c]

    def control_inputs(self, name: str) -> list[str]:
        return [p for p, _, c in map(parse_tensor, self._nodes[name].input) if c]

    @property
    def library(self) -> Any:
        return self._proto.library

    @property
    def versions(self) -> Any:
        return self._proto.versions

    # ---- editing -------------------------------------------------------------------------
    def add(self, node_def: Any) -> Any:
        """Add a copy of `node_def`; its inputs must already exist."""
        if node_def.name in self._nodes:
            raise GraphError(f"node {node_def.name!r} already exists")
        for ref in node_def.input:
            if parse_tensor(ref)[0] not in self._nodes:
                raise GraphError(f"node {node_def.name!r} reads {ref!r}, which does not exist")
        node = type(node_def)()
        node.CopyFrom(node_def)
        self._nodes[node.name] = node
        for ref in node.input:
            self._consumers.setdefault(parse_tensor(ref)[0], set()).add(node.name)
        return node

    def set_inputs(self, name: str, inputs: Iterable[str]) -> None:
        """Replace a node's inputs (data first, then "^control"), updating consumer lists."""
        node = self._nodes[name]
        new = list(inputs)
        for ref in new:
            if parse_tensor(ref)[0] not in self._nodes:
                raise GraphError(f"node {name!r} would read {ref!r}, which does not exist")
        for ref in node.input:
            self._consumers.get(parse_tensor(ref)[0], set()).discard(name)
        # Deduplicate control inputs; keep data inputs as given.
        data = [r for r in new if not r.startswith("^")]
        seen: set[str] = set()
        control = [r for r in new if r.startswith("^") and not (r in seen or seen.add(r))]
        del node.input[:]
        node.input.extend(data + control)
        for ref in node.input:
            self._consumers.setdefault(parse_tensor(ref)[0], set()).add(name)

    def replace_uses(self, old: str, new: str, *, keep: Iterable[str] = ()) -> int:
        """Make every consumer of tensor `old` ("n" or "n:k") read `new` instead.

        Control dependencies on the old node are moved to the new node's producer. Nodes in
        `keep` are left alone. Returns the number of rewritten inputs.
        """
        old_node, old_idx, _ = parse_tensor(old)
        new_node, new_idx, _ = parse_tensor(new)
        new_ref = new_node if new_idx == 0 else f"{new_node}:{new_idx}"
        skip = set(keep)
        count = 0
        for consumer in self.consumers(old_node):
            if consumer in skip:
                continue
            refs = []
            changed = False
            for ref in self._nodes[consumer].input:
                producer, idx, control = parse_tensor(ref)
                if producer == old_node and not control and idx == old_idx:
                    refs.append(new_ref)
                    changed = True
                    count += 1
                else:
                    refs.append(ref)
            if changed:
                self.set_inputs(consumer, refs)
        return count

    def remove(self, names: Iterable[str]) -> None:
        """Remove nodes. Refuses (and changes nothing) if a node that stays still uses one."""
        doomed = set(names)
        for name in doomed:
            if name not in self._nodes:
                raise GraphError(f"cannot remove {name!r}: no such node")
            users = self._consumers.get(name, set()) - doomed
            if users:
                raise GraphError(f"cannot remove {name!r}: still used by {sorted(users)[0]!r}")
        for name in doomed:
            for ref in self._nodes[name].input:
                self._consumers.get(parse_tensor(ref)[0], set()).discard(name)
        for name in doomed:
            del self._nodes[name]
            self._consumers.pop(name, None)

    def drop_control_inputs(self, name: str, sources: Iterable[str] | None = None) -> None:
        """Remove control inputs of `name` (all, or only those from `sources`)."""
        wanted = None if sources is None else set(sources)
        keep = [
            r
            for r in self._nodes[name].input
            if not r.startswith("^") or (wanted is not None and r[1:] not in wanted)
        ]
        if len(keep) != len(self._nodes[name].input):
            self.set_inputs(name, keep)

    # ---- traversal -----------------------------------------------------------------------
    def ancestors(self, roots: Iterable[str], *, control: bool = True) -> set[str]:
        """`roots` and every node they depend on."""
        seen: set[str] = set()
        stack = [r for r in roots if r in self._nodes]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            for producer, _, is_control in map(parse_tensor, self._nodes[name].input):
                if (control or not is_control) and producer not in seen:
                    stack.append(producer)
        return seen

    def descendants(self, roots: Iterable[str], *, control: bool = True) -> set[str]:
        """`roots` and every node that depends on them."""
        seen: set[str] = set()
        stack = [r for r in roots if r in self._nodes]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            users = self.consumers(name) if control else self.data_consumers(name)
            stack.extend(u for u in users if u not in seen)
        return seen

    def prune(self, outputs: Iterable[str]) -> int:
        """Keep only what the output nodes need. Returns how many nodes were removed."""
        keep = self.ancestors(outputs)
        doomed = [n for n in self._nodes if n not in keep]
        self.remove(doomed)
        return len(doomed)

    def topological_order(self) -> list[str]:
        """Kahn's order, stable with respect to the current node order. Raises on a cycle
        that is not a TF loop (NextIteration back-edges are ignored)."""
        indeg: dict[str, int] = {}
        position = {n: i for i, n in enumerate(self._nodes)}
        for name, node in self._nodes.items():
            producers = {parse_tensor(r)[0] for r in node.input}
            if node.op in ("Merge", "RefMerge"):
                producers = {p for p in producers if self._nodes[p].op != "NextIteration"}
            indeg[name] = len(producers)
        ready = deque(n for n, d in indeg.items() if d == 0)
        order: list[str] = []
        while ready:
            name = ready.popleft()
            order.append(name)
            for c in sorted(self._consumers.get(name, ()), key=position.__getitem__):
                node = self._nodes[c]
                if node.op in ("Merge", "RefMerge") and self._nodes[name].op == "NextIteration":
                    continue
                indeg[c] -= 1
                if indeg[c] == 0:
                    ready.append(c)
        if len(order) != len(self._nodes):
            stuck = sorted(set(self._nodes) - set(order))[:3]
            raise GraphError(f"graph has a cycle through {', '.join(stuck)}")
        return order

    # ---- output --------------------------------------------------------------------------
    def to_graph_def(self, *, sort: bool = False) -> Any:
        """A new GraphDef with this graph's nodes (optionally in topological order)."""
        out = type(self._proto)()
        out.versions.CopyFrom(self._proto.versions)
        if self._proto.HasField("library"):
            out.library.CopyFrom(self._proto.library)
        names = self.topological_order() if sort else list(self._nodes)
        out.node.extend(self._nodes[n] for n in names)
        return out
