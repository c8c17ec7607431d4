"""Consent: choices as events, one check, every path respecting it, the ledger recording it."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import plait
from plait.cli.main import app
from plait.errors import IdentityError
from plait.privacy.consent import decide
from plait.privacy.groups import aggregate, published
from plait.privacy.ledger import HEADS_FILE, LOG_FILE
from plait.server import create_app
from tests.test_identity import send

T0 = datetime(2025, 5, 1, tzinfo=timezone.utc)
CUSTOMERS = ["u0", "u1", "u2"]
PURPOSES = ["analytics", "marketing"]
CHANNELS = [None, "email", "sms"]

choice = st.tuples(st.sampled_from(CUSTOMERS), st.sampled_from(PURPOSES), st.booleans(), st.sampled_from(CHANNELS),
                   st.integers(0, 50))


def reference(choices: list[tuple], customer: str, purpose: str, channel: str | None, default: bool) -> bool:
    """The rule, written plainly: the newest choice covering the purpose and channel wins."""
    best = None
    for k, (c, p, g, ch, day) in enumerate(choices):
        if c == customer and p == purpose and (ch is None or ch == channel):
            if best is None or (day, k) >= (best[0], best[1]):
                best = (day, k, g)
    return default if best is None else best[2]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(choice, max_size=12, unique_by=lambda x: (x[0], x[4])))
def test_every_path_respects_consent(tmp_path_factory, choices):
    with plait.connect(tmp_path_factory.mktemp("c")) as ws:
        for c in CUSTOMERS:
            send(ws, {"type": "identify", "userId": c, "anonymousId": f"ck-{c}", "traits": {"email": f"{c}@x.com"}})
            send(ws, {"event": "Order Completed", "userId": c, "properties": {"order_id": f"o-{c}", "total": 5,
                                                                               "currency": "USD"}}, day=1)
        for k, (c, p, g, ch, day) in enumerate(choices):
            ws.consent.set(f"user_id:{c}", p, g, channel=ch, at=(T0 + timedelta(days=day, seconds=k)).isoformat())
        ws.resolve()
        defaults = ws.settings.privacy.defaults
        # 1. The one check agrees with the rule for every customer, purpose and channel.
        for c in CUSTOMERS:
            for p in PURPOSES:
                for ch in CHANNELS:
                    want = reference(choices, c, p, ch, defaults[p])
                    assert ws.consent.allowed(f"email:{c}@x.com", p, channel=ch).allowed == want, (c, p, ch)
        # 2. The bulk check (for the engine) agrees with the one-customer check.
        for p in PURPOSES:
            for ch in CHANNELS:
                bulk = {r["profile_id"]: r["allowed"] for r in ws.backend.rows(ws.consent.allowed_profiles_sql(p, ch))}
                for c in CUSTOMERS:
                    pid = ws.identity.profile_of(f"user_id:{c}")
                    assert bulk[pid] == ws.consent.allowed(pid, p, channel=ch).allowed
        # 3. Exports and profiling leave out customers who withdrew analytics.
        allowed = {c for c in CUSTOMERS if reference(choices, c, "analytics", None, defaults["analytics"])}
        exported = {r["identifier_value"] for r in ws.identity.export(purpose="analytics").to_pylist()
                    if r["identifier_type"] == "user_id"}
        assert exported == allowed
        assert {c for c in CUSTOMERS if ws.profiles.get(f"user_id:{c}")["features"]} == allowed
        # 4. Aggregates count only them (groups of one allowed here, to see every count).
        ws.settings.privacy.min_group_size = 1
        assert sum(r["customers"] for r in published(aggregate(ws, ["orders"]))) == len(allowed)


def test_channel_choice_and_default_rules():
    chosen = [{"purpose": "marketing", "granted": True, "consent_channel": None, "chosen_at": 1, "message_id": "a"},
              {"purpose": "marketing", "granted": False, "consent_channel": "sms", "chosen_at": 2, "message_id": "b"}]
    assert decide(chosen, "marketing", "email", False).allowed
    assert not decide(chosen, "marketing", "sms", False).allowed
    assert decide(chosen, "marketing", "sms", False).reason == "withdrawn"
    assert decide([], "analytics", None, True).reason == "default"


def test_consent_reaches_the_ledger_pseudonymised(ws):
    send(ws, {"type": "identify", "userId": "zq-ann", "traits": {"email": "zq-ann@x.com"}})
    ws.resolve()
    r = ws.consent.set("email:zq-ann@x.com", "marketing", True, channel="email", wording_version="v3")
    assert r["subject"] == "user_id:zq-ann"                     # recorded through the customer's own id
    assert ws.ledger.size == 1 and ws.ledger.verify() == []
    raw = (ws.path / LOG_FILE).read_bytes() + (ws.path / HEADS_FILE).read_bytes()
    assert b"zq-ann" not in raw                                 # partners see a pseudonym, never the identifier
    state = ws.consent.state("email:zq-ann@x.com")
    assert state["marketing:email"]["allowed"] and state["marketing:email"]["wording_version"] == "v3"
    assert not state["marketing:sms"]["allowed"] and state["analytics"]["reason"] == "default"
    assert ws.profiles.get("user_id:zq-ann")["consent"]["marketing:email"]["allowed"]
    with pytest.raises(IdentityError, match="no customer known"):
        ws.consent.set("email:nobody@x.com", "marketing", True)


def test_consent_over_http_and_cli(tmp_path):
    ws = plait.connect(tmp_path / "w")
    send(ws, {"type": "identify", "userId": "bo", "anonymousId": "ck-bo"})
    ws.resolve()
    key = ws.keys.create("crm", role="admin")
    h = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    with TestClient(create_app(ws)) as c:
        assert c.get("/v1/consent/user_id:bo").status_code == 401
        r = c.post("/v1/consent", json={"identifier": "user_id:bo", "purpose": "partner_sharing", "granted": True},
                   headers=h)
        assert r.status_code == 200
        assert c.get("/v1/consent/anonymous_id:ck-bo", headers=h).json()["partner_sharing"]["allowed"]
        # A choice sent by a source through the collector is ledgered as it is appended.
        c.post("/v1/track", json={"userId": "bo", "event": "Consent Updated", "messageId": "cu-1",
                                  "properties": {"purpose": "marketing", "granted": False}}, headers=h)
        head = c.get("/v1/ledger/head", headers=h).json()
        assert head["head"]["size"] == 2
        proof = c.get("/v1/ledger/proof/1", headers=h).json()
        from plait.privacy.ledger import verify_inclusion

        assert verify_inclusion(proof["public_key"], proof["head"], proof["entry"].encode(), proof["proof"], 1)
        assert c.get("/v1/ledger/proof/9", headers=h).status_code == 400
    w = str(ws.path)
    ws.close()
    runner = CliRunner()
    r = runner.invoke(app, ["-w", w, "consent", "set", "--identifier", "user_id:bo", "--purpose", "marketing",
                            "--granted", "--channel", "email"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["-w", w, "consent", "show", "user_id:bo"])
    assert r.exit_code == 0 and "marketing:email" in r.output
    assert runner.invoke(app, ["-w", w, "ledger", "verify"]).exit_code == 0


def test_roles_on_the_api(tmp_path):
    ws = plait.connect(tmp_path / "w")
    send(ws, {"type": "identify", "userId": "u1"})
    ws.resolve()
    keys = {role: ws.keys.create(role, role=role) for role in ("collector", "analyst", "admin")}
    auth = {r: {"Authorization": "Basic " + base64.b64encode(f"{k}:".encode()).decode()} for r, k in keys.items()}
    with TestClient(create_app(ws)) as c:
        assert c.post("/v1/track", json={"userId": "u1", "event": "X"}, headers=auth["collector"]).status_code == 200
        assert c.post("/v1/track", json={"userId": "u1", "event": "X"}, headers=auth["analyst"]).status_code == 401
        assert c.get("/v1/profiles/user_id:u1", headers=auth["collector"]).status_code == 403
        assert c.get("/v1/profiles/user_id:u1", headers=auth["analyst"]).status_code == 200
        split = {"identifiers": ["user_id:u1"]}
        assert c.post("/v1/profiles/user_id:u1/split", json=split, headers=auth["analyst"]).status_code == 403
        choice = {"identifier": "user_id:u1", "purpose": "marketing", "granted": True}
        assert c.post("/v1/consent", json=choice, headers=auth["analyst"]).status_code == 403
        assert c.post("/v1/consent", json=choice, headers=auth["collector"]).status_code == 200
        assert c.get("/v1/ledger/head", headers=auth["admin"]).status_code == 200
    stored = {k.role for k in ws.keys.list()}
    assert stored == {"collector", "analyst", "admin"}
    assert not any(k in (ws.path / "plait.duckdb").read_bytes().decode("latin-1") for k in keys.values())
    ws.close()


def test_keys_are_managed_over_http_while_served(tmp_path):
    """Onboarding a source or revoking a leaked key needs no restart (the CLI cannot open a
    served workspace)."""
    ws = plait.connect(tmp_path / "w")
    admin = ws.keys.create("ops", role="admin")
    analyst = ws.keys.create("bi", role="analyst")
    auth = lambda k: {"Authorization": "Basic " + base64.b64encode(f"{k}:".encode()).decode()}  # noqa: E731
    with TestClient(create_app(ws)) as c:
        assert c.post("/v1/keys", json={"name": "pos"}, headers=auth(analyst)).status_code == 403
        r = c.post("/v1/keys", json={"name": "pos", "source": "pos-estate"}, headers=auth(admin))
        assert r.status_code == 201 and r.json()["role"] == "collector"
        pos = r.json()["key"]
        event = {"userId": "u1", "event": "Store Visit", "properties": {"store_id": "s1"}}
        assert c.post("/v1/track", json=event, headers=auth(pos)).status_code == 200
        listed = c.get("/v1/keys", headers=auth(admin)).json()
        assert {k["name"] for k in listed} == {"ops", "bi", "pos"} and pos not in str(listed)
        assert c.post("/v1/keys", json={"name": "x", "role": "root"}, headers=auth(admin)).status_code == 400
        assert c.post("/v1/keys", json={"nom": "x"}, headers=auth(admin)).status_code == 400
        assert c.delete("/v1/keys/pos", headers=auth(admin)).json()["revoked"] == 1
        assert c.post("/v1/track", json=event, headers=auth(pos)).status_code == 401
        assert c.delete("/v1/keys/pos", headers=auth(admin)).status_code == 404
    assert ws.backend.scalar("SELECT source FROM events WHERE event = 'Store Visit'") == "pos-estate"
    ws.close()
