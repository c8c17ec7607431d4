from __future__ import annotations

from datetime import datetime, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plait.errors import EventError
from plait.events import CATALOGUE, Parser, json_schemas

P = Parser(base_currency="EUR", pii_fields=["email", "phone", "firstName"])


def parse(obj, **kw):
    kw.setdefault("received_at", 1_700_000_000_000_000)
    kw.setdefault("source", "test")
    return P.parse(obj, **kw)


def test_order_in_store_gets_store_channel_amount_and_base_currency():
    r = parse({"type": "track", "event": "Order Completed", "userId": "u1",
               "properties": {"order_id": "o1", "store_id": 12, "products": [{"price": 2.5, "quantity": 4}]}})
    assert (r.channel, r.store_id, r.order_id, r.amount, r.currency) == ("store", "12", "o1", 10.0, "EUR")
    assert r.schema_version == "1-0-0"


def test_catalogue_channel_wins_over_library():
    r = parse({"type": "track", "event": "Email Opened", "anonymousId": "a",
               "context": {"library": {"name": "analytics.js"}}})
    assert r.channel == "email"
    r = parse({"type": "track", "event": "Custom Thing", "anonymousId": "a",
               "context": {"library": {"name": "analytics.js", "version": "2"}}})
    assert r.channel == "web" and r.schema_version is None
    r = parse({"type": "track", "event": "Custom Thing", "anonymousId": "a", "channel": "Call-Center"})
    assert r.channel == "call_center"


def test_required_property_named_in_error():
    with pytest.raises(EventError) as e:
        parse({"type": "track", "event": "Store Visit", "userId": "u"}, index=3)
    assert e.value.index == 3 and e.value.field == "properties.store_id"
    assert "Store Visit requires property" in e.value.reason


def test_wrong_type_deep_field_path():
    with pytest.raises(EventError) as e:
        parse({"type": "track", "event": "Order Completed", "userId": "u",
               "properties": {"order_id": "o", "products": [{"price": 1}, {"price": "abc"}]}})
    assert e.value.field == "properties.products[1].price"


@pytest.mark.parametrize("body,field", [
    (b'{"type":"track","event":"x"}', "userId"),
    (b'{"type":"track","userId":"u"}', "event"),
    (b'{"type":"alias","userId":"u"}', "previousId"),
    (b'{"type":"group","userId":"u"}', "groupId"),
    (b'{"type":"nope","userId":"u"}', "type"),
    (b'{"type":"track","userId":{"a":1},"event":"x"}', "userId"),
    (b'{"type":"track","userId":"u","event":"x","timestamp":"yesterday"}', "timestamp"),
    (b'[1,2]', ""),
    (b'{"type":', ""),
])
def test_bad_calls_name_the_field(body, field):
    with pytest.raises(EventError) as e:
        parse(body)
    assert e.value.field == field
    assert e.value.reason


def test_sent_at_corrects_clock_skew():
    # The client clock is 1 hour fast: it says it sent at 13:00 while the server received at 12:00.
    received = int(datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc).timestamp() * 1e6)
    r = parse({"type": "track", "event": "x", "userId": "u", "timestamp": "2025-01-01T12:59:00Z",
               "sentAt": "2025-01-01T13:00:00Z"}, received_at=received)
    assert r.event_time == received - 60_000_000
    assert r.original_time == received + 3_540_000_000


def test_personal_fields_are_split_out():
    r = parse({"type": "identify", "userId": "u", "traits": {"email": "A@b.c", "plan": "gold"},
               "context": {"traits": {"phone": "+44"}, "ip": "1.2.3.4"}})
    assert r.traits == {"plan": "gold"}
    assert r.pii == {"traits.email": "A@b.c", "context.traits.phone": "+44"}
    assert r.subject == "user_id:u"


def test_missing_message_id_gets_a_stable_content_hash():
    e = {"type": "track", "event": "x", "userId": "u", "timestamp": "2025-01-01T00:00:00Z"}
    assert parse(dict(e)).message_id == parse(dict(e)).message_id
    assert parse(dict(e)).message_id != parse({**e, "event": "y"}).message_id


def test_json_schemas_cover_the_catalogue():
    schemas = json_schemas()
    assert set(schemas) == set(CATALOGUE)
    oc = schemas["Order Completed"]
    assert "order_id" in oc["required"] and oc["x-plait-version"] == "1-0-0"
    assert oc["properties"]["products"]["anyOf"][0]["items"]["$ref"].startswith("#/$defs/")


ids = st.one_of(st.none(), st.text(max_size=8), st.integers())
values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5))
calls = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "bogus"]),
    "userId": ids, "anonymousId": ids, "event": st.one_of(st.none(), st.sampled_from(list(CATALOGUE) + ["Custom"])),
    "previousId": ids, "groupId": ids,
    "properties": st.dictionaries(st.sampled_from(["order_id", "total", "store_id", "currency", "platform",
                                                    "geofence_id", "products", "x"]), values, max_size=4),
})


@settings(max_examples=400, deadline=None)
@given(calls)
def test_any_input_is_accepted_or_rejected_with_a_reason(call):
    """Validation never crashes: every input is a record or an EventError naming why."""
    try:
        r = parse(msgspec.json.encode(call))
    except EventError as e:
        assert e.reason
        return
    assert r.type in ("track", "identify", "page", "screen", "group", "alias")
    assert r.user_id or r.anonymous_id
    if r.amount is not None:
        assert len(r.currency) == 3
