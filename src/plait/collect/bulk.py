"""Bulk import: JSONL of Segment events, and CSV or Parquet through a column mapping.

Imports are resumable without duplicates. Each file is identified by the SHA-256 of
its bytes; progress (rows done) is saved after every chunk in the ``imports``
table, so a re-run skips finished chunks, and message ids are deterministic (the
event's own ``messageId``, or a content hash, or file hash + row number for tables),
so redoing a chunk adds nothing. Invalid rows go to the dead-letter table with their
line number and reason; valid ones are kept.

Tables are mapped onto events in SQL by the engine and appended from there
(:meth:`EventLog.append_select`: into the log's table, or streamed as Arrow into part files),
in steps of ``engine_chunk_rows``; only files with personal fields mapped pass through
Python, which seals them per subject. JSONL lines
the engine can prove valid take the same road; the parser takes the rest.
"""

from __future__ import annotations

import gzip
import hashlib
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from plait.engine.dialects import Dialect, quote_ident, quote_literal
from plait.errors import EngineError, EventError, ImportFormatError
from plait.events.catalogue import CATALOGUE
from plait.events.contract import YEARS, Record, _micros
from plait.events.sql import catalogue_channel, explicit_channel, in_years, utc_day, utc_time
from plait.log.schema import EVENT_COLUMNS, EVENT_SCHEMA
from plait.log.store import AppendResult, Rejection, now_us

if TYPE_CHECKING:
    from plait.workspace import Workspace

TOP_TARGETS = (
    "message_id", "type", "event", "user_id", "anonymous_id", "group_id", "previous_id",
    "timestamp", "channel", "order_id", "store_id", "amount", "currency",
)
PREFIXES = ("properties.", "traits.", "context.")


@dataclass
class ImportReport:
    path: str
    rows: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0
    seconds: float = 0.0
    engine_rows: int = 0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def add(self, r: AppendResult) -> None:
        self.inserted += r.inserted
        self.duplicates += r.duplicates


@dataclass
class Mapping:
    """How table columns become event fields.

    ``columns`` maps a target (``user_id``, ``timestamp``, ``properties.sku`` …) to a
    column; ``constants`` maps a target to a fixed value (``event`` → ``Order Completed``).
    Unmapped columns become properties unless ``only_mapped``.
    """

    columns: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        for target in list(self.columns) + list(self.constants):
            if target not in TOP_TARGETS and not target.startswith(PREFIXES):
                raise ImportFormatError(
                    f"unknown mapping target `{target}`",
                    hint="targets are " + ", ".join(TOP_TARGETS) + " or properties.X / traits.X / context.X",
                )

    def __bool__(self) -> bool:
        return bool(self.columns or self.constants)


def parse_mapping(maps: list[str], sets: list[str]) -> Mapping:
    """``["user_id=customer"]``, ``["event=Order Completed"]`` → :class:`Mapping`."""
    def split(items: list[str], what: str) -> dict[str, str]:
        out = {}
        for item in items:
            target, eq, value = item.partition("=")
            if not eq or not target.strip():
                raise ImportFormatError(f"{what} `{item}` is not TARGET=VALUE")
            out[target.strip()] = value.strip().strip("'\"")
        return out

    m = Mapping(split(maps, "--map"), split(sets, "--set"))
    m.check()
    return m


def fingerprint(path: Path) -> str:
    """A table file's identity: SHA-256 of its bytes as stored (a ``.csv.gz`` is hashed
    compressed, as it always was: its rows' message ids derive from this)."""
    return _scan(path, decompress=False)[0]


def _gzipped(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


@contextmanager
def _open(path: Path, *, decompress: bool = True) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """``(raw, content)``: the file as stored (its position is the progress through it) and its
    bytes, decompressed if it is gzipped (``.jsonl.gz``: Segment's, RudderStack's and Snowplow's
    exports to object storage come so)."""
    with path.open("rb") as raw, (gzip.open(raw, "rb") if decompress and _gzipped(path) else raw) as content:
        yield raw, content


def _scan(path: Path, *, decompress: bool = True) -> tuple[str, bool]:
    """SHA-256 of the file's content (decompressed: the same events gzipped or not are the same
    JSONL import), and whether its lines are safe for the engine's line reader (no carriage returns,
    which it counts as line breaks, and no unit separators)."""
    h = hashlib.sha256()
    plain = True
    try:
        with _open(path, decompress=decompress) as (_, f):
            while chunk := f.read(1 << 22):
                h.update(chunk)
                if plain and (b"\r" in chunk or b"\x1f" in chunk):
                    plain = False
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ImportFormatError(f"cannot be decompressed: {e or type(e).__name__}", path=str(path),
                                hint="check the file is whole gzip (a .gz name with other content is refused)") from None
    return h.hexdigest(), plain


class _Progress:
    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self._p = None
        if enabled:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                               TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(), transient=False)
            self._p.start()
            self._task = self._p.add_task(label, total=total)

    def update(self, completed: int) -> None:
        if self._p is not None:
            self._p.update(self._task, completed=completed)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


class Importer:
    """Bulk import into a workspace's log."""

    def __init__(self, workspace: Workspace, *, chunk_rows: int = 50_000, engine_chunk_rows: int = 2_000_000) -> None:
        self.ws = workspace
        self.log = workspace.log
        self.backend = workspace.backend
        self.parser = workspace.parser
        self.chunk_rows = chunk_rows                  # rows per step where rows pass through Python
        self.engine_chunk_rows = engine_chunk_rows    # rows per step where they stay in the engine

    # -- progress bookkeeping -------------------------------------------------------------
    def _done(self, fp: str) -> tuple[int, bool]:
        rows = self.backend.rows("SELECT rows_done, completed FROM imports WHERE fingerprint = ?", [fp])
        return (int(rows[0]["rows_done"]), bool(rows[0]["completed"])) if rows else (0, False)

    def _resume(self, fp: str, path: Path, t0: float) -> tuple[int, ImportReport | None]:
        """Rows already imported from this file, and the report if it is complete."""
        done, completed = self._done(fp)
        if not completed:
            return done, None
        return done, ImportReport(str(path), skipped=done, seconds=time.perf_counter() - t0)

    def _parse_line(self, raw: bytes, lineno: int, now: int, source: str, path: Path) -> Record | Rejection:
        """One JSONL line through the parser: a record, or a rejection naming line, field and reason."""
        parser = self.parser
        try:
            call = parser.decode(raw, index=lineno)
            received = call.received_at
            return parser.normalise(call, received_at=received and _micros(received) or now, source=source,
                                    index=lineno, correct_skew=received is not None)
        except EventError as e:
            return Rejection(reason=e.reason, field=e.field, origin=f"file:{path.name}", position=lineno,
                             payload=raw[:65536].decode("utf-8", "replace"), source=source)

    def _mark(self, fp: str, path: Path, kind: str, rows_done: int, completed: bool) -> None:
        self.backend.execute("INSERT OR REPLACE INTO imports VALUES (?, ?, ?, ?, ?, make_timestamptz(?))",
                             [fp, str(path), kind, rows_done, completed, now_us()])

    # -- entry point ------------------------------------------------------------------
    def file(self, path: str | Path, *, source: str | None = None, mapping: Mapping | None = None,
             only_mapped: bool = False, progress: bool = False) -> ImportReport:
        """Import one file, choosing the reader by its extension."""
        path = Path(path)
        if not path.is_file():
            raise ImportFormatError("no such file", path=str(path))
        suffix = "".join(path.suffixes[-2:]).lower() if _gzipped(path) else path.suffix.lower()
        if suffix.removesuffix(".gz") in (".jsonl", ".ndjson", ".json"):
            if mapping:
                raise ImportFormatError("--map/--set apply to CSV and Parquet; JSONL holds Segment events", path=str(path))
            return self.jsonl(path, source=source, progress=progress)
        if suffix in (".csv", ".tsv", ".csv.gz", ".parquet", ".pq"):
            fmt = "parquet" if suffix in (".parquet", ".pq") else "csv"
            return self.table(path, mapping or Mapping(), fmt=fmt, source=source, only_mapped=only_mapped, progress=progress)
        raise ImportFormatError(f"unknown file type `{suffix}`", path=str(path),
                                hint="use .jsonl or .jsonl.gz (Segment events), .csv, .csv.gz or .parquet")

    # -- JSONL ------------------------------------------------------------------------
    def jsonl(self, path: str | Path, *, source: str | None = None, progress: bool = False,
              engine: bool = True) -> ImportReport:
        """Import Segment-format events, one JSON object per line.

        With ``engine`` (the default) the engine takes the lines it can prove valid and
        simple in one SQL pass (:mod:`plait.collect.fastjsonl`); the parser takes the rest.
        """
        path = Path(path)
        t0 = time.perf_counter()
        fp, plain = self._read_lines(path) if engine else _scan(path)
        if engine and plain:
            return self._jsonl_engine(path, fp, source or f"import:{path.name}", progress, t0)
        done, finished = self._resume(fp, path, t0)
        if finished is not None:
            return finished
        report = ImportReport(str(path), skipped=done)
        source = source or f"import:{path.name}"
        bar = _Progress(progress, path.stat().st_size, path.name)
        now = now_us()
        lineno = 0
        records: list = []
        rejections: list[Rejection] = []
        try:
            with _open(path) as (raw, f):
                for lineno, line in enumerate(f, start=1):
                    if lineno <= done:
                        continue
                    line = line.strip()
                    if line:
                        report.rows += 1
                        out = self._parse_line(line, lineno, now, source, path)
                        (rejections if isinstance(out, Rejection) else records).append(out)
                    if lineno % self.chunk_rows == 0:
                        self._flush(records, rejections, report)
                        records, rejections = [], []
                        self._mark(fp, path, "jsonl", lineno, False)
                        bar.update(raw.tell())            # (through the compressed file, when it is)
            self._flush(records, rejections, report)
            self._mark(fp, path, "jsonl", lineno, True)
            bar.update(path.stat().st_size)
        finally:
            bar.close()
        report.seconds = time.perf_counter() - t0
        return report

    def _read_lines(self, path: Path) -> tuple[str, bool]:
        """Store the file's lines in ``__plait_lines`` for the engine while another thread hashes
        it (:func:`_scan`; both release the GIL). The lines are dropped again if the file is not
        for the engine's line reader."""
        from plait.collect.fastjsonl import lines_sql

        err: EngineError | None = None
        with ThreadPoolExecutor(1) as pool:
            scan = pool.submit(_scan, path)
            try:
                self.backend.execute(f"CREATE OR REPLACE TEMP TABLE __plait_lines AS {lines_sql(str(path))}")
            except EngineError as e:
                err = e
            fp, plain = scan.result()
        if err is not None or not plain:
            self.backend.execute("DROP TABLE IF EXISTS __plait_lines")
            if err is not None and plain:
                raise err
        return fp, plain

    def _jsonl_engine(self, path: Path, fp: str, source: str, progress: bool, t0: float) -> ImportReport:
        """Import the lines :meth:`_read_lines` stored."""
        from plait.collect.fastjsonl import numbered, select_sql

        b = self.backend
        done, finished = self._resume(fp, path, t0)
        if finished is not None:
            b.execute("DROP TABLE IF EXISTS __plait_lines")
            return finished
        report = ImportReport(str(path), skipped=done)
        now = now_us()
        total = int(b.scalar("SELECT count(*) FROM __plait_lines"))
        pieces = min(b.threads(), 8)
        bar = _Progress(progress, total, path.name)
        cols = ", ".join(EVENT_COLUMNS)
        rows_done = done
        try:
            while rows_done < total:
                upto = min(rows_done + self.engine_chunk_rows, total)
                with b.unordered():    # the chunk's rows are ordered by `__row` where order matters
                    b.execute("CREATE OR REPLACE TEMP TABLE __plait_chunk AS " + select_sql(
                        numbered("__plait_lines", rows_done, upto, pieces), source=source,
                        base_currency=self.ws.settings.base_currency, now_us=now, pii_fields=list(self.parser.pii_fields)))
                counts = b.rows("SELECT count(*) AS n, count(*) FILTER (WHERE __fast) AS fast FROM __plait_chunk")[0]
                report.rows += int(counts["n"])
                report.engine_rows += int(counts["fast"])
                # Lines the engine cannot vouch for go through the parser, the one authority on rejections.
                slow = b.query("SELECT __row, line FROM __plait_chunk WHERE NOT __fast ORDER BY __row")
                records: list = []
                positions: list[int] = []
                rejections: list[Rejection] = []
                for lineno, line in zip(slow["__row"].to_pylist(), slow["line"].to_pylist()):
                    out = self._parse_line(line.encode(), lineno, now, source, path)
                    if isinstance(out, Rejection):
                        rejections.append(out)
                    else:
                        records.append(out)
                        positions.append(lineno)
                self.log.reject(rejections)
                report.rejected += len(rejections)
                # One append ordered by line, so the first of two lines with one message id wins, as in the parser.
                sql = f"SELECT {cols}, __row FROM __plait_chunk WHERE __fast"
                if records:
                    b.temp_table("__plait_parsed", self.log.seal(records).append_column(
                        "__row", pa.array(positions, pa.int64())))
                    sql += f" UNION ALL SELECT {cols}, __row FROM __plait_parsed"
                r, _ = self.log.append_select(sql)
                report.add(r)
                rows_done = upto
                self._mark(fp, path, "jsonl", rows_done, False)
                bar.update(rows_done)
            self._mark(fp, path, "jsonl", total, True)
            bar.update(total)
        finally:
            bar.close()
            b.execute("DROP TABLE IF EXISTS __plait_lines; DROP TABLE IF EXISTS __plait_chunk; "
                      "DROP TABLE IF EXISTS __plait_parsed")
        report.seconds = time.perf_counter() - t0
        return report

    def _flush(self, records: list, rejections: list[Rejection], report: ImportReport) -> None:
        self.log.reject(rejections)
        report.rejected += len(rejections)
        report.add(self.log.append(records))

    # -- CSV / Parquet ----------------------------------------------------------------
    def table(self, path: str | Path, mapping: Mapping, *, fmt: str = "csv", source: str | None = None,
              only_mapped: bool = False, progress: bool = False) -> ImportReport:
        """Import a CSV or Parquet table, one event per row, through ``mapping``."""
        path = Path(path)
        mapping.check()
        t0 = time.perf_counter()
        fp = fingerprint(path)
        done, finished = self._resume(fp, path, t0)
        if finished is not None:
            return finished
        report = ImportReport(str(path), skipped=done)
        source = source or f"import:{path.name}"
        reader = (f"read_parquet({quote_literal(str(path))}, file_row_number = true)" if fmt == "parquet"
                  else f"read_csv({quote_literal(str(path))}, header = true, auto_detect = true)")
        columns = {r["column_name"]: r["column_type"] for r in self.backend.rows(f"DESCRIBE SELECT * FROM {reader}")
                   if r["column_name"] != "file_row_number"}
        for target, col in mapping.columns.items():
            if col not in columns:
                raise ImportFormatError(f"mapping `{target}={col}`: no column `{col}`", path=str(path),
                                        hint="columns are " + ", ".join(columns))
        if fmt != "parquet":
            # CSV has no row numbers of its own, and numbering rows with a window ran the whole
            # import on one thread (2 M rows: 7.1 s). Stored once (a parallel read that keeps the
            # file's order), the table's rowid numbers them and every pass reads it, not the text.
            self.backend.execute(f"CREATE OR REPLACE TEMP TABLE __plait_csv AS SELECT * FROM {reader}")
            reader = "(SELECT *, rowid AS file_row_number FROM __plait_csv)"
        total = int(self.backend.scalar(f"SELECT count(*) FROM {reader}"))
        args = (reader, fmt, columns, mapping, only_mapped, fp[:16], source, set(self.ws.settings.pii.fields),
                self.ws.settings.base_currency, self.backend.dialect)
        bar = _Progress(progress, total, path.name)
        try:
            rows_done = done
            whole = _table_sql(*args, done)
            if whole.has_pii:
                # Personal fields are sealed per subject in Python: rows come out as Arrow.
                for t in self._batches(whole.sql, args, done, total, streamed=fmt == "parquet"):
                    if not t.num_rows:
                        continue
                    self._table_chunk(t, report, path)
                    rows_done = max(rows_done, int(pc.max(t["__row"]).as_py()))
                    self._mark(fp, path, fmt, rows_done, False)
                    bar.update(rows_done)
            else:
                # Everything else stays in the engine: mapped, checked and appended by SQL.
                while rows_done < total:
                    upto = min(rows_done + self.engine_chunk_rows, total)
                    chunk = (f"SELECT *, CAST(NULL AS BLOB) AS pii FROM "
                             f"({_table_sql(*args, rows_done, upto=upto, ordered=False).sql})")
                    # The chunk yields rows done+1 … upto (a file's or a stored table's numbered rows).
                    r, bad = self.log.append_select(chunk, bad="__error IS NOT NULL", rows=upto - rows_done)
                    report.add(r)
                    report.rows += r.inserted + r.duplicates + bad.size
                    if bad.size:
                        self.backend.temp_table("__plait_bad", pa.table({"__row": pa.array(bad, pa.int64())}))
                        self._reject(self.backend.query(f"SELECT * FROM ({chunk}) q SEMI JOIN __plait_bad USING (__row)"),
                                     report, path)
                    rows_done = upto
                    self._mark(fp, path, fmt, rows_done, False)
                    bar.update(rows_done)
            self._mark(fp, path, fmt, total, True)
            bar.update(total)
        finally:
            bar.close()
            self.backend.execute("DROP TABLE IF EXISTS __plait_csv")
        report.seconds = time.perf_counter() - t0
        return report

    def _batches(self, sql: str, args: tuple, done: int, total: int, *, streamed: bool) -> Iterator[pa.Table]:
        """The mapped rows after ``done`` in Arrow batches of about ``bulk_rows``: streamed from a
        file, or — for a stored CSV, a temporary table the streaming cursor cannot see — read a
        range of rows at a time on the engine's own connection."""
        step = self.backend.bulk_rows
        if streamed:
            yield from self.backend.stream(sql, batch_size=step)
            return
        for start in range(done, total, step):
            yield self.backend.query(_table_sql(*args, start, upto=min(start + step, total)).sql)

    def _reject(self, bad: pa.Table, report: ImportReport, path: Path) -> None:
        rej = [Rejection(reason=reason, field=fld, origin=f"file:{path.name}", position=row, payload=payload, source=src)
               for fld, reason, row, payload, src in zip(
                   bad["__error_field"].to_pylist(), bad["__error"].to_pylist(), bad["__row"].to_pylist(),
                   bad["__payload"].to_pylist(), bad["source"].to_pylist())]
        self.log.reject(rej)
        report.rejected += len(rej)

    def _table_chunk(self, t: pa.Table, report: ImportReport, path: Path) -> None:
        report.rows += t.num_rows
        bad_mask = pc.is_valid(t["__error"])
        bad = t.filter(bad_mask)
        if bad.num_rows:
            self._reject(bad, report, path)
        good = t.filter(pc.invert(bad_mask)) if bad.num_rows else t
        if not good.num_rows:
            return
        pii_json = good["__pii"]
        if pii_json.null_count < good.num_rows:
            # The engine wrote each row's personal fields as a JSON object without nulls (or NULL).
            payloads = pii_json.cast(pa.binary()).to_pylist()
            blobs = self.ws.vault.seal_json(good["subject"].to_pylist(), good["message_id"].to_pylist(), payloads)
            pii = pa.array(blobs, pa.binary())
        else:
            pii = pa.nulls(good.num_rows, pa.binary())
        good = good.append_column("pii", pii).select(list(EVENT_COLUMNS)).cast(EVENT_SCHEMA)
        report.add(self.log.append_table(good))


@dataclass(frozen=True)
class _TableSQL:
    sql: str
    has_pii: bool


def _table_sql(reader: str, fmt: str, columns: dict[str, str], m: Mapping, only_mapped: bool, fp: str, source: str,
               pii_fields: set[str], base_currency: str, dialect: Dialect, done: int, *, upto: int | None = None,
               ordered: bool = True) -> _TableSQL:
    """One SELECT that maps, types and checks the table's rows after ``done`` (up to ``upto``).
    ``columns`` maps the table's columns to their engine types."""
    def src(target: str) -> str | None:
        if target in m.columns:
            return quote_ident(m.columns[target])
        if target in m.constants:
            return quote_literal(m.constants[target])
        return None

    def text(target: str) -> str:
        s = src(target)
        return f"nullif(trim(CAST({s} AS VARCHAR)), '')" if s else "CAST(NULL AS VARCHAR)"

    ts_src = src("timestamp")
    amount_src = src("amount")
    mapped_cols = set(m.columns.values())
    prop_pairs: list[tuple[str, str]] = []
    trait_pairs: list[tuple[str, str]] = []
    ctx_pairs: list[tuple[str, str]] = []
    pii_pairs: list[tuple[str, str]] = []
    for target in list(m.columns) + list(m.constants):
        for prefix, bucket in (("properties.", prop_pairs), ("traits.", trait_pairs), ("context.", ctx_pairs)):
            if target.startswith(prefix):
                key = target[len(prefix):]
                expr = src(target)
                if key in pii_fields:
                    pii_pairs.append((target, expr))
                else:
                    bucket.append((key, expr))
    if not only_mapped:
        for c in columns:
            if c not in mapped_cols:
                if c in pii_fields:
                    pii_pairs.append((f"traits.{c}", quote_ident(c)))
                else:
                    prop_pairs.append((c, quote_ident(c)))
    for key in ("order_id", "store_id", "currency"):
        if src(key):
            prop_pairs.append((key, f"__{key}"))
    if amount_src:
        prop_pairs.append(("total", "__amount"))

    def obj(pairs: list[tuple[str, str]]) -> str:
        if not pairs:
            return "CAST(NULL AS VARCHAR)"
        args = ", ".join(f"{quote_literal(k)}, {v}" for k, v in pairs)
        return f"CAST(json_object({args}) AS VARCHAR)"

    def sealed_obj(pairs: list[tuple[str, str]]) -> str:
        """Personal fields as the vault seals them: a JSON object of the non-null ones, NULL if none."""
        if not pairs:
            return "CAST(NULL AS VARCHAR)"
        entries = ", ".join(f"{{'k': {quote_literal(k)}, 'v': to_json({v})}}" for k, v in pairs)
        return (f"nullif(CAST(to_json(map_from_entries(list_filter([{entries}], lambda x: x.v IS NOT NULL))) "
                "AS VARCHAR), '{}')")

    row = "file_row_number + 1"   # Parquet's own; for CSV the stored table's rowid (see Importer.table)
    ts_type = columns.get(m.columns.get("timestamp", ""), "")
    if ts_type == "TIMESTAMP WITH TIME ZONE":
        ts = ts_src
    elif ts_type == "TIMESTAMP":
        # A time without a zone is UTC (as the session's TimeZone has it), read from its epoch:
        # the cast went through the ICU calendar, 35 ns a row.
        ts = f"make_timestamptz(epoch_us({ts_src}))"
    else:
        ts = f"TRY_CAST({ts_src} AS TIMESTAMPTZ)" if ts_src else "NULL"
    amount = f"TRY_CAST({amount_src} AS DOUBLE)" if amount_src else "CAST(NULL AS DOUBLE)"
    required = []
    # Only the mapped event's own requirements when the mapping fixes the event.
    fixed = m.constants.get("event") if "event" not in m.columns else None
    for spec in ([CATALOGUE[fixed]] if fixed in CATALOGUE else [] if fixed else CATALOGUE.values()):
        for f in msgspec.structs.fields(spec.schema):
            if f.required:
                key = f.name
                expr = f"__{key}" if key in ("order_id", "store_id") else next(
                    (v for k, v in prop_pairs if k == key), None)
                cond = f"__event = {quote_literal(spec.name)}" + (f" AND {expr} IS NULL" if expr else "")
                required.append(f"WHEN {cond} THEN 'properties.{key}|{spec.name} requires property `{key}`'")
    checks = " ".join([
        "WHEN __type NOT IN ('track','identify','page','screen','group','alias') THEN 'type|unknown type `' || __type || '`'",
        "WHEN __user_id IS NULL AND __anonymous_id IS NULL THEN 'user_id|either user_id or anonymous_id is required'",
        "WHEN __type = 'track' AND __event IS NULL THEN 'event|a track call needs an event name'",
        (f"WHEN __ts IS NULL THEN 'timestamp|`' || coalesce(CAST({ts_src} AS VARCHAR), 'null') || '` is not a timestamp'"
         if ts_src else "WHEN false THEN ''"),
        (f"WHEN NOT {in_years('epoch_us(__ts)')} THEN "
         f"'timestamp|`' || CAST({ts_src} AS VARCHAR) || '` is outside {YEARS}'" if ts_src else "WHEN false THEN ''"),
        (f"WHEN {amount_src} IS NOT NULL AND __amount IS NULL THEN 'amount|`' || CAST({amount_src} AS VARCHAR) || '` is not a number'"
         if amount_src else "WHEN false THEN ''"),
        "WHEN __currency IS NOT NULL AND NOT regexp_full_match(__currency, '[A-Za-z]{3}') THEN 'currency|`' || __currency || '` is not an ISO 4217 code'",
        *required,
    ])
    # Output columns whose few values are known here leave the engine as dictionaries (see
    # Dialect.closed_text); only where the value is surely what the SQL makes of it.
    def const(target: str, default: str | None = None) -> str | None:
        if target in m.columns:
            return None
        v = m.constants.get(target, "").strip(" ") or default   # (as nullif(trim(...), ''))
        return v if v is None or v.isascii() else None

    def closed(expr: str, *values: str | None) -> str:
        return expr if any(v is None for v in values) else dialect.closed_text(expr, values)  # type: ignore[arg-type]

    typ, ev = const("type", "track"), const("event")
    typ = typ.lower() if typ else None
    # The mapped currency (or none: the base currency where there is an amount), upper-cased.
    fixed_cur = m.constants.get("currency", "").strip(" ")
    currencies = ((base_currency.upper(), *([fixed_cur.upper()] if fixed_cur else []))
                  if "currency" not in m.columns and fixed_cur.isascii() and base_currency.isascii() else (None,))
    channels = ({s.channel for s in CATALOGUE.values() if s.channel} | {"store", "other"}
                if "channel" not in m.columns and "channel" not in m.constants else {None})
    now = utc_time(str(now_us()))
    payload_cols = ", ".join(f"{quote_literal(c)}, {quote_ident(c)}" for c in columns)
    sql = f"""
WITH src AS (SELECT *, {row} AS __row FROM {reader}),
m AS (
  SELECT src.*,
    {text('message_id')} AS __message_id,
    lower(coalesce({text('type')}, 'track')) AS __type,
    {text('event')} AS __event,
    {text('user_id')} AS __user_id,
    {text('anonymous_id')} AS __anonymous_id,
    {text('group_id')} AS __group_id,
    {text('previous_id')} AS __previous_id,
    {ts} AS __ts,
    {explicit_channel(text('channel'))} AS __channel,
    {text('order_id')} AS __order_id,
    {text('store_id')} AS __store_id,
    {amount} AS __amount,
    upper({text('currency')}) AS __currency
  FROM src WHERE __row > {int(done)}{f" AND __row <= {int(upto)}" if upto is not None else ""}
),
c AS (SELECT m.*, CASE {checks} ELSE NULL END AS __check FROM m)
SELECT
  coalesce(__message_id, {quote_literal(fp)} || ':' || CAST(__row AS VARCHAR)) AS message_id,
  {closed("__type", typ)} AS type,
  {closed("CASE WHEN __type IN ('page', 'screen', 'track') THEN __event END", ev)} AS event,
  {closed(f"CASE WHEN __type = 'track' AND __event IN ({', '.join(quote_literal(n) for n in CATALOGUE)}) THEN '1-0-0' END", "1-0-0")} AS schema_version,
  {closed(f"coalesce(__channel, {catalogue_channel('__event')}, CASE WHEN __store_id IS NOT NULL THEN 'store' END, 'other')", *channels)} AS channel,
  {closed(quote_literal(source), source)} AS source,
  __anonymous_id AS anonymous_id, __user_id AS user_id, __group_id AS group_id, __previous_id AS previous_id,
  coalesce(__ts, {now}) AS event_time,
  __ts AS original_time, CAST(NULL AS TIMESTAMPTZ) AS sent_at, {now} AS received_at,
  {utc_day(f"epoch_us(coalesce(__ts, {now}))")} AS day,
  __order_id AS order_id, __store_id AS store_id, __amount AS amount,
  {closed(f"CASE WHEN __amount IS NOT NULL THEN coalesce(__currency, {quote_literal(base_currency.upper())}) ELSE __currency END",
          *currencies)} AS currency,
  {obj(prop_pairs)} AS properties,
  {obj(trait_pairs)} AS traits,
  {obj(ctx_pairs)} AS context,
  CASE WHEN __user_id IS NOT NULL THEN 'user_id:' || __user_id ELSE 'anonymous_id:' || __anonymous_id END AS subject,
  {sealed_obj(pii_pairs)} AS __pii,
  __row,
  split_part(__check, '|', 1) AS __error_field,
  nullif(split_part(__check, '|', 2), '') AS __error,
  CASE WHEN __check IS NOT NULL THEN CAST(json_object({payload_cols}) AS VARCHAR) END AS __payload
FROM c{" ORDER BY __row" if ordered else ""}
"""
    return _TableSQL(sql, bool(pii_pairs))


__all__ = ["ImportReport", "Importer", "Mapping", "parse_mapping"]
