"""Run the simulation into a workspace: events to the log, truth beside it.

Behaviour is generated as vectorised facts and turned into log rows by the engine in
one SQL statement per block of people; the personal-data events (sign-ups in each
system, calls) go through the ordinary parser so their personal fields are sealed
like any collected event. The truth lands in ``<workspace>/truth/*.parquet``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plait.engine.dialects import quote_literal
from plait.errors import ConfigError
from plait.simulate.activity import KINDS, TOUCH_CHANNEL, Facts, simulate_block
from plait.simulate.world import NICK, World, build_world, typo

if TYPE_CHECKING:
    from plait.workspace import Workspace

BLOCK = 10_000


@dataclass
class SimulationResult:
    people: int
    days: int
    seed: int
    events: int
    identifiers: int
    seconds: float
    truth_dir: Path
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        top = ", ".join(f"{k} {v:,}" for k, v in list(self.counts.items())[:8])
        return (f"simulated {self.people:,} people over {self.days} days (seed {self.seed}): {self.events:,} events, "
                f"{self.identifiers:,} identifiers, in {self.seconds:.1f} s\n  {top}\n  truth in {self.truth_dir}")


def simulate(ws: "Workspace", *, people: int = 2000, days: int = 90, seed: int = 7, start: date = date(2025, 1, 1),
             progress: bool = False) -> SimulationResult:
    """Simulate ``people`` customers of an omnichannel retailer for ``days`` days."""
    for name, value, least in (("people", people, 1), ("days", days, 1), ("seed", seed, 0)):
        if value < least:
            raise ConfigError(f"a simulation needs {name} of at least {least}, not {value}",
                              hint="for example: plait simulate --people 2000 --days 90 --seed 7")
    t0 = time.perf_counter()
    # The simulated retailer is British: its tills and call center write national phone numbers.
    if ws.settings.identity.default_region != "GB":
        ws.settings.identity.default_region = "GB"
        ws.settings.save(ws.path)
    w = build_world(people, days, start, seed)
    rng = np.random.default_rng(seed + 1)
    b = ws.backend
    _register_lookups(ws, w)
    exposures: list = []
    caused = np.zeros(len(w.campaigns["day"]))
    order_no = 1
    blocks = range(0, people, BLOCK)
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("simulating", total=len(blocks) + 1)
    before = ws.log.count()
    try:
        for bi, lo in enumerate(blocks):
            facts = Facts()
            order_no = simulate_block(w, np.arange(lo, min(people, lo + BLOCK)), rng, facts, order_no, exposures,
                                      caused)
            b.temp_table("sim_facts", facts.table())
            rows = b.query(_facts_sql(seed, bi, ws.settings.base_currency))
            ws.log.append_table(rows)
            if bar:
                bar.advance(task)
        identity_events = _identity_events(w, rng, ws)
        ws.log.append(identity_events)
        if bar:
            bar.advance(task)
    finally:
        if bar:
            bar.stop()
        b.execute("DROP TABLE IF EXISTS sim_facts")
    ids = _write_truth(ws.truth_dir, w, exposures, caused)
    # The retailer's own product catalogue (reference data, not truth): category, department, list price.
    ws.catalogue.add({"product_id": f"P{i}", "name": f"{w.categories[c]} item {i}", "category": w.categories[c],
                      "department": w.category_department[c], "list_price": float(w.products["price"][i])}
                     for i, c in enumerate(w.products["category"]))
    counts = {r["k"]: r["n"] for r in b.rows(
        "SELECT coalesce(event, type) AS k, count(*) AS n FROM events WHERE starts_with(message_id, ?) "
        "GROUP BY 1 ORDER BY 2 DESC", [f"sim{seed}-"])}
    return SimulationResult(people, days, seed, ws.log.count() - before, ids, time.perf_counter() - t0, ws.truth_dir, counts)


def _register_lookups(ws: "Workspace", w: World) -> None:
    b = ws.backend
    b.temp_table("sim_kinds", pa.table({"kind": pa.array(range(len(KINDS)), pa.int16()),
                                        "type": [k[0] for k in KINDS], "event": [k[1] for k in KINDS]}))
    cat = w.products["category"]
    b.temp_table("sim_products", pa.table({"product": pa.array(np.arange(cat.size), pa.int32()),
                                           "category": [w.categories[c] for c in cat],
                                           "department": [w.category_department[c] for c in cat]}))
    b.temp_table("sim_campaigns", pa.table({"campaign": pa.array(np.arange(len(w.campaigns["day"])), pa.int32()),
                                            "channel": list(w.campaigns["channel"])}))


def _facts_sql(seed: int, block: int, currency: str) -> str:
    cur = quote_literal(currency)
    return f"""
WITH lines AS (
  SELECT order_no, CAST(to_json(list({{'product_id': 'P' || product, 'category': p.category, 'price': amount,
         'quantity': qty}} ORDER BY product)) AS VARCHAR) AS products
  FROM sim_facts f JOIN sim_products p USING (product) WHERE kind = -1 GROUP BY order_no
),
f AS (
  SELECT f.*, row_number() OVER (ORDER BY person, t, kind) AS seq, k.type, k.event, p.category,
         c.channel AS campaign_channel, l.products
  FROM sim_facts f JOIN sim_kinds k USING (kind)
  LEFT JOIN sim_products p USING (product) LEFT JOIN sim_campaigns c USING (campaign)
  LEFT JOIN lines l USING (order_no)
  WHERE f.kind >= 0
)
SELECT
  'sim{seed}-' || '{block}-' || seq AS message_id, type, event,
  CASE WHEN type = 'track' THEN '1-0-0' END AS schema_version,
  channel, source, anon AS anonymous_id, "user" AS user_id,
  CAST(NULL AS VARCHAR) AS group_id, CAST(NULL AS VARCHAR) AS previous_id,
  CAST(make_timestamp(t) AS TIMESTAMPTZ) AS event_time, CAST(make_timestamp(t) AS TIMESTAMPTZ) AS original_time,
  CAST(NULL AS TIMESTAMPTZ) AS sent_at, CAST(make_timestamp(t + 1500000) AS TIMESTAMPTZ) AS received_at,
  CAST(make_timestamp(t) AS DATE) AS day,
  CASE WHEN order_no IS NOT NULL THEN 'ord-' || order_no END AS order_id,
  CASE WHEN store IS NOT NULL THEN 'st-' || store END AS store_id,
  CASE WHEN event IN ('Order Completed', 'Product Returned', 'Order Cancelled', 'Product Viewed', 'Product Added')
       THEN round(amount, 2) END AS amount,
  CASE WHEN event IN ('Order Completed', 'Product Returned', 'Order Cancelled', 'Product Viewed', 'Product Added')
       THEN {cur} END AS currency,
  CAST(CASE
    WHEN type IN ('page', 'screen') THEN json_object('path', CASE WHEN campaign IS NULL THEN '/' ELSE '/landing' END,
         'title', CASE WHEN campaign IS NULL THEN 'Home' ELSE 'Offer' END)
    WHEN event IN ('Product Viewed', 'Product Added') THEN json_object('product_id', 'P' || product, 'category', category,
         'price', round(amount, 2), 'currency', {cur}, 'quantity', CASE WHEN qty > 0 THEN qty END)
    WHEN event = 'Checkout Started' THEN json_object('order_id', 'ord-' || order_no, 'currency', {cur})
    WHEN event = 'Order Completed' THEN json_object('order_id', 'ord-' || order_no, 'total', round(amount, 2),
         'currency', {cur}, 'store_id', CASE WHEN store IS NOT NULL THEN 'st-' || store END,
         'products', json(products))
    WHEN event IN ('Store Visit') THEN json_object('store_id', 'st-' || store)
    WHEN event = 'Geofence Entered' THEN json_object('geofence_id', 'gf-st-' || store, 'store_id', 'st-' || store,
         'campaign_id', CASE WHEN campaign IS NOT NULL THEN 'cmp-' || campaign END)
    WHEN event = 'Social Engagement' THEN json_object('platform', CASE WHEN campaign % 2 = 0 THEN 'instagram' ELSE 'tiktok' END,
         'action', 'like', 'campaign_id', 'cmp-' || campaign)
    WHEN event = 'Product Returned' THEN json_object('order_id', 'ord-' || order_no, 'product_id', 'P' || product,
         'quantity', qty, 'total', round(amount, 2), 'currency', {cur},
         'store_id', CASE WHEN store IS NOT NULL THEN 'st-' || store END)
    WHEN event = 'Order Cancelled' THEN json_object('order_id', 'ord-' || order_no, 'total', round(amount, 2), 'currency', {cur})
    WHEN event = 'Loyalty Points Earned' THEN json_object('card_id', anon, 'points', qty, 'order_id', 'ord-' || order_no)
    WHEN event = 'Campaign Exposure' THEN json_object('campaign_id', 'cmp-' || campaign, 'campaign_name',
         campaign_channel || ' campaign ' || campaign, 'group', CASE WHEN qty = 1 THEN 'treatment' ELSE 'holdout' END)
    WHEN campaign IS NOT NULL THEN json_object('campaign_id', 'cmp-' || campaign, 'campaign_name',
         campaign_channel || ' campaign ' || campaign)
  END AS VARCHAR) AS properties,
  CAST(NULL AS VARCHAR) AS traits,
  CAST(CASE
    WHEN medium IN ('loyalty_card', 'pos_customer_id') THEN json_object('externalIds',
         json_array(json_object('id', anon, 'type', medium, 'collection', 'users', 'encoding', 'none')))
    WHEN type = 'page' AND campaign IS NOT NULL THEN json_object('campaign', json_object('name', 'cmp-' || campaign,
         'source', CASE WHEN medium = 'cpc' THEN 'google' ELSE 'network' END, 'medium', medium),
         'library', json_object('name', 'analytics.js', 'version', '2.11.1'))
    WHEN channel = 'web' THEN json_object('library', json_object('name', 'analytics.js', 'version', '2.11.1'))
    WHEN source = 'app' THEN json_object('library', json_object('name', 'analytics-ios', 'version', '4.1.8'))
  END AS VARCHAR) AS context,
  CASE WHEN "user" IS NOT NULL THEN 'user_id:' || "user" ELSE 'anonymous_id:' || anon END AS subject,
  CAST(NULL AS BLOB) AS pii
FROM f
"""


def _identity_events(w: World, rng: np.random.Generator, ws: "Workspace") -> list:
    """Sign-ups in each system, each holding its own imperfect copy of the person."""
    parse = ws.parser.parse
    start_us = int(datetime(w.start.year, w.start.month, w.start.day, tzinfo=timezone.utc).timestamp() * 1e6)
    out = []
    seq = 0

    def when() -> str:
        us = start_us + int(rng.integers(0, max(1, w.days) * 86_400)) * 1_000_000
        return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat()

    def add(call: dict[str, Any], source: str) -> None:
        nonlocal seq
        seq += 1
        call["messageId"] = f"sim{w.seed}-id-{seq}"
        sent = datetime.fromisoformat(call["timestamp"])
        received = int(sent.timestamp() * 1e6) + 1_500_000
        out.append(parse(call, received_at=received, source=source, correct_skew=False))

    def phone_fmt(num: int, style: int) -> str:
        s = f"{num:010d}"
        return [f"+44{s}", f"0{s[:4]} {s[4:]}", f"(0{s[:4]}) {s[4:7]}-{s[7:]}"][style]

    for p in range(w.n):
        first, last, email = w.first[p], w.last[p], w.email[p]
        addr = {"street": w.street[p], "city": w.city[p], "postalCode": w.postcode[p], "country": "GB"}
        if w.registered[p]:
            traits = {"email": email, "firstName": first, "lastName": last, "address": addr}
            if rng.random() < 0.7:
                traits["phone"] = phone_fmt(int(w.phone[p]), 0)
            if rng.random() < 0.5:
                traits["birthday"] = w.birthday[p]
            add({"type": "identify", "userId": f"web-{p}", "anonymousId": str(w.cookie(np.array([p]), np.zeros(1, int))[0]),
                 "traits": traits,
                 "timestamp": when(), "context": {"library": {"name": "analytics.js", "version": "2.11.1"}}}, "web")
        if w.app_user[p]:
            call = {"type": "identify", "anonymousId": f"dev-{p}", "timestamp": when(),
                    "context": {"device": {"id": f"dev-{p}", "type": "ios"}, "library": {"name": "analytics-ios"}}}
            if w.registered[p]:
                call["userId"] = f"web-{p}"
            add(call, "app")
        if w.card[p] or w.pos_customer[p]:
            # The till's sign-up form: nicknames, typos, swapped names, old addresses, missing fields.
            f, l_ = first, last
            if rng.random() < 0.2:
                f = NICK.get(f, f)
            if rng.random() < 0.08:
                l_ = typo(rng, l_)
            if rng.random() < 0.03:
                f, l_ = l_, f
            traits = {"firstName": f, "lastName": l_,
                      "address": {**addr, "street": w.old_street[p]} if rng.random() < 0.15 else addr}
            if rng.random() < 0.7:
                traits["email"] = typo(rng, email) if rng.random() < 0.05 else email.upper() if rng.random() < 0.1 else email
            if rng.random() < 0.6:
                traits["phone"] = phone_fmt(int(w.phone[p]), int(rng.integers(0, 3)))
            ext = []
            if w.card[p]:
                ext.append({"id": f"LC{40_000_000 + p * 7 + 3}", "type": "loyalty_card", "collection": "users", "encoding": "none"})
            if w.pos_customer[p]:
                ext.append({"id": f"POS{100_000 + p * 3}", "type": "pos_customer_id", "collection": "users", "encoding": "none"})
            anon = ext[0]["id"]
            name = "Loyalty Enrolled" if w.card[p] else "POS Customer Created"
            add({"type": "track", "event": name, "anonymousId": anon, "timestamp": when(),
                 "properties": {"card_id": ext[0]["id"]} if w.card[p] else {},
                 "context": {"traits": traits, "externalIds": ext}, "channel": "store"}, "pos")
        if w.newsletter[p]:
            e = typo(rng, email) if rng.random() < 0.03 else email
            add({"type": "identify", "anonymousId": f"esp-{p}", "traits": {"email": e}, "timestamp": when()}, "esp")
        n_calls = rng.poisson(w.complaint_rate[p] * 20 + 0.1)
        for c in range(n_calls):
            heard = typo(rng, last) if rng.random() < 0.15 else last
            phone = int(w.phone[p]) if rng.random() < 0.8 else int(7_000_000_000 + rng.integers(0, 10 ** 9))
            add({"type": "track", "event": "Call Center Contact", "anonymousId": f"caller-{phone}", "timestamp": when(),
                 "properties": {"contact_id": f"call-{p}-{c}", "reason": str(rng.choice(["delivery", "return", "billing", "product"])),
                                "duration_s": int(rng.integers(60, 1200))},
                 "context": {"traits": {"phone": phone_fmt(phone, 1), "lastName": heard, "postalCode": w.postcode[p]}}},
                "call_center")
            if rng.random() < 0.3:
                add({"type": "track", "event": "Complaint Filed", "anonymousId": f"caller-{phone}", "timestamp": when(),
                     "properties": {"complaint_id": f"cmp-{p}-{c}", "category": "service", "severity": "medium"},
                     "channel": "call_center"}, "call_center")
    return out


def _write_truth(directory: Path, w: World, exposures: list, caused: np.ndarray) -> int:
    """Who is behind each identifier, and the world's hidden causes."""
    directory.mkdir(parents=True, exist_ok=True)
    p = np.arange(w.n)
    parts = [("cookie", w.cookie(p, np.zeros(w.n, int)), p)]
    for k in (1, 2):
        parts.append(("cookie", w.cookie(p, np.full(w.n, k)), p))
    m = w.registered
    parts.append(("user_id", w.user_id(p[m]), p[m]))
    m = w.app_user
    parts.append(("device_id", w.device(p[m]), p[m]))
    m = w.card
    parts.append(("loyalty_card", w.card_no(p[m]), p[m]))
    m = w.pos_customer
    parts.append(("pos_customer_id", w.pos_no(p[m]), p[m]))
    # The messaging platform holds an id for everyone it has messaged (not only subscribers).
    parts.append(("esp_id", w.esp_id(p), p))
    parts.append(("email", np.asarray(w.email, dtype=object), p))
    parts.append(("phone", np.array([f"+44{x:010d}" for x in w.phone], dtype=object), p))
    ident = pa.table({
        "identifier_type": np.concatenate([np.full(len(v), t, dtype=object) for t, v, _ in parts]).astype(str),
        "identifier_value": np.concatenate([np.asarray(v, dtype=object) for _, v, _ in parts]).astype(str),
        "person_id": np.concatenate([q for _, _, q in parts]),
    })
    # A shared family cookie belongs to the household head; the truth records the sharing.
    pq.write_table(ident, directory / "identifiers.parquet")
    pq.write_table(pa.table({
        "person_id": p, "activity": w.activity, "price_sensitivity": w.price_sensitivity,
        "pref_web": w.channel_pref[:, 0], "pref_app": w.channel_pref[:, 1], "pref_store": w.channel_pref[:, 2],
        "churn_day": w.churn_day, "return_rate": w.return_rate, "home_store": w.home_store,
        "household_head": w.household, "registered": w.registered, "app_user": w.app_user, "card": w.card,
        "favourite_category": [w.categories[i] for i in w.taste.argmax(axis=1)],
    }), directory / "people.parquet")
    c = w.campaigns
    pq.write_table(pa.table({
        "campaign_id": [f"cmp-{i}" for i in range(len(c["day"]))], "channel": list(c["channel"]),
        "touch_channel": [TOUCH_CHANNEL.get(ch, ch) for ch in c["channel"]],
        "day": [str(np.datetime64(w.start) + int(d)) for d in c["day"]], "true_lift": c["lift"],
        "window_days": c["window"], "reach": c["reach"], "holdout_share": c["holdout"],
        # Orders the campaign caused: expected orders with it minus without it, everything else equal.
        "true_incremental_orders": caused,
    }), directory / "campaigns.parquet")
    if exposures:
        pq.write_table(pa.table({
            "person_id": np.concatenate([e[0] for e in exposures]),
            "campaign_id": np.char.add("cmp-", np.concatenate([e[1] for e in exposures]).astype(str)),
            "day": np.concatenate([e[2] for e in exposures]),
            "treated": np.concatenate([e[3] for e in exposures]),
        }), directory / "exposures.parquet")
    pq.write_table(pa.table({
        "product_id": [f"P{i}" for i in range(w.products["price"].size)],
        "category": [w.categories[i] for i in w.products["category"]],
        "department": [w.category_department[i] for i in w.products["category"]],
        "list_price": w.products["price"],
    }), directory / "products.parquet")
    pq.write_table(pa.table({"antecedent": [f"P{a}" for a in w.copurchase[:, 0]],
                             "consequent": [f"P{b}" for b in w.copurchase[:, 1]]}), directory / "copurchase.parquet")
    pq.write_table(pa.table({"store_id": [f"st-{i}" for i in range(len(w.stores["lat"]))], "lat": w.stores["lat"],
                             "lon": w.stores["lon"], "region": w.stores["region"]}), directory / "stores.parquet")
    days = [str(np.datetime64(w.start) + d) for d in range(w.days)]
    pq.write_table(pa.table({
        "region": np.repeat(np.arange(4), w.days), "day": days * 4,
        "rain": w.weather["rain"].reshape(-1), "temp_c": np.round(w.weather["temp"].reshape(-1), 1),
    }), directory / "weather.parquet")
    le = w.local_events
    pq.write_table(pa.table({"store_id": [f"st-{s}" for s in le["store"]],
                             "day": [str(np.datetime64(w.start) + int(d)) for d in le["day"]], "visit_lift": le["lift"]}),
                   directory / "local_events.parquet")
    return ident.num_rows


def true_incremental(ws: "Workspace") -> Any:
    """Orders the simulated campaigns caused, summed per touch channel (a pandas Series)."""
    from plait.errors import ConfigError

    path = ws.truth_dir / "campaigns.parquet"
    if not path.exists() or "true_incremental_orders" not in pq.read_schema(path).names:
        raise ConfigError(f"no simulator truth in {ws.truth_dir}",
                          hint="score against holdouts, or simulate this workspace with `plait simulate`")
    df = pq.read_table(path, columns=["touch_channel", "true_incremental_orders"]).to_pandas()
    return df.groupby("touch_channel")["true_incremental_orders"].sum().rename_axis("channel")


__all__ = ["SimulationResult", "simulate", "true_incremental"]
