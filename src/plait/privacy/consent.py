"""Consent: choices recorded as events, the current state derived from them, one check.

A choice is a ``Consent Updated`` event in the log — purpose, granted or withdrawn, an
optional channel (``marketing`` by ``email`` only), the wording and its version the customer
saw, its source and time — so the history is immutable and auditable like every other fact,
and each change is also entered in the signed ledger (:mod:`plait.privacy.ledger`) under a
pseudonymous subject (salted HMAC), never the identifier itself.

The state of a purpose for a customer is the newest choice, across all their identifiers,
that covers it (a channel-specific choice covers only that channel; a general one covers
all); with none, the workspace default holds (:class:`plait.config.PrivacySettings`).
:meth:`Consent.allowed` decides one customer in real time; :func:`allowed_sql` decides
everyone at once for the engine; a test keeps the two in agreement.

>>> import tempfile, plait
>>> ws = plait.connect(tempfile.mkdtemp())
>>> _ = ws.consent.set("user_id:u1", "marketing", True, channel="email", wording_version="2025-01")
>>> ws.consent.allowed("user_id:u1", "marketing", channel="email").allowed
True
>>> ws.consent.allowed("user_id:u1", "marketing", channel="sms").allowed
False
>>> ws.close()
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from plait.engine.dialects import quote_literal
from plait.errors import IdentityError
from plait.identity.tables import CURRENT

if TYPE_CHECKING:
    from plait.events.contract import Record
    from plait.log.store import Appended
    from plait.workspace import Workspace

EVENT = "Consent Updated"
_dec = msgspec.json.Decoder()


@dataclass(frozen=True)
class ConsentDecision:
    """Whether a purpose (and channel) is allowed for a customer, and on what grounds."""

    allowed: bool
    purpose: str
    channel: str | None
    reason: str                   # "granted", "withdrawn" or "default"
    chosen_at: str | None = None  # when the deciding choice was made
    message_id: str | None = None
    wording_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _covers(choice_channel: str | None, channel: str | None) -> bool:
    return choice_channel is None or choice_channel == channel


def decide(choices: Sequence[dict[str, Any]], purpose: str, channel: str | None, default: bool) -> ConsentDecision:
    """The newest choice covering ``purpose``/``channel`` among ``choices`` (dicts with
    purpose, granted, consent_channel, chosen_at, message_id, wording_version), else the default."""
    best = None
    for c in choices:
        if c.get("purpose") != purpose or not _covers(c.get("consent_channel"), channel):
            continue
        if best is None or (c["chosen_at"], c["message_id"]) > (best["chosen_at"], best["message_id"]):
            best = c
    if best is None:
        return ConsentDecision(default, purpose, channel, "default")
    granted = bool(best.get("granted"))
    return ConsentDecision(granted, purpose, channel, "granted" if granted else "withdrawn", str(best["chosen_at"]),
                           best["message_id"], best.get("wording_version"))


def choices_sql(subjects_sql: str) -> str:
    """Consent choices of the events whose subject is in ``subjects_sql``."""
    return f"""
        SELECT e.subject, e.message_id, e.event_time AS chosen_at, e.source,
               json_extract_string(e.properties, '$.purpose') AS purpose,
               CAST(json_extract(e.properties, '$.granted') AS BOOLEAN) AS granted,
               json_extract_string(e.properties, '$.consent_channel') AS consent_channel,
               json_extract_string(e.properties, '$.wording_version') AS wording_version
        FROM events e WHERE e.event = '{EVENT}' AND e.subject IN ({subjects_sql})"""


def allowed_sql(purpose: str, channel: str | None, default: bool, version_sql: str) -> str:
    """Every profile of identity ``version_sql`` with whether ``purpose``/``channel`` is allowed."""
    cover = "consent_channel IS NULL" + (f" OR consent_channel = {quote_literal(channel)}" if channel else "")
    return f"""
        WITH c AS (
          SELECT s.profile_id, e.event_time, e.message_id,
                 CAST(json_extract(e.properties, '$.granted') AS BOOLEAN) AS granted,
                 json_extract_string(e.properties, '$.consent_channel') AS consent_channel
          FROM events e JOIN identity_subjects s ON s.version = {version_sql} AND s.subject = e.subject
          WHERE e.event = '{EVENT}' AND json_extract_string(e.properties, '$.purpose') = {quote_literal(purpose)}
        ), newest AS (
          SELECT profile_id, arg_max(granted, (event_time, message_id)) AS granted FROM c WHERE {cover} GROUP BY profile_id
        )
        SELECT p.profile_id, coalesce(n.granted, {str(bool(default)).lower()}) AS allowed
        FROM (SELECT DISTINCT profile_id FROM identity_subjects WHERE version = {version_sql}) p
        LEFT JOIN newest n USING (profile_id)"""


class Consent:
    """Record, read and check consent (``ws.consent``)."""

    def __init__(self, ws: "Workspace") -> None:
        self.ws = ws
        self._salt = ws.vault.secret("ledger-pseudonym-salt")
        ws.log.follow(self._on_append)

    # -- recording -------------------------------------------------------------------------
    def set(self, identifier: str, purpose: str, granted: bool, *, channel: str | None = None,
            wording: str | None = None, wording_version: str | None = None, source: str = "consent-api",
            at: str | None = None) -> dict[str, Any]:
        """Record a choice for the customer behind ``identifier`` (``TYPE:VALUE`` or a profile id),
        as an event and in the ledger."""
        props: dict[str, Any] = {"purpose": purpose, "granted": bool(granted)}
        if channel:
            props["consent_channel"] = channel
        if wording:
            props["wording"] = wording
        if wording_version:
            props["wording_version"] = wording_version
        call: dict[str, Any] = {"type": "track", "event": EVENT, "properties": props, **self._sender(identifier)}
        if at:
            call["timestamp"] = at
        record = self.ws.parser.parse(call, received_at=time.time_ns() // 1000, source=source)
        self.ws.log.append([record])
        return {"message_id": record.message_id, "subject": record.subject, **props}

    def _sender(self, identifier: str) -> dict[str, str]:
        if not identifier.startswith("prof_"):
            t, v = self.ws.identity.key(identifier).split(":", 1)
            if t == "user_id" and not self.ws.settings.identity.hash_values:
                return {"userId": v}
            if t == "anonymous_id" and not self.ws.settings.identity.hash_values:
                return {"anonymousId": v}
        # A profile id or any other identifier: speak for the customer through one of their own ids.
        pid = self.ws.identity.resolve_ref(identifier) if self.ws.identity.version is not None else None
        sender = self.ws.identity.sender(pid)
        if sender is not None:
            return sender
        raise IdentityError(f"no customer known by {identifier!r} to record consent for",
                            hint="use their user_id:… or anonymous_id:…, or run `plait resolve` first")

    def _on_append(self, batch: "Appended") -> None:
        entries = [("consent", self._ledger_entry(r)) for r in batch.where_event((EVENT,)) if r.properties]
        if entries:
            self.ws.ledger.append_many(entries)
            self.ws.ledger.head()

    def _ledger_entry(self, r: "Record") -> dict[str, Any]:
        p = r.properties or {}
        pseudonym = hmac.new(self._salt, r.subject.encode(), hashlib.sha256).hexdigest()[:32]
        return {"subject": pseudonym, "purpose": p.get("purpose"), "granted": p.get("granted"),
                "channel": p.get("consent_channel"), "wording_version": p.get("wording_version"),
                "source": r.source, "event_time_us": r.event_time, "message_id": r.message_id}

    # -- reading ---------------------------------------------------------------------------
    def choices(self, ref: str) -> list[dict[str, Any]]:
        """Every recorded choice of the customer behind ``ref`` (profile id or TYPE:VALUE), oldest first."""
        subjects = set()
        if ":" in ref and not ref.startswith("prof_"):
            key = self.ws.identity.key(ref)
            if key.startswith(("user_id:", "anonymous_id:")):
                subjects.add(key)
        pid = self.ws.identity.resolve_ref(ref) if self.ws.identity.version is not None else None
        subjects.update(self.ws.identity.subjects(pid))
        if not subjects:
            return []
        self.ws.backend.temp_table("consent_subjects", _subjects_table(sorted(subjects)))
        rows = self.ws.backend.rows(choices_sql("SELECT subject FROM consent_subjects") + " ORDER BY chosen_at, message_id")
        return rows

    def allowed(self, ref: str, purpose: str, *, channel: str | None = None) -> ConsentDecision:
        """The one consent check: may ``purpose`` (on ``channel``) be used for this customer now?"""
        return decide(self.choices(ref), purpose, channel, self.ws.settings.privacy.defaults.get(purpose, False))

    def state(self, ref: str, channels: Sequence[str] = ("email", "sms", "push")) -> dict[str, Any]:
        """Every configured purpose's decision (marketing also per channel) for one customer."""
        choices = self.choices(ref)
        defaults = self.ws.settings.privacy.defaults
        purposes = sorted(set(defaults) | {c["purpose"] for c in choices if c["purpose"]})
        out: dict[str, Any] = {}
        for p in purposes:
            out[p] = decide(choices, p, None, defaults.get(p, False)).as_dict()
            scoped = {c["consent_channel"] for c in choices if c["purpose"] == p and c["consent_channel"]}
            for ch in sorted(set(channels if p == "marketing" else ()) | scoped):
                out[f"{p}:{ch}"] = decide(choices, p, ch, defaults.get(p, False)).as_dict()
        return out

    def allowed_profiles_sql(self, purpose: str, channel: str | None = None) -> str:
        """SQL listing every profile of the newest identity version with ``allowed``."""
        return allowed_sql(purpose, channel, self.ws.settings.privacy.defaults.get(purpose, False), CURRENT)


def _subjects_table(subjects: list[str]) -> Any:
    import pyarrow as pa

    return pa.table({"subject": pa.array(subjects, pa.string())})


__all__ = ["EVENT", "Consent", "ConsentDecision", "allowed_sql", "choices_sql", "decide"]
