"""The running sums behind an output comparison, so that a comparison over many inputs is made one
feed at a time (memory stays flat however many feeds there are) and comparisons over shards of a
dataset merge into the one over the whole (tfshrink run's sharded verify steps on Ray).

Per output pair: the rows seen, the largest and summed absolute difference and its element count,
the dot product and squared norms (the cosine of the two flattened outputs), top-1 agreements for
[batch, classes] outputs, whether every element is within atol + rtol * |a|, and A's first row and
its largest departure from it (a constant output)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["OutputStats"]


@dataclass
class OutputStats:
    atol: float
    rtol: float
    rows: int = 0
    tail: tuple[int, ...] = ()  # the shape after the batch dim
    max_abs: float = 0.0
    sum_abs: float = 0.0
    elements: int = 0
    dot: float = 0.0
    norm_a: float = 0.0  # squared norms
    norm_b: float = 0.0
    top1_agree: int = 0
    top1_rows: int = 0
    classes: bool = True  # every batch was [batch, classes > 1]
    floating: bool = True  # A's outputs are floats (only those can be "constant")
    within: bool = True
    first: np.ndarray | None = field(default=None, repr=False)  # A's first row (float64, flat)
    spread: float = 0.0  # the largest |row - first| of A
    scale: float = 0.0  # |first|'s largest value

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        """One feed's outputs of A and B (the same shape; a scalar counts as one row)."""
        a = a.reshape(1) if a.ndim == 0 else a
        b = b.reshape(1) if b.ndim == 0 else b
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        diff = np.abs(a64 - b64)
        self.tail = tuple(a.shape[1:])
        self.rows += a.shape[0]
        if diff.size:
            self.max_abs = max(self.max_abs, float(diff.max()))
            self.sum_abs += float(diff.sum())
        self.elements += diff.size
        flat_a, flat_b = a64.ravel(), b64.ravel()
        self.dot += float(np.dot(flat_a, flat_b))
        self.norm_a += float(np.dot(flat_a, flat_a))
        self.norm_b += float(np.dot(flat_b, flat_b))
        if a.ndim == 2 and a.shape[1] > 1:
            self.top1_agree += int(np.sum(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
            self.top1_rows += a.shape[0]
        else:
            self.classes = False
        self.floating = self.floating and a.dtype.kind == "f"
        self.within = self.within and bool(np.all(diff <= self.atol + self.rtol * np.abs(a64)))
        rows = a64.reshape(a.shape[0], -1)
        if self.first is None and rows.size:
            self.first = rows[0].copy()
            self.scale = float(np.abs(self.first).max()) if self.first.size else 0.0
        if self.first is not None and rows.shape[1] == self.first.size:
            self.spread = max(self.spread, float(np.abs(rows - self.first).max()) if rows.size else 0.0)

    def merge(self, other: OutputStats) -> OutputStats:
        """These sums and `other`'s (the next shard's), as if one comparison had seen both."""
        out = OutputStats(self.atol, self.rtol)
        out.rows, out.tail = self.rows + other.rows, self.tail or other.tail
        out.max_abs = max(self.max_abs, other.max_abs)
        out.sum_abs, out.elements = self.sum_abs + other.sum_abs, self.elements + other.elements
        out.dot, out.norm_a, out.norm_b = self.dot + other.dot, self.norm_a + other.norm_a, self.norm_b + other.norm_b
        out.top1_agree, out.top1_rows = self.top1_agree + other.top1_agree, self.top1_rows + other.top1_rows
        out.classes, out.within = self.classes and other.classes, self.within and other.within
        out.floating = self.floating and other.floating
        out.first = self.first if self.first is not None else other.first
        out.scale = self.scale if self.first is not None else other.scale
        out.spread = max(self.spread, other.spread)
        if self.first is not None and other.first is not None and self.first.size == other.first.size:
            out.spread = max(out.spread, float(np.abs(other.first - self.first).max()) if self.first.size else 0.0)
        return out

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, *self.tail)

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.elements if self.elements else 0.0

    @property
    def cosine(self) -> float:
        if self.norm_a == 0 and self.norm_b == 0:
            return 1.0
        if self.norm_a == 0 or self.norm_b == 0:
            return 0.0
        return float(self.dot / (np.sqrt(self.norm_a) * np.sqrt(self.norm_b)))

    @property
    def top1(self) -> float | None:
        return self.top1_agree / self.top1_rows if self.classes and self.top1_rows else None

    @property
    def constant(self) -> bool:
        """A's output was the same for every row (at least two rows of at least two elements)."""
        if not self.floating or self.rows < 2 or self.first is None or self.first.size < 2:
            return False
        return self.spread <= 1e-6 * (1.0 + self.scale)
