"""Subject rights: access across merged identifiers; erasure that leaves no byte behind."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import plait
from plait.cli.main import app
from plait.config import Settings
from plait.errors import ConfigError
from plait.log.journal import Journal, Loader
from tests.test_identity import send

EMAIL = "zebulon.quartermaine@example.net"
PHONE_SENT = "07700 900777"
PHONE = "+447700900777"
SECRETS = [EMAIL.encode(), b"Quartermaine", b"Zebulon", b"7700900777", b"900777", b"Quarterdeck Lane"]


def _world(ws) -> None:
    ws.settings.identity.default_region = "GB"
    ws.settings.save(ws.path)
    # Zebulon on the web, at the till and on the phone; Mary is another customer.
    send(ws, {"type": "identify", "userId": "zq-1", "anonymousId": "ck-zq",
              "traits": {"email": EMAIL, "firstName": "Zebulon", "lastName": "Quartermaine",
                         "address": {"street": "7 Quarterdeck Lane", "postalCode": "ZZ1 9QQ"}}}, source="web")
    send(ws, {"event": "Loyalty Enrolled", "anonymousId": "LC-ZQ",
              "context": {"externalIds": [{"id": "LC-ZQ", "type": "loyalty_card"}],
                          "traits": {"email": EMAIL.upper(), "phone": PHONE_SENT}}}, day=1, source="pos")
    send(ws, {"event": "Order Completed", "anonymousId": "LC-ZQ", "properties": {"order_id": "o-zq", "total": 40,
                                                                                  "currency": "USD"},
              "context": {"externalIds": [{"id": "LC-ZQ", "type": "loyalty_card"}]}}, day=2, source="pos")
    send(ws, {"event": "Call Center Contact", "anonymousId": "caller-zq", "context": {"traits": {"phone": PHONE}}},
         day=3, source="call_center")
    send(ws, {"type": "identify", "userId": "mary", "traits": {"email": "mary.other@example.net", "firstName": "Mary"}})
    send(ws, {"event": "Order Completed", "userId": "mary", "properties": {"order_id": "o-m", "total": 60,
                                                                          "currency": "USD"}}, day=2)
    # A dead letter that quotes him in clear.
    from plait.log.store import Rejection

    ws.log.reject([Rejection(source="web", origin="track", position=0, field="timestamp", reason="bad timestamp",
                             payload=json.dumps({"userId": "zq-1", "traits": {"email": EMAIL}}))])
    ws.consent.set("user_id:zq-1", "marketing", True, channel="email")
    ws.resolve()


def _scan(root: Path) -> list[str]:
    return [f"{p.relative_to(root)}:{s!r}" for p in root.rglob("*") if p.is_file()
            for s in SECRETS if s in p.read_bytes()]


def test_access_export_is_complete_across_merged_identifiers(ws):
    _world(ws)
    doc = ws.rights.access(f"phone:{PHONE}")
    kinds = {f"{i['identifier_type']}:{i['identifier_value']}" for i in doc["identifiers"]}
    assert {"user_id:zq-1", "anonymous_id:ck-zq", "loyalty_card:LC-ZQ", f"email:{EMAIL}", f"phone:{PHONE}",
            "anonymous_id:caller-zq"} <= kinds
    events = {e.get("event") or e["type"] for e in doc["events"]}
    assert {"identify", "Loyalty Enrolled", "Order Completed", "Call Center Contact", "Consent Updated"} <= events
    assert len(doc["events"]) == 5
    web = next(e for e in doc["events"] if e["type"] == "identify")
    assert web["traits"]["lastName"] == "Quartermaine"          # personal fields revealed for the person
    assert doc["consent"]["marketing:email"]["allowed"]
    assert all(e.get("user_id") != "mary" for e in doc["events"])


def test_erasure_leaves_no_byte_and_keeps_the_counts(ws):
    _world(ws)
    before = ws.backend.rows("SELECT count(*) AS n, sum(amount) AS revenue FROM events")[0]
    assert _scan(ws.path)                                        # the test can see him before
    report = ws.rights.erase(f"email:{EMAIL}", reason="customer request")
    assert report.residual_files == []
    assert report.subjects == 3 and report.keys_destroyed == 3 and report.dead_letters_removed == 1
    ws.backend.checkpoint()
    assert _scan(ws.path) == []                                  # not in the log, profiles, truth, free pages
    after = ws.backend.rows("SELECT count(*) AS n, sum(amount) AS revenue FROM events")[0]
    assert after == before                                       # the facts stay; only their personal fields went
    assert ws.profiles.get("user_id:mary")["traits"]["email"]["value"] == "mary.other@example.net"
    assert ws.identity.profile_of(f"email:{EMAIL}") is None
    card = ws.profiles.get("loyalty_card:LC-ZQ")
    assert "email" not in card["traits"] and "phone" not in card["traits"]
    assert ws.ledger.verify() == [] and ws.ledger.size == 2      # the consent and the erasure, pseudonymised
    assert ws.backend.scalar("SELECT count(*) FROM erasures") == 1
    # The workspace still works after its database was rewritten.
    send(ws, {"type": "identify", "userId": "new", "traits": {"email": "new@example.net"}}, day=9)
    assert ws.resolve()[0].profiles >= 2


def test_a_batch_of_requests_is_erased_with_one_rebuild(ws, monkeypatch):
    _world(ws)
    calls = []
    for obj, name in ((ws.identity, "resolve"), (ws.profiles, "build"), (ws.backend, "compact")):
        real = getattr(obj, name)
        monkeypatch.setattr(obj, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    # Two identifiers of Zebulon, one of Mary, one of nobody: two people erased, one answered.
    batch = ws.rights.erase_many([f"email:{EMAIL}", "loyalty_card:LC-ZQ", "user_id:mary", "email:nobody@example.org"],
                                 reason="requests of the week")
    assert sorted(calls) == ["build", "compact", "resolve"]
    assert [r.subjects for r in batch.erased] == [3, 1] and batch.unknown == ["email:nobody@example.org"]
    assert all(r.residual_files == [] for r in batch.erased)
    ws.backend.checkpoint()
    assert _scan(ws.path) == [] and not any(b"mary.other@example.net" in p.read_bytes()
                                            for p in ws.path.rglob("*") if p.is_file())
    assert ws.identity.profile_of("user_id:mary") is None or "email" not in ws.profiles.get("user_id:mary")["traits"]
    assert ws.backend.scalar("SELECT count(*) FROM erasures") == 2 and ws.ledger.verify() == []
    assert ws.backend.scalar("SELECT count(*) FROM events WHERE event = 'Order Completed'") == 2
    # A malformed identifier stops the batch before anything is erased.
    from plait.errors import IdentityError

    with pytest.raises(IdentityError, match="TYPE:VALUE"):
        ws.rights.erase_many(["user_id:zq-1", "no-type-here"])
    assert ws.backend.scalar("SELECT count(*) FROM erasures") == 2


def test_erasure_over_http_for_a_running_server(ws):
    """A served workspace cannot be opened by the CLI, so erasure is an admin route; afterwards
    decisions see the rebuilt profiles."""
    import base64

    from fastapi.testclient import TestClient

    from plait.server import create_app

    _world(ws)
    auth = {r: {"Authorization": "Basic " + base64.b64encode(f"{ws.keys.create(r, role=r)}:".encode()).decode()}
            for r in ("analyst", "admin")}
    body = {"identifiers": [f"email:{EMAIL}", "email:nobody@example.org"], "reason": "ticket 4411"}
    with TestClient(create_app(ws)) as c:
        store = c.app.state.decider.store
        assert store.lookup("user_id:zq-1")["traits"]["email"]["value"].lower() == EMAIL
        assert c.post("/v1/privacy/erasures", json=body, headers=auth["analyst"]).status_code == 403
        assert c.post("/v1/privacy/erasures", json={"identifiers": []}, headers=auth["admin"]).status_code == 422
        r = c.post("/v1/privacy/erasures", json={"identifiers": ["no-type"]}, headers=auth["admin"])
        assert r.status_code == 400 and "TYPE:VALUE" in r.text
        # With --fronts, a front has acknowledged (journaled) an event of his not yet in the log:
        # the erasure loads it first, so it is sealed under a key that is then destroyed.
        journal = Journal(ws.path / "journal", "front0", segment_s=3600, arrow_min_rows=1)
        late = ws.parser.parse({"type": "identify", "userId": "zq-1", "messageId": "late-1",
                                "traits": {"email": EMAIL, "firstName": "Zebulon"}}, received_at=0, source="web")
        asyncio.run(_append(journal, late))
        c.app.state.journal_loader = Loader(ws.path / "journal", ws.log)
        r = c.post("/v1/privacy/erasures", json=body, headers=auth["admin"])
        assert r.status_code == 200, r.text
        out = r.json()
        assert [e["subjects"] for e in out["erased"]] == [3] and out["unknown"] == ["email:nobody@example.org"]
        kept = ws.log.reveal(ws.backend.rows("SELECT * FROM events WHERE message_id = 'late-1'")[0])
        assert "email" not in (kept.get("traits") or {})
        # The front's open segment still holds it in clear until it moves on; the report says so.
        assert out["erased"][0]["residual_files"] == ["journal/front0-000000000001.journal"]
        journal.close()
        c.app.state.journal_loader.stop()
        # The retailer's own id stays (a pseudonymous key of facts kept); what was personal is gone.
        assert c.app.state.decider.store.lookup("user_id:zq-1")["traits"] == {}
        assert c.post("/v1/decide", json={"customer": "user_id:mary", "placement": "web_banner"},
                      headers=auth["admin"]).status_code in (200, 404)
    ws.backend.checkpoint()
    assert _scan(ws.path) == []


async def _append(journal, record) -> None:  # noqa: ANN001
    await journal.append([record])


def test_erasure_needs_sealed_fields(tmp_path):
    s = Settings()
    s.pii.encrypt = False
    with plait.connect(tmp_path / "w", s) as ws:
        send(ws, {"type": "identify", "userId": "u", "traits": {"email": "u@example.net"}})
        with pytest.raises(ConfigError, match="sealed"):
            ws.rights.erase("user_id:u")


def test_privacy_cli(tmp_path):
    w = tmp_path / "w"
    with plait.connect(w) as ws:
        _world(ws)
    runner = CliRunner()
    out = tmp_path / "zq.json"
    r = runner.invoke(app, ["-w", str(w), "privacy", "export", "--identifier", "loyalty_card:LC-ZQ", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["traits"]["lastName"]["value"] == "Quartermaine"
    requests = tmp_path / "requests.txt"
    requests.write_text("# this week\nloyalty_card:LC-ZQ\n\nemail:nobody@example.org\n")
    r = runner.invoke(app, ["-w", str(w), "privacy", "erase", "--file", str(requests)])
    assert r.exit_code == 0, r.output
    assert "1 people erased" in r.output and "nobody is known by 1 identifier(s)" in r.output
    assert _scan(w) == []
    r = runner.invoke(app, ["-w", str(w), "privacy", "erase"])
    assert r.exit_code != 0 and "no identifier to erase" in str(r.exception)
    assert runner.invoke(app, ["-w", str(w), "ledger", "verify"]).exit_code == 0


def test_erasure_reaches_identifiers_linked_after_the_last_resolve(ws):
    _world(ws)
    # After the last resolve a new device sends his email: only a fresh resolve ties it to him.
    send(ws, {"type": "identify", "anonymousId": "ck-late", "traits": {"email": EMAIL, "lastName": "Quartermaine"}},
         day=5, source="app")
    assert not ws.identity.current()
    report = ws.rights.erase(f"email:{EMAIL}")
    assert report.subjects == 4 and report.keys_destroyed == 4
    ws.backend.checkpoint()
    assert _scan(ws.path) == []


def test_erasure_of_a_current_version_skips_the_first_resolve(ws, monkeypatch):
    _world(ws)
    assert ws.identity.current()
    calls = []
    real = ws.identity.resolve
    monkeypatch.setattr(ws.identity, "resolve", lambda: calls.append(1) or real())
    report = ws.rights.erase(f"email:{EMAIL}")
    assert calls == [1]                                          # only the one after the keys are gone
    assert report.subjects == 3 and report.keys_destroyed == 3
