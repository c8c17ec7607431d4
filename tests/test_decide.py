"""Real-time decisions: rules as data, arbitration, policies under random traffic, recording."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plait.config import Cap, DecideSettings, QuietHours
from plait.decide import Decider, RuleBook, bucket
from plait.decide.http import answer
from plait.decide.policies import key_hash, mix
from plait.errors import ConfigError, DecisionError, RuleError
from plait.profiles.online import MemoryStore

NOON = datetime(2025, 6, 4, 12, tzinfo=timezone.utc).timestamp()      # a Wednesday


def book(**extra):  # noqa: ANN001, ANN201
    offers = [
        {"id": "dairy-10", "name": "10% off dairy", "value": 5.0, "propensity": {"model": "dairy", "default": 0.1}},
        {"id": "bakery-5", "value": 2.0, "propensity": {"default": 0.2},
         "context_weights": [{"when": {"field": "context.weather.rain", "op": "==", "value": True}, "weight": 3.0}]},
        {"id": "vip", "value": 50.0, "eligibility": {"field": "clv.clv", "op": ">", "value": 500}},
        {"id": "apology", "value": 0.0, "service": True, "propensity": {"default": 1.0}},
    ] + extra.pop("offers", [])
    rules = [
        {"id": "everyone", "priority": 10, "actions": [{"offer": "dairy-10"}, {"offer": "bakery-5"}, {"offer": "vip"}]},
        {"id": "complaint", "priority": 90, "events": ["Complaint Filed"], "actions": [{"offer": "apology"}]},
    ] + extra.pop("rules", [])
    return RuleBook(data={"offers": offers, "rules": rules})


def customer(pid="p1", **kw):  # noqa: ANN001, ANN201
    snap = {"profile_id": pid, "features": {"orders": 3}, "traits": {}, "clv": {"clv": 100.0}, "scores": {},
            "consent": {"personalisation": True, "marketing": True}}
    for k, v in kw.items():
        snap[k] = {**snap.get(k, {}), **v} if isinstance(v, dict) else v
    return snap


def decider(*snaps, rules=None, **settings_kw):  # noqa: ANN001, ANN201
    store = MemoryStore()
    for s in snaps:
        store.put(s, identifiers=[f"user_id:{s['profile_id']}"])
    s = DecideSettings(global_control=0, **settings_kw)
    return Decider(rules or book(), store, settings=s, clock=lambda: NOON)


def test_arbitration_ranks_by_propensity_value_context_and_lever():
    d = decider(customer(scores={"dairy": 0.3}))
    r = d.decide({"customer": "user_id:p1", "placement": "app_screen", "explain": True})
    assert [a["offer_id"] for a in r.actions] == ["dairy-10", "bakery-5"]       # 0.3×5 = 1.5 > 0.2×2 = 0.4
    assert r.actions[0]["score"] == pytest.approx(1.5) and "from scores.dairy" in r.actions[0]["reasons"][1]
    assert {"offer_id": "vip", "reason": "not eligible"} in r.rejected          # clv 100 < 500
    rain = d.decide({"customer": "user_id:p1", "placement": "app_screen", "context": {"weather": {"rain": True}}})
    top = {a["offer_id"]: a for a in rain.actions}
    assert top["bakery-5"]["score"] == pytest.approx(1.2) and "context ×3" in top["bakery-5"]["reasons"]
    assert len(d.decide({"customer": "user_id:p1", "placement": "app_screen", "max_actions": 1}).actions) == 1
    # An event picks its rules; the complaint rule's service action outranks marketing.
    c = d.decide({"event": {"type": "track", "event": "Complaint Filed", "userId": "p1", "channel": "call_center"},
                  "explain": True})
    assert c.placement == "agent_desktop" and [a["offer_id"] for a in c.actions] == ["apology"]
    assert {"offer_id": "dairy-10", "reason": "complaint within 14 days"} in c.rejected     # suppressed at once


def test_validity_budget_codes_rollout_and_holdout():
    b = book(offers=[
        {"id": "old", "valid_to": "2025-05-31"}, {"id": "soon", "valid_from": "2025-07-01"},
        {"id": "codes", "coupon_codes": ["A1", "A2"], "value": 9, "propensity": {"default": 0.9}},
        {"id": "pilot", "rollout": 0.3}, {"id": "measured", "holdout": 0.25, "value": 8, "propensity": {"default": 0.9}},
        {"id": "capped", "budget": 1}],
        rules=[{"id": "all", "actions": [{"offer": o} for o in ("old", "soon", "codes", "pilot", "measured", "capped")]}])
    snaps = [customer(f"c{i}") for i in range(400)]
    d = decider(*snaps, rules=b, caps={})
    first = d.decide({"customer": "user_id:c0", "placement": "app_screen", "explain": True})
    reasons = {x["offer_id"]: x["reason"] for x in first.rejected}
    assert reasons["old"] == "ended 2025-05-31" and reasons["soon"] == "starts 2025-07-01"
    later = [d.decide({"customer": f"user_id:c{i}", "placement": "app_screen", "explain": True}) for i in (1, 2)]
    codes = [a["coupon"] for r in [first, *later] for a in r.actions if a["offer_id"] == "codes"]
    assert codes == ["A1", "A2"]                                   # then none left
    assert {"offer_id": "codes", "reason": "no coupon codes left"} in later[1].rejected
    d.accepted("capped")
    assert {"offer_id": "capped", "reason": "budget spent"} in d.decide(
        {"customer": "user_id:c5", "placement": "app_screen", "explain": True}).rejected
    pilot = sum(any(x["offer_id"] == "pilot" and x["reason"].startswith("outside") for x in
                    d.decide({"customer": f"user_id:c{i}", "placement": "app_screen", "explain": True}).rejected)
                for i in range(400))
    assert 0.6 < pilot / 400 < 0.8                                 # 70 % outside a 30 % rollout
    held = [i for i in range(400) if "measured" in d.decide({"customer": f"user_id:c{i}", "placement": "app_screen",
                                                             "explain": True}).held_out]
    assert 0.18 < len(held) / 400 < 0.32
    # Stable: the same customers are held out every time, by the salted hash.
    assert held == [i for i in range(400) if mix(key_hash("plait", f"c{i}"), key_hash("measured", "holdout")) < 0.25]


def test_rule_files_are_validated_with_clear_errors(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("offers:\n  - id: a\n    valu: 3\n")
    with pytest.raises(RuleError, match=r"rules.yaml, rule a, field `valu`: Extra inputs"):
        RuleBook.from_path(f)
    f.write_text("rules:\n  - id: r\n    actions: [{offer: nope}]\n")
    with pytest.raises(RuleError, match="rule r, field `actions`: action names offer 'nope'"):
        RuleBook.from_path(f)
    f.write_text("rules:\n  - id: r\n    condition: {field: features.orders, op: '~', value: 1}\n"
                 "    actions: [{message: {text: hi}}]\n")
    with pytest.raises(RuleError, match="rule r, field `condition`"):
        RuleBook.from_path(f)
    f.write_text("rules:\n  - id: r\n    placements: [billboard]\n    actions: [{message: {text: hi}}]\n")
    with pytest.raises(RuleError, match="unknown placement"):
        RuleBook.from_path(f)
    f.write_text("rules: [\n  - id: r\n")
    with pytest.raises(RuleError, match="not valid YAML at line"):
        RuleBook.from_path(f)
    f.write_text(json.dumps({"offers": [{"id": "a"}, {"id": "a"}]}))
    with pytest.raises(RuleError, match="defined twice"):
        RuleBook(data=json.loads(f.read_text()))
    with pytest.raises(DecisionError, match="`placement`: unknown placement"):
        decider(customer()).decide({"customer": "user_id:p1", "placement": "billboard"})
    with pytest.raises(DecisionError, match="`customer`"):
        decider(customer()).decide({"placement": "push"})


def test_rules_hot_reload_and_keep_the_last_good_version(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("offers: [{id: a, value: 1}]\nrules: [{id: r, actions: [{offer: a}]}]\n")
    b = RuleBook.from_path(tmp_path)
    d = Decider(b, MemoryStore(), settings=DecideSettings(global_control=0), clock=lambda: NOON)
    d.store.put(customer(), identifiers=["user_id:p1"])
    v1 = b.version
    assert d.decide({"customer": "user_id:p1", "placement": "web_banner"}).actions[0]["offer_id"] == "a"
    time.sleep(0.01)
    f.write_text("offers: [{id: b, value: 1}]\nrules: [{id: r, actions: [{offer: b}]}]\n")
    assert b.refresh() and b.version != v1
    assert d.decide({"customer": "user_id:p1", "placement": "web_banner"}).actions[0]["offer_id"] == "b"
    f.write_text("offers: [{id: c, valu: 1}]\n")
    assert not b.refresh() and "valu" in str(b.last_error)
    assert d.decide({"customer": "user_id:p1", "placement": "web_banner"}).actions[0]["offer_id"] == "b"


# -- policies: no violation under random traffic ---------------------------------------------------
CAPS = {"push": [Cap(max=1, per_hours=24)], "email": [Cap(max=2, per_hours=72)], "*": [Cap(max=3, per_hours=24)]}
PLACES = ["push", "email", "sms", "app_screen", "web_banner", "store_screen"]
CHANNEL = {"push": "push", "email": "email", "sms": "sms", "app_screen": "app", "web_banner": "web",
           "store_screen": "store"}

profiles_st = st.fixed_dictionaries({
    "marketing": st.booleans(), "personalisation": st.booleans(), "push_ok": st.one_of(st.none(), st.booleans()),
    "complained_days_ago": st.one_of(st.none(), st.floats(0, 60)), "tz": st.sampled_from(["UTC", "Asia/Tokyo"]),
})
traffic_st = st.lists(st.tuples(st.integers(0, 4), st.sampled_from(PLACES), st.floats(0, 5 * 24)), min_size=1,
                      max_size=60)


@settings(max_examples=80, deadline=None)
@given(st.lists(profiles_st, min_size=5, max_size=5), traffic_st, st.floats(0, 0.5))
def test_no_decision_ever_violates_a_policy(people, traffic, control):
    t0 = datetime(2025, 6, 2, tzinfo=timezone.utc).timestamp()
    store = MemoryStore()
    for i, p in enumerate(people):
        consent = {"marketing": p["marketing"], "personalisation": p["personalisation"]}
        if p["push_ok"] is not None:
            consent["marketing:push"] = p["push_ok"]
        feats = {"orders": 1}
        if p["complained_days_ago"] is not None:
            feats["last_complaint_at"] = t0 - p["complained_days_ago"] * 86400
        store.put({"profile_id": f"p{i}", "features": feats, "traits": {"timezone": {"value": p["tz"]}},
                   "consent": consent, "scores": {}}, identifiers=[f"user_id:p{i}"])
    s = DecideSettings(caps=CAPS, global_control=control, complaint_suppression_days=14,
                       quiet_hours=QuietHours(start=21, end=8, channels=["push", "sms"]))
    d = Decider(book(), store, settings=s)
    shown: list[tuple[float, int, str]] = []
    for who, place, hours in sorted(traffic, key=lambda x: x[2]):
        now = t0 + hours * 3600
        r = d.decide({"customer": f"user_id:p{who}", "placement": place, "now": now})
        p, ch = people[who], CHANNEL[place]
        for a in r.actions:
            purpose = "marketing" if place in ("push", "email", "sms") else "personalisation"
            allowed = p["push_ok"] if (ch == "push" and p["push_ok"] is not None) else p[purpose]
            assert allowed, (a, p)                                              # consent
            assert bucket("plait", "control", f"p{who}") >= control             # global control
            if p["complained_days_ago"] is not None:
                assert p["complained_days_ago"] * 86400 + (now - t0) >= 14 * 86400   # complaint suppression
            if ch in ("push", "sms"):
                from zoneinfo import ZoneInfo
                h = datetime.fromtimestamp(now, ZoneInfo(p["tz"])).hour
                assert 8 <= h < 21                                              # quiet hours
        if r.actions:
            shown.append((now, who, ch))                    # one decision, one contact
        # Caps: never more than allowed in any window ending now.
        for cap_ch, caps in CAPS.items():
            for cap in caps:
                n = sum(1 for t, w, c in shown if w == who and t > now - cap.per_hours * 3600 and
                        (c == cap_ch or (cap_ch == "*" and c in ("push", "email", "sms"))))
                assert n <= cap.max, (cap_ch, n)


def test_decisions_are_logged_and_caps_survive_a_restart(ws):
    from plait.decide import Decider

    ws.log.append([ws.parser.parse({"type": "identify", "userId": "u1", "traits": {"email": "ann@example.com"}},
                                   received_at=0, source="test")])
    ws.resolve()
    ws.consent.set("user_id:u1", "marketing", True)
    (ws.path / "rules").mkdir()
    (ws.path / "rules" / "push.yaml").write_text(
        "offers: [{id: hello, value: 2, coupon_prefix: HI-}]\nrules: [{id: greet, actions: [{offer: hello}]}]\n")
    noon = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0).isoformat()
    d = Decider.from_workspace(ws)
    first = d.decide({"customer": "user_id:u1", "placement": "push", "now": noon})
    assert [a["offer_id"] for a in first.actions] == ["hello"] and first.actions[0]["coupon"].startswith("HI-")
    again = d.decide({"customer": "user_id:u1", "placement": "push", "now": noon})
    assert again.actions == [] and again.rejected[0]["reason"].startswith("frequency cap: 1 per 24 h on push")
    d.close()
    rows = ws.backend.rows("SELECT user_id, channel, properties FROM events WHERE event = 'Decision Made' ORDER BY message_id")
    assert len(rows) == 2 and rows[0]["user_id"] == "u1" and rows[0]["channel"] == "push"
    props = json.loads(rows[0]["properties"])
    assert props["offers"] == ["hello"] and props["profile_id"] == first.profile_id and props["coupons"] == [
        first.actions[0]["coupon"]]
    # A new decider (a restart) rebuilds the contact history from the log: the cap still holds.
    d2 = Decider.from_workspace(ws)
    assert d2.decide({"customer": "user_id:u1", "placement": "push", "now": noon}).actions == []
    d2.close()
    # Recorded decisions belong to the customer who got them.
    ws.resolve()
    assert ws.profiles.get("user_id:u1")["profile_id"] == first.profile_id


def test_decide_over_http(ws):
    from fastapi.testclient import TestClient

    from plait.server.app import create_app

    ws.log.append([ws.parser.parse({"type": "identify", "userId": "u1", "traits": {"firstName": "Ann"}},
                                   received_at=0, source="test")])
    ws.resolve()
    ws.consent.set("user_id:u1", "personalisation", True)
    (ws.path / "rules").mkdir()
    (ws.path / "rules" / "site.json").write_text(json.dumps({
        "offers": [{"id": "welcome", "value": 3, "channels": ["web"]}],
        "rules": [{"id": "hello", "placements": ["web_banner"], "actions": [{"offer": "welcome"}],
                   "condition": {"field": "traits.firstName", "op": "exists", "min_confidence": "declared"}}]}))
    key = ws.keys.create("shop")
    analyst = ws.keys.create("bi", role="analyst")
    with TestClient(create_app(ws)) as c:
        r = c.post("/v1/decide", json={"customer": "user_id:u1", "placement": "web_banner"}, auth=(key, ""))
        assert r.status_code == 200, r.text
        body = r.json()
        assert [a["offer_id"] for a in body["actions"]] == ["welcome"] and body["rules"] == ["hello"]
        ev = {"type": "page", "userId": "u1", "channel": "web", "properties": {"path": "/"}}
        assert c.post("/v1/decide", json={"event": ev}, auth=(key, "")).json()["placement"] == "web_banner"
        bad = c.post("/v1/decide", json={"customer": "user_id:u1", "placement": "fax"}, auth=(key, ""))
        assert bad.status_code == 400 and bad.json()["field"] == "placement"
        assert c.post("/v1/decide", content=b"[1,", auth=(key, "")).status_code == 400
        assert c.post("/v1/decide", json={"customer": "user_id:u1"}).status_code == 401
        assert c.post("/v1/decide", json={"customer": "user_id:u1"}, auth=(analyst, "")).status_code == 403
        rules = c.get("/v1/decide/rules", auth=(analyst, "")).json()
        assert rules["rules"] == ["hello"] and rules["offers"] == ["welcome"]
        assert "/v1/decide" in c.get("/openapi.json").json()["paths"]
    # The decisions reached the log through the collector's writer.
    assert ws.backend.scalar("SELECT count(*) FROM events WHERE event = 'Decision Made'") == 2


def test_a_real_time_model_scores_in_the_path():
    import numpy as np

    from plait.decide.scoring import LogisticScorer

    rng = np.random.default_rng(0)
    rows = [{"features": {"orders": int(o)}, "context": {"hour": int(h)}} for o, h in
            zip(rng.integers(0, 20, 2000), rng.integers(0, 24, 2000))]
    truth = [1 / (1 + np.exp(-(-3 + 0.3 * r["features"]["orders"]))) for r in rows]
    y = (rng.random(2000) < truth).astype(int)
    s = LogisticScorer(["features.orders", "context.hour"]).fit(rows, y)
    assert abs(s.coef_[0] / s.scales_[0] - 0.3) < 0.06 and abs(s.coef_[1]) < 0.2     # recovers the planted slope
    again = LogisticScorer.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again.predict_proba_one(rows[0]) == pytest.approx(s.predict_proba_one(rows[0]))
    b = book(offers=[{"id": "smart", "value": 10, "propensity": {"model": "buyer", "default": 0.01}}],
             rules=[{"id": "s", "actions": [{"offer": "smart"}]}])
    d = decider(customer("p1", features={"orders": 18}), customer("p2", features={"orders": 0}), rules=b)
    d.scorers["buyer"] = s
    hi = {a["offer_id"]: a for a in d.decide({"customer": "user_id:p1", "placement": "web_banner"}).actions}["smart"]
    lo = {a["offer_id"]: a for a in d.decide({"customer": "user_id:p2", "placement": "web_banner"}).actions}.get("smart")
    assert hi["propensity"] > 0.8 and "from model buyer" in hi["reasons"][1]
    assert lo is None or lo["propensity"] < 0.1
    before = s.predict_proba_one(rows[0])
    s.learn_one(rows[0], 1)
    assert s.predict_proba_one(rows[0]) > before                          # an outcome moves it online


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 1), st.floats(0, 20), st.floats(0.5, 3), st.booleans(), st.booleans(),
                          st.floats(0, 0.5)), min_size=1, max_size=12),
       st.integers(1, 4), st.booleans())
def test_checking_best_first_chooses_what_checking_everything_chooses(specs, limit, rain):
    offers = [{"id": f"o{i}", "value": v, "propensity": {"default": p}, "holdout": h, "service": svc,
               "eligibility": {"field": "features.orders", "op": ">=", "value": 5} if picky else None,
               "context_weights": [{"when": {"field": "context.weather.rain", "op": "==", "value": True}, "weight": w}]}
              for i, (p, v, w, svc, picky, h) in enumerate(specs)]
    b = RuleBook(data={"offers": offers, "rules": [{"id": "r", "actions": [{"offer": o["id"]} for o in offers]}]})
    d = decider(customer("p1", features={"orders": 3}), rules=b, max_actions=4, caps={})
    req = {"customer": "user_id:p1", "placement": "web_banner", "max_actions": limit, "context": {"weather": {"rain": rain}}}
    lazy, full = d.decide(req), d.decide({**req, "explain": True})
    assert [(a["offer_id"], a["score"]) for a in lazy.actions] == [(a["offer_id"], a["score"]) for a in full.actions]
    # What it did check, it judged the same way.
    assert set(lazy.held_out) <= set(full.held_out)
    assert all(r in full.rejected for r in lazy.rejected) and 0 <= lazy.skipped < len(specs)


def test_fairness_report_flags_a_group_left_out_of_discounts(ws):
    from plait.decide import Decider
    from plait.decide.fairness import report

    calls = []
    for i in range(60):
        g = "f" if i < 30 else ("m" if i < 57 else "x")
        calls.append({"type": "identify", "userId": f"c{i}", "traits": {"gender": g}})
    ws.log.append([ws.parser.parse(c, received_at=0, source="test") for c in calls])
    ws.resolve()
    (ws.path / "rules").mkdir()
    (ws.path / "rules" / "r.yaml").write_text(
        "offers: [{id: deal, value: 5, discount: 0.2}, {id: news, value: 1}]\n"
        "rules: [{id: deals, condition: {field: traits.gender, op: '==', value: f}, actions: [{offer: deal}]},\n"
        "        {id: all, actions: [{offer: news}]}]\n")
    ws.settings.privacy.defaults["personalisation"] = True
    ws.settings.decide.global_control = 0
    d = Decider.from_workspace(ws)
    for i in range(60):
        d.decide({"customer": f"user_id:c{i}", "placement": "web_banner"})
    d.close()
    r = report(ws, "traits.gender").set_index("group")
    assert r.loc["f", "discount_rate"] == 1.0 and r.loc["m", "discount_rate"] == 0.0
    assert r.loc["m", "flagged"] and "discount rate 0%" in r.loc["m", "why"] and not r.loc["f", "flagged"]
    assert r.loc["f", "offer_rate"] == r.loc["m", "offer_rate"] == 1.0
    assert r.loc["x", "suppressed"] and np.isnan(r.loc["x", "discount_rate"])      # 3 customers: too few to show
    with pytest.raises(Exception, match="cannot group customers by"):
        report(ws, "features.shoe_size")
    with pytest.raises(ConfigError, match="min_ratio must be above 0 and at most 1"):   # (once "under -500%")
        report(ws, "traits.gender", min_ratio=-5)


def test_outcomes_are_linked_to_the_decisions_that_caused_them(ws):
    from plait.decide import Decider
    from plait.decide.outcomes import link

    ws.log.append([ws.parser.parse({"type": "identify", "userId": u}, received_at=0, source="test") for u in ("a", "b")])
    ws.resolve()
    (ws.path / "rules").mkdir()
    (ws.path / "rules" / "r.yaml").write_text(
        "offers: [{id: ten, value: 5, coupon_prefix: TEN-}]\nrules: [{id: all, actions: [{offer: ten}]}]\n")
    ws.settings.privacy.defaults["personalisation"] = True
    ws.settings.decide.global_control = 0
    d = Decider.from_workspace(ws)
    t0 = datetime(2025, 6, 4, 12, tzinfo=timezone.utc)
    da = d.decide({"customer": "user_id:a", "placement": "web_banner", "now": t0.isoformat()})
    db = d.decide({"customer": "user_id:b", "placement": "web_banner", "now": t0.isoformat()})
    d.close()
    coupon = da.actions[0]["coupon"]

    def track(user, event, hours, **props):  # noqa: ANN001, ANN003, ANN202
        ts = datetime.fromtimestamp(t0.timestamp() + hours * 3600, timezone.utc).isoformat()
        ws.log.append([ws.parser.parse({"type": "track", "event": event, "userId": user, "timestamp": ts,
                                        "properties": props}, received_at=0, source="test")])

    track("a", "Offer Clicked", 0.1, decision_id=da.decision_id, offer_id="ten")
    track("a", "Order Completed", 2, order_id="o1", total=40.0, currency="USD", coupon=coupon)
    track("b", "Order Completed", 24 * 10, order_id="o2", total=25.0, currency="USD")     # after the window
    ws.resolve()
    rows = link(ws, window_days=7).set_index("profile_id")
    a, b = rows.loc[da.profile_id], rows.loc[db.profile_id]
    assert (a["clicked"], a["redeemed"], a["converted"], a["value"]) == (True, True, True, 40.0)
    assert (b["clicked"], b["redeemed"], b["converted"], b["orders"]) == (False, False, False, 0)
    assert set(rows["group"]) == {"treatment"} and a["coupon"] == coupon


def test_a_redis_store_serves_the_same_decisions(ws):
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        pytest.skip("no Redis on 127.0.0.1:6379 (the CI machine runs one)")
    pytest.importorskip("redis", reason="pip install redis")
    from plait.profiles.online import RedisStore

    rs = RedisStore(prefix=f"plait-test-{time.time_ns()}:")
    try:
        snap = customer("p1", scores={"dairy": 0.3}, features={"first": datetime(2025, 1, 1, tzinfo=timezone.utc)})
        rs.put(snap, identifiers=["user_id:p1", "email:ann@example.com"])
        assert rs.lookup("email:Ann@Example.com")["scores"]["dairy"] == 0.3 and rs.subjects("p1") == [
            "user_id:p1", "email:ann@example.com"]
        rs.update("p1", "features.orders", 9)
        assert rs.lookup("user_id:p1")["features"]["orders"] == 9 and len(rs) == 1
        mem = decider(customer("p1", scores={"dairy": 0.3}, features={"orders": 9}))
        red = Decider(book(), rs, settings=DecideSettings(global_control=0), clock=lambda: NOON)
        req = {"customer": "user_id:p1", "placement": "app_screen", "explain": True}
        assert [(a["offer_id"], a["score"]) for a in red.decide(req).actions] == [
            (a["offer_id"], a["score"]) for a in mem.decide(req).actions]
        # A complaint arriving as the event suppresses marketing in the shared store too.
        red.decide({"event": {"type": "track", "event": "Complaint Filed", "userId": "p1"}})
        assert "last_complaint_at" in rs.lookup("p1")["features"]
    finally:
        rs.clear()
    # A workspace configured for Redis loads its customers there.
    ws.log.append([ws.parser.parse({"type": "identify", "userId": "w1", "traits": {"firstName": "Wu"}},
                                   received_at=0, source="test")])
    ws.resolve()
    ws.settings.decide.online_store = "redis://127.0.0.1:6379/0"
    d = Decider.from_workspace(ws, record=False)
    try:
        assert len(d.store) == 1 and d.store.lookup("user_id:w1")["traits"]["firstName"]["value"] == "Wu"
    finally:
        d.store.clear()


def test_an_unreachable_redis_store_is_a_clear_error(ws):
    pytest.importorskip("redis", reason="pip install redis")
    from plait.profiles.online import RedisStore

    with pytest.raises(ConfigError, match=r"online profile store \(redis at 127.0.0.1:1/0\) cannot be reached") as e:
        RedisStore("redis://user:secret@127.0.0.1:1/0")
    assert "secret" not in str(e.value)              # the URL's password is not repeated
    # A store that goes away while serving: the decision is a 503 to retry, not a 500.
    store = RedisStore.__new__(RedisStore)
    import redis

    store.r, store.prefix, store._errors = redis.Redis(port=1), "x:", redis.exceptions.RedisError
    d = Decider(book(), store, settings=DecideSettings(global_control=0), clock=lambda: NOON)
    status, body = answer(d, {"customer": "user_id:p1", "placement": "app_screen"})
    assert status == 503 and b"online profile store failed" in body


def test_compiled_conditions_are_bounded_and_slots_never_reused(monkeypatch):
    """Hot reloads of edited rules must not keep every old condition, and a decision's memo
    (by slot) must never confuse a condition from before a clear-out with one from after."""
    from plait.decide import rules

    monkeypatch.setattr(rules, "_MAX_SHARED", 5)
    seen = set()
    for i in range(12):
        b = RuleBook(data={"offers": [{"id": "o", "value": 1}],
                           "rules": [{"id": "r", "condition": {"field": "features.orders", "op": ">=", "value": i},
                                      "actions": [{"offer": "o"}]}]})
        slot, test = b.rules["r"].test
        assert slot not in seen
        seen.add(slot)
        assert test({"features": {"orders": i}}) and not test({"features": {"orders": i - 1}})
        assert len(rules._SHARED) <= 5
