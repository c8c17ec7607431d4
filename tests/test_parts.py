"""Large bulk appends go into immutable Parquet part files; the log reads the same either way."""

from __future__ import annotations

import json
import shutil

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import plait
from plait.collect.bulk import parse_mapping
from plait.errors import EngineError, WorkspaceError

MAPPING = (["message_id=mid", "anonymous_id=card", "timestamp=ts", "amount=total", "store_id=shop"],
           ["event=Store Visit"])


def _pos(path, n=3000, start=0):
    t = pa.table({"mid": [f"o{i}" for i in range(start, start + n)], "card": [f"c{i % 50}" for i in range(start, start + n)],
                  "ts": [f"2025-03-{1 + i % 28:02d} 10:00:00" for i in range(start, start + n)],
                  "total": [float(i) for i in range(start, start + n)], "shop": ["s1"] * n})
    pq.write_table(t, path, row_group_size=700)
    return path


def _import(ws, path, part_rows: int, chunk: int = 1000, file_rows: int | None = None):
    ws.log.parts.min_rows = part_rows
    if file_rows is not None:
        ws.log.parts.file_rows = file_rows
    imp = ws.importer
    imp.engine_chunk_rows = chunk
    return imp.file(path, mapping=parse_mapping(*MAPPING), only_mapped=True)


def _log(ws) -> list[dict]:
    return ws.backend.rows("SELECT * EXCLUDE (received_at) FROM events ORDER BY message_id")


def _parts(ws) -> list:
    return sorted((ws.path / "log").glob("part-*.parquet"))


@pytest.mark.parametrize("file_rows", [100_000, 400], ids=["a-file-an-append", "a-file-a-thread"])
def test_parts_hold_the_same_log_as_the_table(tmp_path, file_rows):
    f = _pos(tmp_path / "pos.parquet")
    with plait.connect(tmp_path / "a") as a, plait.connect(tmp_path / "b") as b:
        b.backend.set_threads(2)
        ra, rb = _import(a, f, part_rows=0), _import(b, f, part_rows=500, file_rows=file_rows)
        assert (ra.inserted, rb.inserted) == (3000, 3000)
        # Each 1,000-row append is one file, or dealt among the engine's two threads' files.
        per_append = 1 if file_rows > 1000 else 2
        assert _parts(a) == [] and len(_parts(b)) == 3 * per_append
        assert a.backend.scalar("SELECT count(*) FROM event_rows") == 3000
        assert b.backend.scalar("SELECT count(*) FROM event_rows") == 0
        assert (b.log.stats()["parts"], b.log.stats()["part_events"]) == (3 * per_append, 3000)
        assert sum(pq.ParquetFile(p).metadata.num_rows for p in _parts(b)) == 3000
        assert (a.log.stats()["parts"], a.log.stats()["part_events"]) == (0, 0)
        types = "SELECT column_name, column_type FROM (DESCRIBE events)"
        assert a.backend.rows(types) == b.backend.rows(types)
        assert _log(a) == _log(b)
        # Parts are written in any order, and the session's setting is restored afterwards.
        assert b.backend.scalar("SELECT current_setting('preserve_insertion_order')") is True
        # Idempotent across parts and table alike: a file overlapping the log adds only its new ids.
        g = _pos(tmp_path / "more.parquet", n=1000, start=2500)
        for w in (a, b):
            r = _import(w, g, part_rows=w.log.parts.min_rows)
            assert (r.inserted, r.duplicates) == (500, 500)
        # The same ids again in another file: nothing added, no part listed, no file left behind.
        pq.write_table(pq.read_table(g), tmp_path / "again.parquet", row_group_size=300)
        files = sorted((b.path / "log").iterdir())
        r = _import(b, tmp_path / "again.parquet", part_rows=500)
        assert (r.inserted, r.duplicates) == (0, 1000) and sorted((b.path / "log").iterdir()) == files
        # Small appends (the collector's) go into the table beside the parts.
        b.log.append([b.parser.parse({"type": "track", "event": "e", "userId": "u", "messageId": "o1"},
                                     received_at=0, source="t")])
        assert b.log.count() == 3500
        assert _log(a) == _log(b)


def test_a_part_never_listed_is_never_seen(tmp_path, monkeypatch):
    """A crash after the file is written but before it is listed leaves nothing in the log; the
    file is removed, and the import redone adds the rows once."""
    f = _pos(tmp_path / "pos.parquet")
    ws = plait.connect(tmp_path / "ws")
    parts = ws.log.parts
    real = parts._define
    calls = {"n": 0}

    def crash(names):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        return real(names)

    monkeypatch.setattr(parts, "_define", crash)
    with pytest.raises(RuntimeError):
        _import(ws, f, part_rows=500)
    monkeypatch.setattr(parts, "_define", real)
    assert ws.log.count() == 1000 and len(_parts(ws)) == 1
    # A file a real crash would leave behind (written, never listed).
    stray = ws.path / "log" / "part-00000000000000000000000000000000.parquet"
    staged = ws.path / "log" / ".part-00000000000000000000000000000001.parquet"   # a crash while writing
    shutil.copy(_parts(ws)[0], stray)
    shutil.copy(_parts(ws)[0], staged)
    ws.close()
    with plait.connect(tmp_path / "ws") as ws:
        assert not stray.exists() and not staged.exists() and ws.log.count() == 1000
        r = _import(ws, f, part_rows=500)
        assert ws.log.count() == 3000 and r.duplicates == 0
        assert ws.backend.scalar("SELECT count(DISTINCT message_id) FROM events") == 3000


def test_a_missing_part_is_a_clear_error_and_a_moved_workspace_reads_its_parts(tmp_path):
    f = _pos(tmp_path / "pos.parquet")
    with plait.connect(tmp_path / "ws") as ws:
        _import(ws, f, part_rows=500)
        before = _log(ws)
    (tmp_path / "ws").rename(tmp_path / "moved")
    with plait.connect(tmp_path / "moved") as ws:
        assert _log(ws) == before
        victim = _parts(ws)[1]
    victim.unlink()
    with pytest.raises(WorkspaceError) as e:
        plait.connect(tmp_path / "moved")
    assert victim.name in str(e.value) and "backup" in (e.value.hint or "")


def test_a_log_from_before_parts_opens_with_its_events(tmp_path):
    with plait.connect(tmp_path / "ws") as ws:
        ws.log.append([ws.parser.parse({"type": "track", "event": "e", "userId": "u", "messageId": f"m{i}"},
                                       received_at=0, source="t") for i in range(10)])
    con = duckdb.connect(str(tmp_path / "ws" / "plait.duckdb"))   # the layout of earlier versions
    con.execute("DROP VIEW events; ALTER TABLE event_rows RENAME TO events; DROP TABLE event_parts; "
                "DROP SEQUENCE event_parts_seq")
    con.close()
    with plait.connect(tmp_path / "ws") as ws:
        assert ws.log.count() == 10
        assert ws.backend.scalar("SELECT table_type FROM information_schema.tables WHERE table_name = 'events'") == "VIEW"
        _import(ws, _pos(tmp_path / "pos.parquet"), part_rows=500)
        assert ws.log.count() == 3010


def test_personal_fields_in_parts_are_sealed_and_erasable(tmp_path):
    p = tmp_path / "people.jsonl"
    with p.open("w") as f:
        for i in range(1200):
            f.write(json.dumps({"type": "identify", "userId": f"u{i % 300}", "messageId": f"i{i}",
                                "timestamp": "2025-02-01T10:00:00Z",
                                "traits": {"email": f"person{i % 300}@example.org", "plan": "gold"}}) + "\n")
    with plait.connect(tmp_path / "ws") as ws:
        ws.log.parts.min_rows = 500
        imp = ws.importer
        imp.engine_chunk_rows = 600
        r = imp.file(p)
        assert r.inserted == 1200 and len(_parts(ws)) == 2
        assert all(b"@example.org" not in f.read_bytes() for f in _parts(ws))
        row = ws.backend.rows("SELECT * FROM events WHERE message_id = 'i7'")[0]
        assert ws.log.reveal(row)["traits"] == {"email": "person7@example.org", "plan": "gold"}
        ws.rights.erase("user_id:u7")
        row = ws.backend.rows("SELECT * FROM events WHERE message_id = 'i7'")[0]
        assert ws.log.reveal(row)["traits"] == {"plan": "gold"}
        assert ws.log.count() == 1200


@pytest.mark.parametrize("file_rows", [100_000, 1000])
def test_the_first_of_two_rows_with_one_id_wins_whatever_order_the_engine_writes(tmp_path, monkeypatch, file_rows):
    """The engine writes a part's rows in the order its threads finish (seen in CI: the later of
    two rows with one id was kept); the import must still keep the earlier row of the file."""
    n = 3000
    mids = [f"o{i}" if i not in (10, 2500) else "dup" for i in range(1, n + 1)]
    t = pa.table({"mid": mids, "card": ["c1"] * n, "ts": ["2025-03-01 10:00:00"] * n,
                  "total": [float(i) for i in range(1, n + 1)], "shop": ["s1"] * n})
    pq.write_table(t, tmp_path / "pos.parquet", row_group_size=700)
    with plait.connect(tmp_path / "ws") as ws:
        ws.backend.set_threads(2)
        ws.log.parts.file_rows = file_rows
        real = ws.log.parts.stage
        monkeypatch.setattr(ws.log.parts, "stage",
                            lambda query, *a, **k: real(f"SELECT * FROM ({query}) ORDER BY amount DESC", *a, **k))
        r = _import(ws, tmp_path / "pos.parquet", part_rows=500, chunk=n)
        assert (r.inserted, r.duplicates) == (n - 1, 1)
        assert ws.backend.scalar("SELECT amount FROM events WHERE message_id = 'dup'") == 10.0
        assert ws.log.count() == n - 1 and len(_parts(ws)) == (1 if file_rows > n else 2)


def test_a_file_overlapping_the_log_is_rewritten_without_its_known_rows_across_files(tmp_path):
    """Rows already in the log are dropped from the staged files, whichever file they landed in:
    the kept hashes' order must match the files' rows."""
    with plait.connect(tmp_path / "ws") as ws:
        ws.backend.set_threads(2)
        _import(ws, _pos(tmp_path / "first.parquet", n=2000), part_rows=500, chunk=5000, file_rows=300)
        assert len(_parts(ws)) == 2
        r = _import(ws, _pos(tmp_path / "overlap.parquet", n=2000, start=1000), part_rows=500, chunk=5000, file_rows=300)
        assert (r.inserted, r.duplicates) == (1000, 1000)
        assert ws.backend.scalar("SELECT count(*) FROM events") == 3000
        assert ws.backend.scalar("SELECT count(DISTINCT message_id) FROM events") == 3000
        assert ws.backend.scalar("SELECT min(amount) FROM events WHERE message_id >= 'o2000'") is not None
        assert len(_parts(ws)) == 4 and not list((ws.path / "log").glob(".part-*"))


def test_a_failed_write_leaves_no_part_and_says_why(tmp_path, monkeypatch):
    """A writer that fails (a full disk) or a query that fails while its rows stream out leaves
    the log as it was, and no staged file behind."""
    f = _pos(tmp_path / "pos.parquet")
    with plait.connect(tmp_path / "ws") as ws:
        ws.backend.set_threads(2)
        real = pq.ParquetWriter.write_table
        calls = {"n": 0}

        def full_disk(self, *a, **k):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(28, "No space left on device")
            return real(self, *a, **k)

        monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk)
        with pytest.raises(EngineError, match="could not write .*No space left") as e:
            _import(ws, f, part_rows=500, chunk=3000, file_rows=200)
        assert "disk has room" in e.value.hint
        monkeypatch.setattr(pq.ParquetWriter, "write_table", real)
        assert ws.log.count() == 0 and not list((ws.path / "log").iterdir())
        # A query that fails part-way through its rows: the engine's error, nothing left behind.
        with pytest.raises(EngineError, match="Conversion Error|Could not convert"):
            ws.log.parts.write("SELECT e.* REPLACE (CAST(CASE WHEN i > 150000 THEN 'x' ELSE '1' END AS INT)::VARCHAR "
                               "AS message_id) FROM (SELECT * FROM events LIMIT 0) e RIGHT JOIN range(200000) r(i) ON true",
                               200000)
        assert not list((ws.path / "log").iterdir())
        r = _import(ws, f, part_rows=500, chunk=3000)
        assert r.inserted == 3000 and ws.log.count() == 3000


@pytest.mark.parametrize("constants", [
    {"type": " Track ", "currency": "usd"},
    {"event": "Commande passée", "channel": "Store", "currency": "eur"},
    {"type": "İdentify"},
])
def test_columns_of_few_values_are_written_as_dictionaries_and_read_as_text(tmp_path, constants):
    """A mapped import's constant columns leave the engine as dictionaries (ENUMs), which the
    part keeps; what is read back is the same text as through the table, whatever the constants."""
    f = _pos(tmp_path / "pos.parquet")
    m = parse_mapping(*MAPPING)
    m.constants = {k: v for k, v in {**m.constants, **constants}.items()}
    logs = []
    for name, part_rows in (("table", 0), ("parts", 500)):
        with plait.connect(tmp_path / name) as ws:
            ws.log.parts.min_rows = part_rows
            imp = ws.importer
            imp.engine_chunk_rows = 1000
            r = imp.file(f, mapping=m, only_mapped=True)
            logs.append((r.inserted, r.rejected, _log(ws),
                         ws.backend.rows("SELECT column_name, column_type FROM (DESCRIBE events)")))
            if part_rows:
                schemas = [pq.read_schema(p) for p in _parts(ws)]
    assert logs[0] == logs[1]
    inserted, rejected, rows, _ = logs[1]
    assert inserted + rejected == 3000
    assert inserted == 3000 and len(schemas) == 3
    schema = schemas[0]
    if not constants.get("type", "t").isascii():
        # The engine lower-cases `İ` to `i` where Python makes `i̇`: left as text, read as the engine has it.
        assert not pa.types.is_dictionary(schema.field("type").type) and {r["type"] for r in rows} == {"identify"}
        return
    assert pa.types.is_dictionary(schema.field("source").type) and pa.types.is_dictionary(schema.field("schema_version").type)
    assert pa.types.is_dictionary(schema.field("type").type) and {r["type"] for r in rows} == {"track"}
    if "channel" in constants:
        assert not pa.types.is_dictionary(schema.field("channel").type) and {r["channel"] for r in rows} == {"store"}
        assert not pa.types.is_dictionary(schema.field("event").type)    # (not ASCII: left as text)
        assert {r["event"] for r in rows} == {"Commande passée"} and {r["currency"] for r in rows} == {"EUR"}
    else:
        assert pa.types.is_dictionary(schema.field("channel").type) and pa.types.is_dictionary(schema.field("currency").type)
        assert {r["currency"] for r in rows} == {"USD"} and {r["event"] for r in rows} == {"Store Visit"}
