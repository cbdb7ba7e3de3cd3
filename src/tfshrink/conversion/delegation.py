"""How LiteRT's XNNPACK delegate splits a model: its partition count and the ops it leaves outside.

Measured, not timed: the model is loaded in the LiteRT interpreter with its default delegate
(XNNPACK, on CPU) and its tensors allocated, which is when the delegate claims the ops it has a
kernel for. Each claimed run of ops becomes one DELEGATE node; the ops left between them run on
LiteRT's own kernels, and every switch between the two costs a copy and a cache flush. The answer
depends on the installed LiteRT (its XNNPACK's kernel coverage), not on the machine or its load,
so the same model gives the same answer everywhere that LiteRT runs.

What XNNPACK in ai-edge-litert 2.3 leaves outside in int8 and takes in float, probed one op at a
time (tfshrink.conversion.rules uses this): PRELU, RELU (alone, not fused into the op before it),
MINIMUM, MAXIMUM, SOFTMAX. It takes int8 ADD, SUB, MUL (also with per-channel constants),
LEAKY_RELU, CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, MAX_POOL_2D, TRANSPOSE, RESHAPE, and the
QUANTIZE / DEQUANTIZE between int8 and float.

Reading the partitions uses the interpreter's op listing (`_get_ops_details`, LiteRT's own Python
API, private): every node of the graph, the ones a delegate replaced included, then one DELEGATE
node per partition. A partition holds the nodes found by walking back from its outputs to its
inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfshrink import _tf
from tfshrink.errors import first_line
from tfshrink.tflite.flatbuffer import read


@dataclass(frozen=True)
class Delegation:
    """XNNPACK's split of a model: `partitions` (DELEGATE nodes), the ops it left to LiteRT's own
    kernels ((op, output tensor) in op order), and the node count; `error` when LiteRT could not
    load the model here (the rest is then empty: nothing was measured)."""

    partitions: int | None
    outside: tuple[tuple[str, str], ...] = ()
    nodes: int = 0
    error: str | None = None

    @property
    def whole(self) -> bool:
        """One partition and nothing outside it."""
        return self.partitions == 1 and not self.outside

    def outside_ops(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op, _ in self.outside:
            out[op] = out.get(op, 0) + 1
        return out

    def describe(self) -> str:
        if self.partitions is None:
            return f"XNNPACK partitions not measured ({self.error})"
        if not self.outside:
            return f"{self.partitions} XNNPACK partition(s), every op delegated"
        ops = ", ".join(f"{op} x{n}" for op, n in self.outside_ops().items())
        return f"{self.partitions} XNNPACK partition(s); outside the delegate: {ops}"

    def to_json(self) -> dict[str, Any]:
        return {"delegate": "XNNPACK", "partitions": self.partitions, "nodes": self.nodes,
                "outside": [{"op": op, "tensor": tensor} for op, tensor in self.outside],
                "error": self.error}


def xnnpack_delegation(data: bytes) -> Delegation:
    """Load `data` in LiteRT with its default XNNPACK delegate (1 thread) and read how it split it."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        with _tf.quiet_native():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            interpreter = Interpreter(model_content=data, num_threads=1)
            interpreter.allocate_tensors()
            details = interpreter._get_ops_details()
    except Exception as exc:  # custom ops LiteRT has no kernel for, Select TF ops, ...
        return Delegation(None, error=first_line(exc)[:200] or type(exc).__name__)
    sub = read(data).Subgraphs(0)
    names = {i: (sub.Tensors(i).Name() or b"").decode() for i in range(sub.TensorsLength())}
    return split(details, names)


def split(details: list[dict[str, Any]], names: dict[int, str] | None = None) -> Delegation:
    """The Delegation of an interpreter's op listing (see the module docstring)."""
    nodes = [d for d in details if d["op_name"] != "DELEGATE"]
    delegates = [d for d in details if d["op_name"] == "DELEGATE"]
    producer = {int(t): d for d in nodes for t in d["outputs"]}
    inside: set[int] = set()
    for d in delegates:
        stop = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in stop or t not in producer:
                continue
            seen.add(t)
            node = producer[t]
            inside.add(int(node["index"]))
            stack.extend(int(i) for i in node["inputs"] if int(i) >= 0)
    outside = tuple((d["op_name"], _output_name(d, names)) for d in nodes if int(d["index"]) not in inside)
    return Delegation(len(delegates), outside, len(nodes))


def _output_name(detail: dict[str, Any], names: dict[int, str] | None) -> str:
    outputs = [int(t) for t in detail.get("outputs", [])]
    return (names or {}).get(outputs[0], "") if outputs else ""
