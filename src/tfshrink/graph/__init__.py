"""In-memory graph IR over TensorFlow GraphDef, and analyses on it."""

from tfshrink.graph.ir import Graph, parse_tensor, tensor_name

__all__ = ["Graph", "parse_tensor", "tensor_name"]
