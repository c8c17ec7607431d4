"""Incrementality against holdout groups: the interval, coverage, the log's exposures, the gap to attribution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plait.analytics.incrementality import (Incrementality, compare_with_attribution, lift_interval, measure,
                                            score_attribution)
from plait.errors import ModelError
from tests.test_journeys import order, track


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, method 10: 56/70 - 48/80 → 0.0524 to 0.3339.
    d, lo, hi = lift_interval(56, 70, 48, 80)
    assert round(d, 4) == 0.2 and (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_intervals_cover_a_planted_lift():
    rng = np.random.default_rng(3)
    covered = 0
    for c in range(200):
        n1, n0 = 4000, 1000
        conv1, conv0 = rng.random(n1) < 0.10, rng.random(n0) < 0.07
        df = pd.DataFrame({"campaign_id": f"c{c}", "group": ["treatment"] * n1 + ["holdout"] * n0,
                           "converted": np.concatenate([conv1, conv0])})
        r = Incrementality().fit(df).results_.iloc[0]
        covered += r["lift_low"] <= 0.03 <= r["lift_high"]
    assert 0.92 <= covered / 200 <= 0.99                   # a 95 % interval covers the truth ~95 % of the time


def test_campaigns_from_the_log(ws):
    for i in range(40):
        group = "treatment" if i < 30 else "holdout"
        track(ws, f"u{i}", "Campaign Exposure", 0, properties={"campaign_id": "spring", "group": group},
              context={"channel": "email"})
        if (group == "treatment" and i < 15) or (group == "holdout" and i < 32):
            order(ws, f"u{i}", 60 * 24 * 3, f"o{i}", 20.0)
    track(ws, "late", "Campaign Exposure", 0, properties={"campaign_id": "spring", "group": "treatment"})
    order(ws, "late", 60 * 24 * 30, "o-late", 99.0)        # outside the 14-day window
    ws.resolve()
    r = measure(ws, window_days=14).set_index("campaign_id").loc["spring"]
    assert (r["treated"], r["holdout"]) == (31, 10)
    assert r["rate_treated"] == pytest.approx(15 / 31) and r["rate_holdout"] == pytest.approx(2 / 10)
    assert r["incremental_conversions"] == pytest.approx((15 / 31 - 0.2) * 31)
    assert r["channel"] == "email"
    gap = compare_with_attribution(measure(ws), pd.DataFrame({"channel": ["email"], "conversions": [15.0]}))
    row = gap.set_index("channel").loc["email"]
    assert row["attributed_minus_incremental"] == pytest.approx(15 - (15 / 31 - 0.2) * 31)


def test_errors(ws):
    from plait.errors import IdentityError

    with pytest.raises(IdentityError, match="not been resolved"):
        measure(ws)
    order(ws, "zed", 0, "oz")
    ws.resolve()
    with pytest.raises(ModelError, match="no Campaign Exposure events"):
        measure(ws)
    with pytest.raises(ModelError, match="unknown group"):
        Incrementality().fit(pd.DataFrame({"campaign_id": ["c"], "group": ["maybe"], "converted": [1]}))


def test_incremental_conversions_count_orders_like_attribution():
    # Treated customers who buy buy twice: incremental conversions are orders, not converters.
    df = pd.DataFrame({"campaign_id": "c", "group": ["treatment"] * 100 + ["holdout"] * 100,
                       "converted": [True] * 40 + [False] * 60 + [True] * 20 + [False] * 80,
                       "orders": [2] * 40 + [0] * 60 + [1] * 20 + [0] * 80})
    r = Incrementality().fit(df).results_.iloc[0]
    assert r["lift"] == pytest.approx(0.2)                              # in the conversion rate
    assert r["incremental_conversions"] == pytest.approx((0.8 - 0.2) * 100)  # in orders
    assert r["incremental_low"] < 60 < r["incremental_high"]
    assert r["significant"] and r["significant_orders"]
    # Converters alike, orders not: significant in orders only (each metric says its own).
    same = df.assign(converted=[True] * 30 + [False] * 70 + [True] * 30 + [False] * 70,
                     orders=[3] * 30 + [0] * 70 + [1] * 30 + [0] * 70)
    r = Incrementality().fit(same).results_.iloc[0]
    assert not r["significant"] and r["significant_orders"] and r["incremental_low"] > 0


def test_score_attribution_is_the_share_of_credit_on_the_wrong_channel():
    truth = {"email": 30.0, "search": 10.0, "social": 60.0}
    perfect = pd.DataFrame({"channel": ["email", "search", "social", "direct"], "conversions": [3.0, 1.0, 6.0, 90.0]})
    lopsided = pd.DataFrame({"channel": ["email"], "conversions": [50.0]})
    s = score_attribution(truth, {"lopsided": lopsided, "perfect": perfect})
    assert list(s.index) == ["incremental", "perfect", "lopsided"]
    assert s.loc["perfect", "error"] == pytest.approx(0.0)              # channels outside the truth do not count
    assert s.loc["lopsided", "error"] == pytest.approx(0.7)             # all credit on email, which caused 30 %
    assert s.loc["incremental", ["email", "search", "social"]].tolist() == pytest.approx([0.3, 0.1, 0.6])
    with pytest.raises(ModelError, match="no channel"):
        score_attribution({"email": 0.0}, {"perfect": perfect})


@given(st.lists(st.floats(0, 100), min_size=3, max_size=3), st.lists(st.floats(0, 100), min_size=3, max_size=3))
def test_score_attribution_is_bounded(truth, credit):
    chans = ["a", "b", "c"]
    if sum(truth) <= 0:
        return
    s = score_attribution(dict(zip(chans, truth)), {"m": pd.DataFrame({"channel": chans, "conversions": credit})})
    assert -1e-9 <= s.loc["m", "error"] <= 1 + 1e-9


def test_a_digital_campaigns_effect_on_store_sales(ws):
    # Treated customers buy in store after the email; held-out ones buy online only.
    for i in range(20):
        group = "treatment" if i < 10 else "holdout"
        track(ws, f"s{i}", "Campaign Exposure", 0, properties={"campaign_id": "push-store", "group": group},
              context={"channel": "email"})
        if group == "treatment" and i < 6:
            track(ws, f"s{i}", "Order Completed", 60 * 24, context={"channel": "store"},
                  properties={"order_id": f"st{i}", "total": 30.0, "currency": "USD", "store_id": "s1"})
        else:
            order(ws, f"s{i}", 60 * 24, f"on{i}", 30.0)
    ws.resolve()
    store = measure(ws, conversions="store").set_index("campaign_id").loc["push-store"]
    assert (store["rate_treated"], store["rate_holdout"]) == (0.6, 0.0)
    assert store["incremental_conversions"] == pytest.approx(6)
    anywhere = measure(ws).set_index("campaign_id").loc["push-store"]
    assert anywhere["lift"] == 0                                  # everyone bought somewhere
    online = measure(ws, conversions="online").set_index("campaign_id").loc["push-store"]
    assert online["lift"] == pytest.approx(-0.6)
    with pytest.raises(ModelError, match="any, store or online"):
        measure(ws, conversions="phone")
