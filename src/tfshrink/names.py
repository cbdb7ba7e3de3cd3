"""Resolving the names users type (`prob`, `prob:0`, `pnet/prob1`) against a graph's names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from tfshrink.errors import UserError


def parse_tensor(ref: str) -> tuple[str, int, bool]:
    """Split a NodeDef input string ("^ctrl", "node", "node:2") into (node, index, is_control)."""
    if ref.startswith("^"):
        return ref[1:], -1, True
    name, sep, idx = ref.rpartition(":")
    if sep and idx.isdigit():
        return name, int(idx), False
    return ref, 0, False


def producer(ref: str) -> str:
    """The node an input string reads from; the same as parse_tensor(ref)[0], without the tuple."""
    if ref[:1] == "^":
        return ref[1:]
    if ":" in ref:
        return parse_tensor(ref)[0]
    return ref


def tensor_name(node: str, index: int = 0) -> str:
    """The short tensor name users see: "node" for output 0, "node:k" otherwise."""
    return node if index == 0 else f"{node}:{index}"


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    pool = list(choices)
    found = difflib.get_close_matches(name, pool, n=n, cutoff=0.5)
    if len(found) < n:
        low = name.lower()
        found += [c for c in pool if low in c.lower() and c not in found][: n - len(found)]
    return found


def unknown_name_error(what: str, name: str, choices: Iterable[str], where: str) -> UserError:
    near = closest(name, choices)
    hint = f"closest: {', '.join(near)}" if near else "run `tfshrink inspect` to list the names"
    return UserError(f"{where}: no {what} named {name!r}", hint)


def split_names(values: Iterable[str] | str | None) -> list[str]:
    """Accept "a,b", ["a", "b"] or ["a,b", "c"]; drop blanks."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def normalize_tensor(ref: str) -> str:
    """`prob:0` -> `prob`; `x:1` stays; `^ctrl` is refused."""
    if ref.startswith("^"):
        raise UserError(f"{ref!r} is a control dependency, not a tensor", "drop the leading ^")
    node, index, _ = parse_tensor(ref)
    return tensor_name(node, index)


def resolve_tensors(refs: Iterable[str], node_names: Iterable[str], where: str,
                    what: str = "node") -> list[str]:
    """Check each `node` / `node:k` against the graph; return short tensor names."""
    names = set(node_names)
    out = []
    for ref in refs:
        short = normalize_tensor(ref)
        node = parse_tensor(short)[0]
        if node not in names:
            raise unknown_name_error(what, node, names, where)
        out.append(short)
    return out


def feed_key(name: str) -> str:
    """TF session feed/fetch key for a short tensor name."""
    node, index, _ = parse_tensor(name)
    return f"{node}:{index}"
