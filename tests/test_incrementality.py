"""Incrementality against holdout groups: the interval, coverage, the log's exposures, the gap to attribution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plait.analytics.incrementality import Incrementality, compare_with_attribution, lift_interval, measure
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
