"""Lifecycle moments that are not a single collected event: they are derived and fed to triggers.

- **State as events arrive** (:func:`observe`): the decision on an event sees the customer as of
  that event — this order counted (the first order makes ``orders`` 1), this complaint
  suppressing marketing, a tier change or visit recorded.
- **Abandonment** (:class:`Abandonment`): a cart (``Product Added`` / ``Checkout Started``) or a
  browse (``Product Viewed``) with no order within ``cart_minutes`` / ``browse_minutes`` becomes
  a ``Cart Abandoned`` / ``Browse Abandoned`` event when the timer runs out.
- **The calendar** (:func:`daily_events`): ``Birthday`` (the birthday trait's month and day) and
  ``Customer Anniversary`` (a year since the first purchase) for a given day.
- **Scores crossing a line** (:func:`crossings`): ``Churn Risk Raised`` for customers whose churn
  score rose above a threshold between two loads of the profile store.

The shipped rules for these moments are in ``plait/decide/packs/lifecycle.yaml``
(:func:`lifecycle_pack`).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

PACK = Path(__file__).parent / "packs" / "lifecycle.yaml"
CART_EVENTS = ("Product Added", "Checkout Started", "Cart Viewed")


def lifecycle_pack() -> str:
    """The shipped lifecycle rules and offers (YAML text)."""
    return PACK.read_text()


# The events that change a customer's snapshot (consent, orders, complaints, tier, visits).
OBSERVED = frozenset({"Order Completed", "Complaint Filed", "Loyalty Tier Changed", "Store Visit", "Consent Updated"})


def observe(store: Any, profile_id: str | None, event: Mapping[str, Any] | None, now: float) -> bool:
    """Update the customer's snapshot with what this event changes; True if it changed."""
    if not profile_id or not event:
        return False
    p = store.lookup(profile_id)
    if p is None:
        return False
    f = p.get("features") or {}
    name = event.get("name")
    props = event.get("properties") or {}
    if name == "Order Completed":
        store.update(profile_id, "features.orders", (f.get("orders") or 0) + 1)
        total = props.get("total", props.get("revenue"))
        if isinstance(total, (int, float)):
            store.update(profile_id, "features.revenue", (f.get("revenue") or 0) + total)
        store.update(profile_id, "features.last_purchase_at", now)
    elif name == "Complaint Filed":
        store.update(profile_id, "features.complaints", (f.get("complaints") or 0) + 1)
        store.update(profile_id, "features.last_complaint_at", now)
    elif name == "Loyalty Tier Changed" and props.get("tier"):
        store.update(profile_id, "traits.tier", {"value": props["tier"], "confidence": "observed"})
    elif name == "Store Visit":
        store.update(profile_id, "features.store_visits", (f.get("store_visits") or 0) + 1)
    elif name == "Consent Updated" and props.get("purpose") and isinstance(props.get("granted"), bool):
        channel = props.get("consent_channel")
        store.update(profile_id, f"consent.{props['purpose']}" + (f":{channel}" if channel else ""), props["granted"])
    else:
        return False
    return True


class Abandonment:
    """Timers that turn carts and browses without an order into events.

    One timer per customer and kind, however busy they are: later activity only moves the
    armed time, and a timer that comes due early is put back for the armed time (a timer per
    product view kept every view, with a copy of the event, for two hours — millions of entries
    on a busy site)."""

    def __init__(self, *, cart_minutes: float = 30, browse_minutes: float = 120) -> None:
        self.cart_s, self.browse_s = cart_minutes * 60, browse_minutes * 60
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = 0
        self._last_order: dict[str, float] = {}
        self._armed: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}   # latest activity and its event

    def _delay(self, kind: str) -> float:
        return self.cart_s if kind == "Cart Abandoned" else self.browse_s

    def see(self, key: str, event: Mapping[str, Any], t: float) -> None:
        """``key`` is the customer (profile or identifier); ``t`` the event time (epoch seconds)."""
        name = event.get("event") or event.get("name")
        if name == "Order Completed":
            self._last_order[key] = t
            return
        kind = "Cart Abandoned" if name in CART_EVENTS else "Browse Abandoned" if name == "Product Viewed" else None
        if kind is None:
            return
        armed = self._armed.get((key, kind))
        if armed is not None and armed[0] > t:
            return                                 # an older event arriving late re-arms nothing
        self._armed[(key, kind)] = (t, dict(event))  # the latest activity re-arms the timer
        if armed is None:
            self._push(t + self._delay(kind), key, kind)

    def _push(self, due: float, key: str, kind: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, key, kind))

    def due(self, now: float) -> list[dict[str, Any]]:
        """The abandonment events whose time has come (each cart or browse once)."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            due, _, key, kind = heapq.heappop(self._heap)
            armed = self._armed.get((key, kind))
            if armed is None:
                continue
            started, ev = armed
            if started + self._delay(kind) > due:
                self._push(started + self._delay(kind), key, kind)   # re-armed since: wait for that
                continue
            del self._armed[(key, kind)]
            if self._last_order.get(key, float("-inf")) >= started:
                continue                           # they bought
            due = started + self._delay(kind)
            out.append({"type": "track", "event": kind, "userId": ev.get("userId"),
                        "anonymousId": ev.get("anonymousId"), "channel": ev.get("channel"),
                        "properties": {**(ev.get("properties") or {}), "since": started}, "timestamp": due})
        return out

    def __len__(self) -> int:
        """Timers held (at most one per customer and kind)."""
        return len(self._heap)


def daily_events(store: Any, day: date) -> list[dict[str, Any]]:
    """``Birthday`` and ``Customer Anniversary`` events for ``day`` from the loaded customers."""
    out = []
    md = (day.month, day.day)
    for pid, p in store.items():
        refs = [s for s in store.subjects(pid) if s.startswith(("user_id:", "anonymous_id:"))]
        if not refs:
            continue
        kind, _, value = refs[0].partition(":")
        who = {"userId": value} if kind == "user_id" else {"anonymousId": value}
        bday = ((p.get("traits") or {}).get("birthday") or {}).get("value")
        if isinstance(bday, str) and len(bday) >= 10 and (int(bday[5:7]), int(bday[8:10])) == md:
            out.append({"type": "track", "event": "Birthday", **who, "properties": {"birthday": bday}})
        first = (p.get("features") or {}).get("first_purchase")
        if first is not None:
            d = first.date() if isinstance(first, datetime) else date.fromisoformat(str(first)[:10])
            if (d.month, d.day) == md and day.year > d.year:
                out.append({"type": "track", "event": "Customer Anniversary", **who,
                            "properties": {"years": day.year - d.year, "first_purchase": d.isoformat()}})
    return out


def crossings(old: Any, new: Any, model: str = "churn", threshold: float = 0.5) -> list[dict[str, Any]]:
    """``Churn Risk Raised`` for customers whose ``scores.<model>`` rose above ``threshold``
    between two loads of the store (``old`` → ``new``)."""
    out = []
    for pid, p in new.items():
        now_s = (p.get("scores") or {}).get(model)
        before = ((old.lookup(pid) or {}).get("scores") or {}).get(model)
        if now_s is not None and now_s > threshold and (before is None or before <= threshold):
            refs = [s for s in new.subjects(pid) if s.startswith(("user_id:", "anonymous_id:"))]
            if refs:
                kind, _, value = refs[0].partition(":")
                out.append({"type": "track", "event": "Churn Risk Raised",
                            **({"userId": value} if kind == "user_id" else {"anonymousId": value}),
                            "properties": {"model": model, "score": now_s, "previous": before, "threshold": threshold}})
    return out


__all__ = ["PACK", "Abandonment", "crossings", "daily_events", "lifecycle_pack", "observe"]
