"""What the simulated people do, day by day, drawn in vectorised blocks of people.

Occasions (a web or app session, a store visit) arrive as a Poisson process whose
rate follows the person's activity, the season and weekday, their churn, the
weather (rain moves shopping online), local events near their store and — the
known causal effect — marketing touches within each campaign's window. Held-out
people are targeted but never touched, so the truth holds each campaign's real lift.

The output is a table of *facts*: numbers and short codes, one row per event. The
engine turns facts into log rows in one SQL statement (:mod:`plait.simulate.run`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plait.simulate.world import World

DAY_US = 86_400_000_000
# Chance that an occasion ends in an order: a web/app session buys with 0.14, or 0.30 when more
# than one product is viewed (views ~ Poisson(1.2)); a store visit buys with 0.62.
P_BUY_ONLINE = 0.14 + 0.16 * (1 - np.exp(-1.2) * 2.2)
P_BUY_STORE = 0.62
# The channel a campaign's touch is analysed under (a search campaign's clicks are paid search).
TOUCH_CHANNEL = {"search": "paid_search"}
KINDS = [
    ("page", None), ("screen", None), ("track", "Product Viewed"), ("track", "Product Added"),
    ("track", "Checkout Started"), ("track", "Order Completed"), ("track", "Store Visit"),
    ("track", "Geofence Entered"), ("track", "Email Sent"), ("track", "Email Opened"), ("track", "Email Clicked"),
    ("track", "SMS Sent"), ("track", "Push Sent"), ("track", "Push Opened"), ("track", "Social Engagement"),
    ("track", "Product Returned"), ("track", "Order Cancelled"), ("track", "Loyalty Points Earned"),
    ("track", "Coupon Redeemed"), ("track", "Campaign Exposure"),
]
K = {name or typ: i for i, (typ, name) in enumerate(KINDS)}


class Facts:
    """Column lists that grow by numpy blocks, then become one Arrow table."""

    COLS = ("kind", "person", "t", "anon", "user", "channel", "store", "order_no", "product", "amount",
            "campaign", "qty", "source", "medium")

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {c: [] for c in self.COLS}

    def add(self, kind: np.ndarray | int, person: np.ndarray, t: np.ndarray, anon: np.ndarray, user: np.ndarray,
            channel: np.ndarray | str, source: np.ndarray | str, *, store=-1, order_no=-1, product=-1,
            amount=np.nan, campaign=-1, qty=0, medium: np.ndarray | str = "") -> None:
        n = len(person)
        if n == 0:
            return
        full = lambda v, dt=None: np.full(n, v, dtype=dt) if (v is None or np.isscalar(v)) else np.asarray(v)  # noqa: E731
        vals = dict(kind=full(kind, np.int16), person=person, t=t, anon=full(anon, object), user=full(user, object),
                    channel=full(channel, object), store=full(store, np.int32), order_no=full(order_no, np.int64),
                    product=full(product, np.int32), amount=full(amount, np.float64), campaign=full(campaign, np.int32),
                    qty=full(qty, np.int32), source=full(source, object), medium=full(medium, object))
        for c in self.COLS:
            self.parts[c].append(vals[c])

    def table(self) -> pa.Table:
        cols = {}
        for c in self.COLS:
            arr = np.concatenate(self.parts[c]) if self.parts[c] else np.array([])
            if arr.dtype == object:
                arr = np.where(arr == "", None, arr)
                arr = pa.array(arr, pa.string(), from_pandas=True)
            cols[c] = arr
        t = pa.table(cols)
        for c in ("store", "order_no", "product", "campaign"):
            t = t.set_column(t.schema.get_field_index(c), c, pc.if_else(
                pc.less(t[c], 0), pa.nulls(t.num_rows, t[c].type), t[c]))
        return t


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return (cum < u[:, None]).sum(axis=1)


def simulate_block(w: World, people: np.ndarray, rng: np.random.Generator, facts: Facts, order_base: int,
                   truth_exposures: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                   truth_orders: np.ndarray) -> int:
    """Simulate ``people`` over the whole period into ``facts``; returns the next order number.

    ``truth_orders[c]`` grows by the orders campaign ``c`` caused among these people: the exact
    expectation, given everything else in their world, of orders with the campaign minus
    orders without it."""
    n, D = len(people), w.days
    start_us = int(np.datetime64(w.start, "us").astype(np.int64))
    day = np.arange(D)
    weekday = (np.datetime64(w.start) + day).astype("datetime64[D]").view("int64") % 7  # 0 = Thursday
    season = 1 + 0.25 * np.sin(2 * np.pi * (day + 30) / 365) + np.where(np.isin(weekday, [2, 3]), 0.2, 0)
    rate = w.activity[people][:, None] * season[None, :]
    rate = rate * (day[None, :] < w.churn_day[people][:, None])

    # Marketing touches and their true effect. A push or geofence campaign reaches app users only.
    lift = np.zeros((n, D))
    geo_boost = np.zeros((n, D))
    c = w.campaigns
    touched_by = []
    for ci in range(len(c["day"])):
        targeted = rng.random(n) < c["reach"][ci]
        holdout = targeted & (rng.random(n) < c["holdout"][ci])
        ch = c["channel"][ci]
        if ch in ("push", "geofence"):
            targeted &= w.app_user[people]
            holdout &= targeted
        touched = targeted & ~holdout
        d0 = int(c["day"][ci])
        d1 = min(D, d0 + int(c["window"][ci]))
        lift[touched, d0:d1] += c["lift"][ci]
        if ch == "geofence":
            geo_boost[touched, d0:d1] += 1.0
        idx = np.flatnonzero(targeted)
        truth_exposures.append((people[idx], np.full(idx.size, ci), np.full(idx.size, d0), ~holdout[idx]))
        touched_by.append(np.flatnonzero(touched))
        _assign(w, facts, ch, ci, people[idx], start_us + d0 * DAY_US + 6 * 3_600_000_000, ~holdout[idx])
        tp = people[touched]
        if tp.size:
            t = start_us + d0 * DAY_US + rng.integers(8 * 3600, 20 * 3600, tp.size) * 1_000_000
            _touch(w, facts, rng, ch, ci, tp, t)

    # Channel weights per person and day: preference, rain moving shopping online, local events
    # and geofence offers drawing people to the store.
    pref = w.channel_pref[people]
    online_w = pref[:, 0] + pref[:, 1] * w.app_user[people]
    region = w.stores["region"][w.home_store[people]]
    store_w = pref[:, 2][:, None] * np.where(w.weather["rain"][region], 0.6, 1.0)
    ev = w.local_events
    for s, dd, lf in zip(ev["store"], ev["day"], ev["lift"]):
        store_w[w.home_store[people] == s, dd] *= lf
    for ci, who in enumerate(touched_by):
        d0 = int(c["day"][ci])
        d1 = min(D, d0 + int(c["window"][ci]))
        r, L, sw = rate[who, d0:d1], lift[who, d0:d1], store_w[who, d0:d1]
        g, ow = geo_boost[who, d0:d1], online_w[who][:, None]
        conv = (ow * P_BUY_ONLINE + sw * (1 + g) * P_BUY_STORE) / (ow + sw * (1 + g))
        g0 = g - (1.0 if c["channel"][ci] == "geofence" else 0.0)
        conv0 = (ow * P_BUY_ONLINE + sw * (1 + g0) * P_BUY_STORE) / (ow + sw * (1 + g0))
        truth_orders[ci] += float((r * ((1 + L) * conv - (1 + L - c["lift"][ci]) * conv0)).sum())
    rate = rate * (1 + lift)

    occ = rng.poisson(rate)
    p_idx, d_idx = np.nonzero(occ)
    reps = occ[p_idx, d_idx]
    p_idx, d_idx = np.repeat(p_idx, reps), np.repeat(d_idx, reps)
    person = people[p_idx]
    m = person.size
    # Each occasion's channel, drawn from those weights.
    w_on = pref[p_idx]
    probs = np.stack([w_on[:, 0], w_on[:, 1] * w.app_user[person],
                      store_w[p_idx, d_idx] * (1 + geo_boost[p_idx, d_idx])], axis=1)
    channel = _categorical(rng, probs)
    t0 = start_us + d_idx * DAY_US + (8 * 3600 + rng.beta(2, 2, m) * 14 * 3600).astype(np.int64) * 1_000_000

    order_no = order_base
    online = channel < 2
    order_no = _sessions(w, facts, rng, person[online], t0[online], channel[online], order_no)
    order_no = _store_visits(w, facts, rng, person[~online], t0[~online], order_no)
    return order_no


def _campaign_ids(w: World, ch: str, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The identifiers a campaign system addresses people by: the app's device for push and
    geofence campaigns, else the web login where there is one and the messaging platform's id."""
    user = np.where(w.registered[p], w.user_id(p), None)
    if ch in ("push", "geofence"):
        return w.device(p), user
    return np.where(w.registered[p], None, w.esp_id(p)), user


def _assign(w: World, facts: Facts, ch: str, ci: int, p: np.ndarray, t: int, treated: np.ndarray) -> None:
    """The campaign tool's record of who was in which group (treatment or holdout)."""
    anon, user = _campaign_ids(w, ch, p)
    facts.add(K["Campaign Exposure"], p, np.full(p.size, t, np.int64), anon, user, TOUCH_CHANNEL.get(ch, ch),
              "campaigns", campaign=ci, qty=treated.astype(np.int32))


def _touch(w: World, facts: Facts, rng: np.random.Generator, ch: str, ci: int, p: np.ndarray, t: np.ndarray) -> None:
    anon, user = _campaign_ids(w, "email", p)
    if ch == "email":
        facts.add(K["Email Sent"], p, t, anon, user, "email", "esp", campaign=ci)
        o = rng.random(p.size) < 0.4
        facts.add(K["Email Opened"], p[o], t[o] + 3_600_000_000, anon[o], user[o], "email", "esp", campaign=ci)
        k = o & (rng.random(p.size) < 0.3)
        facts.add(K["Email Clicked"], p[k], t[k] + 3_700_000_000, anon[k], user[k], "email", "esp", campaign=ci)
    elif ch == "sms":
        facts.add(K["SMS Sent"], p, t, anon, user, "sms", "esp", campaign=ci)
    elif ch in ("push", "geofence"):
        app = w.app_user[p]
        pa_, ta = p[app], t[app]
        u = np.where(w.registered[pa_], w.user_id(pa_), None)
        if ch == "geofence":
            facts.add(K["Geofence Entered"], pa_, ta - 60_000_000, w.device(pa_), u, "app", "app",
                      store=w.home_store[pa_], campaign=ci)
        facts.add(K["Push Sent"], pa_, ta, w.device(pa_), u, "push", "app", campaign=ci)
        o = rng.random(pa_.size) < 0.25
        facts.add(K["Push Opened"], pa_[o], ta[o] + 120_000_000, w.device(pa_[o]), u[o], "push", "app", campaign=ci)
    elif ch == "social":
        # The platform matches registered customers' logins (a custom audience); others stay anonymous.
        facts.add(K["Social Engagement"], p, t, np.char.add("soc-", p.astype(str)), user, "social", "social",
                  campaign=ci)
    else:  # search, display: an ad click landing on the site
        k = rng.integers(0, 3, p.size)
        facts.add(K["page"], p, t, w.cookie(p, k), None, "web", "web", campaign=ci,
                  medium="cpc" if ch == "search" else "display")


def _pick_products(w: World, rng: np.random.Generator, person: np.ndarray) -> np.ndarray:
    cat = _categorical(rng, w.taste[person])
    pc = w.products["category"]
    pop = w.products["popularity"]
    out = np.empty(person.size, dtype=np.int64)
    for c in np.unique(cat):
        sel = np.flatnonzero(cat == c)
        items = np.flatnonzero(pc == c)
        if items.size == 0:
            items = np.arange(pc.size)
        p = pop[items] / pop[items].sum()
        out[sel] = rng.choice(items, sel.size, p=p)
    return out


def _basket(w: World, rng: np.random.Generator, person: np.ndarray, order: np.ndarray):
    """Order lines: products by taste, planted co-purchase partners, quantities and prices."""
    size = 1 + rng.poisson(1.4, person.size)
    lp = np.repeat(person, size)
    lo = np.repeat(order, size)
    prod = _pick_products(w, rng, lp)
    partner = dict(zip(w.copurchase[:, 0], w.copurchase[:, 1]))
    has = np.isin(prod, w.copurchase[:, 0]) & (rng.random(prod.size) < 0.6)
    extra_p = np.array([partner[x] for x in prod[has]], dtype=np.int64)
    lp = np.concatenate([lp, lp[has]])
    lo = np.concatenate([lo, lo[has]])
    prod = np.concatenate([prod, extra_p])
    qty = 1 + rng.poisson(0.3, prod.size)
    discount = np.where(rng.random(prod.size) < w.price_sensitivity[lp] * 0.4, 0.8, 1.0)
    price = np.round(w.products["price"][prod] * discount, 2)
    return lp, lo, prod, qty, price


def _sessions(w: World, facts: Facts, rng: np.random.Generator, person: np.ndarray, t: np.ndarray,
              channel: np.ndarray, order_no: int) -> int:
    app = channel == 1
    k = rng.integers(0, 3, person.size)
    anon = np.where(app, w.device(person), w.cookie(person, k))
    logged = w.registered[person] & (rng.random(person.size) < np.where(app, 0.85, 0.5))
    user = np.where(logged, w.user_id(person), None)
    chan = np.where(app, "app", "web")
    src = chan
    pages = 1 + rng.poisson(1.5, person.size)
    pi = np.repeat(np.arange(person.size), pages)
    step = np.arange(pi.size) - np.repeat(np.cumsum(pages) - pages, pages)
    facts.add(np.where(app[pi], K["screen"], K["page"]), person[pi], t[pi] + step * 40_000_000, anon[pi], user[pi],
              chan[pi], src[pi])
    views = rng.poisson(1.2, person.size)
    vi = np.repeat(np.arange(person.size), views)
    vprod = _pick_products(w, rng, person[vi])
    vt = t[vi] + rng.integers(10, 600, vi.size) * 1_000_000
    facts.add(K["Product Viewed"], person[vi], vt, anon[vi], user[vi], chan[vi], src[vi], product=vprod,
              amount=w.products["price"][vprod])
    add = rng.random(vi.size) < 0.25
    facts.add(K["Product Added"], person[vi][add], vt[add] + 30_000_000, anon[vi][add], user[vi][add], chan[vi][add],
              src[vi][add], product=vprod[add], amount=w.products["price"][vprod[add]], qty=1)
    buy = rng.random(person.size) < 0.14 + 0.16 * (views > 1)
    b = np.flatnonzero(buy)
    orders = order_no + np.arange(b.size)
    tb = t[b] + 900_000_000
    facts.add(K["Checkout Started"], person[b], tb - 120_000_000, anon[b], user[b], chan[b], src[b], order_no=orders)
    _orders(w, facts, rng, person[b], tb, anon[b], user[b], chan[b], src[b], orders, store=None)
    return order_no + b.size


def _store_visits(w: World, facts: Facts, rng: np.random.Generator, person: np.ndarray, t: np.ndarray,
                  order_no: int) -> int:
    store = np.where(rng.random(person.size) < 0.8, w.home_store[person], rng.integers(0, len(w.stores["lat"]), person.size))
    app = w.app_user[person]
    g = app & (rng.random(person.size) < 0.5)
    dev = w.device(person)
    u = np.where(w.registered[person], w.user_id(person), None)
    facts.add(K["Geofence Entered"], person[g], t[g] - 120_000_000, dev[g], u[g], "app", "app", store=store[g])
    # The visit is detected by the app (wifi/beacon) for app users, else counted anonymously at the door.
    facts.add(K["Store Visit"], person[app], t[app], dev[app], u[app], "store", "app", store=store[app])
    buy = rng.random(person.size) < 0.62
    b = np.flatnonzero(buy)
    orders = order_no + np.arange(b.size)
    pb = person[b]
    shows_card = w.card[pb] & (rng.random(b.size) < 0.85)
    anon = np.where(shows_card, w.card_no(pb), np.char.add("rcpt-", orders.astype(str)))
    pos = w.pos_customer[pb] & ~shows_card & (rng.random(b.size) < 0.6)
    anon = np.where(pos, w.pos_no(pb), anon)
    tb = t[b] + rng.integers(300, 2400, b.size) * 1_000_000
    _orders(w, facts, rng, pb, tb, anon, np.full(b.size, None, object), "store", "pos", orders, store=store[b],
            medium=np.where(shows_card, "loyalty_card", np.where(pos, "pos_customer_id", "")))
    return order_no + b.size


def _orders(w: World, facts: Facts, rng: np.random.Generator, person, t, anon, user, chan, src, orders, *, store,
            medium="") -> None:
    lp, lo, prod, qty, price = _basket(w, rng, person, orders)
    idx = {o: i for i, o in enumerate(orders)}
    pos = np.array([idx[o] for o in lo], dtype=np.int64)
    total = np.bincount(pos, weights=price * qty, minlength=orders.size)
    st = -1 if store is None else store
    # Order lines travel as facts with kind -1; the engine folds them into the order's products.
    facts.add(-1, lp, t[pos], anon[pos], user[pos], np.asarray(chan)[pos] if not np.isscalar(chan) else chan,
              np.asarray(src)[pos] if not np.isscalar(src) else src, order_no=lo, product=prod, amount=price, qty=qty)
    facts.add(K["Order Completed"], person, t, anon, user, chan, src, store=st, order_no=orders,
              amount=np.round(total, 2), medium=medium)
    carded = np.asarray(medium) == "loyalty_card" if not np.isscalar(medium) else np.zeros(person.size, bool)
    facts.add(K["Loyalty Points Earned"], person[carded], t[carded] + 1_000_000, anon[carded], user[carded],
              "store", "loyalty", order_no=orders[carded], qty=np.floor(total[carded]).astype(np.int32))
    # Returns and cancellations are new facts, days later.
    ret = rng.random(person.size) < w.return_rate[person]
    line_of = np.full(orders.size, -1)
    line_of[pos[::-1]] = np.arange(pos.size)[::-1]
    r = np.flatnonzero(ret)
    li = line_of[r]
    tr = t[r] + rng.integers(2, 21, r.size) * DAY_US
    rch = np.full(r.size, "store", object) if store is not None else np.where(rng.random(r.size) < 0.5, "store", "web")
    facts.add(K["Product Returned"], person[r], tr, anon[r], user[r], rch, "returns", order_no=orders[r],
              product=prod[li], amount=price[li] * qty[li], qty=qty[li], store=st if np.isscalar(st) else st[r])
    if store is None:
        cancel = ~ret & (rng.random(person.size) < 0.02)
        cidx = np.flatnonzero(cancel)
        facts.add(K["Order Cancelled"], person[cidx], t[cidx] + 3_600_000_000, anon[cidx], user[cidx], chan[cidx],
                  src[cidx], order_no=orders[cidx], amount=np.round(total[cidx], 2))
