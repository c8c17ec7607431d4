"""Contact policies every decision obeys: consent, frequency caps, quiet hours, suppression after
a complaint, the global control group — and the bucketing that staged rollouts and holdouts use.

:func:`customer_blocked` returns the first reason the customer may not be contacted on a
channel for a purpose now (``None`` when they may) — the same for every offer of a decision, so a
decider asks once per purpose — and :func:`offer_blocked` an offer's own per-customer limit.
Marketing policies do not apply to service actions (an order-ready message, a service-recovery
apology), consent aside: a service action still needs the customer's consent for its purpose.
Caps count contacts — one decision is one contact (a push, an email, a banner), however many
offers it carries: a channel's cap counts contacts on it, the overall cap (``*``) counts
outbound messages (push, email, SMS) — a banner seen on the site is not a contact.
:class:`ContactLog` remembers what was shown, so caps hold across requests; it is rebuilt from
the log's decisions when a decider starts.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict, deque
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from plait.profiles.online import consent_allows

if TYPE_CHECKING:
    from plait.config import DecideSettings
    from plait.decide.rules import Offer


# Channels that contact a customer unasked; the overall cap ("*") counts these.
OUTBOUND = ("push", "email", "sms")


_M = (1 << 64) - 1


def key_hash(*parts: str) -> int:
    """A 64-bit hash of a key (BLAKE2b), to combine with :func:`mix`."""
    return int.from_bytes(hashlib.blake2b(":".join(parts).encode(), digest_size=8).digest(), "big")


def mix(a: int, b: int) -> float:
    """A stable number in [0, 1) from two key hashes (splitmix64's finaliser): a customer's hash
    with an offer's gives the customer's group for that offer, without hashing strings per offer."""
    z = (a ^ (b * 0x9E3779B97F4A7C15)) & _M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M
    return (z ^ (z >> 31)) / 2**64


def bucket(*parts: str) -> float:
    """A stable number in [0, 1) for a key: the same customer always lands in the same group."""
    return key_hash(*parts) / 2**64


class ContactLog:
    """Exposures per customer in a sliding window (for caps) and per offer (for per-customer limits)."""

    def __init__(self, horizon_s: float = 31 * 86400) -> None:
        self.horizon_s = horizon_s
        self.recent: dict[str, deque[tuple[float, str]]] = defaultdict(deque)
        self.per_offer: dict[tuple[str, str], int] = defaultdict(int)
        self.accepted: dict[str, int] = defaultdict(int)     # acceptances per offer (budgets)

    def record(self, profile_id: str, t: float, channel: str, offer_ids: list[str]) -> None:
        """One contact (a push, an email, a banner) carrying ``offer_ids``."""
        q = self.recent[profile_id]
        q.append((t, channel))
        while q and q[0][0] < t - self.horizon_s:
            q.popleft()
        for o in offer_ids:
            self.per_offer[(profile_id, o)] += 1

    def count(self, profile_id: str, since: float, channel: str | None = None) -> int:
        """Exposures since ``since`` on ``channel``, or contacts on every outbound channel."""
        q = self.recent.get(profile_id)
        if not q:
            return 0
        return sum(1 for t, ch in q if t >= since and (ch == channel if channel is not None else ch in OUTBOUND))


def _local_hour(now: float, tz: str) -> float:
    d = datetime.fromtimestamp(now, ZoneInfo(tz))
    return d.hour + d.minute / 60


def offer_blocked(profile: Mapping[str, Any], offer: "Offer", contacts: ContactLog) -> str | None:
    """The offer's own limit per customer."""
    pid = profile.get("profile_id")
    if pid and offer.max_per_customer is not None and contacts.per_offer.get((pid, offer.id), 0) >= offer.max_per_customer:
        return f"already shown {offer.max_per_customer} time(s)"
    return None


def customer_blocked(settings: "DecideSettings", profile: Mapping[str, Any], channel: str | None, purpose: str,
                     service: bool, contacts: ContactLog, now: float, consent_defaults: Mapping[str, bool]) -> str | None:
    """The policies that depend on the customer, channel and purpose only (the same for every
    offer of a decision, so a decider checks them once per purpose)."""
    pid = profile.get("profile_id")
    if pid and not consent_allows(profile, purpose, channel, consent_defaults.get(purpose, False)):
        return f"no {purpose} consent" + (f" for {channel}" if channel else "")
    if not pid and purpose != "personalisation":
        return f"unknown customer: no {purpose} consent on record"
    if service:
        return None
    if pid and settings.global_control > 0 and bucket(settings.salt, "control", pid) < settings.global_control:
        return "global control group"
    last_complaint = (profile.get("features") or {}).get("last_complaint_at")
    if last_complaint is not None:
        ts = last_complaint.timestamp() if isinstance(last_complaint, datetime) else float(last_complaint)
        if now - ts < settings.complaint_suppression_days * 86400:
            return f"complaint within {settings.complaint_suppression_days:g} days"
    if channel in settings.quiet_hours.channels:
        q = settings.quiet_hours
        tz = ((profile.get("traits") or {}).get("timezone") or {}).get("value") or q.timezone
        h = _local_hour(now, tz)
        inside = (q.start <= h or h < q.end) if q.start > q.end else (q.start <= h < q.end)
        if inside:
            return f"quiet hours ({q.start:g}:00–{q.end:g}:00 {tz})"
    if pid:
        for ch, caps in settings.caps.items():
            if ch != channel and not (ch == "*" and channel in OUTBOUND):
                continue
            for cap in caps:
                n = contacts.count(pid, now - cap.per_hours * 3600, None if ch == "*" else ch)
                if n >= cap.max:
                    scope = "all channels" if ch == "*" else ch
                    return f"frequency cap: {cap.max} per {cap.per_hours:g} h on {scope}"
    return None


__all__ = ["OUTBOUND", "ContactLog", "bucket", "customer_blocked", "key_hash", "mix", "offer_blocked"]
