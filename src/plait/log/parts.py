"""Immutable Parquet part files: where large bulk appends go in the log.

The log is one relation, ``events``: a view over ``event_rows`` (the table that takes the
collector's and every small append) and the part files listed in ``event_parts``. A bulk
append of at least ``EngineSettings.part_rows`` rows is written as zstd Parquet files beside
the database instead of being inserted row group by row group: DuckDB writes 2 M mapped rows
to zstd Parquet (level 1) in 1.27 s against 1.9–2.2 s to compress them into its own file
(measured in docs/benchmarks.md, session 18), and the file is half the size. The rows stream
out of the engine as Arrow into pyarrow's writer, one file per engine thread for a large
append (:meth:`~plait.engine.backend.Backend.write_parquet`: the writing runs beside the
query, where DuckDB's ``COPY`` ran the two in turn; session 23). A part is never changed once
listed, so the log stays append-only; Spark and any Parquet reader read the parts as they are.

An append's parts become part of the log in one transaction that lists them and redefines
the view, after the files are complete and flushed to disk. A crash before that commit leaves
files nobody acknowledged: they are removed the next time the log opens. A listed part that
is missing is an error that names it — the log would otherwise silently shrink.

Written by hand because DuckDB's own lakehouse format (``ducklake``) is an extension it
downloads at run time, which this product may not do.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from plait.engine.backend import Backend
from plait.engine.dialects import Dialect
from plait.errors import WorkspaceError
from plait.log.schema import DICTIONARY_COLUMNS, EVENT_COLUMNS, EVENT_SCHEMA, STATISTICS_COLUMNS

_PREFIX = "part-"
_SUFFIX = ".parquet"
# Rows per part file at least: a large append is dealt among the engine's threads' files.
_FILE_ROWS = 250_000
_BATCH_ROWS = 122_880   # rows per row group (DuckDB's own), fewer where a file would get no batch


class Parts:
    """The part files of a log in ``directory`` (None: a log in memory keeps no parts)."""

    def __init__(self, backend: Backend, directory: Path | None, *, min_rows: int) -> None:
        self.backend = backend
        self.directory = directory
        self.min_rows = min_rows if directory is not None else 0
        self.file_rows = _FILE_ROWS

    def takes(self, rows: int) -> bool:
        """Whether an append of ``rows`` rows goes into a part file."""
        return 0 < self.min_rows <= rows

    def names(self) -> list[str]:
        return [r["name"] for r in self.backend.rows("SELECT name FROM event_parts ORDER BY seq")]

    def open(self) -> None:
        """Check every listed part is there, remove unlisted leftovers, define ``events``."""
        names = self.names()
        if names and self.directory is None:
            raise WorkspaceError("this log lists Parquet part files but has no directory to read them from")
        if self.directory is not None:
            missing = [n for n in names if not (self.directory / n).is_file()]
            if missing:
                raise WorkspaceError(
                    f"{len(missing)} part file(s) of the event log are missing from {self.directory}: "
                    + ", ".join(missing[:5]),
                    hint="restore them from a backup of the workspace; Plait will not open a log with events missing",
                )
            if self.directory.is_dir():
                listed = set(names)
                for f in self.directory.iterdir():
                    # Staged or written but never listed (a crash before the commit): never acknowledged.
                    if f.name.startswith("." + _PREFIX) or (f.name.startswith(_PREFIX) and f.name not in listed):
                        f.unlink()
        # Redefined only when it differs (a workspace that moved): not a catalog write per open.
        now = self.backend.scalar("SELECT view_definition FROM information_schema.views WHERE table_name = 'events'")
        if now is None or self._view_sql(names) not in now:
            self._define(names)

    def _view_sql(self, names: list[str]) -> str:
        cols = ", ".join(EVENT_COLUMNS)
        sql = f"SELECT {cols} FROM event_rows"
        if names:
            files = [str(self.directory / n) for n in names]  # type: ignore[operator]
            sql += f" UNION ALL SELECT {cols} FROM {self.backend.dialect.read_parquet(files)}"
        return sql

    def _define(self, names: list[str]) -> None:
        self.backend.execute(f"CREATE OR REPLACE VIEW events AS {self._view_sql(names)}")

    def stage(self, query: str, rows: int, *, keep: Sequence[str] = ()) -> Staged:
        """Write the rows of ``query`` (the log's columns, and the columns ``keep``, which are
        returned, not written) to files that are not yet in the log. ``rows`` is about how many
        it yields: from twice :attr:`file_rows` up, the rows are dealt among files (one per
        engine thread at most) written side by side."""
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        n = max(1, min(self.backend.threads(), rows // self.file_rows))
        files = [self.directory / f".{_PREFIX}{uuid.uuid4().hex}{_SUFFIX}" for _ in range(n)]
        # The part's rows in any order (nothing reads a part's order; a query that needs one says
        # ORDER BY): each thread then makes its own batches.
        try:
            with self.backend.unordered():
                counts, kept = self.backend.write_parquet(query, [str(f) for f in files], schema=EVENT_SCHEMA,
                                                          batch_rows=min(_BATCH_ROWS, max(1, -(-rows // n))),
                                                          keep=keep, dictionary=DICTIONARY_COLUMNS,
                                                          statistics=STATISTICS_COLUMNS)
        except BaseException:
            for f in files:
                f.unlink(missing_ok=True)
            raise
        return Staged(files, counts, kept)

    def commit(self, staged: Staged) -> list[str]:
        """Make staged files parts of the log: flushed, renamed, then listed and the view
        redefined in one transaction. A file with no rows is dropped instead."""
        listed: list[tuple[str, int]] = []
        for f, rows in zip(staged.files, staged.rows):
            if not rows:
                f.unlink(missing_ok=True)
                continue
            _fsync(f)
            name = f.name[1:]
            os.replace(f, f.with_name(name))
            listed.append((name, rows))
        if not listed:
            return []
        assert self.directory is not None
        _fsync(self.directory)
        b = self.backend
        b.execute("BEGIN TRANSACTION")
        try:
            for name, rows in listed:
                b.execute("INSERT INTO event_parts (name, rows, created_at) VALUES (?, ?, now())", [name, rows])
            self._define(self.names())
            b.execute("COMMIT")
        except BaseException:
            b.execute("ROLLBACK")
            for name, _ in listed:
                (self.directory / name).unlink(missing_ok=True)
            raise
        return [name for name, _ in listed]

    @staticmethod
    def discard(staged: Staged) -> None:
        for f in staged.files:
            f.unlink(missing_ok=True)

    def write(self, query: str, rows: int) -> list[str]:
        """Write the rows of ``query`` (the log's columns) as new parts and list them."""
        return self.commit(self.stage(query, rows))


@dataclass
class Staged:
    """Part files written and not yet listed: their rows, and the columns kept from the query
    that wrote them (file by file, in file order)."""

    files: list[Path]
    rows: list[int]
    kept: pa.Table

    def relation(self, dialect: Dialect) -> str:
        """The staged rows with ``__row``: the file's place in ``files`` (from 1) in the high 32
        bits, the row's place in its file in the low ones."""
        return dialect.read_parquet([str(f) for f in self.files], numbered=True)

    def row_numbers(self) -> np.ndarray:
        """The ``__row`` of each row of :attr:`kept`, in its order."""
        return np.concatenate([((i + 1) << 32) + np.arange(n, dtype=np.int64) for i, n in enumerate(self.rows)]
                              or [np.empty(0, np.int64)])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
