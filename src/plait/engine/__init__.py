"""The engine seam: the only code that runs SQL."""

from plait.engine.backend import Backend, Pipeline
from plait.engine.dialects import Dialect
from plait.engine.duckdb import DuckDBBackend

__all__ = [
    "Backend",
    "Dialect",
    "DuckDBBackend",
    "Pipeline",
]
