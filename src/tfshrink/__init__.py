"""tfshrink: freeze, inspect, transform, convert, verify and bench TensorFlow models.

The public API mirrors the CLI and returns result objects; TensorFlow is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tfshrink.errors import CheckFailed, TfshrinkError, UserError

__version__ = "0.1.0"
__all__ = ["CheckFailed", "TfshrinkError", "UserError", "bench", "compare_models", "convert", "freeze", "inspect",
           "load", "qat_keras", "report", "run_recipe", "transform", "verify", "view"]

if TYPE_CHECKING:
    from tfshrink.benchmarking import bench
    from tfshrink.conversion import convert
    from tfshrink.freezer import freeze
    from tfshrink.inspection import inspect
    from tfshrink.model import load
    from tfshrink.qat.train import qat_keras
    from tfshrink.recipe import run_recipe
    from tfshrink.reporting.compare import compare_models
    from tfshrink.reporting.html import report
    from tfshrink.reporting.view import view
    from tfshrink.transformer import transform
    from tfshrink.verification import verify

def __getattr__(name: str) -> Any:
    # Lazy: the API functions import TensorFlow, which `import tfshrink` must not load. The map is
    # built from the command declarations (tfshrink.commands), which import no TensorFlow.
    from tfshrink.commands import API_FUNCTIONS, resolve

    if name in API_FUNCTIONS:
        return resolve(API_FUNCTIONS[name])
    raise AttributeError(f"module 'tfshrink' has no attribute {name!r}")
