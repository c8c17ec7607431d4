from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import plait
from plait.errors import ImportFormatError


def _records(ws, n, start=0, **extra):
    return [ws.parser.parse({"type": "track", "event": "Order Completed", "userId": f"u{i % 7}",
                             "messageId": f"m{i}", "timestamp": f"2025-03-{1 + i % 28:02d}T10:00:00Z",
                             "properties": {"order_id": f"o{i}", "total": i + 0.5, "currency": "GBP"},
                             "context": {"traits": {"email": f"p{i}@example.com"}}, **extra},
                            received_at=1_750_000_000_000_000, source="t") for i in range(start, start + n)]


def test_append_is_idempotent_by_message_id(ws):
    r1 = ws.log.append(_records(ws, 50))
    r2 = ws.log.append(_records(ws, 60))
    assert (r1.inserted, r1.duplicates) == (50, 0)
    assert (r2.inserted, r2.duplicates) == (10, 50)
    assert ws.log.count() == 60


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), max_size=60), st.lists(st.integers(min_value=0, max_value=40), max_size=60))
def test_replay_property(tmp_path_factory, first, second):
    """Any sequence of batches, replayed in any overlap, leaves exactly the distinct message ids."""
    with plait.connect(tmp_path_factory.mktemp("w")) as ws:
        p = ws.parser
        mk = lambda ids: [p.parse({"type": "track", "event": "e", "userId": "u", "messageId": str(i)},  # noqa: E731
                                  received_at=0, source="t") for i in ids]
        ws.log.append(mk(first))
        ws.log.append(mk(second))
        ws.log.append(mk(first + second))
        assert ws.log.count() == len(set(first) | set(second))


def test_personal_fields_encrypted_at_rest_and_revealed_with_key(ws):
    ws.log.append(_records(ws, 3))
    raw = ws.log.events(limit=None).to_pylist()
    for row in raw:
        assert b"example.com" not in row["pii"]
        assert "example.com" not in (row["context"] or "")
    revealed = {ws.log.reveal(r)["context"]["traits"]["email"] for r in raw}
    assert revealed == {"p0@example.com", "p1@example.com", "p2@example.com"}
    ws.close()
    db = (ws.path / "plait.duckdb").read_bytes()
    assert b"p0@example.com" not in db


def test_parquet_round_trip_gives_the_same_log(ws, tmp_path):
    ws.log.append(_records(ws, 200))
    ws.log.append([ws.parser.parse({"type": "identify", "anonymousId": "a1", "traits": {"plan": "x"}}, received_at=5, source="t")])
    n = ws.log.export_parquet(tmp_path / "export")
    days = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert days[0].startswith("day=") and len(days) == 29
    with plait.connect(tmp_path / "other") as other:
        r = other.log.import_parquet(tmp_path / "export")
        assert r.inserted == n == 201
        a = ws.log.events(limit=None).sort_by("message_id")
        b = other.log.events(limit=None).sort_by("message_id")
        assert a.equals(b)
        again = other.log.import_parquet(tmp_path / "export")
        assert (again.inserted, again.duplicates) == (0, 201)
    with plait.connect(tmp_path / "third") as third:     # many statements of a few files each
        r = third.log.import_parquet(tmp_path / "export", chunk_rows=20)
        assert (r.inserted, third.log.count()) == (201, 201)
        with pytest.raises(ImportFormatError, match="no Parquet files"):
            third.log.import_parquet(tmp_path / "nothing")
        # A folder holding other Parquet files, or files that are not Parquet: refused by name, nothing appended.
        other_dir = tmp_path / "mixed" / "day=2025-03-01"
        other_dir.mkdir(parents=True)
        pq.write_table(pa.table({"customer": ["c1"], "ts": [1]}), other_dir / "orders.parquet")
        with pytest.raises(ImportFormatError, match="orders.parquet: not part of a Plait log export: no message_id"):
            third.log.import_parquet(tmp_path / "mixed")
        (other_dir / "orders.parquet").write_bytes(b"not parquet at all")
        with pytest.raises(ImportFormatError, match="orders.parquet: not a Parquet file"):
            third.log.import_parquet(tmp_path / "mixed")
        assert third.log.count() == 201
        (tmp_path / "junk.csv").write_bytes(b"")
        with pytest.raises(ImportFormatError, match="junk.csv cannot be read as CSV"):
            third.catalogue.load(tmp_path / "junk.csv")


def test_exchange_rates_convert_to_base_currency(ws):
    ws.log.append(_records(ws, 28))  # GBP, days 1..28 of March
    assert ws.fx.unconverted() == 28
    ws.fx.add([(dt.date(2025, 3, 1), "GBP", 1.25), (dt.date(2025, 3, 15), "GBP", 1.5)])
    t = ws.backend.query("SELECT day, amount, amount_base FROM events_base ORDER BY day")
    rows = t.to_pylist()
    assert rows[0]["amount_base"] == rows[0]["amount"] * 1.25
    assert rows[-1]["amount_base"] == rows[-1]["amount"] * 1.5
    assert ws.fx.unconverted() == 0
    assert ws.fx.convert(10, "USD", dt.date(2025, 1, 1)) == 10  # base currency
    assert ws.fx.convert(10, "GBP", dt.date(2025, 2, 1)) is None  # no rate yet


def test_filters_and_stats(ws):
    ws.log.append(_records(ws, 30))
    assert ws.log.events(user_id="u1", limit=None).num_rows == len([i for i in range(30) if i % 7 == 1])
    t = ws.log.events(since="2025-03-10", until="2025-03-11", limit=None)
    assert pc.all(pc.equal(t["day"], pc.cast(pc.strptime("2025-03-10", "%Y-%m-%d", "s"), t["day"].type))).as_py()
    s = ws.log.stats()
    assert s["events"] == 30 and s["rejected"] == 0 and s["by_type"] == {"track": 30}


def test_events_and_stats_over_http_keep_personal_fields_for_admins(ws):
    """A served workspace is read through the server: analysts see events without personal
    fields; only an admin key gets them (as ``plait events --json`` gives them to whoever holds
    the workspace)."""
    import base64

    from fastapi.testclient import TestClient

    from plait.server import create_app

    ws.log.append(_records(ws, 30))
    auth = {r: {"Authorization": "Basic " + base64.b64encode(f"{ws.keys.create(r, role=r)}:".encode()).decode()}
            for r in ("collector", "analyst", "admin")}
    with TestClient(create_app(ws)) as c:
        assert c.get("/v1/events", headers=auth["collector"]).status_code == 403
        rows = c.get("/v1/events", params={"user": "u1", "limit": 100}, headers=auth["analyst"]).json()
        assert len(rows) == len([i for i in range(30) if i % 7 == 1]) and {r["user_id"] for r in rows} == {"u1"}
        assert rows[0]["event_time"] >= rows[-1]["event_time"] and rows[0]["properties"]["currency"] == "GBP"
        assert not any((r["context"] or {}).get("traits") for r in rows)            # no email without the admin key
        assert c.get("/v1/events", params={"personal": True}, headers=auth["analyst"]).status_code == 403
        mine = c.get("/v1/events", params={"user": "u1", "personal": True, "limit": 1}, headers=auth["admin"]).json()
        assert mine[0]["context"]["traits"]["email"].endswith("@example.com")
        day = c.get("/v1/events", params={"since": "2025-03-10", "until": "2025-03-11"}, headers=auth["analyst"]).json()
        assert day and all(r["event_time"].startswith("2025-03-10") for r in day)
        bad = c.get("/v1/events", params={"since": "yesterday"}, headers=auth["analyst"])
        assert bad.status_code == 400 and "since" in bad.text
        stats = c.get("/v1/stats", headers=auth["analyst"]).json()
        assert stats["events"] == 30 and stats["by_type"] == {"track": 30} and stats["rejected"] == 0


def test_seen_ids_survive_reopen_and_tier_merges(tmp_path, monkeypatch):
    """Idempotency holds across restarts (the index reloads from the log) and tier merges."""
    import plait.log.seen as seen

    monkeypatch.setattr(seen, "_SMALL", 50)
    monkeypatch.setattr(seen, "_MEDIUM", 120)
    mk = lambda ws, ids: [ws.parser.parse({"type": "track", "event": "e", "userId": "u", "messageId": f"x{i}"},  # noqa: E731
                                          received_at=0, source="t") for i in ids]
    with plait.connect(tmp_path / "w") as ws:
        for start in range(0, 400, 40):
            ws.log.append(mk(ws, range(start, start + 60)))  # overlapping windows
        assert ws.log.count() == 420
    with plait.connect(tmp_path / "w") as ws:
        r = ws.log.append(mk(ws, range(0, 500)))
        assert (r.inserted, r.duplicates) == (80, 420)
        assert ws.log.count() == 500


def test_hash_collision_never_drops_an_event(ws, monkeypatch):
    """Different ids with the same 64-bit hash are both kept (confirmed by exact id)."""
    import numpy as np

    import plait.log.store as store

    monkeypatch.setattr(store, "id_hashes", lambda backend, values: np.zeros(len(values), np.uint64))
    recs = [ws.parser.parse({"type": "track", "event": "e", "userId": "u", "messageId": f"c{i}"}, received_at=0, source="t")
            for i in range(5)]
    assert ws.log.append(recs[:3]).inserted == 3
    r = ws.log.append(recs)
    assert (r.inserted, r.duplicates) == (2, 3)
    assert ws.log.count() == 5


def test_python_and_engine_id_hashes_agree(ws):
    import pyarrow as pa

    import plait.log.seen as seen

    ids = pa.array([f"id-{i}-ünï" for i in range(5000)])
    small = seen.id_hashes(ws.backend, ids.slice(0, 100))
    big = seen.id_hashes(ws.backend, ids)
    assert (small == big[:100]).all()


def test_every_subject_gets_its_own_fresh_key(tmp_path):
    """Keys made together (one draw from the OS for a whole import) are still one per subject:
    destroying one subject's key must leave nobody else's fields unreadable, or readable."""
    from plait.log.vault import Vault

    v = Vault(tmp_path / "keys.sqlite")
    subjects = [f"user_id:u{i}" for i in range(200)]
    blobs = v.seal_many(subjects, [f"m{i}" for i in range(200)], [{"email": f"u{i}@x.io"} for i in range(200)])
    keys = [k for (k,) in v._db.execute("SELECT key FROM subject_keys").fetchall()]
    assert len(keys) == 200 and len(set(keys)) == 200 and {len(k) for k in keys} == {32}
    assert v.destroy(["user_id:u7"]) == 1
    again = Vault(tmp_path / "keys.sqlite")          # a fresh process: only the store counts
    assert again.open("user_id:u7", "m7", blobs[7]) is None
    assert again.open("user_id:u8", "m8", blobs[8]) == {"email": "u8@x.io"}


def test_numbers_reads_arrow_columns_as_numpy():
    import numpy as np
    import pyarrow as pa

    from plait.engine.backend import numbers

    col = pa.chunked_array([pa.array([1, 2, 3], pa.uint64()), pa.array([4, 5], pa.uint64())])
    assert numbers(col, np.uint64).tolist() == [1, 2, 3, 4, 5]
    assert numbers(pa.array(range(10), pa.int64()).slice(3, 4), np.int64).tolist() == [3, 4, 5, 6]   # an offset
    assert numbers(pa.chunked_array([], pa.uint64()), np.uint64).size == 0                          # no chunks at all
    with pytest.raises(ValueError):
        numbers(pa.array([1, None], pa.int64()), np.int64)


def test_a_failing_follower_neither_fails_the_append_nor_stops_the_others(ws, caplog):
    seen = []

    def broken(batch):
        raise RuntimeError("a follower's bug")

    ws.log.follow(broken)
    ws.log.follow(lambda batch: seen.append(len(batch)))
    r = ws.log.append(_records(ws, 3))
    assert r.inserted == 3 and ws.log.count() == 3 and seen == [3]     # durable, and said so
    assert "a follower of the log failed on 3 appended rows" in caplog.text
