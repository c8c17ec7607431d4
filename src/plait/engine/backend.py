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
from plait.errors import EngineError


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


# A column chunk whose dictionary outgrows this is written plain (pyarrow's default, 1 MB, holds
# a row group's worth of distinct amounts, and then the dictionary only costs).
_DICTIONARY_BYTES = 256 * 1024


def _file_schema(schema: pa.Schema, got: pa.Schema) -> pa.Schema:
    """``schema``, but a text column the query yields as a dictionary (the engine knows its few
    values: :meth:`Dialect.closed_text`) stays one, and is written without being hashed again."""
    text = (pa.string(), pa.large_string())
    return pa.schema([
        pa.field(f.name, pa.dictionary(pa.int32(), f.type))
        if f.type in text and pa.types.is_dictionary(got.field(f.name).type) and got.field(f.name).type.value_type in text
        else f for f in schema])


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
    def stream(self, sql: str, params: Sequence[Any] | None = None, *, batch_size: int = 100_000,
               session: bool = False) -> Iterator[pa.Table]:
        """Results in Arrow tables of about ``batch_size`` rows, for work too large to hold at
        once. With ``session`` the query runs in the caller's session, whose temporary tables it
        sees, and the caller uses the backend for nothing else until the rows are read."""

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

    def write_parquet(self, query: str, paths: Sequence[str], *, schema: pa.Schema, keep: Sequence[str] = (),
                      dictionary: Sequence[str] = (), statistics: Sequence[str] | None = None,
                      batch_rows: int = 122_880) -> tuple[list[int], pa.Table]:
        """Write the rows of ``query`` as zstd Parquet (level 1): the columns of ``schema``, cast
        to it, dealt in batches of about ``batch_rows`` among the files ``paths``, each file
        written by a thread of its own (pyarrow's writer releases the GIL while the engine runs
        the query on its threads). ``dictionary`` names the columns worth a dictionary (few
        distinct values); the others are written plain. ``statistics`` names the columns whose
        row groups carry min/max statistics (None: all; a column of random ids or JSON text gains
        nothing by them, and they cost 11 % of the writer's time). Returns each file's row count and the
        columns ``keep`` of the query (not written) for every row, file by file in file order —
        so a row's place in that table says which file holds it and where.

        One writer for every engine: the query's result streams out as Arrow. On DuckDB it
        beats the engine's own ``COPY`` (2 M mapped rows: 1.39 against 1.73–2.02 s, measured in
        docs/benchmarks.md, session 23) because the writer's work runs beside the query's."""
        import queue
        from concurrent.futures import ThreadPoolExecutor

        import pyarrow.parquet as pq

        names = list(schema.names)
        dict_cols = [c for c in dictionary if c in names]
        stats_cols = True if statistics is None else [c for c in statistics if c in names]
        done = object()
        inboxes: list[queue.Queue] = [queue.Queue(maxsize=2) for _ in paths]
        kept: list[list[pa.Table]] = [[] for _ in paths]

        def write(i: int) -> int:
            rows, w = 0, None
            try:
                while (t := inboxes[i].get()) is not done:
                    if w is None:   # (a file that gets no rows is never made)
                        w = pq.ParquetWriter(paths[i], t.schema, compression="zstd", compression_level=1,
                                             use_dictionary=dict_cols or False, dictionary_pagesize_limit=_DICTIONARY_BYTES,
                                             write_statistics=stats_cols)
                    w.write_table(t, row_group_size=max(t.num_rows, 1))
                    rows += t.num_rows
                if w is not None:
                    w, last = None, w
                    last.close()
            except (OSError, pa.ArrowException) as e:    # (a full disk, a folder gone)
                raise EngineError(f"could not write {paths[i]}: {e}", sql=query,
                                  hint="check the disk has room and the folder is writable, then run it again: "
                                       "nothing of this write was kept") from e
            finally:
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()
            return rows

        with ThreadPoolExecutor(len(paths)) as pool:
            writers = [pool.submit(write, i) for i in range(len(paths))]

            def deliver(i: int, item: object) -> None:
                while not writers[i].done():    # a writer that failed takes nothing more
                    try:
                        inboxes[i].put(item, timeout=0.1)
                        return
                    except queue.Full:
                        continue
                writers[i].result()             # (raises its error)

            target: pa.Schema | None = None
            try:
                for n, t in enumerate(self.stream(query, batch_size=batch_rows, session=True)):
                    i = n % len(paths)
                    if keep:
                        kept[i].append(t.select(list(keep)))
                    target = target or _file_schema(schema, t.schema)
                    deliver(i, t.select(names).cast(target))
            finally:
                for i in range(len(paths)):
                    if not writers[i].done():
                        deliver(i, done)
            counts = [w.result() for w in writers]
        tables = [t for per_file in kept for t in per_file]
        return counts, pa.concat_tables(tables) if tables else pa.table({c: pa.array([], pa.null()) for c in keep})

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
