"""The append-only event log.

:class:`EventLog` appends normalised records (idempotent by ``message_id``: a
replayed batch adds nothing), keeps rejected input in a dead-letter table with the
reason, reads events back (decrypting personal fields on request) and round-trips
the log through Parquet partitioned by day. It never updates or deletes an event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plait.engine.backend import Backend, numbers
from plait.errors import ConfigError, ImportFormatError
from plait.events.contract import Record
from plait.log.parts import Parts
from plait.log.schema import (
    DDL,
    EVENT_COLUMNS,
    EVENT_SCHEMA,
    field_values,
    records_from_arrow,
    records_to_arrow,
)
from plait.log.seen import SeenIds, id_hashes
from plait.log.vault import Vault, is_plain, read_plain

_dec = msgspec.json.Decoder()


@dataclass(frozen=True)
class AppendResult:
    """What an append did: rows new to the log, and rows already there (replays)."""

    inserted: int
    duplicates: int


@dataclass(frozen=True)
class Rejection:
    """One input that could not become an event, kept in the dead-letter table."""

    reason: str
    field: str = ""
    origin: str = ""
    position: int | None = None
    payload: str | None = None
    source: str | None = None


_log = logging.getLogger("plait.log")


def checked_limit(limit: int | None) -> int | None:
    """A row limit: ``None`` (all) or 0 and more; :class:`ConfigError` otherwise."""
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be 0 or more, not {limit}")
    return limit


def instant(name: str, when: str | date | datetime) -> datetime:
    """An argument's ISO 8601 date or time as an aware datetime (UTC unless it says otherwise);
    :class:`ConfigError` naming ``name`` when it is neither."""
    if not isinstance(when, datetime):
        try:
            when = datetime.fromisoformat(str(when).strip())
        except ValueError:
            raise ConfigError(f"{name} {when!r} is not a date or time",
                              hint="give ISO 8601, such as 2025-06-01 or 2025-06-01T09:30:00Z") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def now_us() -> int:
    return time.time_ns() // 1000


class Appended:
    """One append as the log's followers see it: its records, or its rows in the log's layout
    with personal fields still plain (the collector's journal hands the writer Arrow).

    From rows, records are built only when asked for: followers that read a few fields of every
    row (real-time identity) use :meth:`values`, those that act on a few named events use
    :meth:`where_event` — building every row as a Python object would cost more than the append."""

    def __init__(self, *, records: Sequence[Record] | None = None, table: pa.Table | None = None) -> None:
        if (records is None) == (table is None):
            raise ValueError("give records or a table")
        self._records = records
        self._table = table

    def __len__(self) -> int:
        return len(self._records) if self._records is not None else self._table.num_rows  # type: ignore[union-attr]

    @property
    def records(self) -> Sequence[Record]:
        if self._records is None:
            self._records = records_from_arrow(self._table)  # type: ignore[arg-type]
        return self._records

    def values(self, field: str) -> list[Any]:
        """One field of every row as :class:`Record` has it (times in µs, JSON and ``pii`` as dicts)."""
        if self._records is not None:
            return [getattr(r, field) for r in self._records]
        return field_values(self._table, field)  # type: ignore[arg-type]

    def where_event(self, names: Any) -> list[Record]:
        """The records whose event is one of ``names``."""
        if self._records is not None:
            return [r for r in self._records if r.event in names]
        t = self._table
        mask = pc.is_in(t.column("event"), value_set=pa.array(list(names), pa.string()))  # type: ignore[union-attr]
        if not pc.any(mask).as_py():
            return []
        return records_from_arrow(t.filter(mask))  # type: ignore[union-attr]


class EventLog:
    """The immutable log on a :class:`~plait.engine.backend.Backend`."""

    def __init__(self, backend: Backend, vault: Vault, *, parts_dir: Path | None = None, part_rows: int = 0) -> None:
        self.backend = backend
        self.vault = vault
        self.seen = SeenIds(backend)
        self._write_lock = threading.Lock()
        self._followers: list[Callable[[Appended], None]] = []
        if backend.scalar("SELECT count(*) FROM information_schema.tables "
                          "WHERE table_name = 'events' AND table_type = 'BASE TABLE'"):
            backend.execute("ALTER TABLE events RENAME TO event_rows")   # a log from before part files
        backend.execute(DDL)
        self.parts = Parts(backend, parts_dir, min_rows=part_rows)
        self.parts.open()

    def follow(self, fn: Callable[[Appended], None]) -> None:
        """Call ``fn`` with every :class:`Appended` batch once it is durably in the log (the
        real-time identity path listens here, so the log never imports its readers)."""
        self._followers.append(fn)

    # -- writing ------------------------------------------------------------------
    def seal(self, records: Sequence[Record]) -> pa.Table:
        """Encrypt personal fields and lay the records out as the log's Arrow table."""
        blobs = self.vault.seal_many(
            [r.subject for r in records], [r.message_id for r in records], [r.pii for r in records]
        )
        return records_to_arrow(records, blobs)

    def append(self, records: Sequence[Record]) -> AppendResult:
        """Append records durably; those whose ``message_id`` is present are skipped."""
        if not records:
            return AppendResult(0, 0)
        result = self.append_table(self.seal(records))
        self._tell(Appended(records=records))
        return result

    def append_plain(self, table: pa.Table) -> AppendResult:
        """Append rows laid out by :func:`~plait.log.schema.records_to_arrow` with their personal
        fields plain (:func:`~plait.log.vault.plain`; the collector's journal carries them so):
        the fields are sealed here, then appended as :meth:`append`."""
        if table.num_rows == 0:
            return AppendResult(0, 0)
        result = self.append_table(self._seal_plain(table))
        self._tell(Appended(table=table))
        return result

    def _seal_plain(self, table: pa.Table) -> pa.Table:
        pii = table.column("pii")
        if not self.vault.encrypt or pii.null_count == table.num_rows:
            return table
        blobs = pii.to_pylist()
        at = [i for i, b in enumerate(blobs) if is_plain(b)]
        if not at:
            return table
        subjects, ids = table.column("subject"), table.column("message_id")
        sealed = self.vault.seal_many([subjects[i].as_py() for i in at], [ids[i].as_py() for i in at],
                                      [read_plain(blobs[i]) for i in at])
        for i, b in zip(at, sealed):
            blobs[i] = b
        return table.set_column(table.schema.get_field_index("pii"), "pii", pa.array(blobs, pa.binary()))

    def _tell(self, batch: Appended) -> None:
        # The rows are durable by now: a follower that fails (real-time identity, triggers) is
        # logged and the others still run; the append is not reported as failed, since it is not.
        for fn in self._followers:
            try:
                fn(batch)
            except Exception:  # noqa: BLE001
                _log.exception("a follower of the log failed on %d appended rows (they are in the log)", len(batch))

    def append_table(self, table: pa.Table) -> AppendResult:
        """Append an Arrow table already in the log's layout (bulk paths); rows whose
        message id is already in the log, or earlier in the table, are skipped."""
        if table.num_rows == 0:
            return AppendResult(0, 0)
        if table.schema != EVENT_SCHEMA:
            table = table.select(list(EVENT_COLUMNS)).cast(EVENT_SCHEMA)
        with self._write_lock:
            ids = table.column("message_id").combine_chunks()
            hashes = id_hashes(self.backend, ids)
            keep = self.seen.new_rows(ids, hashes)
            if keep.size < table.num_rows:
                table = table.take(pa.array(keep))
                hashes = hashes[keep]
            inserted = self.backend.append("event_rows", table)
            self.seen.add(hashes)
        return AppendResult(inserted, len(ids) - inserted)

    def append_select(self, sql: str, *, bad: str | None = None, rows: int | None = None) -> tuple[AppendResult, np.ndarray]:
        """Append the rows of a query without them leaving the engine (bulk imports).

        ``sql`` yields the log's columns plus ``__row``, a unique BIGINT giving the rows'
        order. Two passes: the first reads only ``__row``, the id hashes and the boolean
        SQL ``bad``; rows already in the log, or at a smaller ``__row`` with the same
        message id, are skipped as in :meth:`append_table`; the second inserts the rest.
        Rows where ``bad`` holds are not appended: their ``__row`` numbers are returned,
        for the caller to reject with its reasons.

        ``rows`` says ``sql`` yields exactly that many rows (a range of a file or a stored
        table): a large append is then written as a part first and checked from it
        (:meth:`_append_part_first`), which reads the query once instead of twice.
        """
        with self._write_lock:
            if rows is not None and self.parts.takes(rows):
                return self._append_part_first(sql, bad, rows)
            return self._append_two_pass(sql, bad)

    def _append_two_pass(self, sql: str, bad: str | None) -> tuple[AppendResult, np.ndarray]:
        """:meth:`append_select` in two passes over ``sql`` (the caller holds the write lock)."""
        b = self.backend
        flag = f"coalesce({bad}, false)" if bad else "false"
        t = b.query(f"SELECT __row, {b.dialect.id_hash('message_id')} AS __h, {flag} AS __bad "
                    f"FROM ({sql}) q ORDER BY __row")
        rows = numbers(t.column("__row"), np.int64)
        bad_mask = numbers(t.column("__bad").cast(pa.uint8()), np.uint8).astype(bool)
        good_rows = rows[~bad_mask]
        hashes = numbers(t.column("__h"), np.uint64)[~bad_mask]

        keep = self.seen.new_rows(lambda idx: self._ids_at(f"({sql})", good_rows[idx]), hashes)
        dropped = np.ones(good_rows.size, bool)
        dropped[keep] = False
        skip = np.concatenate([rows[bad_mask], good_rows[dropped]])
        cols = ", ".join(f"q.{c}" for c in EVENT_COLUMNS)
        rows_in = f"SELECT {cols} FROM ({sql}) q"
        if skip.size:
            b.temp_table("__plait_skip", pa.table({"__row": pa.array(skip, pa.int64())}))
            rows_in += " ANTI JOIN __plait_skip USING (__row)"
        if self.parts.takes(keep.size):
            self.parts.write(rows_in, int(keep.size))
        elif keep.size:
            b.execute(f"INSERT INTO event_rows {rows_in}")
        self.seen.add(hashes, keep)
        return AppendResult(int(keep.size), int(good_rows.size - keep.size)), rows[bad_mask]

    def _ids_at(self, relation: str, rows: np.ndarray) -> list[str]:
        """The message ids of ``relation`` (with ``__row``) at the given ``__row`` values, in
        their order: the few a hash cannot settle, fetched by exact id."""
        b = self.backend
        b.temp_table("__plait_rows", pa.table({"__row": pa.array(rows, pa.int64())}))
        got = b.query(f"SELECT q.__row, q.message_id FROM {relation} q SEMI JOIN __plait_rows USING (__row)")
        by_row = dict(zip(got.column(0).to_pylist(), got.column(1).to_pylist()))
        return [by_row[int(r)] for r in rows]

    def _append_part_first(self, sql: str, bad: str | None, rows: int) -> tuple[AppendResult, np.ndarray]:
        """:meth:`append_select` for a large query whose row count is known (the caller holds the
        write lock): its good rows are staged as part files, their ids hashed by the query that
        writes them, and the parts listed — rewritten first without the rows already in the log,
        which a first import never has. Measured on 2 M mapped POS rows: a first pass over the
        source cost 0.4 s, reading the ids back from the part 0.3 s; hashed as the part is
        written, they cost no pass at all.

        The engine writes a part's rows in the order its threads finish, so a part cannot say
        which of two rows with one id came first: if any id hash repeats within the query
        (a file that repeats an id, or a collision), the part is dropped and the two passes,
        which read rows in ``__row`` order, decide."""
        b = self.backend
        cols = ", ".join(f"q.{c}" for c in EVENT_COLUMNS)
        # The ids' hashes are made by the query that writes the part, and kept from it.
        staged = self.parts.stage(f"SELECT {cols}, {b.dialect.id_hash('q.message_id')} AS __h FROM ({sql}) q"
                                  + (f" WHERE NOT coalesce({bad}, false)" if bad else ""), rows, keep=["__h"])
        try:
            part, at = staged.relation(b.dialect), staged.row_numbers()
            hashes = numbers(staged.kept.column("__h"), np.uint64)
            keep = self.seen.new_rows(lambda idx: self._ids_at(part, at[idx]), hashes, ordered=False)
            if keep is None:
                self.parts.discard(staged)
                return self._append_two_pass(sql, bad)
            bad_rows = np.empty(0, np.int64)
            if bad and hashes.size < rows:
                bad_rows = numbers(b.query(f"SELECT __row FROM ({sql}) q WHERE {bad} ORDER BY __row").column(0), np.int64)
            if keep.size < hashes.size:
                dropped = np.ones(hashes.size, bool)
                dropped[keep] = False
                b.temp_table("__plait_skip", pa.table({"__row": pa.array(at[dropped], pa.int64())}))
                first = staged
                staged = self.parts.stage(f"SELECT {', '.join(EVENT_COLUMNS)} FROM {part} "
                                          "ANTI JOIN __plait_skip USING (__row)", int(keep.size))
                self.parts.discard(first)
            self.parts.commit(staged)
        except BaseException:
            self.parts.discard(staged)
            raise
        self.seen.add(hashes, keep)
        return AppendResult(int(keep.size), int(hashes.size - keep.size)), bad_rows

    def reject(self, rejections: Sequence[Rejection], *, received_at: int | None = None) -> int:
        """Store rejected input with its reason in the dead-letter table."""
        if not rejections:
            return 0
        ts = received_at if received_at is not None else now_us()
        table = pa.table(
            {
                "received_at": pa.array([ts] * len(rejections), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                "source": pa.array([r.source for r in rejections], pa.string()),
                "origin": pa.array([r.origin for r in rejections], pa.string()),
                "position": pa.array([r.position for r in rejections], pa.int64()),
                "field": pa.array([r.field for r in rejections], pa.string()),
                "reason": pa.array([r.reason for r in rejections], pa.string()),
                "payload": pa.array([r.payload for r in rejections], pa.string()),
            }
        )
        return self.backend.append("rejected", table)

    # -- reading ------------------------------------------------------------------
    def count(self) -> int:
        return int(self.backend.scalar("SELECT count(*) FROM events"))

    def rejected_count(self) -> int:
        return int(self.backend.scalar("SELECT count(*) FROM rejected"))

    def rejected(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.backend.rows(
            "SELECT id, received_at, source, origin, position, field, reason, payload FROM rejected ORDER BY id DESC LIMIT ?",
            [checked_limit(limit)],
        )

    def events(
        self,
        *,
        limit: int | None = 100,
        event: str | None = None,
        type: str | None = None,
        channel: str | None = None,
        source: str | None = None,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        newest_first: bool = True,
    ) -> pa.Table:
        """Events matching all the given filters, newest first by default (``since`` and ``until``:
        ISO 8601 dates or times, UTC unless they carry an offset)."""
        limit = checked_limit(limit)
        where, params = [], []
        for col, val in (("event", event), ("type", type), ("channel", channel), ("source", source),
                         ("user_id", user_id), ("anonymous_id", anonymous_id)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        for name, op, when in (("since", ">=", since), ("until", "<", until)):
            if when is not None:
                where.append(f"event_time {op} ?")
                params.append(instant(name, when))
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY event_time " + ("DESC" if newest_first else "ASC") + ", message_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.backend.query(sql, params)

    def reveal(self, row: dict[str, Any], *, personal: bool = True) -> dict[str, Any]:
        """One stored row as a Segment-like event with its personal fields put back
        (left out when the subject's key has been destroyed, or without ``personal``)."""
        out = {k: row[k] for k in EVENT_COLUMNS if k not in ("properties", "traits", "context", "pii")}
        for part in ("properties", "traits", "context"):
            out[part] = _dec.decode(row[part]) if row.get(part) else None
        pii = self.vault.open(row["subject"], row["message_id"], row.get("pii")) if personal else None
        for path, value in (pii or {}).items():
            head, *rest = path.split(".")
            target = out.get(head) or {}
            out[head] = target
            for key in rest[:-1]:
                target = target.setdefault(key, {})
            target[rest[-1]] = value
        return out

    def stats(self) -> dict[str, Any]:
        b = self.backend
        summary = b.rows(
            "SELECT count(*) AS events, count(DISTINCT coalesce(user_id, anonymous_id)) AS senders, "
            "min(event_time) AS first_event, max(event_time) AS last_event, count(DISTINCT day) AS days FROM events"
        )[0]
        parts = b.rows("SELECT count(*) AS n, sum(rows) AS events FROM event_parts")[0]
        by = lambda col: {r["k"]: r["n"] for r in b.rows(f"SELECT {col} AS k, count(*) AS n FROM events GROUP BY 1 ORDER BY 2 DESC")}
        return {
            "events": int(summary["events"]),
            "rejected": self.rejected_count(),
            "parts": parts["n"], "part_events": int(parts["events"] or 0),
            "senders": int(summary["senders"]),
            "days": int(summary["days"]),
            "first_event": summary["first_event"].isoformat() if summary["first_event"] else None,
            "last_event": summary["last_event"].isoformat() if summary["last_event"] else None,
            "by_type": by("type"),
            "by_channel": by("channel"),
            "by_source": by("source"),
            "top_events": dict(list(by("coalesce(event, type)").items())[:15]),
        }

    # -- Parquet ------------------------------------------------------------------
    def export_parquet(self, directory: str | Path) -> int:
        """Write the whole log as Parquet, one folder per day (``day=YYYY-MM-DD``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        d = self.backend.dialect
        self.backend.execute(d.copy_parquet("SELECT * FROM events ORDER BY day, event_time", str(directory), partition_by="day"))
        return self.count()

    def import_parquet(self, directory: str | Path, *, chunk_rows: int = 4_000_000) -> AppendResult:
        """Load a log exported by :meth:`export_parquet` (duplicates are skipped).

        Rows go from the files into the log inside the engine (:meth:`append_select`),
        a group of files of about ``chunk_rows`` rows per statement."""
        import pyarrow.parquet as pq

        files = sorted(str(f) for f in Path(directory).rglob("*.parquet"))
        if not files:
            raise ImportFormatError("no Parquet files here", path=str(directory),
                                    hint="give the folder `plait log export` wrote (day=YYYY-MM-DD/*.parquet)")
        d = self.backend.dialect
        cols = ", ".join(f"CAST({c} AS DATE) AS {c}" if c == "day" else c for c in EVENT_COLUMNS)
        inserted = duplicates = 0
        group: list[str] = []
        size = 0
        for i, f in enumerate(files):
            try:
                pf = pq.ParquetFile(f)
            except (pa.ArrowInvalid, OSError) as e:
                raise ImportFormatError(f"not a Parquet file ({e})", path=f) from None
            missing = [c for c in EVENT_COLUMNS if c != "day" and c not in pf.schema_arrow.names]
            if missing:     # (checked before anything is appended)
                raise ImportFormatError(f"not part of a Plait log export: no {', '.join(missing[:6])}"
                                        + (" …" if len(missing) > 6 else ""), path=f,
                                        hint="give the folder `plait log export` wrote; other files go through `plait ingest`")
            group.append(f)
            size += pf.metadata.num_rows
            if size >= chunk_rows or i == len(files) - 1:
                r, _ = self.append_select(f"SELECT {cols}, __row FROM {d.read_parquet(group, hive=True, numbered=True)}",
                                          rows=size)
                inserted += r.inserted
                duplicates += r.duplicates
                group, size = [], 0
        return AppendResult(inserted, duplicates)
