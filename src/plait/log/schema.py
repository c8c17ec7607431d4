"""The log's tables and the Arrow layout that feeds them.

``events`` is append-only: rows are inserted, never updated (returns and
cancellations are new facts). Hot fields (ids, times, channel, amounts) are typed
columns so analyses never parse JSON for them; the rest is JSON. Personal fields
live only in ``pii``, encrypted with the key of ``subject`` (see :mod:`.vault`).

``properties``, ``traits`` and ``context`` hold JSON text in VARCHAR columns: every
writer emits valid JSON, DuckDB's JSON type would validate it again on each insert
(18 % of an append, measured) and the ``json_*`` functions read VARCHAR alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pyarrow as pa

from plait.events.contract import Record

DAY_US = 86_400_000_000
TS = pa.timestamp("us", tz="UTC")

EVENT_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("type", pa.string()),
        ("event", pa.string()),
        ("schema_version", pa.string()),
        ("channel", pa.string()),
        ("source", pa.string()),
        ("anonymous_id", pa.string()),
        ("user_id", pa.string()),
        ("group_id", pa.string()),
        ("previous_id", pa.string()),
        ("event_time", TS),
        ("original_time", TS),
        ("sent_at", TS),
        ("received_at", TS),
        ("day", pa.date32()),
        ("order_id", pa.string()),
        ("store_id", pa.string()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("properties", pa.string()),
        ("traits", pa.string()),
        ("context", pa.string()),
        ("subject", pa.string()),
        ("pii", pa.binary()),
    ]
)
EVENT_COLUMNS = tuple(EVENT_SCHEMA.names)

DDL = """
CREATE TABLE IF NOT EXISTS events (
    message_id     VARCHAR NOT NULL,
    type           VARCHAR NOT NULL,
    event          VARCHAR,
    schema_version VARCHAR,
    channel        VARCHAR NOT NULL,
    source         VARCHAR NOT NULL,
    anonymous_id   VARCHAR,
    user_id        VARCHAR,
    group_id       VARCHAR,
    previous_id    VARCHAR,
    event_time     TIMESTAMPTZ NOT NULL,
    original_time  TIMESTAMPTZ,
    sent_at        TIMESTAMPTZ,
    received_at    TIMESTAMPTZ NOT NULL,
    day            DATE NOT NULL,
    order_id       VARCHAR,
    store_id       VARCHAR,
    amount         DOUBLE,
    currency       VARCHAR,
    properties     VARCHAR,
    traits         VARCHAR,
    context        VARCHAR,
    subject        VARCHAR NOT NULL,
    pii            BLOB
);
CREATE SEQUENCE IF NOT EXISTS rejected_seq;
CREATE TABLE IF NOT EXISTS rejected (
    id          BIGINT DEFAULT nextval('rejected_seq'),
    received_at TIMESTAMPTZ NOT NULL,
    source      VARCHAR,
    origin      VARCHAR,
    position    BIGINT,
    field       VARCHAR,
    reason      VARCHAR NOT NULL,
    payload     VARCHAR
);
CREATE TABLE IF NOT EXISTS fx_rates (
    day      DATE NOT NULL,
    currency VARCHAR NOT NULL,
    rate     DOUBLE NOT NULL,
    PRIMARY KEY (day, currency)
);
CREATE TABLE IF NOT EXISTS imports (
    fingerprint VARCHAR PRIMARY KEY,
    path        VARCHAR,
    kind        VARCHAR,
    rows_done   BIGINT,
    completed   BOOLEAN,
    updated_at  TIMESTAMPTZ
);
"""

_json = msgspec.json.Encoder()


def _dump(obj: object) -> str | None:
    return None if obj is None else _json.encode(obj).decode()


def records_to_arrow(records: Sequence[Record], pii_blobs: Sequence[bytes | None]) -> pa.Table:
    """Columns of the ``events`` table from normalised records and their sealed PII."""
    cols = {
        "message_id": [r.message_id for r in records],
        "type": [r.type for r in records],
        "event": [r.event for r in records],
        "schema_version": [r.schema_version for r in records],
        "channel": [r.channel for r in records],
        "source": [r.source for r in records],
        "anonymous_id": [r.anonymous_id for r in records],
        "user_id": [r.user_id for r in records],
        "group_id": [r.group_id for r in records],
        "previous_id": [r.previous_id for r in records],
        "event_time": [r.event_time for r in records],
        "original_time": [r.original_time for r in records],
        "sent_at": [r.sent_at for r in records],
        "received_at": [r.received_at for r in records],
        "day": [r.event_time // DAY_US for r in records],
        "order_id": [r.order_id for r in records],
        "store_id": [r.store_id for r in records],
        "amount": [r.amount for r in records],
        "currency": [r.currency for r in records],
        "properties": [_dump(r.properties) for r in records],
        "traits": [_dump(r.traits) for r in records],
        "context": [_dump(r.context) for r in records],
        "subject": [r.subject for r in records],
        "pii": list(pii_blobs),
    }
    arrays = []
    for f in EVENT_SCHEMA:
        values = cols[f.name]
        if f.type == pa.date32():
            arrays.append(pa.array(values, pa.int32()).cast(pa.date32()))
        elif f.type == TS:
            arrays.append(pa.array(values, pa.int64()).cast(TS))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


_RECORD_FIELDS = tuple(f for f in Record.__struct_fields__ if f != "pii")
_JSON_FIELDS = ("properties", "traits", "context")
_TIME_FIELDS = ("event_time", "original_time", "sent_at", "received_at")
_jdec = msgspec.json.Decoder()


def records_from_arrow(table: pa.Table) -> list[Record]:
    """The records behind rows in the log's layout whose ``pii`` is still plain (the journal's
    form, :func:`plait.log.vault.plain`); the inverse of :func:`records_to_arrow`."""
    cols: dict[str, list] = {}
    for name in _RECORD_FIELDS:
        col = table.column(name)
        if name in _TIME_FIELDS:
            col = col.cast(pa.int64())
        values = col.to_pylist()
        if name in _JSON_FIELDS:
            values = [None if v is None else _jdec.decode(v) for v in values]
        cols[name] = values
    pii = [None if b is None else _jdec.decode(b[1:]) for b in table.column("pii").to_pylist()]
    return [Record(**dict(zip(_RECORD_FIELDS, row)), pii=p) for row, p in zip(zip(*cols.values()), pii)]
