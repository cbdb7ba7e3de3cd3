"""tfshrink: freeze, inspect, verify (and soon transform, convert, bench) TensorFlow models.

The public API mirrors the CLI and returns result objects; TensorFlow is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tfshrink.errors import CheckFailed, TfshrinkError, UserError

__version__ = "0.1.0"
__all__ = ["CheckFailed", "TfshrinkError", "UserError", "bench", "compare_models", "convert", "freeze", "inspect",
           "load", "report", "run_recipe", "transform", "verify", "view"]

if TYPE_CHECKING:
    from tfshrink.benchmarking import bench
    from tfshrink.conversion import convert
    from tfshrink.freezer import freeze
    from tfshrink.inspection import inspect
    from tfshrink.model import load
    from tfshrink.recipe import run_recipe
    from tfshrink.reporting.compare import compare_models
    from tfshrink.reporting.html import report
    from tfshrink.reporting.view import view
    from tfshrink.transformer import transform
    from tfshrink.verification import verify

_LAZY = {"bench": "tfshrink.benchmarking", "convert": "tfshrink.conversion", "freeze": "tfshrink.freezer",
         "inspect": "tfshrink.inspection", "load": "tfshrink.model", "transform": "tfshrink.transformer",
         "verify": "tfshrink.verification", "compare_models": "tfshrink.reporting.compare",
         "report": "tfshrink.reporting.html", "view": "tfshrink.reporting.view", "run_recipe": "tfshrink.recipe"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfshrink' has no attribute {name!r}")
