"""A small mutable IR over a GraphDef.

The NodeDef protos stay the storage (so serializing back is cheap and lossless); the Graph keeps a
name map and consumer indexes beside them and updates them in its own methods. Passes change the
graph only through these methods, so no pass can leave a dangling edge or a stale consumer list.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from typing import Any

from tfshrink.names import parse_tensor, producer, tensor_name

__all__ = ["Graph", "GraphError", "parse_tensor", "producer", "tensor_name"]


def _called(nodes: Iterable[Any]) -> set[str]:
    """Names of the functions that `nodes` call through func or list(func) attributes."""
    names = set()
    for node in nodes:
        for attr in node.attr.values():
            if attr.HasField("func"):
                names.add(attr.func.name)
            names.update(f.name for f in attr.list.func)
    return names


class GraphError(ValueError):
    """A requested edit would leave the graph inconsistent."""


class Graph:
    """Nodes by name, consumers (all, and data only) by producer, kept consistent by the methods below."""

    def __init__(self, graph_def: Any):
        self._proto = graph_def  # kept for versions and the function library
        self._nodes: dict[str, Any] = {}
        self._consumers: dict[str, set[str]] = {}
        # The subset of _consumers that read a producer's tensors rather than only wait on it:
        # kept beside it so data_consumers() need not rescan (and re-parse) every consumer's inputs.
        self._data_consumers: dict[str, set[str]] = {}
        # Each node's inputs as Python strings: traversals read these, not the protos, because
        # every read of a NodeDef's repeated field builds new string objects.
        self._inputs: dict[str, tuple[str, ...]] = {}
        for node in graph_def.node:
            name = node.name
            if name in self._nodes:
                raise GraphError(f"duplicate node name {name!r}")
            self._nodes[name] = node
        for name in self._nodes:
            self._link(name)

    def _link(self, name: str) -> None:
        """Cache node `name`'s inputs and index it as a consumer of each of their producers."""
        refs = tuple(self._nodes[name].input)
        self._inputs[name] = refs
        consumers, data = self._consumers, self._data_consumers
        for ref in refs:
            if ref[:1] == "^":
                src = ref[1:]
            else:
                src = parse_tensor(ref)[0] if ":" in ref else ref
                if src in data:
                    data[src].add(name)
                else:
                    data[src] = {name}
            if src in consumers:
                consumers[src].add(name)
            else:
                consumers[src] = {name}

    def _unlink(self, name: str) -> None:
        """Undo _link: drop node `name` from the consumer indexes of its producers."""
        for ref in self._inputs.pop(name, ()):
            src = producer(ref)
            self._consumers.get(src, set()).discard(name)
            self._data_consumers.get(src, set()).discard(name)

    # ---- reading -------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._nodes.values()))

    def live(self, ops: Container[str], skip: Container[str] = ()) -> Iterator[Any]:
        """The nodes whose op is in `ops` (a snapshot, in the graph's order), each yielded only if
        it is still in the graph when its turn comes (a pass may remove later ones) and its name
        is not in `skip` (the outputs a pass must keep)."""
        for node in list(self._nodes.values()):
            if node.op in ops and node.name in self._nodes and node.name not in skip:
                yield node

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
        """Every node that takes an output of `name` as a data input."""
        return set(self._data_consumers.get(name, ()))

    def inputs(self, name: str) -> tuple[str, ...]:
        """A node's input strings as stored ("n", "n:k", "^ctrl"), without reading the proto."""
        return self._inputs[name]

    def data_inputs(self, name: str) -> list[tuple[str, int]]:
        out = []
        for ref in self._inputs[name]:
            if ref[:1] == "^":
                continue
            if ":" in ref:
                src, index, _ = parse_tensor(ref)
                out.append((src, index))
            else:
                out.append((ref, 0))
        return out

    def control_inputs(self, name: str) -> list[str]:
        return [p for p, _, c in map(parse_tensor, self._inputs[name]) if c]

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
        self._link(node.name)
        return node

    def set_inputs(self, name: str, inputs: Iterable[str]) -> None:
        """Replace a node's inputs (data first, then "^control"), updating consumer lists."""
        node = self._nodes[name]
        new = list(inputs)
        for ref in new:
            if parse_tensor(ref)[0] not in self._nodes:
                raise GraphError(f"node {name!r} would read {ref!r}, which does not exist")
        self._unlink(name)
        # Deduplicate control inputs; keep data inputs as given.
        data = [r for r in new if not r.startswith("^")]
        seen: set[str] = set()
        control = [r for r in new if r.startswith("^") and not (r in seen or seen.add(r))]
        del node.input[:]
        node.input.extend(data + control)
        self._link(name)

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
            for ref in self._inputs[consumer]:
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
            self._unlink(name)
        for name in doomed:
            del self._nodes[name]
            self._consumers.pop(name, None)
            self._data_consumers.pop(name, None)

    def remove_unused(self, names: Iterable[str], *, keep: Iterable[str] = (),
                      removable: Callable[[Any], bool] | None = None) -> int:
        """Remove the nodes among `names` that nothing reads or waits on, are not in `keep` and that
        `removable(node)` accepts (default: Const and Identity), then likewise the inputs only they
        used. The one clean-up every rewrite needs after bypassing nodes. Returns how many went."""
        kept = set(keep)
        accept = removable or (lambda node: node.op in ("Const", "Identity"))
        stack, removed = list(names), 0
        while stack:
            node = self._nodes.get(stack.pop())
            if node is None or node.name in kept or self._consumers.get(node.name) or not accept(node):
                continue
            stack.extend(producer(r) for r in self._inputs[node.name])
            self.remove([node.name])
            removed += 1
        return removed

    def drop_control_inputs(self, name: str, sources: Iterable[str] | None = None) -> None:
        """Remove control inputs of `name` (all, or only those from `sources`)."""
        wanted = None if sources is None else set(sources)
        keep = [
            r
            for r in self._inputs[name]
            if not r.startswith("^") or (wanted is not None and r[1:] not in wanted)
        ]
        if len(keep) != len(self._inputs[name]):
            self.set_inputs(name, keep)

    def rename(self, old: str, new: str) -> None:
        """Rename node `old` to `new`, rewriting every data and control reference to it."""
        self.rename_many({old: new})

    def rename_many(self, mapping: dict[str, str]) -> None:
        """Rename several nodes at once (a swap or cycle of names is fine), rewriting every data and
        control reference to them and every colocation entry naming them. Refuses (and changes
        nothing) on an unknown node, or when two nodes would end up with the same name."""
        mapping = {o: n for o, n in mapping.items() if o != n}
        for old in mapping:
            if old not in self._nodes:
                raise GraphError(f"cannot rename {old!r}: no such node")
        final = [mapping.get(name, name) for name in self._nodes]
        if len(set(final)) != len(final):
            seen: set[str] = set()
            clash = next(n for n in final if n in seen or seen.add(n))
            raise GraphError(f"cannot rename to {clash!r}: a node already has that name")
        affected = set(mapping)
        for old in mapping:
            affected |= self._consumers.get(old, set())
        for name in affected:
            self._unlink(name)
        for old in mapping:
            self._consumers.pop(old, None)
            self._data_consumers.pop(old, None)
        self._nodes = {mapping.get(name, name): node for name, node in self._nodes.items()}
        for new in mapping.values():
            self._nodes[new].name = new
        for name in affected:
            node = self._nodes[mapping.get(name, name)]
            refs = list(node.input)
            for i, ref in enumerate(refs):
                src, index, control = parse_tensor(ref)
                if src in mapping:
                    # Keep the reference's own spelling ("n", "n:0", "n:2", "^n"), only the name changes.
                    head = "^" if control else ""
                    refs[i] = head + mapping[src] + ref[len(head) + len(src):]
            del node.input[:]
            node.input.extend(refs)
            self._link(node.name)
        # Colocation constraints ("_class": ["loc:@name"]) name nodes too; TF refuses to import a graph
        # whose colocation points at a node that is not there.
        moved = {b"loc:@" + o.encode(): b"loc:@" + n.encode() for o, n in mapping.items()}
        for node in self._nodes.values():
            if "_class" in node.attr:
                entries = node.attr["_class"].list.s
                if any(e in moved for e in entries):
                    fixed = [moved.get(e, e) for e in entries]
                    del entries[:]
                    entries.extend(fixed)

    def reorder(self, names: list[str]) -> None:
        """Put the nodes in the given order (a permutation of the current names)."""
        if sorted(names) != sorted(self._nodes):
            raise GraphError("reorder needs every node exactly once")
        self._nodes = {n: self._nodes[n] for n in names}

    def drop_unused_functions(self) -> int:
        """Remove library functions that no node calls, directly or through another function.
        Returns how many were removed."""
        library = self._proto.library
        by_name = {f.signature.name: f for f in library.function}
        used: set[str] = set()
        todo = list(_called(self._nodes.values()))
        while todo:
            name = todo.pop()
            if name in used or name not in by_name:
                continue
            used.add(name)
            todo.extend(_called(by_name[name].node_def))
        keep = [f for f in library.function if f.signature.name in used]
        removed = len(library.function) - len(keep)
        if removed:
            del library.function[:]
            library.function.extend(keep)
            if not keep and not library.gradient:
                self._proto.ClearField("library")
        return removed

    # ---- traversal -----------------------------------------------------------------------
    def ancestors(self, roots: Iterable[str], *, control: bool = True) -> set[str]:
        """`roots` and every node they depend on."""
        inputs = self._inputs
        seen: set[str] = set()
        stack = [r for r in roots if r in inputs]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            for ref in inputs[name]:  # parse_tensor inlined: this loop is the hot path
                if ref[:1] == "^":
                    if not control:
                        continue
                    src = ref[1:]
                elif ":" in ref:
                    src = parse_tensor(ref)[0]
                else:
                    src = ref
                if src not in seen:
                    stack.append(src)
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
        position = {n: i for i, n in enumerate(self._nodes)}
        ops = {name: node.op for name, node in self._nodes.items()}  # read each proto field once
        merges = ("Merge", "RefMerge")
        indeg = {name: len(ordering_producers(ops[name], self._inputs[name], ops)) for name in self._nodes}
        ready = deque(n for n, d in indeg.items() if d == 0)
        order: list[str] = []
        while ready:
            name = ready.popleft()
            order.append(name)
            for c in sorted(self._consumers.get(name, ()), key=position.__getitem__):
                if ops[c] in merges and ops[name] == "NextIteration":
                    continue
                indeg[c] -= 1
                if indeg[c] == 0:
                    ready.append(c)
        if len(order) != len(self._nodes):
            stuck = sorted(set(self._nodes) - set(order))[:3]
            raise GraphError(f"graph has a cycle through {', '.join(stuck)}")
        return order

    # ---- output --------------------------------------------------------------------------
    def subgraph_def(self, names: Iterable[str]) -> Any:
        """A GraphDef of just `names` (in topological order), with this graph's library."""
        keep = set(names)
        out = type(self._proto)()
        out.versions.CopyFrom(self._proto.versions)
        out.node.extend(self._nodes[n] for n in self.topological_order() if n in keep)
        return out

    def to_graph_def(self, *, sort: bool = False) -> Any:
        """A new GraphDef with this graph's nodes (optionally in topological order)."""
        out = type(self._proto)()
        out.versions.CopyFrom(self._proto.versions)
        if self._proto.HasField("library"):
            out.library.CopyFrom(self._proto.library)
        names = self.topological_order() if sort else list(self._nodes)
        out.node.extend(self._nodes[n] for n in names)
        return out


def ordering_producers(op: str, inputs: Iterable[str], ops: Mapping[str, str]) -> set[str]:
    """The producers a node must come after in a topological order: all of them, except a TF
    loop's NextIteration -> Merge back-edge (which is no cycle)."""
    producers = {producer(r) for r in inputs}
    if op in ("Merge", "RefMerge"):
        producers = {p for p in producers if ops.get(p) != "NextIteration"}
    return producers


def cycle_nodes(graph_def: Any) -> list[str]:
    """The nodes on or behind a cycle of `graph_def` (none for a valid graph): what a topological
    sort never reaches, found without building a Graph (a file is checked before it is loaded)."""
    ops = {n.name: n.op for n in graph_def.node}
    waiting: dict[str, int] = {}
    consumers: dict[str, list[str]] = {}
    for node in graph_def.node:
        producers = ordering_producers(node.op, node.input, ops)
        waiting[node.name] = len(producers)
        for q in producers:
            consumers.setdefault(q, []).append(node.name)
    ready = [n for n, count in waiting.items() if count == 0]
    while ready:
        for c in consumers.get(ready.pop(), ()):
            waiting[c] -= 1
            if waiting[c] == 0:
                ready.append(c)
    return sorted(n for n, count in waiting.items() if count > 0)
