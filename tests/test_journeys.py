"""Journeys from the log: touches, sessions, lookback, conversions, consent, attribution on them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from plait.analytics.journeys import path_table

T0 = datetime(2025, 3, 1, 9, tzinfo=timezone.utc)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def track(ws, user, event, minutes, **extra):  # noqa: ANN001
    call = {"type": "track", "event": event, "userId": user, "timestamp": at(minutes), **extra}
    ws.log.append([ws.parser.parse(call, received_at=0, source="test")])


def page(ws, user, minutes, medium=None, referrer=None):  # noqa: ANN001
    ctx = {}
    if medium:
        ctx["campaign"] = {"name": "spring", "medium": medium}
    if referrer:
        ctx["page"] = {"referrer": referrer}
    ws.log.append([ws.parser.parse({"type": "page", "userId": user, "timestamp": at(minutes), "context": ctx},
                                   received_at=0, source="test")])


def order(ws, user, minutes, oid, total=10.0, store=None):  # noqa: ANN001
    props = {"order_id": oid, "total": total, "currency": "USD", **({"store_id": store} if store else {})}
    track(ws, user, "Order Completed", minutes, properties=props)


def test_paths_from_the_log(ws):
    # Ann: email open, a paid-search session (3 pages, one touch), then an order; later a store visit, no order.
    track(ws, "ann", "Email Opened", 0, properties={"campaign_id": "c1"})
    page(ws, "ann", 60, medium="cpc")
    page(ws, "ann", 65)
    page(ws, "ann", 70)
    order(ws, "ann", 75, "o1", 20.0)
    track(ws, "ann", "Store Visit", 3000, properties={"store_id": "s1"})
    # Bob: an old social touch outside the lookback, then a Google visit, a referral visit, an order.
    track(ws, "bob", "Social Engagement", -60 * 24 * 40, properties={"platform": "instagram", "action": "like"})
    page(ws, "bob", 0, referrer="https://www.google.com/search?q=shoes")
    page(ws, "bob", 200, referrer="https://blog.example.org/post")
    order(ws, "bob", 210, "o2", 30.0)
    # Cy: buys with no touch at all.
    order(ws, "cy", 5, "o3", 5.0)
    ws.resolve()
    pt = path_table(ws, lookback_days=30)
    rows = {r["path"]: r for r in pt.to_dict("records")}
    assert rows["email > paid_search"]["total_conversions"] == 1 and rows["email > paid_search"][
        "total_conversion_value"] == 20.0
    assert rows["organic_search > referral"]["total_conversions"] == 1
    assert rows["store_visit"]["total_null"] == 1 and rows["store_visit"]["total_conversions"] == 0
    assert pt.attrs["untouched"] == 1
    assert not any("social" in p for p in rows)          # 40 days before: outside the lookback
    wide = {r["path"] for r in path_table(ws, lookback_days=60).to_dict("records")}
    assert "social > organic_search > referral" in wide
    # Withdrawn analytics consent: Bob's journeys leave the table.
    ws.consent.set("user_id:bob", "analytics", False)
    assert "organic_search > referral" not in set(path_table(ws)["path"])
    r = ws.analytics.attribution("markov", order=1)
    assert sum(x["conversions"] for x in r["table"]) == pytest.approx(1)
    assert ws.backend.scalar("SELECT sum(conversions) FROM analytics_attribution") == pytest.approx(1)


def test_time_to_conversion(ws):
    from plait.analytics.paths import time_to_conversion

    track(ws, "dee", "Email Opened", 0)
    page(ws, "dee", 60 * 24, medium="cpc")
    order(ws, "dee", 60 * 48, "o9")
    ws.resolve()
    t = time_to_conversion(ws)
    assert t["journeys"] == 1 and t["median_days"] == pytest.approx(2.0) and t["median_touches"] == 2


def test_online_to_offline(ws):
    from plait.analytics.journeys import online_to_offline

    # Eve opens an email, visits a store two days later and buys there; Fay opens one and does nothing.
    track(ws, "eve", "Email Opened", 0, properties={"campaign_id": "spring"})
    track(ws, "eve", "Store Visit", 60 * 48, properties={"store_id": "s1"})
    ws.log.append([ws.parser.parse({"type": "track", "event": "Order Completed", "userId": "eve", "timestamp": at(60 * 49),
                                    "context": {"channel": "store"},
                                    "properties": {"order_id": "so1", "total": 42.0, "currency": "USD",
                                                   "store_id": "s1"}}, received_at=0, source="pos")])
    track(ws, "fay", "Email Opened", 0, properties={"campaign_id": "spring"})
    track(ws, "fay", "Store Visit", -60 * 24, properties={"store_id": "s1"})    # the day before: not after
    ws.resolve()
    assert ws.backend.scalar("SELECT channel FROM events WHERE order_id = 'so1'") == "store"
    by_channel = online_to_offline(ws, within_days=7).set_index("channel")
    e = by_channel.loc["email"]
    assert (e["touches"], e["customers"]) == (2, 2)
    assert e["store_visit_rate_after"] == 0.5 and e["store_visit_rate_before"] == 0.5
    assert e["store_purchase_rate_after"] == 0.5 and e["store_sales_after"] == 42.0 and e["store_sales_before"] == 0
    assert online_to_offline(ws, by="campaign").set_index("campaign").loc["spring", "touches"] == 2


def test_funnel_by_entry_channel_and_store(ws):
    from plait.analytics.journeys import funnel

    page(ws, "gil", 0, medium="cpc")
    track(ws, "gil", "Product Viewed", 1, properties={"product_id": "p1"})
    track(ws, "gil", "Product Added", 2, properties={"product_id": "p1"})
    track(ws, "gil", "Checkout Started", 3, properties={"order_id": "g1"})
    order(ws, "gil", 4, "g1", 25.0)
    page(ws, "gil", 600)                                  # a later direct session that only looks
    page(ws, "hal", 0)
    page(ws, "hal", 5)
    track(ws, "hal", "Store Visit", 60 * 24, properties={"store_id": "s1"})
    ws.log.append([ws.parser.parse({"type": "track", "event": "Order Completed", "userId": "hal",
                                    "timestamp": at(60 * 24 + 20), "context": {"channel": "store"},
                                    "properties": {"order_id": "h1", "total": 9.0, "currency": "USD",
                                                   "store_id": "s1"}}, received_at=0, source="pos")])
    track(ws, "ian", "Store Visit", 60 * 24, properties={"store_id": "s1"})
    ws.resolve()
    f = funnel(ws).set_index("channel")
    ps = f.loc["paid_search"]
    assert (ps["sessions"], ps["viewed_product"], ps["added_to_cart"], ps["conversion"], ps["revenue"]) == (
        1, 1.0, 1.0, 1.0, 25.0)
    d = f.loc["direct"]
    assert d["sessions"] == 2 and d["conversion"] == 0 and d["pages_per_session"] == 1.5
    st = funnel(ws, by="store").set_index("store").loc["s1"]
    assert (st["visits"], st["visits_with_purchase"], st["conversion"]) == (2, 1, 0.5)
    # Hal's store purchase came 1 day 20 minutes after his first touch (the direct session).
    assert st["median_days_first_touch_to_purchase"] == pytest.approx(1 + 20 / 1440)


def test_first_touch_conversion_and_sales_cycle_from_the_log(ws):
    from plait.analytics.paths import by_first_touch, first_touches

    track(ws, "jo", "Email Opened", 0, properties={"campaign_id": "c1"})
    page(ws, "jo", 60 * 24 * 3, medium="cpc")
    order(ws, "jo", 60 * 24 * 4, "j1", 30.0)                # email first, converts after 4 days
    track(ws, "kim", "Email Opened", 0, properties={"campaign_id": "c1"})   # email first, never converts
    page(ws, "lee", 0, medium="cpc")
    order(ws, "lee", 60 * 24, "l1", 10.0)                    # paid search first, 1 day
    # A geofence entry is a touch when it carries a campaign (a geofenced offer), not on its own.
    track(ws, "max", "Geofence Entered", 0, properties={"geofence_id": "g1", "store_id": "s1"})
    track(ws, "max", "Geofence Entered", 10, properties={"geofence_id": "g1", "campaign_id": "geo-1"})
    ws.resolve()
    f = by_first_touch(first_touches(ws)).set_index("channel")
    e = f.loc["email"]
    assert (e["journeys"], e["conversions"], e["conversion_rate"], e["median_days"], e["value"]) == (2, 1, 0.5, 4.0, 30.0)
    assert e["rate_low"] < 0.5 < e["rate_high"]
    p = f.loc["paid_search"]
    assert (p["journeys"], p["conversions"], p["median_days"]) == (1, 1, 1.0)
    assert f.loc["geofence", "journeys"] == 1
    assert list(path_table(ws)["path"]).count("geofence") == 1


def test_first_touch_conversion_on_olists_lead_funnel():
    import csv

    from plait.analytics.paths import by_first_touch
    from plait.collect.sources import olist_leads
    from tests.conftest import shared_file

    folder = shared_file("olist-marketing-funnel")
    leads = olist_leads(folder)
    assert len(leads) == 8000 and leads["started"].notna().all() and leads["converted_at"].notna().sum() == 842
    f = by_first_touch(leads).set_index("channel")
    # Counted independently from the raw files.
    with open(folder / "olist_marketing_qualified_leads_dataset.csv") as fh:
        origin = {r["mql_id"]: r["origin"] or "(unknown)" for r in csv.DictReader(fh)}
    with open(folder / "olist_closed_deals_dataset.csv") as fh:
        won = [origin[r["mql_id"]] for r in csv.DictReader(fh)]
    for ch in ("organic_search", "paid_search", "social", "email", "unknown"):
        n = sum(1 for o in origin.values() if o == ch)
        assert (f.loc[ch, "journeys"], f.loc[ch, "conversions"]) == (n, won.count(ch))
    assert f["conversions"].sum() == 842
    # Leads from search convert better than leads from social or email, and take weeks to close.
    assert f.loc["organic_search", "rate_low"] > f.loc["social", "rate_high"]
    assert f.loc["paid_search", "rate_low"] > f.loc["email", "rate_high"]
    assert 7 < f.loc["organic_search", "median_days"] < 60
