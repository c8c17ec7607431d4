"""The identity view's tables: versions, the identifier→profile map, links, conflicts, splits.

Every resolution writes a new ``version``; the map and links of the newest version are
what the rest of Plait reads (``identity_current`` view). A link row explains one merge:
the two identifiers, the event time it happened, the event or match behind it, and for
a match its probability and evidence. Splits are people's corrections, kept forever.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa

if TYPE_CHECKING:
    from plait.engine.backend import Backend
    from plait.identity.graph import Stitcher

DDL = """
CREATE TABLE IF NOT EXISTS identity_versions (
  version INTEGER PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL, report VARCHAR, model VARCHAR, done BOOLEAN
);
CREATE TABLE IF NOT EXISTS identity_map (
  version INTEGER NOT NULL, seq BIGINT NOT NULL, identifier VARCHAR NOT NULL, identifier_type VARCHAR NOT NULL,
  identifier_value VARCHAR NOT NULL, profile_id VARCHAR NOT NULL, first_seen TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS identity_links (
  version INTEGER NOT NULL, seq BIGINT NOT NULL, a VARCHAR NOT NULL, b VARCHAR NOT NULL, event_time TIMESTAMPTZ,
  message_id VARCHAR, kind VARCHAR NOT NULL, reason VARCHAR, probability DOUBLE, evidence VARCHAR
);
CREATE TABLE IF NOT EXISTS identity_conflicts (
  version INTEGER NOT NULL, a VARCHAR NOT NULL, b VARCHAR NOT NULL, event_time TIMESTAMPTZ, message_id VARCHAR, reason VARCHAR
);
CREATE TABLE IF NOT EXISTS identity_subjects (version INTEGER NOT NULL, subject VARCHAR NOT NULL, profile_id VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS identity_supernodes (version INTEGER NOT NULL, identifier VARCHAR NOT NULL, reason VARCHAR);
CREATE TABLE IF NOT EXISTS identity_splits (
  split_id INTEGER PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL, profile_id VARCHAR, side_a VARCHAR NOT NULL,
  side_b VARCHAR NOT NULL, reason VARCHAR
);
CREATE TABLE IF NOT EXISTS trait_observations (
  version INTEGER NOT NULL, identifier VARCHAR NOT NULL, trait VARCHAR NOT NULL, value VARCHAR, source VARCHAR,
  observed_at TIMESTAMPTZ, confidence VARCHAR, message_id VARCHAR
);
"""

CURRENT = "(SELECT max(version) FROM identity_versions WHERE done)"


def create(b: "Backend") -> None:
    b.execute(DDL)


def current_version(b: "Backend") -> int | None:
    create(b)
    return b.scalar(f"SELECT {CURRENT}")


def separations(b: "Backend") -> list[tuple[int, list[str], list[str]]]:
    rows = b.rows("SELECT split_id, side_a, side_b FROM identity_splits ORDER BY split_id")
    return [(r["split_id"], json.loads(r["side_a"]), json.loads(r["side_b"])) for r in rows]


def _ts(values: list[int | None]) -> pa.Array:
    return pa.array(values, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def write(b: "Backend", st: "Stitcher", supernodes: dict[str, str], traits: list[tuple], keep: int,
          subjects: dict[str, int], *,
          model: dict[str, Any] | None, events: int) -> int:
    """Write a new version (not yet visible: :func:`finish` publishes it)."""
    version = int(b.scalar("SELECT coalesce(max(version), 0) + 1 FROM identity_versions"))
    b.execute("INSERT INTO identity_versions VALUES (?, now(), NULL, ?, false)",
              [version, None if model is None else json.dumps(model)])
    keys, profiles = st.assignments()
    n = len(keys)
    b.temp_table("identity_map_new", pa.table({
        "seq": pa.array(range(n), pa.int64()), "identifier": pa.array(keys, pa.string()),
        "profile_id": pa.array(profiles, pa.string()), "first_seen": _ts(st.first_seen)}))
    b.execute(f"""INSERT INTO identity_map SELECT {version}, seq, identifier, split_part(identifier, ':', 1),
                  substr(identifier, strpos(identifier, ':') + 1), profile_id, first_seen FROM identity_map_new""")
    b.execute("DROP TABLE identity_map_new")
    b.append("identity_subjects", pa.table({
        "version": pa.array([version] * len(subjects), pa.int32()), "subject": pa.array(list(subjects), pa.string()),
        "profile_id": pa.array([profiles[i] for i in subjects.values()], pa.string())}))
    m = st.merges
    b.append("identity_links", pa.table({
        "version": pa.array([version] * len(m), pa.int32()), "seq": pa.array(range(len(m)), pa.int64()),
        "a": pa.array([x.a for x in m], pa.string()), "b": pa.array([x.b for x in m], pa.string()),
        "event_time": _ts([x.at for x in m]), "message_id": pa.array([x.message_id for x in m], pa.string()),
        "kind": pa.array([x.kind for x in m], pa.string()), "reason": pa.array([x.reason for x in m], pa.string()),
        "probability": pa.array([x.probability for x in m], pa.float64()),
        "evidence": pa.array([None if x.evidence is None else json.dumps(x.evidence) for x in m], pa.string()),
    }))
    c = st.conflicts
    b.append("identity_conflicts", pa.table({
        "version": pa.array([version] * len(c), pa.int32()), "a": pa.array([x.a for x in c], pa.string()),
        "b": pa.array([x.b for x in c], pa.string()), "event_time": _ts([x.at for x in c]),
        "message_id": pa.array([x.message_id for x in c], pa.string()), "reason": pa.array([x.reason for x in c], pa.string()),
    }))
    b.append("identity_supernodes", pa.table({
        "version": pa.array([version] * len(supernodes), pa.int32()), "identifier": pa.array(list(supernodes), pa.string()),
        "reason": pa.array(list(supernodes.values()), pa.string())}))
    cols = list(zip(*traits)) if traits else [[]] * 7
    b.append("trait_observations", pa.table({
        "version": pa.array([version] * len(traits), pa.int32()), "identifier": pa.array(cols[0], pa.string()),
        "trait": pa.array(cols[1], pa.string()), "value": pa.array(cols[2], pa.string()),
        "source": pa.array(cols[3], pa.string()), "observed_at": _ts(list(cols[4])), "confidence": pa.array(cols[5], pa.string()),
        "message_id": pa.array(cols[6], pa.string()),
    }))
    old = version - keep
    if old > 0:
        for t in ("identity_map", "identity_subjects", "identity_links", "identity_conflicts", "identity_supernodes", "trait_observations"):
            b.execute(f"DELETE FROM {t} WHERE version <= ?", [old])
    return version


def finish(b: "Backend", version: int, report: dict[str, Any]) -> None:
    b.execute("UPDATE identity_versions SET report = ?, done = true WHERE version = ?",
              [msgspec.json.encode(report).decode(), version])


__all__ = ["CURRENT", "DDL", "create", "current_version", "finish", "separations", "write"]
