"""Decide workers: forked processes owning shares of the customers decide exactly as one process."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime, timezone

import pytest

from plait.decide.workers import shard

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="decide workers need os.fork")

PEOPLE = 40
CODES = [f"CODE{i:02d}" for i in range(10)]


def _world(ws):  # noqa: ANN001, ANN202
    ws.log.append([ws.parser.parse({"type": "identify", "userId": f"u{i}", "traits": {"firstName": f"N{i}"}},
                                   received_at=0, source="test") for i in range(PEOPLE)])
    ws.resolve()
    for i in range(PEOPLE):
        ws.consent.set(f"user_id:u{i}", "marketing", True)
        ws.consent.set(f"user_id:u{i}", "personalisation", True)
    ws.settings.decide.global_control = 0.2
    (ws.path / "rules").mkdir()
    (ws.path / "rules" / "crm.json").write_text(json.dumps({
        "offers": [{"id": "app-push", "value": 4, "channels": ["push"], "coupon_prefix": "P-"},
                   {"id": "mail", "value": 3, "channels": ["email"]},
                   {"id": "banner", "value": 2, "channels": ["web"], "holdout": 0.2},
                   {"id": "scarce", "value": 9, "channels": ["app"], "coupon_codes": CODES}],
        "rules": [{"id": "all", "actions": [{"offer": "app-push"}, {"offer": "mail"}, {"offer": "banner"}]},
                  {"id": "app", "placements": ["app_screen"], "actions": [{"offer": "scarce"}]}]}))
    return ws.keys.create("shop")


def _requests(now: str) -> list[dict]:
    out = []
    for rep in range(3):
        for i in range(PEOPLE):
            placement = ["push", "email", "web_banner"][(i + rep) % 3]
            out.append({"customer": f"user_id:u{i}", "placement": placement, "now": now})
    return out


def _offers(body: dict) -> list[str]:
    return [a["offer_id"] for a in body["actions"]]


def test_workers_decide_exactly_as_one_process(ws):
    from fastapi.testclient import TestClient

    from plait.decide import Decider
    from plait.server.app import create_app

    key = _world(ws)
    noon = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0).isoformat()
    reqs = _requests(noon)
    one = Decider.from_workspace(ws, record=False)        # the same customers, rules and (empty) history
    expected = [_offers(one.decide(r).as_dict()) for r in reqs]
    assert any(expected) and not all(expected)            # caps, holdouts and the control group all bite

    ws.settings.decide.workers = 2
    app = create_app(ws)
    workers = app.state.workers
    assert len(workers.peers) == 2 and all(pid != os.getpid() for pid in workers.pids)
    with TestClient(app) as c:
        got = []
        for r in reqs:
            res = c.post("/v1/decide", json=r, auth=(key, ""))
            assert res.status_code == 200, res.text
            got.append(res.json())
        assert [_offers(b) for b in got] == expected     # every policy held as in one process
        # Both workers answered: each owns the customers its shard says.
        owners = {shard(b["profile_id"], 2) for b in got}
        assert owners == {0, 1}
        assert len({b["decision_id"] for b in got}) == len(got)
        assert len({b["decision_id"].split("-")[1] for b in got}) == 2       # one prefix per worker
        # Triggers ask from another thread: routed and answered the same way.
        a = workers.decide({"customer": "user_id:u1", "placement": "web_banner", "now": noon})
        assert a.profile_id == got[1]["profile_id"] and isinstance(a.as_dict()["actions"], list)
        # Bad requests are answered by the worker, naming the field.
        bad = c.post("/v1/decide", json={"customer": "user_id:u1", "placement": "fax"}, auth=(key, ""))
        assert bad.status_code == 400 and bad.json()["field"] == "placement"
        assert c.post("/v1/decide", json={"placement": "push"}, auth=(key, "")).status_code == 400
    # Every decision the workers made reached the log, once.
    n = ws.backend.scalar("SELECT count(*) FROM events WHERE event = 'Decision Made'")
    assert n == len(reqs) + 1                  # the answered ones and the trigger's (bad requests are no decision)
    assert ws.backend.scalar("SELECT count(DISTINCT message_id) FROM events WHERE event = 'Decision Made'") == n
    pushed = ws.backend.rows("""SELECT user_id, count(*) AS n FROM events WHERE event = 'Decision Made'
                                AND channel = 'push' AND json_array_length(json_extract(properties, '$.offers')) > 0
                                GROUP BY 1 HAVING count(*) > 1""")
    assert pushed == []                        # one push a day per customer, whichever worker decided


def test_coupon_codes_are_dealt_out_never_issued_twice(ws):
    from fastapi.testclient import TestClient

    from plait.server.app import create_app

    key = _world(ws)
    ws.settings.decide.workers = 2
    issued, reasons = [], set()
    with TestClient(create_app(ws)) as c:
        for i in range(PEOPLE):
            body = c.post("/v1/decide", json={"customer": f"user_id:u{i}", "placement": "app_screen"},
                          auth=(key, "")).json()
            issued += [a["coupon"] for a in body["actions"] if a["offer_id"] == "scarce"]
            reasons |= {r["reason"] for r in body["rejected"] if r["offer_id"] == "scarce"}
    assert len(issued) == len(set(issued)) and set(issued) <= set(CODES)
    assert len(issued) >= 8 and "no coupon codes left" in reasons


def test_a_lost_worker_is_replaced_and_caps_still_hold(ws):
    from fastapi.testclient import TestClient

    from plait.server.app import create_app

    key = _world(ws)
    noon = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0).isoformat()
    ws.settings.decide.workers = 2
    ws.settings.decide.record_interval_s = 10     # the history must come from the queue, not a timer
    app = create_app(ws)
    workers = app.state.workers
    with TestClient(app) as c:
        first = {i: c.post("/v1/decide", json={"customer": f"user_id:u{i}", "placement": "push", "now": noon},
                           auth=(key, "")).json() for i in range(PEOPLE)}
        pushed = {i for i, b in first.items() if _offers(b) == ["app-push"]}
        assert pushed
        time.sleep(0.3)                        # the workers have shipped their decisions (every 50 ms)
        # Ctrl-C and a service manager's SIGTERM reach every process: workers wait for the server.
        os.kill(workers.pids[1], signal.SIGINT)
        os.kill(workers.pids[1], signal.SIGTERM)
        os.kill(workers.pids[0], signal.SIGKILL)
        deadline = time.time() + 10
        while workers.peers[0].alive and time.time() < deadline:
            time.sleep(0.05)
        assert workers.failed_over == 1 and workers.peers[1].alive
        again = {i: c.post("/v1/decide", json={"customer": f"user_id:u{i}", "placement": "push", "now": noon},
                           auth=(key, "")) for i in range(PEOPLE)}
        assert all(r.status_code == 200 for r in again.values())
        # The server process took over worker 0's customers with their history from the log.
        assert all(_offers(again[i].json()) == [] for i in pushed)
        assert any(shard(first[i]["profile_id"], 2) == 0 for i in pushed)


def test_reload_gives_the_workers_new_customers(ws):
    from fastapi.testclient import TestClient

    from plait.server.app import create_app

    key = _world(ws)
    admin = ws.keys.create("ops", role="admin")
    ws.settings.decide.workers = 2
    with TestClient(create_app(ws)) as c:
        ask = lambda: c.post("/v1/decide", json={"customer": "user_id:new1", "placement": "web_banner"},  # noqa: E731
                             auth=(key, "")).json()
        assert ask()["profile_id"] is None
        ws.log.append([ws.parser.parse({"type": "identify", "userId": "new1", "traits": {"firstName": "Neu"}},
                                       received_at=0, source="test")])
        ws.resolve()
        r = c.post("/v1/decide/reload", auth=(admin, ""))
        assert r.status_code == 200 and r.json()["customers"] == PEOPLE + 1
        assert r.json()["processes"] == 3                 # this one and both workers took the new store
        assert ask()["profile_id"] is not None


def test_a_bad_field_is_a_400_from_the_worker(ws):
    from fastapi.testclient import TestClient

    from plait.server.app import create_app

    key = _world(ws)
    ws.settings.decide.workers = 1
    app = create_app(ws)
    with TestClient(app) as c:
        r = c.post("/v1/decide", json={"customer": "user_id:u1", "placement": "web_banner", "max_actions": "x"},
                   auth=(key, ""))
        assert r.status_code == 400 and r.json()["field"] == "max_actions"
        assert c.post("/v1/decide", json={"customer": "user_id:u1", "placement": "web_banner"},
                      auth=(key, "")).status_code == 200
        assert app.state.workers.peers[0].alive


def test_triggers_decide_through_the_workers(order_ready):
    """A trigger fired by a collected event is decided by the customer's worker and delivered."""
    ws = order_ready
    import asyncio
    import threading

    from plait.activate import Memory, Outbox
    from plait.decide import Decider
    from plait.decide.triggers import Triggers
    from plait.decide.workers import Workers

    d = Decider.from_workspace(ws)
    workers = Workers(d, 2, record=d.record.table, interval_s=0.1)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    loop.call_soon_threadsafe(workers.attach, loop)
    m = Memory("app")
    ob = Outbox(ws, {"app": m}).start()
    tr = Triggers(workers, ob).attach(ws.log)
    try:
        ws.log.append([ws.parser.parse({"type": "track", "event": "Order Ready", "userId": "u1",
                                        "properties": {"order_id": "o9"}}, received_at=0, source="test")])
        deadline = time.time() + 10
        while not m.sent and time.time() < deadline:
            time.sleep(0.05)
        assert len(m.sent) == 1 and [a["offer_id"] for a in m.sent[0]["decision"]["actions"]] == ["ready"]
        assert workers.answered == 1 and tr.fired == 1
    finally:
        tr.close()
        ob.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        workers.close()
        d.close()
    assert ws.backend.scalar("SELECT count(*) FROM events WHERE event = 'Decision Made'") == 1


def test_every_process_of_a_server_has_its_own_id_letter():
    from pydantic import ValidationError

    from plait.config import DecideSettings
    from plait.decide import engine

    before = engine._PREFIX
    try:
        prefixes = set()
        for slot in range(32):            # 31 workers and the server process
            engine.reseed(slot)
            prefixes.add(engine._PREFIX[:4])
        assert len(prefixes) == 32
    finally:
        engine._PREFIX = before
    with pytest.raises(ValidationError):
        DecideSettings(workers=32)


def test_a_failing_decision_is_a_500_and_the_worker_lives_on(ws, monkeypatch):
    from fastapi.testclient import TestClient

    from plait.decide.engine import Decider
    from plait.server.app import create_app

    key = _world(ws)
    real = Decider.decide

    def failing(self, request):  # noqa: ANN001, ANN202
        if request.get("placement") == "agent_desktop":
            raise RuntimeError("model file vanished")
        return real(self, request)

    monkeypatch.setattr(Decider, "decide", failing)      # before the fork: the workers inherit it
    ws.settings.decide.workers = 2
    app = create_app(ws)
    with TestClient(app) as c:
        for i in range(4):                                # customers of both workers
            r = c.post("/v1/decide", json={"customer": f"user_id:u{i}", "placement": "agent_desktop"}, auth=(key, ""))
            assert r.status_code == 500 and r.json()["code"] == "decision_failed"
            assert "RuntimeError: model file vanished" in r.json()["message"]
            ok = c.post("/v1/decide", json={"customer": f"user_id:u{i}", "placement": "web_banner"}, auth=(key, ""))
            assert ok.status_code == 200
        assert all(p.alive for p in app.state.workers.peers)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_consent_withdrawal_through_the_collector_binds_the_next_decision(ws, workers):
    from fastapi.testclient import TestClient

    from plait.server.app import create_app

    key = _world(ws)
    ws.settings.decide.global_control = 0
    ws.settings.decide.workers = workers
    noon = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0).isoformat()
    ask = lambda c, i: c.post("/v1/decide", json={"customer": f"user_id:u{i}", "placement": "web_banner",  # noqa: E731
                                                   "now": noon}, auth=(key, "")).json()
    with TestClient(create_app(ws)) as c:
        assert [_offers(ask(c, i)) for i in (3, 4)] == [["banner"], ["banner"]]
        for i in range(12):    # customers of both workers
            r = c.post("/v1/track", auth=(key, ""), json={"userId": f"u{i}", "event": "Consent Updated",
                                                           "properties": {"purpose": "personalisation", "granted": False}})
            assert r.status_code == 200
            body = ask(c, i)                               # right after the 200: no reload, no wait
            assert _offers(body) == [] and {"offer_id": "banner", "reason": "no personalisation consent for web"} in body["rejected"]
        assert _offers(ask(c, 20)) == ["banner"]           # others untouched
