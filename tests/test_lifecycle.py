"""Lifecycle triggers: the shipped pack fires on each moment; abandonment timers; birthdays,
anniversaries and churn-risk crossings."""

from __future__ import annotations

from datetime import date, datetime, timezone

import yaml

from plait.config import DecideSettings
from plait.decide import Decider, RuleBook
from plait.decide.lifecycle import Abandonment, crossings, daily_events, lifecycle_pack
from plait.profiles.online import MemoryStore

NOON = datetime(2025, 6, 4, 12, tzinfo=timezone.utc).timestamp()


def setup(**features):  # noqa: ANN003, ANN201
    store = MemoryStore()
    store.put({"profile_id": "p1", "features": {"orders": 0, **features}, "traits": {}, "scores": {},
               "consent": {"marketing": True, "personalisation": True}}, identifiers=["user_id:u1"])
    book = RuleBook(data=yaml.safe_load(lifecycle_pack()))
    return Decider(book, store, settings=DecideSettings(global_control=0, caps={}), clock=lambda: NOON), store


def ev(name, **props):  # noqa: ANN001, ANN003, ANN201
    return {"event": {"type": "track", "event": name, "userId": "u1", "properties": props}, "placement": "push"}


def test_the_lifecycle_pack_fires_on_each_moment():
    d, store = setup()
    first = d.decide(ev("Order Completed", order_id="o1", total=30))
    assert [a["offer_id"] for a in first.actions] == ["welcome-thanks"] and "first-purchase" in first.rules
    second = d.decide(ev("Order Completed", order_id="o2", total=10))
    assert "first-purchase" not in second.rules                 # the first order counted at once
    assert store.lookup("p1")["features"]["orders"] == 2 and store.lookup("p1")["features"]["revenue"] == 40
    expected = {"Birthday": "birthday-treat", "Customer Anniversary": "anniversary-thanks",
                "Loyalty Tier Changed": "tier-welcome", "Churn Risk Raised": "win-back",
                "Cart Abandoned": "cart-reminder", "Store Visit": "in-store-coupon", "Order Ready": "order-ready"}
    for name, offer in expected.items():
        d2, _ = setup()
        assert [a["offer_id"] for a in d2.decide(ev(name)).actions] == [offer], name
    d3, _ = setup(orders=4)
    assert "fifth-order" in d3.decide(ev("Order Completed", order_id="o5")).rules
    d4, _ = setup()
    c = d4.decide(ev("Complaint Filed"))
    assert [a["offer_id"] for a in c.actions] == ["service-recovery"]     # service recovery, no marketing


def test_abandonment_timers():
    ab = Abandonment(cart_minutes=30, browse_minutes=120)
    t = NOON
    ab.see("u1", {"event": "Product Added", "userId": "u1", "properties": {"product_id": "P1"}}, t)
    assert ab.due(t + 29 * 60) == []
    fired = ab.due(t + 31 * 60)
    assert [e["event"] for e in fired] == ["Cart Abandoned"] and fired[0]["properties"]["product_id"] == "P1"
    assert ab.due(t + 3600) == []                                 # once
    ab.see("u2", {"event": "Checkout Started", "userId": "u2"}, t)
    ab.see("u2", {"event": "Order Completed", "userId": "u2"}, t + 600)
    assert ab.due(t + 7200) == []                                 # they bought
    ab.see("u3", {"event": "Product Viewed", "userId": "u3"}, t)
    ab.see("u3", {"event": "Product Viewed", "userId": "u3"}, t + 3600)   # still browsing: re-armed
    assert ab.due(t + 7300) == [] and [e["event"] for e in ab.due(t + 3600 + 7201)] == ["Browse Abandoned"]


def test_birthdays_anniversaries_and_churn_crossings():
    store = MemoryStore()
    store.put({"profile_id": "a", "traits": {"birthday": {"value": "1990-06-04"}},
               "features": {"first_purchase": datetime(2024, 6, 4, tzinfo=timezone.utc)}}, identifiers=["user_id:ua"])
    store.put({"profile_id": "b", "traits": {"birthday": {"value": "1985-01-02"}}, "features": {}},
              identifiers=["anonymous_id:xb"])
    evs = daily_events(store, date(2025, 6, 4))
    assert sorted((e["event"], e.get("userId")) for e in evs) == [("Birthday", "ua"), ("Customer Anniversary", "ua")]
    assert daily_events(store, date(2024, 6, 4)) == [{"type": "track", "event": "Birthday", "userId": "ua",
                                                      "properties": {"birthday": "1990-06-04"}}]   # not yet a year
    old, new = MemoryStore(), MemoryStore()
    for s, scores in ((old, {"a": 0.3, "b": 0.7}), (new, {"a": 0.6, "b": 0.8})):
        for pid, v in scores.items():
            s.put({"profile_id": pid, "scores": {"churn": v}}, identifiers=[f"user_id:u{pid}"])
    up = crossings(old, new, "churn", 0.5)
    assert [(e["userId"], e["properties"]["previous"]) for e in up] == [("ua", 0.3)]      # b was already above


def test_a_cart_trigger_delivers_when_the_timer_runs_out(ws):
    from plait.activate import Memory, Outbox
    from plait.decide.triggers import Triggers

    d, store = setup()
    data = yaml.safe_load(lifecycle_pack())
    for r in data["rules"]:
        if r["id"] == "cart-abandoned":
            r["trigger"] = {"destination": "crm"}
    d.book = RuleBook(data=data)
    m = Memory("crm")
    ob = Outbox(ws, {"crm": m})
    tr = Triggers(d, ob)
    tr.abandonment.see("u1", {"event": "Product Added", "userId": "u1", "properties": {"sku": "S1"}}, NOON)
    assert tr.tick(NOON + 60) == 0
    assert tr.tick(NOON + 31 * 60) == 1
    ob.deliver_due()
    assert m.sent[0]["trigger"] == "cart-abandoned" and m.sent[0]["decision"]["actions"][0]["offer_id"] == "cart-reminder"


def test_rules_and_decide_from_the_cli(ws):
    import json

    from typer.testing import CliRunner

    from plait.cli.main import app

    ws.log.append([ws.parser.parse({"type": "identify", "userId": "u1", "traits": {"gender": "f"}},
                                   received_at=0, source="test")])
    ws.resolve()
    ws.consent.set("user_id:u1", "marketing", True)
    run = CliRunner()
    w = ["-w", str(ws.path)]
    r = run.invoke(app, ["rules", "init", *w])
    assert r.exit_code == 0, r.output
    r = run.invoke(app, ["rules", "check", *w])
    assert r.exit_code == 0 and "11 offers — valid" in r.stdout.replace("\n", " ")
    noon = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0).isoformat()
    r = run.invoke(app, ["decide", "user_id:u1", "--event", "Birthday", "--placement", "push", "--json",
                         "--now", noon, *w])                 # outside the push quiet hours
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["actions"][0]["offer_id"] == "birthday-treat" and d["rules"] == ["birthday"]
    (ws.path / "rules" / "broken.yaml").write_text("rules: [{id: x, actions: [{offer: nope}]}]\n")
    r = run.invoke(app, ["rules", "check", *w])
    assert r.exit_code == 1 and "rule x" in r.output and "nope" in r.output


def test_collected_events_update_the_snapshot_once():
    d, store = setup()
    order = {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "o-1",
             "properties": {"order_id": "o1", "total": 30}, "timestamp": NOON}
    assert d.observe_event(order)                               # the log's follower
    assert not d.observe_event(order)                           # a replayed follower call
    first = d.decide({"event": order, "placement": "push"})     # and a trigger's decision on it
    assert store.lookup("p1")["features"]["orders"] == 1 and "first-purchase" in first.rules
    assert not d.observe_event({"type": "track", "event": "Product Viewed", "userId": "u1", "messageId": "v"})
    d.observe_event({"type": "track", "event": "Consent Updated", "userId": "u1", "messageId": "c1",
                     "properties": {"purpose": "marketing", "granted": False, "consent_channel": "push"}})
    assert store.lookup("p1")["consent"]["marketing:push"] is False
    assert d.decide(ev("Birthday")).actions == []               # no marketing on push any more


def test_abandonment_holds_one_timer_per_customer_however_busy():
    ab = Abandonment(cart_minutes=30, browse_minutes=120)
    for i in range(10_000):                                        # a busy browser, a view a second
        ab.see("u1", {"event": "Product Viewed", "userId": "u1", "properties": {"product_id": f"P{i}"}}, NOON + i)
    ab.see("u2", {"event": "Product Viewed", "userId": "u2"}, NOON)
    assert len(ab) == 2
    assert [e["userId"] for e in ab.due(NOON + 7200)] == ["u2"]    # u1 is still browsing
    assert len(ab) == 1
    [fired] = ab.due(NOON + 9_999 + 7200)
    assert fired["properties"]["product_id"] == "P9999" and fired["timestamp"] == NOON + 9_999 + 7200
    ab.see("u3", {"event": "Product Viewed", "userId": "u3"}, NOON + 100)
    ab.see("u3", {"event": "Product Viewed", "userId": "u3", "properties": {"late": True}}, NOON)   # arrives late
    [late] = ab.due(NOON + 100 + 7200)
    assert "late" not in late["properties"]
    assert len(ab) == 0
