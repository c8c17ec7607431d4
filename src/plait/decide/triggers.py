"""Triggers: rules that fire on collected events and deliver their decision somewhere.

A rule with ``trigger: {destination: NAME}`` and ``events: [...]`` is a trigger. :class:`Triggers`
follows the log: every appended event named by a trigger rule is decided on (in a background
thread, so collection never waits) and, for each trigger rule that fired with actions, the
decision and the event go to the rule's destination through the durable
:class:`~plait.activate.outbox.Outbox` (retries, dead letters). The decision itself is logged
like any other. Carts and browses without an order become ``Cart Abandoned`` / ``Browse
Abandoned`` when their timer runs out (:class:`~plait.decide.lifecycle.Abandonment`), checked by
:meth:`Triggers.tick`, which the worker calls every second; :meth:`Triggers.fire` takes any
derived event (a birthday, a churn-risk crossing).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plait.decide.lifecycle import OBSERVED, Abandonment

if TYPE_CHECKING:
    from plait.activate.outbox import Outbox
    from plait.decide.engine import Decider
    from plait.events.contract import Record
    from plait.log.store import Appended


def event_of(r: "Record") -> dict[str, Any]:
    """A logged record as the Segment-style event a decision reads."""
    return {"type": r.type, "event": r.event, "userId": r.user_id, "anonymousId": r.anonymous_id,
            "channel": r.channel, "properties": r.properties or {}, "messageId": r.message_id,
            "timestamp": r.event_time / 1e6}


def observer(target: Any) -> Callable[["Appended"], None]:
    """A log follower handing ``target`` (a decider, or the decide workers) every collected event
    that changes a customer's snapshot — consent, orders, complaints — before the collector's
    200 goes out, so the next decision already obeys it."""
    def follow(batch: "Appended") -> None:
        for r in batch.where_event(OBSERVED):
            target.observe_event(event_of(r))
    return follow


class Triggers:
    def __init__(self, decider: "Decider", outbox: "Outbox") -> None:
        self.decider = decider
        self.outbox = outbox
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.abandonment = Abandonment()
        self._index: dict[str, list[Any]] = {}
        self._index_version: str | None = None
        self.fired = 0
        self.failures = 0

    def _listening(self) -> dict[str, list[Any]]:
        """Trigger rules by event name, rebuilt only when the rule book changes (this is read
        for every collected event)."""
        book = self.decider.book
        if self._index_version == book.version:
            return self._index
        out: dict[str, list[Any]] = {}
        for c in book.rules.values():
            r = c.defn
            if r.trigger is not None and r.enabled:
                for e in r.events:
                    out.setdefault(e, []).append(r)
        self._index, self._index_version = out, book.version
        return out

    def attach(self, log: Any) -> "Triggers":
        """Follow ``log``: appended batches are queued and handled by the worker."""
        log.follow(lambda batch: None if self._thread is None else self._q.put(batch))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="plait-triggers", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        import time

        while True:
            try:
                batch = self._q.get(timeout=1.0)
            except queue.Empty:
                self.tick(time.time())
                continue
            if batch is None:
                return
            self.handle(batch)

    def handle(self, batch: "Appended") -> int:
        """Decide on every record a trigger listens to and enqueue the deliveries. Carts and
        browses are timed only while a rule listens for their abandonment (every product view
        would otherwise hold a timer for two hours)."""
        listening = self._listening()
        if not listening:
            return 0
        timed = "Cart Abandoned" in listening or "Browse Abandoned" in listening
        n = 0
        for rec in (batch.records if timed else batch.where_event(listening)):
            ev = event_of(rec)
            if timed:
                self.abandonment.see(rec.user_id or rec.anonymous_id or "", ev, ev["timestamp"])
            n += self.fire(ev)
        return n

    def tick(self, now: float) -> int:
        """Fire the abandonment events that are due at ``now`` (epoch seconds)."""
        return sum(self.fire(ev) for ev in self.abandonment.due(now))

    def fire(self, ev: dict[str, Any]) -> int:
        """Decide on one (collected or derived) event for the trigger rules that listen to it."""
        rules = self._listening().get(ev.get("event") or "")
        if not rules:
            return 0
        n = 0
        placements = {p for r in rules for p in r.placements} or {"response"}
        for placement in sorted(placements):
            try:
                d = self.decider.decide({"event": ev, "placement": placement, "now": ev.get("timestamp")})
            except Exception:  # noqa: BLE001 - a bad event must not stop the trigger worker
                self.failures += 1
                continue
            if not d.actions:
                continue
            for r in rules:
                if r.id in d.rules and (not r.placements or placement in r.placements):
                    self.outbox.enqueue(r.trigger.destination, {"trigger": r.id, "event": ev, "decision": d.as_dict()})
                    self.fired += 1
                    n += 1
        return n

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join()
            self._thread = None


__all__ = ["Triggers", "event_of", "observer"]
