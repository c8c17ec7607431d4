"""The decider: an event or a customer and placement in, the next best actions out, in microseconds.

One decision, in order:

1. find the customer in the online profile store (by profile id, or the event's user/anonymous id);
2. gather context (time, and whatever providers and the request add: weather, location, events);
3. fire the rules whose events, placements and condition match; their actions name offers;
4. keep offers that are valid today, within budget, eligible, in the staged rollout, allowed by
   every policy (consent, caps, quiet hours, complaint suppression, global control);
5. set aside the offer's random holdout (recorded, not shown: the incrementality baseline);
6. score the rest — propensity × value × context weight × lever — and return the best
   ``max_actions`` with their reasons (service actions first); record the decision as a
   ``Decision Made`` event.

The decision's event updates the customer first (:func:`plait.decide.lifecycle.observe`): an
order counts, a complaint suppresses marketing at once.

Nothing on this path queries the engine: profiles come from :mod:`plait.profiles.online`,
rules from a :class:`~plait.decide.rules.RuleBook`, caps from a :class:`ContactLog`.

>>> from plait.decide.rules import RuleBook
>>> from plait.profiles.online import MemoryStore
>>> store = MemoryStore()
>>> store.put({"profile_id": "p1", "features": {"orders": 4}, "scores": {"dairy": 0.3},
...            "consent": {"personalisation": True}}, identifiers=["user_id:u1"])
>>> book = RuleBook(data={"offers": [{"id": "dairy-10", "value": 5, "propensity": {"model": "dairy"}}],
...                       "rules": [{"id": "loyal", "condition": {"field": "features.orders", "op": ">=", "value": 3},
...                                  "actions": [{"offer": "dairy-10"}]}]})
>>> d = Decider(book, store).decide({"customer": "user_id:u1", "placement": "app_screen"})
>>> [(a["offer_id"], round(a["score"], 2)) for a in d.actions]
[('dairy-10', 1.5)]
"""

from __future__ import annotations

import base64
import bisect
import itertools
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from plait.config import DecideSettings
from plait.decide.lifecycle import OBSERVED, observe
from plait.decide.policies import ContactLog, customer_blocked, key_hash, mix, offer_blocked
from plait.decide.rules import PLACEMENTS, Compiled, RuleBook
from plait.errors import DecisionError

if TYPE_CHECKING:
    from plait.profiles.online import MemoryStore
    from plait.workspace import Workspace

EVENT = "Decision Made"
# A request's channel → the placement its answer shows on, when the request does not say.
CHANNEL_PLACEMENT = {"web": "web_banner", "app": "app_screen", "store": "store_screen", "call_center": "agent_desktop",
                     "push": "push", "email": "email", "sms": "sms"}
_ids = itertools.count()
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_PREFIX = base64.b32encode(os.urandom(5)).decode().lower()


def reseed(slot: int) -> None:
    """Give this process its own decision-id prefix: the prefix's fourth letter becomes
    ``slot``'s (0–31), so processes of one server (see :mod:`plait.decide.workers`) never issue the
    same decision id or prefix coupon (coupons carry the first four letters and the counter)."""
    global _PREFIX
    _PREFIX = _PREFIX[:3] + _ALPHABET[slot] + base64.b32encode(os.urandom(5)).decode().lower()[:4]


@dataclass
class Decision:
    decision_id: str
    profile_id: str | None
    placement: str
    channel: str | None
    actions: list[dict[str, Any]]
    held_out: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    version: str = ""
    at: float = 0.0
    subject: str | None = None       # the identifier the decision is logged under (``type:value``)
    skipped: int = 0                 # candidates not checked: they could not have ranked (see ``explain``)

    def as_dict(self) -> dict[str, Any]:
        return {"decision_id": self.decision_id, "profile_id": self.profile_id, "placement": self.placement,
                "channel": self.channel, "actions": self.actions, "held_out": self.held_out,
                "rejected": self.rejected, "skipped": self.skipped, "rules": self.rules, "version": self.version,
                "at": datetime.fromtimestamp(self.at, timezone.utc).isoformat()}


def _subject(event: Mapping[str, Any]) -> list[str]:
    out = []
    for key, kind in (("userId", "user_id"), ("user_id", "user_id"), ("anonymousId", "anonymous_id"),
                      ("anonymous_id", "anonymous_id")):
        v = event.get(key)
        if v:
            out.append(f"{kind}:{v}")
    return out


_TIME_CACHE: dict[tuple[int, str], dict[str, Any]] = {}


def time_context(now: float, tz: str = "UTC") -> dict[str, Any]:
    """Hour, minute, weekday, weekend, date, day of month and month at ``now`` in ``tz`` (a
    fresh dict; computed once per minute)."""
    key = (int(now // 60), tz)
    hit = _TIME_CACHE.get(key)
    if hit is None:
        from zoneinfo import ZoneInfo

        d = datetime.fromtimestamp(now, ZoneInfo(tz))
        if len(_TIME_CACHE) > 4096:
            _TIME_CACHE.clear()
        hit = _TIME_CACHE[key] = {"hour": d.hour, "minute": d.minute, "weekday": d.strftime("%A").lower(),
                                  "weekend": d.weekday() >= 5, "date": d.date().isoformat(), "day_of_month": d.day,
                                  "month": d.month}
    return dict(hit)


class Decider:
    """Decides for one workspace's rules, offers and customers (see the module docstring)."""

    def __init__(self, book: RuleBook, store: "MemoryStore", *, settings: DecideSettings | None = None,
                 consent_defaults: Mapping[str, bool] | None = None, context: Any = None,
                 scorers: Mapping[str, Any] | None = None, record: Callable[[Decision], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.book = book
        self.store = store
        self.settings = settings or DecideSettings()
        self.consent_defaults = dict(consent_defaults or {"analytics": True})
        self.context = context
        self.scorers = dict(scorers or {})       # real-time models: name → object with predict_proba_one(x)
        self.learners: dict[str, Any] = {}         # bandits: name → learner (``propensity: {model: bandit:<name>}``)
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()   # views of decisions a bandit chose
        self.record = record
        self.clock = clock
        self.contacts = ContactLog()
        self._coupon_next: dict[str, int] = {}
        self.coupon_share = (0, 1)                 # (k, n): this decider issues codes k, k+n, k+2n…
        self._lock = threading.Lock()
        self._next_check = time.monotonic() + 1.0
        self._seen: OrderedDict[str, None] = OrderedDict()   # message ids already observed
        self._index()

    def observe_event(self, event: Mapping[str, Any]) -> bool:
        """Let a collected event change its customer's snapshot now — a consent withdrawal, a
        complaint, an order — not at the next profile load; True if it changed something."""
        if (event.get("event") or event.get("name")) not in OBSERVED or not self._first_sight(event):
            return False
        profile, _ = self.customer({"event": event})
        ts = event.get("timestamp")
        return observe(self.store, (profile or {}).get("profile_id"), _event_view(event),
                       _timestamp(ts) if ts is not None else self.clock())

    def _first_sight(self, event: Mapping[str, Any]) -> bool:
        """False for an event (by message id) already observed — the log's follower and a
        trigger's decision both see collected events, and an order counts once."""
        mid = event.get("messageId")
        if not mid:
            return True
        if mid in self._seen:
            return False
        self._seen[mid] = None
        if len(self._seen) > 100_000:
            self._seen.popitem(last=False)
        return True

    def _index(self) -> None:
        """Rules by triggering event, in priority order, rebuilt when the rule book changes."""
        self._version = self.book.version
        ordered = sorted(self.book.rules.values(), key=lambda c: (-c.defn.priority, c.defn.id))
        self._rules = [c for c in ordered if c.defn.enabled]

    # -- the decision -------------------------------------------------------------------------
    @classmethod
    def from_workspace(cls, ws: "Workspace", rules: str | None = None, *, record: bool = True, context: Any = None,
                       scorers: Mapping[str, Any] | None = None) -> "Decider":
        """A decider over ``ws``: its rules file or folder (``settings.decide.rules``, relative to
        the workspace), every customer loaded into an online store, the context providers its
        settings name, real-time models from ``<workspace>/scorers/*.json``, contact history
        rebuilt from the log's decisions, and decisions recorded back to the log."""
        from pathlib import Path

        from plait.profiles.online import load

        from plait.errors import IdentityError
        from plait.profiles.online import MemoryStore

        path = Path(rules) if rules else ws.path / ws.settings.decide.rules
        book = RuleBook.from_path(path) if (rules or path.exists()) else RuleBook(data={})
        url = ws.settings.decide.online_store
        target: Any = MemoryStore()
        if url != "memory":
            from plait.profiles.online import RedisStore

            target = RedisStore(url, prefix=f"plait:{ws.path.name}:")
            target.clear()
        try:
            store = load(ws, target)
        except IdentityError:        # nothing resolved yet: every customer is unknown until then
            store = target
        if scorers is None:
            scorers = load_scorers(ws.path / "scorers")
        if context is None:
            from plait.decide.context import from_settings

            context = from_settings(ws.path, ws.settings.decide.context)
        d = cls(book, store, settings=ws.settings.decide, consent_defaults=ws.settings.privacy.defaults,
                context=context, scorers=scorers, record=Recorder(ws, interval_s=ws.settings.decide.record_interval_s) if record else None)
        d.contacts = contacts_from_log(ws)
        return d

    def close(self) -> None:
        if isinstance(self.record, Recorder):
            self.record.close()

    def customer(self, request: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
        """The customer a request is about (None if unknown) and the identifiers it names: its
        ``customer``, else its event's user and anonymous ids."""
        event = request.get("event")
        if event is not None and not isinstance(event, Mapping):
            raise DecisionError("must be an object (a Segment-style event)", field="event")
        refs = [str(request["customer"])] if request.get("customer") else _subject(event or {})
        for ref in refs:
            profile = self.store.lookup(ref)
            if profile is not None:
                return profile, refs
        return None, refs

    def decide(self, request: Mapping[str, Any]) -> Decision:
        mono = time.monotonic()
        if mono >= self._next_check:         # hot reload: look at the rule files once a second
            self._next_check = mono + 1.0
            self.book.refresh()
        if self.book.version != self._version:
            self._index()
        now = request.get("now")
        now = self.clock() if now is None else _timestamp(now)
        event = request.get("event")
        profile, refs = self.customer(request)
        if profile is None and not refs:
            raise DecisionError("a decision needs a customer or an event with userId/anonymousId", field="customer")
        profile = profile or {}
        pid = profile.get("profile_id")
        # Logged under the customer's user or anonymous id (the log's subjects), else the event's.
        subject = next((x for x in self.store.subjects(pid) if x.startswith(("user_id:", "anonymous_id:"))), None) \
            if pid else None
        subject = subject or next((r for r in refs if r.startswith(("user_id:", "anonymous_id:"))), None)
        ev = _event_view(event) if event is not None else None
        if ev is not None and pid and self._first_sight(event) and observe(self.store, pid, ev, now):
            # Rules and policies see the customer as of this event: this order counted, this
            # complaint already suppressing marketing — not at the next profile load.
            profile = self.store.lookup(pid) or profile
        placement = request.get("placement") or CHANNEL_PLACEMENT.get((ev or {}).get("channel") or "", "response")
        if placement not in PLACEMENTS:
            raise DecisionError(f"unknown placement {placement!r}; use {', '.join(PLACEMENTS)}", field="placement")
        channel, purpose = PLACEMENTS[placement]
        ctx = time_context(now, self.settings.quiet_hours.timezone)
        if self.context is not None:
            ctx.update(self.context.enrich(profile, ev, now))
        if request.get("context"):
            ctx.update(request["context"])
        view = dict(profile)
        view["event"] = ev or {}
        view["context"] = ctx
        view["placement"] = placement
        memo: dict[int, bool] = {}       # each distinct condition once per decision

        def holds(test: tuple[int, Any]) -> bool:
            v = memo.get(test[0])
            if v is None:
                v = memo[test[0]] = test[1](view)
            return v

        # Rules → candidate offers (an offer keeps its highest-priority rule).
        fired, candidates, messages = [], {}, []
        name = (ev or {}).get("name")
        for c in self._rules:
            r = c.defn
            if r.events and name not in r.events:
                continue
            if r.placements and placement not in r.placements:
                continue
            if c.test is not None and not holds(c.test):
                continue
            fired.append(r.id)
            for a in r.actions:
                if a.offer is not None:
                    candidates.setdefault(a.offer, r)
                elif a.message is not None:
                    messages.append({"rule_id": r.id, "message": a.message, "reasons": [f"rule {r.id}"]})
        key = pid or next(iter(refs), "")
        kh = key_hash(self.settings.salt, key)        # the customer's stable groups (rollout, holdouts)
        rejected: list[dict[str, str]] = []
        held: list[str] = []
        today = datetime.fromtimestamp(now, timezone.utc).date()
        policy: dict[tuple[str, bool], str | None] = {}     # customer-level policies, once per purpose
        propensity: dict[str, tuple[Any, str]] = {}
        try:
            limit = min(int(request.get("max_actions") or self.settings.max_actions), self.settings.max_actions)
        except (TypeError, ValueError):
            raise DecisionError(f"must be a whole number, not {request.get('max_actions')!r}", field="max_actions") from None
        offers = self.book.offers
        # Each candidate's best possible rank: its propensity (one score per model and decision)
        # × value × every context weight above 1 × lever. Candidates are then checked best first,
        # and checking stops once none left can enter the top ``limit`` (``explain`` checks all).
        order = []
        scores = profile.get("scores") or {}
        scorers, learners = self.scorers, self.learners
        for oid, rule in candidates.items():
            c = offers[oid]
            model = c.model
            p = None
            if model is not None:
                hit = propensity.get(model)
                if hit is None:
                    scorer = scorers.get(model)
                    hit = propensity[model] = ((scorer.predict_proba_one(view), f" from model {model}")
                                               if scorer is not None else (scores.get(model), c.origin))
                p, origin = hit
            elif c.bandit is not None:
                learner = learners.get(c.bandit)
                if learner is not None:              # a fresh posterior draw per arm and decision
                    p, origin = learner.predict_proba_one(view, arm=oid), c.origin
                    if hasattr(learner, "groups"):   # an uplift learner scores what the offer adds
                        origin += " (uplift)"
            if p is None:
                p, origin = c.default, " (default)"
            p = float(p)
            # Flat: the first four items are the rank key (offer ids are unique, so the rest
            # never takes part in sorting).
            order.append((not c.service, -(p * c.bound), -rule.priority, oid, rule, c, p, origin))
        order.sort()
        explain = bool(request.get("explain"))
        top: list[tuple] = []            # rank keys of the chosen, best first
        chosen: dict[str, tuple] = {}
        skipped = 0
        for i, entry in enumerate(order):
            if not explain and len(top) >= limit and entry[:4] > top[limit - 1]:
                skipped = len(order) - i
                break
            rule, c, p, origin = entry[4:]
            o = c.defn
            oid = o.id
            why = self._unavailable(c, channel, today, holds, kh)
            if why is None:
                pk = (o.purpose or purpose, o.service)
                if pk not in policy:
                    policy[pk] = customer_blocked(self.settings, profile, channel, pk[0], o.service, self.contacts,
                                                  now, self.consent_defaults)
                why = policy[pk] or offer_blocked(profile, o, self.contacts)
            if why is not None:
                rejected.append({"offer_id": oid, "reason": why})
                continue
            if o.holdout and mix(kh, c.holdout_key) < o.holdout:
                held.append(oid)
                continue
            weight, hits = 1.0, []
            for test, w in c.weights:
                if holds(test):
                    weight *= w
                    hits.append(w)
            score = p * o.value * weight * o.lever
            rank = (not o.service, -score, -rule.priority, oid)
            bisect.insort(top, rank)
            chosen[oid] = (score, p, weight, rule, origin, hits)
        did = f"dec-{_PREFIX}-{next(_ids)}"
        actions = []
        # Service actions (an apology, "your order is ready") come before any offer.
        for rank in top[:limit]:
            oid = rank[3]
            score, p, weight, rule, origin, hits = chosen[oid]
            o = offers[oid].defn
            label = "uplift" if origin.endswith(" (uplift)") else "propensity"
            reasons = [f"rule {rule.id} (priority {rule.priority})",
                       f"{label} {p:.3f}{origin.removesuffix(' (uplift)')}",
                       f"value {o.value:g}"] + [f"context ×{w:g}" for w in hits] + (
                [f"lever ×{o.lever:g}"] if o.lever != 1 else [])
            actions.append({"offer_id": oid, "name": o.name, "score": score, "propensity": p, "value": o.value,
                            "context_weight": weight, "coupon": self._coupon(o, did), "reasons": reasons})
        actions.extend(messages[: max(0, limit - len(actions))])
        if pid and actions:
            self.contacts.record(pid, now, channel or placement, [a["offer_id"] for a in actions if "offer_id" in a])
        if self.learners and any(" from bandit:" in a["reasons"][1] for a in actions if "offer_id" in a):
            self._recent[did] = view                 # a bandit learns from this decision's outcome
            if len(self._recent) > 100_000:
                self._recent.popitem(last=False)
        d = Decision(did, pid, placement, channel, actions, held, rejected, fired, self.book.version, now, subject,
                     skipped)
        if self.record is not None:
            self.record(d)
        return d

    def _unavailable(self, c: Compiled, channel: str | None, today: Any, holds: Callable[..., bool], kh: int) -> str | None:
        o = c.defn
        if o.channels and channel is not None and channel not in o.channels:
            return f"not offered on {channel}"
        if o.valid_from and today < o.valid_from:
            return f"starts {o.valid_from}"
        if o.valid_to and today > o.valid_to:
            return f"ended {o.valid_to}"
        if o.budget is not None and self.contacts.accepted.get(o.id, 0) >= o.budget:
            return "budget spent"
        if o.coupon_codes and self._code_at(o.id) >= len(o.coupon_codes):
            return "no coupon codes left"
        if c.test is not None and not holds(c.test):
            return "not eligible"
        if o.rollout < 1 and mix(kh, c.rollout_key) >= o.rollout:
            return f"outside the {o.rollout:.0%} rollout"
        return None

    def _code_at(self, offer_id: str) -> int:
        """Where in the offer's code list this decider's next code is (its share: k, k+n, …)."""
        k, n = self.coupon_share
        return k + self._coupon_next.get(offer_id, 0) * n

    def _coupon(self, o: Any, decision_id: str) -> str | None:
        if o.coupon_codes:
            with self._lock:
                i = self._code_at(o.id)
                self._coupon_next[o.id] = self._coupon_next.get(o.id, 0) + 1
            return o.coupon_codes[i]
        if o.coupon_prefix:
            return o.coupon_prefix + decision_id.rsplit("-", 2)[-2][:4].upper() + decision_id.rsplit("-", 1)[-1]
        return None

    def outcome(self, decision_id: str, offer_id: str, reward: Any = 1.0, *, accepted: bool | None = None) -> None:
        """What came of an offer a decision made — 1 for a click or redemption, 0 for none, a
        value, or (for an uplift learner) the outcome per group: its bandit learns, and an
        acceptance (by default: a positive number) counts against the offer's budget."""
        c = self.book.offers.get(offer_id)
        if c is None:
            raise DecisionError(f"no offer {offer_id!r}", field="offer_id")
        src = c.defn.propensity.model or ""
        if src.startswith("bandit:") and src[7:] in self.learners:
            self.learners[src[7:]].learn_one(offer_id, reward, self._recent.get(decision_id))
        if accepted if accepted is not None else (isinstance(reward, (int, float)) and reward > 0):
            self.accepted(offer_id)

    def accepted(self, offer_id: str) -> None:
        """An offer was accepted (redeemed): it counts against the offer's budget."""
        self.contacts.accepted[offer_id] = self.contacts.accepted.get(offer_id, 0) + 1


def _event_view(event: Mapping[str, Any]) -> dict[str, Any]:
    ctx = event.get("context") or {}
    return {"name": event.get("event") or event.get("name"), "type": event.get("type", "track"),
            "channel": event.get("channel") or ctx.get("channel"), "properties": event.get("properties") or {},
            "store_id": (event.get("properties") or {}).get("store_id"), "location": ctx.get("location")}


def _timestamp(v: Any) -> float:
    if isinstance(v, (int, float)):
        return float(v)
    try:
        d = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError as e:
        raise DecisionError(f"{v!r} is not an ISO timestamp", field="now") from e
    return (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()


class Recorder:
    """Writes decisions to the log as ``Decision Made`` events from a background thread, in
    batches laid out straight as the log's Arrow table (no per-event parsing), so the answer
    never waits for a write: at most ``interval_s`` of decisions are in memory; :meth:`close`
    flushes them."""

    def __init__(self, ws: "Workspace", *, interval_s: float = 0.5) -> None:
        self.ws = ws
        self.interval_s = interval_s
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="plait-decisions", daemon=True)
        self._thread.start()

    def __call__(self, d: Decision) -> None:
        self._q.put(d)

    def table(self, t: Any) -> None:
        """Decisions already laid out as the log's rows (from a decide worker)."""
        self._q.put(t)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()
        self.flush()

    def flush(self) -> None:
        batch = []
        while True:
            try:
                batch.append(self._q.get_nowait())
            except queue.Empty:
                break
        if batch:
            import pyarrow as pa

            ours = [d for d in batch if isinstance(d, Decision)]
            tables = [t for t in batch if not isinstance(t, Decision)] + ([decisions_table(ours)] if ours else [])
            self.written += self.ws.log.append_table(tables[0] if len(tables) == 1 else pa.concat_tables(tables)).inserted

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class DecisionRows:
    """Decisions accumulated as the log's ``events`` columns (``Decision Made``): :meth:`add`
    lays out one decision as it is made (a few µs), :meth:`take` hands over an Arrow table of
    everything added since — no pause to lay out a batch at once."""

    def __init__(self) -> None:
        import msgspec

        self._enc = msgspec.json.Encoder()
        self._reset()

    def _reset(self) -> None:
        self.ids: list[str] = []
        self.chans: list[str] = []
        self.users: list[str | None] = []
        self.anons: list[str | None] = []
        self.subjects: list[str] = []
        self.times: list[int] = []
        self.props: list[bytes] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, d: Decision) -> None:
        kind, _, value = (d.subject or "anonymous_id:decide-unknown").partition(":")
        user = kind == "user_id"
        self.ids.append(d.decision_id)
        self.chans.append(d.channel or "other")
        self.users.append(value if user else None)
        self.anons.append(None if user else value)
        self.subjects.append(f"{'user_id' if user else 'anonymous_id'}:{value}")
        self.times.append(int(d.at * 1_000_000))
        acts = [a for a in d.actions if "offer_id" in a]
        self.props.append(self._enc.encode({
            "decision_id": d.decision_id, "placement": d.placement, "profile_id": d.profile_id,
            "offers": [a["offer_id"] for a in acts], "coupons": [a["coupon"] for a in acts if a.get("coupon")],
            "actions": [{"offer_id": a["offer_id"], "coupon": a.get("coupon"), "score": a["score"]} for a in acts],
            "held_out": d.held_out, "rules": d.rules, "version": d.version, "rejected": len(d.rejected)}))

    def take(self) -> Any:
        import pyarrow as pa

        from plait.log.schema import DAY_US, EVENT_SCHEMA, TS

        n = len(self.ids)
        t = pa.array(self.times, pa.int64())
        const = lambda v: pa.array([v] * n, pa.string())  # noqa: E731
        cols = {"message_id": pa.array(self.ids, pa.string()), "type": const("track"), "event": const(EVENT),
                "channel": pa.array(self.chans, pa.string()), "source": const("decide"),
                "anonymous_id": pa.array(self.anons, pa.string()), "user_id": pa.array(self.users, pa.string()),
                "event_time": t.cast(TS), "original_time": t.cast(TS),
                "received_at": pa.array([int(time.time() * 1_000_000)] * n, pa.int64()).cast(TS),
                "day": pa.array([x // DAY_US for x in self.times], pa.int32()).cast(pa.date32()),
                "properties": pa.array(self.props, pa.binary()).cast(pa.string()),
                "subject": pa.array(self.subjects, pa.string())}
        self._reset()
        return pa.Table.from_arrays([cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in EVENT_SCHEMA],
                                    schema=EVENT_SCHEMA)


def decisions_table(decisions: list[Decision]) -> Any:
    """Decisions as rows of the log's ``events`` table (see :class:`DecisionRows`)."""
    rows = DecisionRows()
    for d in decisions:
        rows.add(d)
    return rows.take()


def load_scorers(folder: Any) -> dict[str, Any]:
    """Real-time models saved as ``<name>.json`` (:meth:`LogisticScorer.to_dict`) in ``folder``."""
    import json
    from pathlib import Path

    from plait.decide.scoring import LogisticScorer

    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {f.stem: LogisticScorer.from_dict(json.loads(f.read_text())) for f in sorted(folder.glob("*.json"))}


def contacts_from_log(ws: "Workspace", days: float = 31) -> ContactLog:
    """The contact history of the last ``days`` from the log's ``Decision Made`` events (caps and
    per-customer limits hold across restarts)."""
    from plait.identity.tables import CURRENT

    log = ContactLog()
    if not ws.backend.has_table("identity_subjects"):
        return log
    rows = ws.backend.query(f"""
        SELECT coalesce(json_extract_string(e.properties, '$.profile_id'), s.profile_id) AS pid,
               epoch(e.event_time) AS t, e.channel,
               CAST(json_extract(e.properties, '$.offers') AS VARCHAR[]) AS offers
        FROM events e LEFT JOIN identity_subjects s ON s.version = {CURRENT} AND s.subject = e.subject
        WHERE e.event = '{EVENT}' AND e.event_time >= now() - INTERVAL {int(days)} DAY
          AND json_array_length(json_extract(e.properties, '$.offers')) > 0
        ORDER BY e.event_time""").to_pylist()
    for r in rows:
        if r["pid"]:
            log.record(r["pid"], float(r["t"]), r["channel"], list(r["offers"] or []))
    return log


__all__ = ["CHANNEL_PLACEMENT", "EVENT", "Decider", "Decision", "DecisionRows", "Recorder", "contacts_from_log", "decisions_table",
           "load_scorers", "reseed", "time_context"]
