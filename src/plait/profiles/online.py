"""The online profile store: each customer as one nested dict, read in microseconds.

Real-time decisions never query the analytical engine (every DuckDB query costs ~0.3 ms);
they read this store. A snapshot holds what conditions test and offers need:

``{"profile_id", "features": {...}, "traits": {name: {"value", "confidence"}}, "clv": {...},
"scores": {model: p}, "segment": n, "consent": {"marketing": True, "marketing:email": False, ...}}``

:meth:`OnlineStore.load` builds every snapshot from the workspace's tables (profiles, analytics
results, consent) in a handful of queries; :meth:`OnlineStore.lookup` finds a customer by any
identifier (``email:ann@example.com``, ``user_id:u1``) or profile id; :meth:`OnlineStore.update`
changes one field as events arrive (a consent change, a complaint). ``MemoryStore`` is the
in-process default; :class:`RedisStore` implements the same methods for a server deployment
whose processes share one store.

>>> s = MemoryStore()
>>> s.put({"profile_id": "p1", "features": {"orders": 3}}, identifiers=["user_id:u1"])
>>> s.lookup("user_id:u1")["features"]["orders"]
3
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from plait.errors import ConfigError, EngineError
from plait.identity.tables import CURRENT

if TYPE_CHECKING:
    from plait.workspace import Workspace

CONSENT_CHANNELS = ("email", "sms", "push", "web", "app", "store", "call_center", "social")


class MemoryStore:
    """Snapshots in a dict, identifiers in another; safe to read from many threads."""

    def __init__(self) -> None:
        self.profiles: dict[str, dict[str, Any]] = {}
        self.ids: dict[str, str] = {}
        self._subjects: dict[str, list[str]] = {}

    def put(self, snapshot: dict[str, Any], identifiers: Iterable[str] = ()) -> None:
        pid = snapshot["profile_id"]
        self.profiles[pid] = snapshot
        for i in identifiers:
            self.ids[i] = pid
            self._subjects.setdefault(pid, []).append(i)

    def subjects(self, profile_id: str) -> list[str]:
        """The customer's identifiers (``type:value``), as loaded."""
        return self._subjects.get(profile_id, [])

    def lookup(self, ref: str) -> dict[str, Any] | None:
        """The snapshot for a profile id or an identifier ``type:value``; None if unknown."""
        p = self.profiles.get(ref)
        if p is None:
            pid = self.ids.get(ref)
            if pid is None and ref.startswith("email:"):
                pid = self.ids.get(ref.strip().lower())
            p = self.profiles.get(pid) if pid else None
        return p

    def update(self, profile_id: str, path: str, value: Any) -> None:
        """Set one dotted field of a snapshot (``consent.marketing:email``, ``features.complaints``)."""
        node = self.profiles.setdefault(profile_id, {"profile_id": profile_id})
        *parents, leaf = path.split(".", 1) if path.startswith("consent.") else path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    def items(self) -> Iterable[tuple[str, dict[str, Any]]]:
        return self.profiles.items()

    def __len__(self) -> int:
        return len(self.profiles)


class RedisStore:
    """The same store in Redis, shared by every process of a server deployment
    (``pip install "plait[redis]"``): a snapshot per customer (msgpack), one key per identifier,
    the identifiers of each customer, under ``prefix``. A lookup costs network round trips
    (one or two GETs) instead of a dict read."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "plait:") -> None:
        import msgspec

        from plait.errors import require

        redis = require("redis", "redis")
        self.r = redis.Redis.from_url(url)
        self.prefix = prefix
        self._enc, self._dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()
        self._errors = redis.exceptions.RedisError
        try:
            self.r.ping()
        except self._errors as e:
            kw = self.r.connection_pool.connection_kwargs          # (the URL may hold a password)
            where = f"redis at {kw.get('host', kw.get('path'))}:{kw.get('port', '')}/{kw.get('db', 0)}"
            raise ConfigError(f"the online profile store ({where}) cannot be reached: {e}",
                              hint="start Redis there, or set decide.online_store to \"memory\" in settings.json") from None

    def put(self, snapshot: dict[str, Any], identifiers: Iterable[str] = ()) -> None:
        pid = snapshot["profile_id"]
        pipe = self.r.pipeline(transaction=False)
        pipe.set(f"{self.prefix}p:{pid}", self._enc.encode(snapshot))
        ids = list(identifiers)
        for i in ids:
            pipe.set(f"{self.prefix}i:{i}", pid)
        if ids:
            pipe.rpush(f"{self.prefix}s:{pid}", *ids)
        pipe.sadd(f"{self.prefix}all", pid)
        pipe.execute()

    def lookup(self, ref: str) -> dict[str, Any] | None:
        try:
            return self._lookup(ref)
        except self._errors as e:
            raise EngineError(f"the online profile store failed: {e}") from None

    def _lookup(self, ref: str) -> dict[str, Any] | None:
        raw = self.r.get(f"{self.prefix}p:{ref}")
        if raw is None:
            pid = self.r.get(f"{self.prefix}i:{ref}")
            if pid is None and ref.startswith("email:"):
                pid = self.r.get(f"{self.prefix}i:{ref.strip().lower()}")
            raw = self.r.get(f"{self.prefix}p:{pid.decode()}") if pid is not None else None
        return None if raw is None else self._dec.decode(raw)

    def update(self, profile_id: str, path: str, value: Any) -> None:
        """Set one dotted field (read, change, write: the last writer wins)."""
        snap = self.lookup(profile_id) or {"profile_id": profile_id}
        node = snap
        *parents, leaf = path.split(".", 1) if path.startswith("consent.") else path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        self.r.set(f"{self.prefix}p:{profile_id}", self._enc.encode(snap))

    def subjects(self, profile_id: str) -> list[str]:
        return [x.decode() for x in self.r.lrange(f"{self.prefix}s:{profile_id}", 0, -1)]

    def items(self) -> Iterable[tuple[str, dict[str, Any]]]:
        for pid in self.r.sscan_iter(f"{self.prefix}all", count=1000):
            snap = self.lookup(pid.decode())
            if snap is not None:
                yield pid.decode(), snap

    def clear(self) -> None:
        """Remove every key under the prefix (before a full reload)."""
        for k in self.r.scan_iter(f"{self.prefix}*", count=1000):
            self.r.delete(k)

    def __len__(self) -> int:
        return int(self.r.scard(f"{self.prefix}all"))


def _jsonish(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in ('"', "[", "{") or v in ("true", "false", "null"):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def load(ws: "Workspace", store: Any = None) -> Any:
    """Every current customer's snapshot from the workspace's tables into ``store``."""
    from plait.errors import IdentityError

    b = ws.backend
    if not b.has_table("profile_features"):
        raise IdentityError("profiles have not been built", hint="run `plait resolve` first")
    store = store if store is not None else MemoryStore()
    snaps: dict[str, dict[str, Any]] = {}

    def snap(pid: str) -> dict[str, Any]:
        s = snaps.get(pid)
        if s is None:
            s = snaps[pid] = {"profile_id": pid, "features": {}, "traits": {}, "clv": {}, "scores": {},
                              "segment": None, "consent": {}}
        return s

    for table, key in (("profile_features", "features"), ("analytics_features", "features"), ("analytics_clv", "clv")):
        if not b.has_table(table):
            continue
        t = b.query(f"SELECT * FROM {table}").to_pylist()
        for row in t:
            pid = row.pop("profile_id")
            row.pop("version", None)
            snap(pid)[key].update({k: v for k, v in row.items() if v is not None})
    for r in b.query("SELECT profile_id, trait, CAST(value AS VARCHAR) AS value, confidence FROM profile_traits").to_pylist():
        snap(r["profile_id"])["traits"][r["trait"]] = {"value": _jsonish(r["value"]), "confidence": r["confidence"]}
    if b.has_table("inferred_traits"):
        allowed = ws.consent.allowed_profiles_sql("analytics")
        for r in b.query(f"""SELECT profile_id, trait, value FROM inferred_traits
                             WHERE profile_id IN (SELECT profile_id FROM ({allowed}) WHERE allowed)""").to_pylist():
            snap(r["profile_id"])["traits"].setdefault(r["trait"], {"value": r["value"], "confidence": "inferred"})
    if b.has_table("analytics_discount"):       # how much of what they buy is on promotion
        for r in b.query("SELECT profile_id, promo_share, level FROM analytics_discount").to_pylist():
            snap(r["profile_id"])["features"].update(promo_share=r["promo_share"], discount_level=r["level"])
    if b.has_table("analytics_scores"):
        for r in b.query("SELECT profile_id, model, max(score) AS score FROM analytics_scores GROUP BY ALL").to_pylist():
            snap(r["profile_id"])["scores"][r["model"]] = r["score"]
    if b.has_table("analytics_segments"):
        for r in b.query("SELECT profile_id, segment FROM analytics_segments").to_pylist():
            snap(r["profile_id"])["segment"] = r["segment"]
    # When each customer last complained (contact policies suppress marketing after one).
    for r in b.query(f"""SELECT s.profile_id, max(e.event_time) AS t FROM events_base e
                         JOIN identity_subjects s ON s.version = {CURRENT} AND s.subject = e.subject
                         WHERE e.event = 'Complaint Filed' GROUP BY 1""").to_pylist():
        snap(r["profile_id"])["features"]["last_complaint_at"] = r["t"].timestamp()
    _load_consent(ws, snap)
    ids: dict[str, list[str]] = {}
    # Every identifier (user and anonymous ids first: decisions are logged under one of them).
    for r in b.query(f"""SELECT identifier, profile_id FROM identity_map WHERE version = {CURRENT}
                         ORDER BY identifier_type NOT IN ('user_id', 'anonymous_id'), identifier_type = 'anonymous_id',
                                  first_seen, identifier""").to_pylist():
        ids.setdefault(r["profile_id"], []).append(r["identifier"])
    for pid, s in snaps.items():
        store.put(s, ids.get(pid, ()))
    return store


def _load_consent(ws: "Workspace", snap: Any) -> None:
    """Each configured purpose, and marketing per channel, as booleans."""
    b = ws.backend
    for purpose in ws.settings.privacy.defaults:
        for ch in (None, *(CONSENT_CHANNELS if purpose == "marketing" else ())):
            key = purpose if ch is None else f"{purpose}:{ch}"
            for r in b.query(ws.consent.allowed_profiles_sql(purpose, ch)).to_pylist():
                snap(r["profile_id"])["consent"][key] = bool(r["allowed"])


def consent_allows(profile: Mapping[str, Any], purpose: str, channel: str | None, default: bool = False) -> bool:
    """The snapshot's consent for ``purpose`` on ``channel`` (the channel's own choice first)."""
    c = profile.get("consent") or {}
    if channel is not None and f"{purpose}:{channel}" in c:
        return bool(c[f"{purpose}:{channel}"])
    return bool(c.get(purpose, default))


__all__ = ["CONSENT_CHANNELS", "MemoryStore", "RedisStore", "consent_allows", "load"]
