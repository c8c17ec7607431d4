"""The log's tables and the Arrow layout that feeds them.

``events`` is append-only: rows are added, never updated (returns and
cancellations are new facts). It is a view over the table ``event_rows`` and the
Parquet part files that large bulk appends write (see :mod:`.parts`). Hot fields (ids, times, channel, amounts) are typed
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
from msgspec.structs import astuple

from plait.events.contract import Record
from plait.log.vault import read_plain

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
# Columns of few distinct values, dictionary-encoded in part files (the rest are written plain:
# a dictionary tried on every column made pyarrow's writer 1.5x slower, session 22). Amounts
# repeat (prices): plain, a sum over a 2 M-row part read 3x slower than with a dictionary.
DICTIONARY_COLUMNS = ("type", "event", "schema_version", "channel", "source", "store_id", "currency", "day",
                      "received_at", "amount")
# Columns whose row groups in part files carry min/max statistics, for the engine to skip row
# groups by time, day, event or channel (on random ids and JSON text they would skip nothing).
# message_id's too: an import's own ids (file hash + row) lie in ranges, and looking one up then
# reads one row group instead of all of them (3 against 38 ms on a 2 M-row part).
STATISTICS_COLUMNS = (*DICTIONARY_COLUMNS, "event_time", "original_time", "sent_at", "message_id")

DDL = """
CREATE TABLE IF NOT EXISTS event_rows (
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
CREATE SEQUENCE IF NOT EXISTS event_parts_seq;
CREATE TABLE IF NOT EXISTS event_parts (
    seq        BIGINT DEFAULT nextval('event_parts_seq'),
    name       VARCHAR PRIMARY KEY,
    rows       BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
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
_JSON_FIELDS = ("properties", "traits", "context")


def records_to_arrow(records: Sequence[Record], pii_blobs: Sequence[bytes | None]) -> pa.Table:
    """Columns of the ``events`` table from normalised records and their sealed PII."""
    # Records to tuples and tuples to columns in C; Python touches only the JSON fields.
    by_field = dict(zip(Record.__struct_fields__, zip(*map(astuple, records)))) if records else \
        dict.fromkeys(Record.__struct_fields__, ())
    arrays = []
    for f in EVENT_SCHEMA:
        name = f.name
        if name == "day":
            arrays.append(pa.array([t // DAY_US for t in by_field["event_time"]], pa.int32()).cast(pa.date32()))
        elif name == "pii":
            arrays.append(pa.array(pii_blobs, pa.binary()))
        elif name in _JSON_FIELDS:
            arrays.append(pa.array([None if v is None else _json.encode(v) for v in by_field[name]], pa.string()))
        elif f.type == TS:
            arrays.append(pa.array(by_field[name], pa.int64()).cast(TS))
        else:
            arrays.append(pa.array(by_field[name], f.type))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


_TIME_FIELDS = ("event_time", "original_time", "sent_at", "received_at")
_jdec = msgspec.json.Decoder()


def field_values(table: pa.Table, name: str) -> list:
    """One :class:`Record` field of every row of a table in the log's layout whose ``pii`` is still
    plain (the journal's form, :func:`plait.log.vault.plain`): times in µs, JSON parts and
    personal fields as dicts."""
    col = table.column(name)
    values = (col.cast(pa.int64()) if name in _TIME_FIELDS else col).to_pylist()
    if name in _JSON_FIELDS:
        return [None if v is None else _jdec.decode(v) for v in values]
    if name == "pii":
        return [read_plain(v) for v in values]
    return values


def records_from_arrow(table: pa.Table) -> list[Record]:
    """The records behind such rows; the inverse of :func:`records_to_arrow`."""
    return [Record(*row) for row in zip(*(field_values(table, name) for name in Record.__struct_fields__))]
