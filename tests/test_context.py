"""Context providers: location and geofences, weather, calendar, traffic, and failure isolation."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from plait.decide import Decider, RuleBook
from plait.decide.context import Calendar, Context, Location, Traffic, Weather
from plait.profiles.online import MemoryStore

LEEDS = {"store_id": "leeds", "lat": 53.7997, "lon": -1.5492, "radius_m": 200}
YORK = {"store_id": "york", "lat": 53.9590, "lon": -1.0815,
        "polygon": [(53.9585, -1.0825), (53.9595, -1.0825), (53.9595, -1.0805), (53.9585, -1.0805)]}
T = datetime(2025, 6, 30, 12, tzinfo=timezone.utc).timestamp()       # Monday 30 June: the last working day


def at(lat, lon):  # noqa: ANN001, ANN201
    return {"name": "Geofence Entered", "properties": {"latitude": lat, "longitude": lon}}


def test_location_nearest_store_geofences_entry_and_exit():
    loc = Location([LEEDS, YORK])
    me = {"profile_id": "p1"}
    far = loc.enrich(me, at(53.80, -1.56), T, {})
    assert far["nearest_store"] == "leeds" and 700 < far["distance_m"] < 800 and far["inside"] == []
    near = loc.enrich(me, at(53.7999, -1.5490), T, {})
    assert near["inside"] == ["leeds"] and near["entered"] == ["leeds"] and near["distance_m"] < 50
    still = loc.enrich(me, at(53.7998, -1.5491), T, {})
    assert still["entered"] == [] and still["inside"] == ["leeds"]
    york = loc.enrich(me, at(53.9590, -1.0815), T, {})                   # inside the polygon
    assert york["inside"] == ["york"] and york["entered"] == ["york"] and york["exited"] == ["leeds"]
    assert loc.enrich(me, {"name": "Page"}, T, {}) is None               # no position, no location


def test_weather_from_a_file_is_cached(tmp_path):
    (tmp_path / "stores.csv").write_text("store_id,region\nleeds,1\nyork,2\n")
    (tmp_path / "weather.csv").write_text("region,day,rain,temp_c\n1,2025-06-30,true,14.5\n2,2025-06-30,false,19.0\n")
    w = Weather.from_file(tmp_path / "weather.csv", stores=tmp_path / "stores.csv")
    assert w.enrich({}, {"store_id": "leeds"}, T, {}) == {"rain": True, "temp_c": 14.5}
    calls = []
    cached = Weather(lambda s, d: calls.append((s, d)) or {"rain": False})
    for _ in range(3):
        cached.enrich({}, {"store_id": "york"}, T, {})
    assert calls == [("york", date(2025, 6, 30))]                         # one call, then the cache
    # Without an event store, the nearest store from the location provider is used.
    ctx = Context([Location([LEEDS, YORK]), w]).enrich({"profile_id": "p"}, at(53.7999, -1.5490), T)
    assert ctx["weather"]["rain"] is True and ctx["location"]["nearest_store"] == "leeds"


def test_calendar_paydays_holidays_and_local_events():
    cal = Calendar(holidays={"2025-08-25": "Summer bank holiday"}, paydays=["last_working_day", 15],
                   events=[{"store_id": "leeds", "day": "2025-06-30", "name": "Leeds festival"}])
    c = cal.enrich({}, {"store_id": "leeds"}, T, {})
    assert c["payday"] and c["days_to_payday"] == 0 and c["local_event"] == "Leeds festival" and c["holiday"] is None
    aug = datetime(2025, 8, 25, 9, tzinfo=timezone.utc).timestamp()
    a = cal.enrich({}, None, aug, {})
    assert a["holiday"] == "Summer bank holiday" and not a["payday"] and a["days_to_payday"] == 4   # Fri 29 Aug
    assert cal.enrich({}, None, datetime(2025, 7, 12, tzinfo=timezone.utc).timestamp(), {})["days_to_payday"] == 3


def test_a_failing_provider_is_skipped_not_fatal():
    def broken(store):  # noqa: ANN001, ANN202
        raise TimeoutError("feed down")

    ctx = Context([Traffic(broken), Calendar()])
    out = ctx.enrich({}, {"store_id": "leeds"}, T)
    assert "traffic" not in out and "calendar" in out and ctx.failures == {"traffic": 1}
    assert Context([Traffic(lambda s: "high")]).enrich({}, {"store_id": "leeds"}, T)["traffic"]["level"] == "high"


def test_a_geofence_entry_triggers_an_in_store_offer_in_the_rain():
    book = RuleBook(data={
        "offers": [{"id": "coffee", "value": 2, "context_weights": [
            {"when": {"field": "context.weather.rain", "op": "==", "value": True}, "weight": 2}]}],
        "rules": [{"id": "walk-in", "events": ["Geofence Entered"],
                   "condition": {"field": "context.location.entered", "op": "contains", "value": "leeds"},
                   "actions": [{"offer": "coffee"}]}]})
    store = MemoryStore()
    store.put({"profile_id": "p1", "consent": {"marketing": True}}, identifiers=["user_id:u1"])
    ctx = Context([Location([LEEDS]), Weather(lambda s, d: {"rain": True})])
    from plait.config import DecideSettings

    d = Decider(book, store, settings=DecideSettings(global_control=0), context=ctx, clock=lambda: T)
    ev = {"type": "track", "event": "Geofence Entered", "userId": "u1",
          "properties": {"latitude": 53.7999, "longitude": -1.5490}}
    r = d.decide({"event": ev, "placement": "push"})
    assert [a["offer_id"] for a in r.actions] == ["coffee"] and r.actions[0]["context_weight"] == 2
    again = d.decide({"event": ev, "placement": "push"})               # already inside: no new entry
    assert again.rules == [] and again.actions == []
    with pytest.raises(Exception):
        Location([{"store_id": "x"}])                                   # a store needs lat and lon
