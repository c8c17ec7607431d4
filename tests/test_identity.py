"""Identity: identifiers, stitching guards, splits, point in time, real time vs batch, hashing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import plait
from plait.config import Settings
from plait.errors import IdentityError
from plait.identity import Registry, Stitcher

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
_ids = count()


def call(ws, body: dict, *, day: float = 0, source: str = "test"):
    body = dict(body)
    body.setdefault("type", "track")
    if body["type"] == "track":
        body.setdefault("event", "Thing Happened")
    body.setdefault("messageId", f"m{next(_ids)}")
    body.setdefault("timestamp", (T0 + timedelta(days=day)).isoformat())
    return ws.parser.parse(body, received_at=int((T0 + timedelta(days=day)).timestamp() * 1e6), source=source,
                           correct_skew=False)


def send(ws, *bodies: dict, day: float = 0, source: str = "test") -> None:
    ws.log.append([call(ws, b, day=day + i * 1e-4, source=source) for i, b in enumerate(bodies)])


def same(ws, *identifiers: str) -> bool:
    profiles = {ws.identity.profile_of(i) for i in identifiers}
    assert None not in profiles, identifiers
    return len(profiles) == 1


# -- identifiers ---------------------------------------------------------------------------
@pytest.mark.parametrize("raw, value, ok", [
    ("  Ann.Lee+news@GMAIL.com", "annlee@gmail.com", True),
    ("ann.lee@googlemail.com", "annlee@gmail.com", True),
    ("Ann.Lee+x@outlook.com", "ann.lee@outlook.com", True),
    ("ann.lee@company.co.uk", "ann.lee@company.co.uk", True),
    ("ann+x@company.com", "ann+x@company.com", True),       # unknown provider: plus-tag kept
    ("ann at example", "ann at example", False),
    ("@nope.com", "@nope.com", False),
])
def test_email_normalisation(raw, value, ok):
    assert Registry.default().normalise("email", raw)[1:] == (value, ok)


@pytest.mark.parametrize("raw, region, value, ok", [
    ("+44 7700 900123", "US", "+447700900123", True),
    ("07700 900123", "GB", "+447700900123", True),
    ("(07700) 900-123", "GB", "+447700900123", True),
    ("(415) 555-0132", "US", "+14155550132", True),
    ("12", "GB", "12", False),
    ("call me maybe", "GB", "call me maybe", False),
])
def test_phone_normalisation(raw, region, value, ok):
    assert Registry.default().normalise("phone", raw, region=region)[1:] == (value, ok)


def test_identifiers_come_from_every_place_segment_puts_them():
    reg = Registry.default()
    keys = reg.extract("u1", "c1", {"externalIds": [{"id": "LC1", "type": "loyalty_card"},
                                                    {"id": "M-9", "type": "member_no"}, {"type": "broken"}],
                                    "device": {"id": "d1"}},
                       [("email", "A@B.co"), ("phone", "+44 7700 900123"), ("caller_number", "+447700900124"),
                        ("firstName", "Ann")])
    assert keys[0] == "user_id:u1" and keys[1] == "loyalty_card:LC1"       # priority order
    assert set(keys) == {"user_id:u1", "anonymous_id:c1", "loyalty_card:LC1", "member_no:M-9", "device_id:d1",
                         "email:a@b.co", "phone:+447700900123", "phone:+447700900124"}


def test_malformed_values_are_kept_raw_and_junk_is_blocked(ws):
    send(ws, {"type": "identify", "userId": "u1", "traits": {"email": "not an email", "phone": "n/a"}},
         {"type": "identify", "userId": "u2", "traits": {"email": {"nested": 1}, "phone": 12345}},
         {"type": "identify", "userId": "u3", "traits": {"email": "test@test.com", "phone": "0000000000"}},
         {"type": "identify", "userId": "u4", "anonymousId": "undefined", "traits": {"email": "TEST@test.com"}},
         {"type": "identify", "userId": "u5", "anonymousId": "undefined"})
    report = ws.identity.resolve()
    assert report.profiles == 5                       # u3/u4/u5 never glued by junk values
    assert same(ws, "user_id:u1", "email:not an email")
    assert ws.identity.profile_of("email:test@test.com") is None
    assert ws.identity.profile_of("anonymous_id:undefined") is None


# -- stitching and guards ------------------------------------------------------------------
def test_stitches_across_channels_and_keeps_every_trait(ws):
    send(ws, {"type": "identify", "userId": "web-1", "anonymousId": "ck-1",
              "traits": {"email": "ann@x.com", "firstName": "Ann", "plan": "gold"}}, source="web")
    send(ws, {"event": "Loyalty Enrolled", "anonymousId": "LC-9",
              "context": {"externalIds": [{"id": "LC-9", "type": "loyalty_card"}],
                          "traits": {"email": "ANN@x.com", "phone": "+447700900123", "shoeSize": 5}}},
         day=1, source="pos")
    send(ws, {"event": "Call Center Contact", "anonymousId": "caller-1",
              "context": {"traits": {"phone": "+44 7700 900123"}}}, day=2, source="call_center")
    send(ws, {"event": "Order Completed", "anonymousId": "LC-9",
              "properties": {"order_id": "o1", "total": 20, "currency": "USD", "store_id": "s1"},
              "context": {"externalIds": [{"id": "LC-9", "type": "loyalty_card"}]}}, day=3, source="pos")
    ws.resolve()
    assert same(ws, "user_id:web-1", "anonymous_id:ck-1", "loyalty_card:LC-9", "anonymous_id:caller-1",
                "phone:+447700900123")
    p = ws.profiles.get("email:ann@x.com")
    assert {"plan", "shoeSize", "firstName", "email", "phone"} <= set(p["traits"])   # nothing lost in the merge
    assert p["traits"]["plan"]["confidence"] == "declared" and p["traits"]["shoeSize"]["confidence"] == "observed"
    assert p["traits"]["shoeSize"]["source"] == "pos"
    assert p["features"]["orders"] == 1 and p["features"]["orders_store"] == 1 and p["features"]["contacts"] == 1
    assert [e["event"] for e in ws.profiles.timeline("loyalty_card:LC-9")][:2] == ["Order Completed", "Call Center Contact"]
    # A limit means what the log's own does: 0 is none, not the default.
    assert ws.profiles.timeline("loyalty_card:LC-9", limit=0) == [] and len(ws.profiles.timeline("loyalty_card:LC-9", limit=1)) == 1
    assert all(link["reason"] for link in p["links"])


def test_a_shared_family_cookie_never_glues_two_logins(ws):
    send(ws, {"type": "identify", "userId": "mum", "anonymousId": "family-pc"},
         {"type": "identify", "userId": "son", "anonymousId": "family-pc"},
         {"type": "identify", "userId": "son", "anonymousId": "son-phone"})
    report = ws.identity.resolve()
    assert not same(ws, "user_id:mum", "user_id:son")
    assert same(ws, "user_id:son", "anonymous_id:son-phone")
    assert report.supernodes == 1 and "shared" in ws.identity.supernodes()[0]["reason"]


def test_limits_refuse_merges_and_record_why(ws):
    ws.settings.identity.types["email"].limit = 2
    send(ws, {"type": "identify", "anonymousId": "c1", "traits": {"email": "a@x.com"}},
         {"type": "identify", "anonymousId": "c1", "traits": {"email": "b@x.com"}},
         {"type": "identify", "anonymousId": "c2", "traits": {"email": "c@x.com"}},
         {"type": "identify", "anonymousId": "c2", "traits": {"email": "b@x.com"}})
    report = ws.identity.resolve()
    assert not same(ws, "email:a@x.com", "email:c@x.com")
    assert same(ws, "email:c@x.com", "anonymous_id:c2") and same(ws, "email:b@x.com", "anonymous_id:c1")
    assert report.conflicts == 1 and report.supernodes == 0
    assert ws.identity.conflicts()[0]["reason"] == "limit: at most 2 email per customer"


def test_super_node_kiosk_is_quarantined(ws):
    bodies = [{"event": "Order Completed", "anonymousId": f"card-{i}",
               "properties": {"order_id": f"o{i}", "total": 5, "currency": "USD"},
               "context": {"device": {"id": "till-kiosk-3"}, "externalIds": [{"id": f"LC{i}", "type": "loyalty_card"}]}}
              for i in range(8)]
    send(ws, *bodies)
    report = ws.identity.resolve()
    assert report.supernodes == 1
    assert ws.identity.supernodes()[0]["identifier"] == "device_id:till-kiosk-3"
    assert len({ws.identity.profile_of(f"loyalty_card:LC{i}") for i in range(8)}) == 8


def test_blocked_values_are_configurable(tmp_path):
    s = Settings()
    s.identity.types["device_id"].blocked.append("pos-terminal-*")
    with plait.connect(tmp_path / "w", s) as ws:
        send(ws, {"type": "identify", "userId": "a", "context": {"device": {"id": "POS-TERMINAL-1"}}},
             {"type": "identify", "userId": "b", "context": {"device": {"id": "pos-terminal-1"}}})
        assert ws.identity.resolve().profiles == 2


def test_unmerge_restores_the_earlier_state(ws):
    send(ws, {"type": "identify", "anonymousId": "ck-a", "traits": {"email": "ann@x.com"}},
         {"type": "identify", "anonymousId": "ck-b", "traits": {"email": "bob@x.com"},
          "context": {"externalIds": [{"id": "LC-B", "type": "loyalty_card"}]}})
    ws.resolve()
    before = {r["identifier_value"]: r["profile_id"] for r in ws.identity.export().to_pylist()}
    # Ann borrows Bob's loyalty card at the till: one event glues the two people.
    send(ws, {"event": "Order Completed", "anonymousId": "ck-a", "properties": {"order_id": "o1", "total": 9, "currency": "USD"},
              "context": {"externalIds": [{"id": "LC-B", "type": "loyalty_card"}]}}, day=20)
    ws.resolve()
    glued = ws.identity.profile_of("email:ann@x.com")
    assert glued == ws.identity.profile_of("email:bob@x.com")
    assert any(link["b"] == "anonymous_id:ck-a" or link["a"] == "anonymous_id:ck-a" for link in ws.identity.links(glued))
    result = ws.identity.split(glued, ["anonymous_id:ck-b", "email:bob@x.com", "loyalty_card:LC-B"], reason="borrowed card")
    assert result["split_id"] == 1 and len(result["profiles"]) == 2
    after = {r["identifier_value"]: r["profile_id"] for r in ws.identity.export().to_pylist()}
    assert after == before
    refused = ws.identity.conflicts()
    assert refused and refused[0]["reason"] == "split #1"
    assert ws.profiles.get("email:bob@x.com")["refused"][0]["reason"] == "split #1"
    # The split holds in every later derivation, and the profiles re-derive their features.
    ws.resolve()
    assert not same(ws, "email:ann@x.com", "email:bob@x.com")
    assert ws.profiles.get("email:bob@x.com")["features"].get("orders", 0) == 0


def test_split_is_recorded_and_reversible_only_by_evidence(ws):
    send(ws, {"type": "identify", "userId": "u1", "anonymousId": "kiosk-7"},
         {"type": "identify", "userId": "u1", "anonymousId": "ck-1"})
    ws.resolve()
    pid = ws.identity.profile_of("user_id:u1")
    ws.identity.split(pid, ["anonymous_id:kiosk-7"], reason="shared kiosk")
    assert not same(ws, "user_id:u1", "anonymous_id:kiosk-7")
    assert same(ws, "user_id:u1", "anonymous_id:ck-1")
    with pytest.raises(IdentityError, match="not in profile"):
        ws.identity.split(pid, ["anonymous_id:nobody"])
    with pytest.raises(IdentityError, match="each side"):
        ws.identity.split(ws.identity.profile_of("anonymous_id:kiosk-7"), ["anonymous_id:kiosk-7"])
    with pytest.raises(IdentityError, match="TYPE:VALUE"):
        ws.identity.profile_of("no-colon")


def test_point_in_time(ws):
    send(ws, {"type": "identify", "anonymousId": "ck-1"}, day=0)
    send(ws, {"type": "identify", "userId": "u1", "anonymousId": "ck-1"}, day=30)
    send(ws, {"type": "identify", "userId": "u1", "anonymousId": "LC-1",
              "context": {"externalIds": [{"id": "LC-1", "type": "loyalty_card"}]}}, day=60)
    ws.identity.resolve()
    early = ws.identity.as_of("anonymous_id:ck-1", T0 + timedelta(days=10))
    assert early["identifiers"] == ["anonymous_id:ck-1"]
    mid = ws.identity.as_of("anonymous_id:ck-1", (T0 + timedelta(days=45)).isoformat())
    assert set(mid["identifiers"]) == {"anonymous_id:ck-1", "user_id:u1"}
    assert mid["profile_id"] == early["profile_id"] == ws.identity.profile_of("user_id:u1")
    assert ws.identity.as_of("user_id:u1", T0 + timedelta(days=10)) is None
    now = ws.identity.as_of("user_id:u1", T0 + timedelta(days=90))
    assert "loyalty_card:LC-1" in now["identifiers"]
    with pytest.raises(IdentityError, match="not a date"):
        ws.identity.as_of("user_id:u1", "June 1st")


def test_hashed_identifiers(tmp_path):
    s = Settings()
    s.identity.hash_values = True
    with plait.connect(tmp_path / "w", s) as ws:
        send(ws, {"type": "identify", "userId": "u1", "traits": {"email": "Ann@X.com"}})
        ws.identity.resolve()
        rows = ws.identity.export().to_pylist()
        assert all("ann" not in r["identifier_value"] and len(r["identifier_value"]) == 32 for r in rows)
        assert same(ws, "user_id:u1", "email:ANN@x.com")
        salt = ws.vault.secret("identifier-salt")
    with plait.connect(tmp_path / "w", s) as ws:
        assert ws.vault.secret("identifier-salt") == salt      # stable across sessions
        assert ws.identity.profile_of("email:ann@x.com") is not None


def test_unresolved_workspace_says_what_to_do(ws):
    with pytest.raises(IdentityError, match="plait resolve"):
        ws.identity.profile_of("email:a@b.co")


# -- real time agrees with batch -------------------------------------------------------------
ID_POOL = st.sampled_from(["user_id:u1", "user_id:u2", "user_id:u3", "anonymous_id:c1", "anonymous_id:c2",
                           "anonymous_id:c3", "anonymous_id:c4", "email:a@x.com", "email:b@x.com",
                           "loyalty_card:L1", "loyalty_card:L2", "phone:+447700900001"])


def _body(keys: list[str]) -> dict:
    body: dict = {"type": "identify", "traits": {}, "context": {"externalIds": []}}
    for k in keys:
        t, v = k.split(":", 1)
        if t == "user_id":
            body["userId"] = v
        elif t == "anonymous_id":
            body["anonymousId"] = v
        elif t in ("email", "phone"):
            body["traits"][t] = v
        else:
            body["context"]["externalIds"].append({"id": v, "type": t})
    if "userId" not in body and "anonymousId" not in body:
        body["anonymousId"] = "c-fallback"
    return body


def _one_per_field(keys: list[str]) -> list[str]:
    # A Segment event has at most one userId and one anonymousId.
    seen: set[str] = set()
    out = []
    for k in keys:
        t = k.split(":", 1)[0]
        if t in ("user_id", "anonymous_id") and t in seen:
            continue
        seen.add(t)
        out.append(k)
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(ID_POOL, min_size=1, max_size=4, unique=True).map(_one_per_field), min_size=1, max_size=25))
def test_incremental_assignment_agrees_with_batch(tmp_path_factory, events):
    with plait.connect(tmp_path_factory.mktemp("rt")) as ws:
        ws.identity.follow()
        for i, keys in enumerate(events):
            send(ws, _body(keys), day=i)
        live = {k: ws.identity.profile_of(k) for ks in events for k in ks}
        ws.identity._live = None            # read the batch result, not the live stitcher
        report = ws.identity.resolve()
        batch = {k: ws.identity.profile_of(k) for k in live}
        if report.supernodes:
            # A value found shared only later was linked live until then; the batch, which sees
            # the whole history, keeps it apart from the start. Everything else agrees.
            shared = {r["identifier"] for r in ws.identity.supernodes()}
            assert shared and all(batch[k] != batch[o] for k in shared for o in batch if o != k)
            return
        assert live == batch


def test_real_time_quarantines_a_value_once_it_is_seen_shared(ws):
    ws.identity.follow()
    send(ws, {"type": "identify", "userId": "mum", "anonymousId": "family-pc"})
    send(ws, {"type": "identify", "userId": "son", "anonymousId": "family-pc"}, day=1)
    send(ws, {"type": "identify", "userId": "dad", "anonymousId": "family-pc"}, day=2)
    assert not same(ws, "user_id:son", "user_id:mum") and not same(ws, "user_id:dad", "user_id:mum")


def test_stitcher_keeps_customers_apart_at_scale():
    # Functional only; the latency figure lives in benchmarks/identity.py.
    st_ = Stitcher(Registry.default())
    for i in range(1000):
        st_.observe([f"user_id:u{i}", f"anonymous_id:c{i}"], i)
    assert st_.profile_of("anonymous_id:c5") == st_.profile_of("user_id:u5") != st_.profile_of("user_id:u6")


def test_a_version_is_current_until_its_inputs_change(ws):
    send(ws, {"type": "identify", "userId": "u1", "anonymousId": "kiosk-7", "traits": {"email": "u1@example.com"}},
         {"type": "identify", "userId": "u1", "anonymousId": "ck-1"})
    assert not ws.identity.current()                         # never resolved
    ws.resolve()
    assert ws.identity.current()
    send(ws, {"type": "track", "event": "x", "anonymousId": "ck-2"})
    assert not ws.identity.current()                         # a new event
    ws.resolve()
    assert ws.identity.current()
    ws.identity.split(ws.identity.profile_of("user_id:u1"), ["anonymous_id:kiosk-7"], reason="kiosk")
    assert ws.identity.current()                             # the split resolved again itself
    ws.backend.execute("DELETE FROM identity_splits")
    assert not ws.identity.current()                         # splits are an input
    ws.resolve()
    ws.settings.identity.match.threshold = 0.5
    assert not ws.identity.current()                         # so are the identity settings
    ws.resolve()
    ws.vault.destroy(["user_id:u1"])
    assert not ws.identity.current()                         # and which keys exist


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(ID_POOL, min_size=1, max_size=4, unique=True).map(_one_per_field), min_size=1, max_size=25),
       st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3", None]), st.sampled_from(["c1", "c2", "c3", None])),
                min_size=1, max_size=25))
def test_one_append_assigns_as_event_by_event(tmp_path_factory, linking, plain):
    """Within one append, events with only a user and anonymous id reuse an earlier answer for
    the same pair; merges in between must not leave them with a stale profile."""
    from plait.log.store import Appended

    bodies = []
    for i, keys in enumerate(linking):
        bodies.append(_body(keys))
        u, a = plain[i % len(plain)]
        if u or a:
            bodies.append({k: v for k, v in (("userId", u), ("anonymousId", a)) if v})
            bodies.append({k: v for k, v in (("userId", u), ("anonymousId", a)) if v})
    d = tmp_path_factory.mktemp("pairs")
    with plait.connect(d / "one") as one, plait.connect(d / "each") as each:
        recs = [call(one, b, day=i * 1e-3) for i, b in enumerate(bodies)]
        together = one.identity.observe(Appended(records=recs))
        apart = [each.identity.observe(Appended(records=[r]))[0] for r in recs]
        assert together == apart
