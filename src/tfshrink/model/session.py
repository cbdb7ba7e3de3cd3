"""Running a tf.Graph in a TF1 session: shared by frozen GraphDefs and checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tfshrink import _tf
from tfshrink.errors import UserError, first_line
from tfshrink.graph.ir import Graph, parse_tensor
from tfshrink.graph.shapes import attr_shape, dtype_name
from tfshrink.model.base import Model, TensorSpec
from tfshrink.names import feed_key, unknown_name_error


def placeholder_spec(graph: Graph, name: str) -> TensorSpec:
    node = graph.node(name)
    shape = attr_shape(node.attr["shape"].shape) if "shape" in node.attr else None
    if node.op == "PlaceholderWithDefault" and "shape" not in node.attr:
        shape = None
    return TensorSpec(name, dtype_name(node.attr["dtype"].type), shape, node.op)


class SessionModel(Model):
    """A model whose runtime is a TF1 session over an imported graph."""

    def __init__(self, path: Any):
        super().__init__(path)
        self._graph: Any = None
        self._session: Any = None
        self._ir: Graph | None = None

    def _build_session(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def session(self) -> tuple[Any, Any]:
        if self._session is None:
            self._graph, self._session = self._build_session()
        return self._graph, self._session

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        graph, sess = self.session()
        feed_dict = {}
        for name, value in feeds.items():
            node = parse_tensor(name)[0]
            try:
                tensor = graph.get_tensor_by_name(feed_key(name))
            except (KeyError, ValueError):
                raise unknown_name_error("input", node, [s.name for s in self.inputs],
                                         str(self.path)) from None
            feed_dict[tensor] = np.asarray(value)
        fetches = [graph.get_tensor_by_name(feed_key(o.name)) for o in self.outputs]
        tf = _tf.tf()
        try:
            values = sess.run(fetches, feed_dict)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:  # ValueError: a feed of the wrong shape or type
            first = first_line(exc)
            raise UserError(f"{self.path}: running the model failed: {first}",
                            "check input shapes and that every placeholder is fed "
                            "(--bind NAME=VALUE for flags like is_training)") from None
        return {o.name: np.asarray(v) for o, v in zip(self.outputs, values, strict=True)}

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
