"""graph_transforms' --transforms syntax: `name name(k=v, k="a,b", k=v2)` separated by spaces or
newlines, keys repeatable, with whatever quotes the shell left in place."""

from __future__ import annotations

from dataclasses import dataclass, field

from tfshrink.errors import UserError


@dataclass
class TransformCall:
    name: str
    params: dict[str, list[str]] = field(default_factory=dict)


def parse_spec(spec: str) -> list[TransformCall]:
    """Parse a transforms string into calls, in order. Raises UserError on bad syntax."""
    text = spec.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and text.count(text[0]) == 2:
        text = text[1:-1]  # the whole spec quoted once more than the shell removed
    calls: list[TransformCall] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace() or text[i] == ",":
            i += 1
            continue
        start = i
        while i < n and (text[i].isalnum() or text[i] == "_"):
            i += 1
        name = text[start:i]
        if not name:
            raise UserError(f"--transforms: unexpected {text[i]!r} at position {i}",
                            "write names like fold_constants or remove_nodes(op=Identity)")
        call = TransformCall(name)
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == "(":
            i = _parse_params(text, i + 1, call)
        calls.append(call)
    if not calls:
        raise UserError("--transforms is empty", "e.g. --transforms 'strip_unused_nodes sort_by_execution_order'")
    return calls


def _parse_params(text: str, i: int, call: TransformCall) -> int:
    n = len(text)
    while True:
        while i < n and (text[i].isspace() or text[i] == ","):
            i += 1
        if i >= n:
            raise UserError(f"--transforms: {call.name}( is never closed", "add the missing )")
        if text[i] == ")":
            return i + 1
        start = i
        while i < n and text[i] not in "=),":
            i += 1
        key = text[start:i].strip()
        if i >= n or text[i] != "=" or not key:
            raise UserError(f"--transforms: {call.name}: expected key=value near {text[start:i + 1]!r}",
                            "parameters look like name(key=value, key=\"a,b\")")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] in "'\"":
            quote = text[i]
            end = text.find(quote, i + 1)
            if end < 0:
                raise UserError(f"--transforms: {call.name}({key}=...): unbalanced {quote}", "close the quote")
            value = text[i + 1:end]
            i = end + 1
        else:
            start = i
            while i < n and text[i] not in ",)" and not text[i].isspace():
                i += 1
            value = text[start:i]
        call.params.setdefault(key, []).append(value)
