"""Immutable Parquet part files: where large bulk appends go in the log.

The log is one relation, ``events``: a view over ``event_rows`` (the table that takes the
collector's and every small append) and the part files listed in ``event_parts``. A bulk
append of at least ``EngineSettings.part_rows`` rows is written as one zstd Parquet file
beside the database instead of being inserted row group by row group: DuckDB writes 2 M
mapped rows to zstd Parquet (level 1) in 1.27 s against 1.9–2.2 s to compress them into its
own file (measured in docs/benchmarks.md, session 18), and the file is half the size. A part is
never changed once listed, so the log stays append-only; Spark and any Parquet reader
read the parts as they are.

A part becomes part of the log in one transaction that lists it and redefines the view,
after the file is complete and flushed to disk. A crash before that commit leaves a file
nobody acknowledged: it is removed the next time the log opens. A listed part that is
missing is an error that names it — the log would otherwise silently shrink.

Written by hand because DuckDB's own lakehouse format (``ducklake``) is an extension it
downloads at run time, which this product may not do.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from plait.engine.backend import Backend
from plait.errors import WorkspaceError
from plait.log.schema import EVENT_COLUMNS

_PREFIX = "part-"
_SUFFIX = ".parquet"


class Parts:
    """The part files of a log in ``directory`` (None: a log in memory keeps no parts)."""

    def __init__(self, backend: Backend, directory: Path | None, *, min_rows: int) -> None:
        self.backend = backend
        self.directory = directory
        self.min_rows = min_rows if directory is not None else 0

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

    def stage(self, query: str) -> Path:
        """Write the rows of ``query`` (the log's columns) to a file that is not yet in the log."""
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        staged = self.directory / f".{_PREFIX}{uuid.uuid4().hex}{_SUFFIX}"
        # The part's rows in any order (nothing reads a part's order; a query that needs one says
        # ORDER BY): each thread then writes its own row groups, 0.12–0.17 s less per 500 k rows.
        with self.backend.unordered():
            self.backend.execute(self.backend.dialect.copy_parquet(query, str(staged), level=1))
        return staged

    def commit(self, staged: Path, rows: int) -> str:
        """Make a staged file a part of the log: flushed, renamed, then listed and the view
        redefined in one transaction."""
        name = staged.name[1:]
        path = staged.with_name(name)
        _fsync(staged)
        os.replace(staged, path)
        _fsync(staged.parent)
        b = self.backend
        names = self.names() + [name]
        b.execute("BEGIN TRANSACTION")
        try:
            b.execute("INSERT INTO event_parts (name, rows, created_at) VALUES (?, ?, now())", [name, rows])
            self._define(names)
            b.execute("COMMIT")
        except BaseException:
            b.execute("ROLLBACK")
            path.unlink(missing_ok=True)
            raise
        return name

    @staticmethod
    def discard(staged: Path) -> None:
        staged.unlink(missing_ok=True)

    def write(self, query: str, rows: int) -> str:
        """Write the rows of ``query`` (the log's columns) as a new part and list it."""
        return self.commit(self.stage(query), rows)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
