"""The engine seam: every SQL statement Plait runs goes through a :class:`Backend`.

A backend executes SQL written for its :class:`~plait.engine.dialects.Dialect`,
returns results as Arrow tables, and appends Arrow data to tables. The DuckDB
backend is the embedded default; a Spark backend plugs in behind the same methods.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from plait.engine.dialects import Dialect


def numbers(col: pa.ChunkedArray | pa.Array, dtype: type) -> np.ndarray:
    """A null-free numeric Arrow column as a NumPy array, read from its buffer (pyarrow's own
    ``to_numpy``, and ``combine_chunks`` of a column with no chunks, import pandas: 0.16 s the
    first time in a process)."""
    if len(col) == 0:
        return np.empty(0, dtype)
    a = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if a.null_count:
        raise ValueError("a column with nulls")
    return np.frombuffer(a.buffers()[1], dtype, count=len(a), offset=a.offset * np.dtype(dtype).itemsize)


class Backend(ABC):
    """What the rest of Plait may ask of an engine."""

    dialect: Dialect
    #: Rows per append that suit the engine's storage when a bulk import passes rows
    #: through Python (see the DuckDB backend for why it matters there).
    bulk_rows: int = 500_000

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None: ...

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table: ...

    @abstractmethod
    def stream(self, sql: str, params: Sequence[Any] | None = None, *, batch_size: int = 100_000) -> Iterator[pa.Table]:
        """Results in Arrow record batches, for work too large to hold at once."""

    @abstractmethod
    def append(self, table: str, data: pa.Table, *, on_conflict: str = "error") -> int:
        """Insert ``data`` into ``table``. Rows whose primary key exists raise
        (``"error"``), are skipped (``"ignore"``) or replace the old row
        (``"replace"``, for reference data only, never the log). Returns rows written."""

    @abstractmethod
    def temp_table(self, name: str, data: pa.Table) -> None:
        """(Re)create the session-local table ``name`` holding ``data``."""

    @abstractmethod
    def id_hashes(self, values: pa.Array) -> "np.ndarray":
        """:meth:`Dialect.id_hash` of each string, computed by the engine (for large batches)."""

    @abstractmethod
    def close(self) -> None: ...

    def compact(self) -> None:
        """Rewrite storage so deleted rows leave no bytes behind (erasure). No-op where the
        engine's storage has no such leftovers."""

    def set_threads(self, n: int) -> None:
        """Use at most ``n`` threads for this process's queries from now on (no-op where the
        engine's parallelism is not this process's to set)."""

    def threads(self) -> int:
        """How many threads this process's queries may use."""
        return 1

    @contextlib.contextmanager
    def unordered(self) -> Iterator[None]:
        """Queries run inside need not store their rows in their input's order, so the engine may
        split one input over its threads (nothing to change where it does so anyway)."""
        yield

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        t = self.query(sql, params)
        return t.column(0)[0].as_py() if t.num_rows else None

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        return self.query(sql, params).to_pylist()

    def has_table(self, name: str) -> bool:
        return bool(self.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]))

    def run(self, pipeline: "Pipeline") -> pa.Table:
        return self.query(pipeline.sql())


@dataclass
class Pipeline:
    """SQL as named steps (one CTE each), inspectable and run once.

    >>> p = Pipeline().step("a", "SELECT 1 AS x").step("b", "SELECT x + 1 AS y FROM a")
    >>> print(p.sql())
    WITH a AS (SELECT 1 AS x),
    b AS (SELECT x + 1 AS y FROM a)
    SELECT * FROM b
    """

    steps: list[tuple[str, str]] = field(default_factory=list)

    def step(self, name: str, sql: str) -> "Pipeline":
        self.steps.append((name, sql))
        return self

    def sql(self, final: str | None = None) -> str:
        if not self.steps:
            raise ValueError("empty pipeline")
        ctes = ",\n".join(f"{name} AS ({sql})" for name, sql in self.steps)
        return f"WITH {ctes}\n{final or f'SELECT * FROM {self.steps[-1][0]}'}"
