"""Privacy-safe partner sharing: match audiences on keyed hashes, reveal only the overlap.

The clean-room pattern. The retailer and a partner agree a matching key per partnership;
each side hashes its normalised identifiers (email, E.164 phone) with HMAC-SHA256 under that
key, so neither sends an identifier in clear. Plait hashes only customers whose consent
allows ``partner_sharing`` (the one consent check), intersects with the partner's hashes,
and reveals the overlap only if it reaches the workspace's minimum group size
(k-anonymity) — below it, the partner learns no more than "too small". Every match is
recorded in the signed ledger (partner, purpose, sizes, what was revealed), and each
consenting customer in a revealed overlap earns loyalty points once per partner, recorded
as a ``Loyalty Points Earned`` event.

>>> hash_identifier(b"k" * 32, "email:ann@example.com")[:16]
'04a42a082643a88a'
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from plait.errors import ConfigError
from plait.identity.tables import CURRENT

if TYPE_CHECKING:
    from plait.workspace import Workspace

MATCH_TYPES = ("email", "phone")


def hash_identifier(key: bytes, identifier: str) -> str:
    """HMAC-SHA256 of a normalised ``type:value`` identifier under a partnership key (hex)."""
    return hmac.new(key, identifier.encode(), hashlib.sha256).hexdigest()


def pseudonymise_column(table: Any, column: str, salt: bytes) -> Any:
    """``table`` with ``column`` replaced by salted HMAC-SHA256 pseudonyms (32 hex characters):
    the same value gets the same pseudonym within a workspace, so joins still work."""
    import pyarrow as pa

    values = table.column(column).to_pylist()
    hashed = [None if v is None else hmac.new(salt, str(v).encode(), hashlib.sha256).hexdigest()[:32] for v in values]
    return table.set_column(table.column_names.index(column), column, pa.array(hashed, pa.string()))


@dataclass
class ShareReport:
    partner: str
    purpose: str
    submitted: int
    eligible: int                 # our customers whose consent allows the purpose
    overlap: int
    revealed: bool
    min_group_size: int
    points_awarded: int
    ledger_index: int
    matched: list[str] = field(default_factory=list)   # the partner's hashes found, when revealed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Sharing:
    """``ws.sharing``: hashed audiences and clean-room matches with partners."""

    def __init__(self, ws: "Workspace") -> None:
        self.ws = ws

    def audience(self, key: bytes, *, purpose: str = "partner_sharing") -> dict[str, str]:
        """Hash → profile id for every email/phone of customers whose consent allows ``purpose``."""
        if len(key) < 16:
            raise ConfigError("a matching key needs at least 16 bytes", hint="agree a random 32-byte key with the partner")
        ws = self.ws
        allowed = ws.consent.allowed_profiles_sql(purpose)
        rows = ws.backend.rows(f"""
            SELECT m.identifier, m.profile_id FROM identity_map m
            WHERE m.version = {CURRENT}
              AND m.identifier_type IN ({", ".join(f"'{t}'" for t in MATCH_TYPES)})
              AND m.profile_id IN (SELECT profile_id FROM ({allowed}) WHERE allowed)""")
        if ws.settings.identity.hash_values:
            raise ConfigError("identifiers are stored hashed with the workspace salt, so they cannot be re-keyed for a partner",
                              hint="partner matching needs identity.hash_values = false")
        return {hash_identifier(key, r["identifier"]): r["profile_id"] for r in rows}

    def match(self, partner: str, key: bytes, partner_hashes: Iterable[str], *, purpose: str = "partner_sharing",
              award_points: int = 50) -> ShareReport:
        """Intersect the partner's hashes with our consenting audience; reveal the overlap only
        if it reaches the minimum group size; record it; reward consenting customers once."""
        ws = self.ws
        k = ws.settings.privacy.min_group_size
        theirs = {h.strip().lower() for h in partner_hashes if h and h.strip()}
        ours = self.audience(key, purpose=purpose)
        found = sorted(theirs & ours.keys())
        revealed = len(found) >= k
        profiles = sorted({ours[h] for h in found}) if revealed else []
        awarded = self._reward(partner, profiles, award_points) if award_points and profiles else 0
        receipt = ws.ledger.append("sharing", {
            "partner": partner, "purpose": purpose, "submitted": len(theirs), "eligible": len(set(ours.values())),
            "overlap": len(found), "revealed": revealed, "min_group_size": k, "points_awarded": awarded,
            "matched_digest": hashlib.sha256("".join(found).encode()).hexdigest() if revealed else None,
        })
        ws.ledger.head()
        return ShareReport(partner, purpose, len(theirs), len(set(ours.values())), len(found), revealed, k, awarded,
                           receipt.index, found if revealed else [])

    def _reward(self, partner: str, profiles: list[str], points: int) -> int:
        ws = self.ws
        records = []
        now_us = time.time_ns() // 1000
        for pid in profiles:
            sender = ws.identity.sender(pid)
            if sender is None:
                continue
            # One reward per customer and partner: the message id makes a repeat a no-op.
            mid = "share-" + hashlib.sha256(f"{partner}|{pid}".encode()).hexdigest()[:24]
            records.append(ws.parser.parse({
                "type": "track", "event": "Loyalty Points Earned", **sender, "messageId": mid,
                "properties": {"points": points, "reason": f"consented to sharing with {partner}"}},
                received_at=now_us, source="partner-sharing"))
        return ws.log.append(records).inserted if records else 0


__all__ = ["MATCH_TYPES", "ShareReport", "Sharing", "hash_identifier", "pseudonymise_column"]
