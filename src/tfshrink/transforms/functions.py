"""inline_partitionedcall: replace function-call nodes by the bodies they call.

Matches PartitionedCall and StatefulPartitionedCall nodes (TF2 exports wrap layers and whole
models in them) whose function is in the graph's library, and writes the function's nodes under
`<call name>/`, wired to the call's inputs; the call's consumers read the body's results. Nested
calls are inlined too. A call that is a requested output keeps its name as an IdentityN, so
"call:1" still names the same tensor. Library functions no node calls any more are dropped.
Refuses (raises) when a call names a function the library lacks.
"""

from __future__ import annotations

from tfshrink.graph.inline import inline_calls
from tfshrink.graph.ir import Graph
from tfshrink.transforms.registry import Context, register


@register("inline_partitionedcall", "inline PartitionedCall / StatefulPartitionedCall function bodies")
def inline_partitionedcall(graph: Graph, params: dict, ctx: Context) -> bool:
    return inline_calls(graph, set(ctx.output_nodes()))
