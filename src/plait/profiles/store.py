"""Profiles: the golden record, behavioural features and timeline of each customer.

>>> import tempfile, plait
>>> ws = plait.connect(tempfile.mkdtemp())
>>> calls = [{"type": "identify", "userId": "u1", "traits": {"email": "a@b.co", "plan": "gold"}},
...          {"type": "track", "userId": "u1", "event": "Order Completed",
...           "properties": {"order_id": "o1", "total": 30, "currency": "USD"}}]
>>> _ = ws.log.append([ws.parser.parse(c, received_at=0, source="docs") for c in calls])
>>> _ = ws.resolve()
>>> p = ws.profiles.get("user_id:u1")
>>> p["traits"]["plan"]["value"], p["traits"]["plan"]["confidence"], p["features"]["orders"]
('gold', 'declared', 1)
>>> ws.close()
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plait.errors import IdentityError
from plait.identity.tables import CURRENT
from plait.log.store import checked_limit, instant
from plait.profiles.features import features_sql
from plait.profiles.golden import golden_sql

if TYPE_CHECKING:
    from plait.workspace import Workspace


@dataclass
class BuildReport:
    version: int
    profiles: int
    traits: int
    seconds: float

    def summary(self) -> str:
        return f"profiles v{self.version}: {self.profiles:,} customers with features, {self.traits:,} golden traits in {self.seconds:.1f} s"


class Profiles:
    """Read and build customer profiles over the newest identity version."""

    def __init__(self, ws: "Workspace") -> None:
        self.ws = ws

    def build(self) -> BuildReport:
        """(Re)compute golden traits and features for the newest identity version."""
        t0 = time.perf_counter()
        b = self.ws.backend
        version = self.ws.identity.version
        if version is None:
            raise IdentityError("identity has not been resolved yet", hint="run `plait resolve`")
        b.execute("CREATE OR REPLACE TABLE profile_traits AS " + golden_sql(version, self.ws.settings.profiles))
        # Profiling is analytics use: customers who withdrew it get no behavioural features.
        allowed = self.ws.consent.allowed_profiles_sql("analytics")
        b.execute("CREATE OR REPLACE TABLE profile_features AS SELECT * FROM (" + features_sql(version) + ") f "
                  f"WHERE f.profile_id IN (SELECT profile_id FROM ({allowed}) WHERE allowed)")
        return BuildReport(version, int(b.scalar("SELECT count(*) FROM profile_features")),
                           int(b.scalar("SELECT count(*) FROM profile_traits")), time.perf_counter() - t0)

    def _id(self, ref: str) -> str:
        pid = self.ws.identity.resolve_ref(ref)
        if pid is None:
            raise IdentityError(f"no customer known by {ref!r}",
                                hint="pass a profile id (prof_…) or an identifier as TYPE:VALUE, e.g. email:ann@example.com")
        return pid

    def get(self, ref: str) -> dict[str, Any]:
        """A customer by profile id or any identifier: identifiers, golden traits with
        provenance, features, the links that made them one and the merges guards refused."""
        pid = self._id(ref)
        b = self.ws.backend
        traits = {}
        if b.has_table("profile_traits"):
            for r in b.rows("SELECT trait, value, source, observed_at, confidence, support, alternatives, rule "
                            "FROM profile_traits WHERE profile_id = ? ORDER BY trait", [pid]):
                r["value"] = json.loads(r["value"])
                traits[r.pop("trait")] = r
        # Inferred traits fill gaps only, and only while the customer allows profiling (analytics).
        if b.has_table("inferred_traits") and self.ws.consent.allowed(pid, "analytics").allowed:
            for r in b.rows("SELECT trait, value, probability, model_version, CAST(inferred_at AS VARCHAR) AS at "
                            "FROM inferred_traits WHERE profile_id = ? ORDER BY trait", [pid]):
                traits.setdefault(r["trait"], {"value": r["value"], "source": f"model:impute_{r['trait']}",
                                               "observed_at": r["at"], "confidence": "inferred",
                                               "probability": r["probability"], "rule": "imputation"})
        features = {}
        if b.has_table("profile_features"):
            rows = b.rows("SELECT * EXCLUDE (version, profile_id) FROM profile_features WHERE profile_id = ?", [pid])
            features = rows[0] if rows else {}
        return {"profile_id": pid, "identifiers": self.ws.identity.identifiers(pid), "traits": traits,
                "features": features, "links": self.ws.identity.links(pid),
                "refused": self.ws.identity.conflicts(pid, limit=20), "consent": self.ws.consent.state(pid)}

    def timeline(self, ref: str, *, limit: int | None = None, before: str | None = None) -> list[dict[str, Any]]:
        """The customer's events across every channel, newest first."""
        n = self.ws.settings.profiles.timeline_limit if limit is None else int(checked_limit(limit))  # 0: none, as events()
        params: list[Any] = [self._id(ref)]
        cond = ""
        if before is not None:
            cond = "AND e.event_time < ?"
            params.append(instant("before", before))
        rows = self.ws.backend.rows(f"""
            WITH subj AS MATERIALIZED (SELECT subject FROM identity_subjects WHERE version = {CURRENT} AND profile_id = ?)
            SELECT e.event_time, e.type, coalesce(e.event, e.type) AS event, e.channel, e.source, e.subject,
                   e.order_id, e.store_id, e.amount, e.currency, e.properties, e.message_id
            FROM events e JOIN subj USING (subject) WHERE true {cond}
            ORDER BY e.event_time DESC, e.message_id LIMIT {n}""", params)
        for r in rows:
            r["properties"] = json.loads(r["properties"]) if r["properties"] else None
        return rows

    def count(self) -> int:
        b = self.ws.backend
        return int(b.scalar("SELECT count(*) FROM profile_features")) if b.has_table("profile_features") else 0


__all__ = ["BuildReport", "Profiles"]
