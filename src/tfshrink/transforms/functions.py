"""inline_partitionedcall: replace function-call nodes by the bodies they call.

Matches PartitionedCall and StatefulPartitionedCall nodes (TF2 exports wrap layers and whole
models in them) whose function is in the graph's library, and writes the function's nodes under
`<call name>/`, wired to the call's inputs; the call's consumers read the body's results. Nested
calls are inlined too. A call that is a requested output keeps its name as an IdentityN, so
"call:1" still names the same tensor. Library functions no node calls any more are dropped.
Refuses (raises) when a call names a function the library lacks.
"""

from __future__ import annotations

from tfshrink.graph.inline import inline_call
from tfshrink.graph.ir import Graph
from tfshrink.transforms.registry import Context, register

CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
MAX_DEPTH = 64


@register("inline_partitionedcall", "inline PartitionedCall / StatefulPartitionedCall function bodies")
def inline_partitionedcall(graph: Graph, params: dict, ctx: Context) -> bool:
    wanted = ctx.output_nodes()
    changed = False
    for _ in range(MAX_DEPTH):
        calls = [n.name for n in graph if n.op in CALL_OPS]
        if not calls:
            break
        for name in calls:
            node = graph.node(name)
            fname = node.attr["f"].func.name
            args = [r for r in node.input if not r.startswith("^")]
            if not inline_call(graph, name, fname, args, name, keep_name=name in wanted):
                raise ValueError(f"{name} calls {fname!r}, which is not in the graph's function library")
            changed = True
    else:
        raise ValueError(f"function calls nested deeper than {MAX_DEPTH} levels")
    if changed:
        graph.drop_unused_functions()
    return changed
