"""The identity view of a workspace: who is behind an identifier, why, and since when.

:class:`Identity` (``ws.identity``) answers from the newest resolved version and, once
:meth:`Identity.follow` is on (the server turns it on), from the real-time stitcher that
assigns each collected event as it is appended — the same guarded union-find the batch
uses, restored from the newest version's links.

>>> import tempfile, plait
>>> ws = plait.connect(tempfile.mkdtemp())
>>> call = {"type": "identify", "userId": "u1", "anonymousId": "c1", "traits": {"email": "Ann@Example.co"}}
>>> _ = ws.log.append([ws.parser.parse(call, received_at=0, source="docs")])
>>> report = ws.identity.resolve()
>>> ws.identity.profile_of("email:ann@example.co") == ws.identity.profile_of("anonymous_id:c1")
True
>>> ws.close()
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from plait.errors import IdentityError
from plait.identity import tables
from plait.identity.graph import Stitcher, SuperNodes, profile_id
from plait.identity.identifiers import Registry
from plait.identity.resolver import ResolveReport, inputs, resolve

if TYPE_CHECKING:
    from plait.log.store import Appended
    from plait.workspace import Workspace

_CUR = tables.CURRENT


class Identity:
    """Lookups, explanations, splits and real-time assignment over the identity view."""

    def __init__(self, ws: "Workspace") -> None:
        self.ws = ws
        s = ws.settings.identity
        self.registry = Registry(s, salt=ws.vault.secret("identifier-salt") if s.hash_values else None)
        self._live: Stitcher | None = None
        self._hubs: SuperNodes | None = None
        self._live_keys: dict[str, str] = {}   # profile id → canonical key, for customers born live
        self._frozen = False
        self._lock = threading.Lock()

    # -- batch ------------------------------------------------------------------------------
    def resolve(self) -> ResolveReport:
        """Derive a new version from the whole log (and restart real-time stitching from it)."""
        report = resolve(self.ws)
        if self._live is not None:
            self._restore()
        return report

    def current(self) -> bool:
        """Whether the current version was derived from the log, splits, settings and keys
        as they are now (:func:`plait.identity.resolver.inputs`): resolving again would
        give the same customers."""
        report = self.report()
        return report is not None and report.get("inputs") == inputs(self.ws)

    @property
    def version(self) -> int | None:
        return tables.current_version(self.ws.backend)

    def report(self) -> dict[str, Any] | None:
        v = self.version
        if v is None:
            return None
        return json.loads(self.ws.backend.scalar("SELECT report FROM identity_versions WHERE version = ?", [v]))

    def key(self, identifier: str) -> str:
        """``TYPE:VALUE`` as typed by a person, normalised (and hashed) as stored."""
        try:
            return self.registry.parse_key(identifier)
        except ValueError as e:
            raise IdentityError(str(e), hint="write identifiers as TYPE:VALUE, e.g. email:ann@example.com") from e

    # -- lookups ----------------------------------------------------------------------------
    def profile_of(self, identifier: str) -> str | None:
        """The profile id behind ``TYPE:VALUE`` (real-time when following), or ``None``."""
        key = self.key(identifier)
        if self._live is not None:
            with self._lock:
                return self._live.profile_of(key)
        self._require_version()
        return self.ws.backend.scalar(
            f"SELECT profile_id FROM identity_map WHERE version = {_CUR} AND identifier = ?", [key])

    def resolve_ref(self, ref: str) -> str | None:
        """A profile id given either itself or any of its identifiers."""
        if ref.startswith("prof_") and ":" not in ref:
            return ref if self.identifiers(ref) else None
        return self.profile_of(ref)

    def identifiers(self, profile: str) -> list[dict[str, Any]]:
        if self._live is not None:
            with self._lock:
                live = self._live_members(profile)
            if live:
                return live
        self._require_version()
        return self.ws.backend.rows(
            f"SELECT identifier_type, identifier_value, first_seen FROM identity_map WHERE version = {_CUR} "
            "AND profile_id = ? ORDER BY seq", [profile])

    def links(self, profile: str) -> list[dict[str, Any]]:
        """Why the profile is one customer: each merge with its reason and evidence."""
        self._require_version()
        rows = self.ws.backend.rows(
            f"""SELECT l.a, l.b, l.event_time, l.message_id, l.kind, l.reason, l.probability, l.evidence
                FROM identity_links l JOIN identity_map m ON m.version = l.version AND m.identifier = l.a
                WHERE l.version = {_CUR} AND m.profile_id = ? ORDER BY l.seq""", [profile])
        for r in rows:
            r["evidence"] = json.loads(r["evidence"]) if r["evidence"] else None
        return rows

    def conflicts(self, profile: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        self._require_version()
        where = "" if profile is None else "AND (ma.profile_id = ? OR mb.profile_id = ?)"
        return self.ws.backend.rows(
            f"""SELECT c.a, c.b, c.event_time, c.message_id, c.reason FROM identity_conflicts c
                LEFT JOIN identity_map ma ON ma.version = c.version AND ma.identifier = c.a
                LEFT JOIN identity_map mb ON mb.version = c.version AND mb.identifier = c.b
                WHERE c.version = {_CUR} {where} ORDER BY c.event_time LIMIT {int(limit)}""",
            [] if profile is None else [profile, profile])

    def supernodes(self) -> list[dict[str, Any]]:
        self._require_version()
        return self.ws.backend.rows(f"SELECT identifier, reason FROM identity_supernodes WHERE version = {_CUR}")

    def as_of(self, identifier: str, when: datetime | str) -> dict[str, Any] | None:
        """Who ``identifier`` was as of an event time: its profile then and the identifiers it held."""
        self._require_version()
        try:
            at = datetime.fromisoformat(when) if isinstance(when, str) else when
        except ValueError as e:
            raise IdentityError(f"{when!r} is not a date or time", hint="use ISO form: 2025-06-01 or 2025-06-01T12:00") from e
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        key = self.key(identifier)
        b = self.ws.backend
        known = b.rows(f"SELECT seq, identifier FROM identity_map WHERE version = {_CUR} AND first_seen <= ? "
                       "ORDER BY seq", [at])
        idx = {r["identifier"]: r["seq"] for r in known}
        if key not in idx:
            return None
        parent = {s: s for s in idx.values()}

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for r in b.rows(f"SELECT a, b FROM identity_links WHERE version = {_CUR} AND event_time <= ? ORDER BY seq", [at]):
            if r["a"] in idx and r["b"] in idx:
                x, y = find(idx[r["a"]]), find(idx[r["b"]])
                if x != y:
                    parent[max(x, y)] = min(x, y)
        root = find(idx[key])
        members = [k for k, s in idx.items() if find(s) == root]
        canon = min(members, key=idx.__getitem__)
        return {"identifier": key, "as_of": at.isoformat(), "profile_id": profile_id(canon), "identifiers": members}

    def export(self, *, purpose: str | None = None) -> pa.Table:
        """``identifier_type, identifier_value, profile_id``: one row per identifier; with
        ``purpose``, only customers whose consent allows it (the consent check)."""
        self._require_version()
        where = ""
        if purpose is not None:
            where = (f"AND profile_id IN (SELECT profile_id FROM ({self.ws.consent.allowed_profiles_sql(purpose)}) "
                     "WHERE allowed)")
        return self.ws.backend.query(
            f"SELECT identifier_type, identifier_value, profile_id FROM identity_map WHERE version = {_CUR} {where} "
            "ORDER BY seq")

    # -- corrections ------------------------------------------------------------------------
    def split(self, profile: str, identifiers: Sequence[str], *, reason: str = "split by request") -> dict[str, Any]:
        """Separate ``identifiers`` from the rest of ``profile`` for good, and re-derive.

        The split is kept (``identity_splits``): every later resolution honours it.
        Returns the split and the profiles the two sides now belong to.
        """
        members = [f"{r['identifier_type']}:{r['identifier_value']}" for r in self.identifiers(profile)]
        if not members:
            raise IdentityError(f"no profile {profile!r}", hint="look the profile up with `plait profiles show`")
        side_a = [self.key(i) for i in identifiers]
        missing = [k for k in side_a if k not in members]
        if missing:
            raise IdentityError(f"{', '.join(missing)} not in profile {profile}",
                                hint="list its identifiers with `plait profiles show " + profile + "`")
        side_b = [m for m in members if m not in side_a]
        if not side_b:
            raise IdentityError("a split must leave at least one identifier on each side")
        b = self.ws.backend
        tables.create(b)
        sid = int(b.scalar("SELECT coalesce(max(split_id), 0) + 1 FROM identity_splits"))
        b.execute("INSERT INTO identity_splits VALUES (?, now(), ?, ?, ?, ?)",
                  [sid, profile, json.dumps(side_a), json.dumps(side_b), reason])
        report = self.resolve()
        return {"split_id": sid, "version": report.version, "reason": reason,
                "profiles": sorted({self._table_profile(k) for k in side_a + side_b} - {None})}

    def subjects(self, profile: str | None) -> list[str]:
        """The event subjects (``user_id:…``/``anonymous_id:…``) of a customer in the newest version."""
        if profile is None or self.version is None:
            return []
        return [r["subject"] for r in self.ws.backend.rows(
            f"SELECT subject FROM identity_subjects WHERE version = {_CUR} AND profile_id = ? ORDER BY subject", [profile])]

    def sender(self, profile: str | None) -> dict[str, str] | None:
        """Segment fields to send an event as this customer (their user id, else an anonymous id)."""
        subjects = self.subjects(profile)
        for prefix, field in (("user_id:", "userId"), ("anonymous_id:", "anonymousId")):
            for s in subjects:
                if s.startswith(prefix):
                    return {field: s[len(prefix):]}
        return None

    def _table_profile(self, key: str) -> str | None:
        return self.ws.backend.scalar(
            f"SELECT profile_id FROM identity_map WHERE version = {_CUR} AND identifier = ?", [key])

    # -- real time --------------------------------------------------------------------------
    def follow(self) -> None:
        """Assign every event appended from now on as it arrives (idempotent)."""
        if self._live is None:
            self._restore()
            self.ws.log.follow(self.observe)

    def _restore(self) -> None:
        b = self.ws.backend
        tables.create(b)
        s = self.ws.settings.identity
        st = Stitcher(self.registry, separations=tables.separations(b))
        v = self.version
        if v is not None:
            for r in b.query(f"SELECT identifier, epoch_us(first_seen) AS t FROM identity_map WHERE version = {v} "
                             "ORDER BY seq").to_pylist():
                st._add(r["identifier"], r["t"])
            for r in b.query(f"SELECT a, b FROM identity_links WHERE version = {v} ORDER BY seq").to_pylist():
                x, y = st.find(st.index[r["a"]]), st.find(st.index[r["b"]])
                if x != y:
                    st._union(x, y)
            st.quarantined.update(r["identifier"] for r in b.rows(
                f"SELECT identifier FROM identity_supernodes WHERE version = {v}"))
        with self._lock:
            self._live = st
            self._hubs = SuperNodes(self.registry, s.supernode_threshold)
            self._live_keys = {}
        # Hundreds of thousands of long-lived index objects: keep the cyclic collector from
        # rescanning them on the hot path (a full collection paused assignment for 0.4 s).
        gc.collect()
        gc.freeze()
        self._frozen = True

    def close(self) -> None:
        """Give frozen objects back to the collector (so the interpreter can free them at exit)."""
        if self._frozen:
            gc.unfreeze()
            self._frozen = False

    def observe(self, batch: "Appended") -> list[str | None]:
        """Assign the records of an append to profiles now; their profile ids."""
        if self._live is None:
            self._restore()
        uids, aids, ctxs = batch.values("user_id"), batch.values("anonymous_id"), batch.values("context")
        traits, piis = batch.values("traits"), batch.values("pii")
        times, mids = batch.values("event_time"), batch.values("message_id")
        out: list[str | None] = []
        # Most events carry only a user and/or anonymous id, and an append holds many from
        # the same people: once such a pair is observed, observing it again joins nothing new
        # (its keys are already together, or refused) until a merge or a quarantine changes the
        # graph, so its profile is reused until then (20 k of the ingest benchmark's events,
        # ~20 a user: 1.73 → 0.37 µs an event).
        seen_pairs: dict[tuple[str | None, str | None], str | None] = {}
        with self._lock:
            st, hubs = self._live, self._hubs
            assert st is not None and hubs is not None
            merges, quarantined = len(st.merges), len(st.quarantined)
            for i in range(len(uids)):
                plain = ctxs[i] is None and traits[i] is None and piis[i] is None
                if plain:
                    pair = (uids[i], aids[i])
                    if pair in seen_pairs:
                        out.append(seen_pairs[pair])
                        continue
                keys = self.registry.extract(uids[i], aids[i], ctxs[i], traits_of(traits[i], ctxs[i], piis[i]))
                for k in hubs.see(keys):
                    st.quarantined.add(k)
                root = st.observe(keys, times[i], mids[i])
                pid = None
                if root is not None:
                    pid = st.profile_of_root(root)
                    self._live_keys.setdefault(pid, st.keys[st.canon[root]])
                out.append(pid)
                if len(st.merges) != merges or len(st.quarantined) != quarantined:
                    merges, quarantined = len(st.merges), len(st.quarantined)
                    seen_pairs.clear()
                if plain:
                    seen_pairs[pair] = pid
        return out

    def _live_members(self, profile: str) -> list[dict[str, Any]]:
        st = self._live
        assert st is not None
        key = self._live_keys.get(profile)
        if key is None:
            # A profile id names its first identifier; the table knows it, or a new customer does.
            key = self._table_canonical(profile)
        if key is None or st.profile_of(key) != profile:
            return []
        out = []
        for k in st.members_of(key):
            t, v = k.split(":", 1)
            out.append({"identifier_type": t, "identifier_value": v,
                        "first_seen": datetime.fromtimestamp(st.first_seen[st.index[k]] / 1e6, tz=timezone.utc)})
        return out

    def _table_canonical(self, profile: str) -> str | None:
        if self.version is None:
            return None
        return self.ws.backend.scalar(
            f"SELECT identifier FROM identity_map WHERE version = {_CUR} AND profile_id = ? ORDER BY seq LIMIT 1", [profile])

    def _require_version(self) -> None:
        if self.version is None:
            raise IdentityError("identity has not been resolved in this workspace yet", hint="run `plait resolve`")


def traits_of(traits: dict[str, Any] | None, context: dict[str, Any] | None,
              pii: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """``(trait, value)`` pairs of a collected record: traits, context.traits and personal fields."""
    out: list[tuple[str, Any]] = list((traits or {}).items())
    ct = (context or {}).get("traits")
    if isinstance(ct, dict):
        out.extend(ct.items())
    for path, value in (pii or {}).items():
        out.append((path.rsplit(".", 1)[-1], value))
    return out


__all__ = ["Identity", "traits_of"]
