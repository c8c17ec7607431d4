"""The engine's bulk JSONL path makes exactly the rows the parser makes."""

from __future__ import annotations

import json

import msgspec
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import plait
import plait.collect.bulk as bulk
from plait.events import CATALOGUE

NOW = 1_760_000_000_000_000

text = st.one_of(st.sampled_from(["a", "u1", "Web", "store", " pad ", "", "Call-Center", "browser", "server", "é"]),
                 st.text(max_size=6))
ids = st.one_of(st.none(), text, st.integers(-5, 10**6), st.floats(allow_nan=False, allow_infinity=False))
num = st.one_of(st.integers(-100, 10**6), st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from(["12.5", "x", None]))
ts = st.one_of(st.none(), st.sampled_from(["2025-03-01T10:00:00Z", "2025-03-01T10:00:00.123+02:00",
                                           "2025-03-01T10:00:00", "2025-03-01 10:00:00", "2025-02-30T00:00:00Z",
                                           "yesterday", "2025-03-01T10:00:00.1234567Z",
                                           # outside the log's years, and at their edges
                                           "1899-12-31T23:59:59Z", "1900-01-01T00:00:00Z", "2199-12-31T23:59:59Z",
                                           "2200-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]),
               st.integers())
product = st.fixed_dictionaries({}, optional={"product_id": ids, "price": num, "quantity": num, "name": text})
props = st.dictionaries(
    st.sampled_from(["order_id", "store_id", "total", "revenue", "value", "currency", "products", "channel",
                     "platform", "geofence_id", "email", "coupons", "x", "category", "subtotal", "price"]),
    st.one_of(ids, num, st.sampled_from(["EUR", "usd", "EURO"]), st.lists(product, max_size=3),
              st.lists(st.one_of(text, st.integers()), max_size=2), st.booleans()),
    max_size=5)
events = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "track", "track", "page", "screen", "identify", "alias", "group", "Track", "x"]),
     "messageId": st.one_of(ids, st.uuids().map(str))},
    optional={
        "userId": ids, "anonymousId": ids, "event": st.one_of(st.sampled_from(list(CATALOGUE)), text, st.integers()),
        "name": text, "category": text, "properties": st.one_of(props, st.just([])), "traits": props,
        "context": st.fixed_dictionaries({}, optional={
            "library": st.fixed_dictionaries({"name": st.sampled_from(["analytics.js", "analytics-ios", "x", 3])}),
            "channel": st.one_of(text, st.integers()), "ip": st.just("1.2.3.4"), "traits": props, "page": props}),
        "timestamp": ts, "originalTimestamp": ts, "sentAt": ts, "receivedAt": ts, "channel": st.one_of(text, st.integers()),
        "previousId": ids, "groupId": ids, "integrations": st.one_of(st.just({"All": True}), st.integers()),
    })

plain = st.sampled_from(["u1", "u-2", "Anna", "42", "st-1", "o 9", "web", "Store", "Call-Center", "browser", "server",
                         "mobile", "partner_api", "x" * 40])
nums = st.one_of(st.integers(-10, 10**6), st.floats(-1e5, 1e5, allow_nan=False).map(lambda x: round(x, 2)))
good_product = st.fixed_dictionaries({}, optional={"product_id": st.one_of(plain, st.integers(0, 99)), "price": nums,
                                                   "quantity": st.integers(0, 5), "name": plain})
good_props = st.dictionaries(
    st.sampled_from(["order_id", "store_id", "total", "revenue", "value", "currency", "products", "channel",
                     "platform", "geofence_id", "coupons", "x", "subtotal", "price", "product_id", "campaign_id"]),
    st.one_of(plain, nums, st.sampled_from(["EUR", "usd", ""]), st.lists(good_product, max_size=3),
              st.lists(plain, max_size=2)),
    max_size=6)
good_ts = st.sampled_from(["2025-03-01T10:00:00Z", "2025-03-01T10:00:00.123+02:00", "2025-03-01T10:00:00",
                           "2024-12-31T23:59:59.999999-05:00", "2025-06-01T00:00:00Z", "2024-01-01T08:00:00+01:00",
                           # the log's years' edges, and a sender's clock centuries off (sentAt)
                           "1900-01-01T00:00:00Z", "1899-12-31T23:59:59Z", "2199-12-31T23:59:59Z", "1700-01-01T00:00:00Z"])
good = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "track", "track", "page", "screen", "identify", "alias", "group"]),
     "messageId": st.one_of(st.uuids().map(str), st.integers(0, 10**9)),
     "userId": st.one_of(plain, st.integers(0, 10**6)),
     "event": st.one_of(st.sampled_from(list(CATALOGUE)), plain),
     "previousId": plain, "groupId": plain,
     "properties": good_props},
    optional={
        "anonymousId": plain, "name": plain, "traits": good_props, "timestamp": good_ts, "sentAt": good_ts,
        "receivedAt": good_ts, "originalTimestamp": good_ts, "channel": plain,
        "context": st.fixed_dictionaries({}, optional={
            "library": st.fixed_dictionaries({"name": st.sampled_from(["analytics.js", "analytics-ios", "analytics-python"])}),
            "channel": plain, "page": good_props}),
    })

COLS = ["message_id", "type", "event", "schema_version", "channel", "source", "anonymous_id", "user_id", "group_id",
        "previous_id", "event_time", "original_time", "sent_at", "received_at", "day", "order_id", "store_id",
        "currency", "subject"]


def _rows(ws):
    t = ws.log.events(limit=None).sort_by("message_id")
    out = []
    for r in t.to_pylist():
        row = {c: r[c] for c in COLS}
        row["amount"] = None if r["amount"] is None else round(r["amount"], 6)
        for c in ("properties", "traits", "context"):
            row[c] = json.loads(r[c]) if r[c] else None
        row["pii"] = ws.vault.open(r["subject"], r["message_id"], r["pii"])
        out.append(row)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.lists(st.one_of(good, good, good, events), min_size=1, max_size=25))
def test_engine_rows_equal_parser_rows(tmp_path_factory, monkeypatch, evs):
    monkeypatch.setattr(bulk, "now_us", lambda: NOW)
    d = tmp_path_factory.mktemp("fp")
    f = d / "e.jsonl"
    f.write_bytes(b"\n".join(msgspec.json.encode(e) for e in evs) + b"\n{broken\n")
    note(f.read_text())
    with plait.connect(d / "engine") as a, plait.connect(d / "python") as b:
        ra = a.importer.jsonl(f)
        rb = b.importer.jsonl(f, engine=False)
        assert (ra.inserted, ra.rejected, ra.duplicates) == (rb.inserted, rb.rejected, rb.duplicates)
        rows_a, rows_b = _rows(a), _rows(b)
        assert [r["message_id"] for r in rows_a] == [r["message_id"] for r in rows_b]
        for x, y in zip(rows_a, rows_b):
            diff = {k: (x[k], y[k]) for k in x if x[k] != y[k]}
            assert not diff, f"engine vs parser differ for {x['message_id']}: {diff}"
        dead = lambda ws: sorted((r["position"], r["field"], r["reason"]) for r in ws.log.rejected(1000))  # noqa: E731
        assert dead(a) == dead(b)


def test_plain_events_take_the_engine_path(ws, tmp_path):
    f = tmp_path / "e.jsonl"
    with f.open("w") as out:
        for i in range(3000):
            out.write(json.dumps({"type": "track", "event": "Order Completed", "userId": f"u{i}", "messageId": f"m{i}",
                                  "timestamp": "2025-03-01T10:00:00Z", "context": {"library": {"name": "analytics.js"}},
                                  "properties": {"order_id": f"o{i}", "products": [{"price": 2.5, "quantity": 2}]}}) + "\n")
        out.write(json.dumps({"type": "identify", "userId": "u1", "messageId": "id1", "traits": {"email": "a@b.c"}}) + "\n")
    r = ws.importer.jsonl(f)
    assert r.engine_rows == 3000 and r.inserted == 3001
    row = ws.log.events(event="Order Completed", limit=1).to_pylist()[0]
    assert (row["amount"], row["currency"], row["channel"], row["schema_version"]) == (5.0, "USD", "web", "1-0-0")
    ident = ws.log.events(type="identify", limit=1).to_pylist()[0]
    assert b"a@b.c" not in ident["pii"]  # personal fields went through the parser and were sealed


def test_crlf_files_use_the_parser(ws, tmp_path):
    f = tmp_path / "e.jsonl"
    f.write_bytes(b'{"type":"track","event":"x","userId":"u","messageId":"1"}\r\n\r\n{"type":"track"}\r\n')
    r = ws.importer.jsonl(f)
    assert (r.inserted, r.rejected, r.engine_rows) == (1, 1, 0)
    assert ws.log.rejected()[0]["position"] == 3


def test_blank_and_padded_lines_agree_with_the_parser(tmp_path):
    f = tmp_path / "e.jsonl"
    ev = json.dumps({"type": "track", "event": "x", "userId": "u", "messageId": "m1"})
    ev2 = json.dumps({"type": "track", "event": "x", "userId": "u", "messageId": "m2"})
    f.write_bytes(b"\t\n   \n \x0b\x0c \n" + ev.encode() + b"\n  " + ev2.encode() + b" \t\n\n\x01\n")
    with plait.connect(tmp_path / "engine") as a, plait.connect(tmp_path / "python") as b:
        ra, rb = a.importer.jsonl(f), b.importer.jsonl(f, engine=False)
        # whitespace-only lines are skipped by both paths; the control character is one rejected line
        assert (ra.rows, ra.inserted, ra.rejected) == (rb.rows, rb.inserted, rb.rejected) == (3, 2, 1)
        assert [r["position"] for r in a.log.rejected()] == [r["position"] for r in b.log.rejected()] == [7]


def test_lenient_json_is_left_to_the_parser(tmp_path):
    """DuckDB reads trailing commas and NaN/Infinity that the parser rejects as malformed: such
    lines must be rejected exactly as the parser rejects them, and nothing else lost with them."""
    base = '{"type":"track","event":"Product Viewed","userId":"u","messageId":"%s","properties":%s}'
    lines = [base % ("m1", '{"product_id":"p1",}'), base % ("m2", '{"product_id":"p1","price":NaN}'),
             base % ("m3", '{"product_id":"p1","price":-Infinity}'), base % ("m4", '{"product_id":"p1","tags":[1,2 ,]}'),
             base % ("m5", '{"product_id":"banana","info":1}'), base % ("m6", '{"product_id":"p6","price":1.5}')]
    f = tmp_path / "e.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with plait.connect(tmp_path / "engine") as a, plait.connect(tmp_path / "python") as b:
        ra, rb = a.importer.jsonl(f), b.importer.jsonl(f, engine=False)
        assert (ra.inserted, ra.rejected) == (rb.inserted, rb.rejected) == (2, 4)
        assert ra.engine_rows == 1                       # m6; m5 mentions "nan"/"inf", so the parser took it
        dead = lambda ws: sorted((r["position"], r["reason"]) for r in ws.log.rejected())  # noqa: E731
        assert dead(a) == dead(b) and [p for p, _ in dead(a)] == [1, 2, 3, 4]


def test_numbers_beyond_a_double_are_left_to_the_parser(tmp_path, monkeypatch):
    """DuckDB keeps a number beyond ±1.8e308 as the text it was sent in (it writes numbers in range
    in its own shortest form); the parser rejects the event. Every form of such a number in an
    object the parser reads (properties, traits, context, integrations) goes to the parser, which
    rejects it as it does over HTTP; unknown top-level fields, which the parser skips unread, and
    numbers plainly in range keep the engine path."""
    monkeypatch.setattr(bulk, "now_us", lambda: NOW)
    base = '{"type":"track","event":"Product Viewed","userId":"u","messageId":"%s",%s}'
    huge = ['"properties":{"product_id":"p","price":1e309}', '"properties":{"product_id":"p","x":[-1.5E+400]}',
            '"traits":{"x":{"y":1e0309}}', '"context":{"x":' + "9" * 320 + '.5}',
            '"integrations":{"x":1' + "0" * 300 + 'e10}']
    in_range = ['"properties":{"product_id":"p","price":9.99e99}', '"properties":{"product_id":"p","x":1e-300}',
                '"properties":{"product_id":"p","x":2e-400}', '"properties":{"product_id":"p"},"extra":1e999']
    # In range, but with a three-digit exponent as the engine writes them: the parser takes them.
    near = ['"properties":{"product_id":"p","price":1.5e308}', '"properties":{"product_id":"p","x":12e99}',
            '"properties":{"product_id":"p","x":' + "1" * 120 + 'e99}']
    lines = [base % (f"m{i}", x) for i, x in enumerate(huge + in_range + near)]
    f = tmp_path / "e.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with plait.connect(tmp_path / "engine") as a, plait.connect(tmp_path / "python") as b:
        ra, rb = a.importer.jsonl(f), b.importer.jsonl(f, engine=False)
        assert (ra.inserted, ra.rejected) == (rb.inserted, rb.rejected) == (7, 5)
        assert ra.engine_rows == 4
        dead = lambda ws: sorted((r["position"], r["reason"]) for r in ws.log.rejected())  # noqa: E731
        assert dead(a) == dead(b) and [p for p, _ in dead(a)] == [1, 2, 3, 4, 5]
        assert _rows(a) == _rows(b)


def test_personal_keys_behind_escapes_are_sealed(tmp_path, monkeypatch):
    """A personal key written with escapes (``em\\u0061il``) is still a personal key: the engine's
    screen for personal keys reads the objects as it writes them, keys unescaped."""
    monkeypatch.setattr(bulk, "now_us", lambda: NOW)
    base = '{"type":"track","event":"Product Viewed","userId":"u","messageId":"%s",%s}'
    lines = [base % ("m1", '"properties":{"em\\u0061il":"a@b.c","product_id":"p"}'),
             base % ("m2", '"context":{"traits":{"ph\\u006fne":"+15550100"}}'),
             base % ("m3", '"traits":{"email":null}'),
             base % ("m4", '"properties":{"note":"email\\":","product_id":"p"}'),
             base % ("m5", '"properties":{"product_id":"p"}')]
    f = tmp_path / "e.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with plait.connect(tmp_path / "engine") as a, plait.connect(tmp_path / "python") as b:
        ra, rb = a.importer.jsonl(f), b.importer.jsonl(f, engine=False)
        assert ra.inserted == rb.inserted == 5
        assert ra.engine_rows == 2                       # m4 and m5; m1-m3 hold personal keys
        assert _rows(a) == _rows(b)
        row = a.log.events(limit=None).sort_by("message_id").to_pylist()[0]
        assert "a@b.c" not in (row["properties"] or "") and a.vault.open(row["subject"], "m1", row["pii"])


def test_lines_read_in_pieces_are_each_line_once(ws):
    """A chunk's lines are read as ranges side by side (one table scan stays on one thread below
    two row groups); together the ranges hold each line of the chunk once, with its number."""
    from plait.collect.fastjsonl import numbered

    b = ws.backend
    b.execute("CREATE OR REPLACE TEMP TABLE __t_lines AS SELECT 'line ' || i AS line FROM range(1000) r(i)")
    whole = b.rows(f"SELECT __row, line FROM {numbered('__t_lines', 100, 997)} ORDER BY 1")
    assert len(whole) == 897 and whole[0] == {"__row": 101, "line": "line 100"} and whole[-1]["__row"] == 997
    for pieces in (2, 3, 7, 1000):
        with b.unordered():
            got = b.rows(f"SELECT __row, line FROM {numbered('__t_lines', 100, 997, pieces)} ORDER BY 1")
        assert got == whole
    assert b.scalar("SELECT current_setting('preserve_insertion_order')") is True   # restored after
