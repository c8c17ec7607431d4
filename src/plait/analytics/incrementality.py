"""Incrementality: what a campaign caused, measured against its holdout group.

A campaign with a randomised holdout records who was in which group: a ``Campaign Exposure``
event per customer with ``properties.campaign_id`` and ``properties.group`` (``treatment`` or
``holdout``; ``control`` is read as holdout) — the customers held out get the event too, though
no message. Conversions are completed orders within ``window_days`` after the assignment.

Per campaign: conversion rates of both groups, the absolute lift with a 95 % confidence
interval (normal approximation for a difference of proportions, Newcombe's hybrid Wilson score
interval when counts are small), relative lift, incremental conversions (lift × treated), and
revenue per customer with a Welch interval. :func:`compare_with_attribution` sets these next to
the conversions an attribution model credits to the campaign's channel — the gap marketers need
to see.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from plait.analytics.summaries import require_resolved
from plait.errors import ModelError
from plait.identity.tables import CURRENT

if TYPE_CHECKING:
    import pandas as pd

    from plait.workspace import Workspace

EVENT = "Campaign Exposure"
Z = 1.959963984540054


def _wilson(k: float, n: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + Z * Z / n
    c = (p + Z * Z / (2 * n)) / d
    h = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / d
    return c - h, c + h


def lift_interval(k1: float, n1: float, k0: float, n0: float) -> tuple[float, float, float]:
    """Difference of proportions p1 - p0 with Newcombe's (1998, method 10) 95 % interval."""
    p1, p0 = (k1 / n1 if n1 else 0.0), (k0 / n0 if n0 else 0.0)
    l1, u1 = _wilson(k1, n1)
    l0, u0 = _wilson(k0, n0)
    d = p1 - p0
    return d, d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)


class Incrementality:
    """``fit(df)`` on one row per customer and campaign: campaign_id, group, converted, value."""

    def fit(self, df: "pd.DataFrame") -> "Incrementality":
        import pandas as pd

        need = {"campaign_id", "group", "converted"}
        if not need <= set(df.columns):
            raise ModelError(f"incrementality needs columns {', '.join(sorted(need))}; got {', '.join(df.columns)}")
        d = df.copy()
        d["group"] = d["group"].astype(str).str.lower().replace({"control": "holdout"})
        bad = set(d["group"]) - {"treatment", "holdout"}
        if bad:
            raise ModelError(f"unknown group(s) {', '.join(sorted(bad))}", hint="use treatment or holdout")
        if "value" not in d:
            d["value"] = 0.0
        rows = []
        for cid, g in d.groupby("campaign_id", sort=True):
            t, h = g[g["group"] == "treatment"], g[g["group"] == "holdout"]
            n1, n0 = len(t), len(h)
            k1, k0 = float(t["converted"].sum()), float(h["converted"].sum())
            diff, lo, hi = lift_interval(k1, n1, k0, n0)
            p0 = k0 / n0 if n0 else float("nan")
            v1, v0 = t["value"].to_numpy(float), h["value"].to_numpy(float)
            dv = (v1.mean() if n1 else 0.0) - (v0.mean() if n0 else 0.0)
            se = math.sqrt((v1.var(ddof=1) / n1 if n1 > 1 else 0.0) + (v0.var(ddof=1) / n0 if n0 > 1 else 0.0))
            rows.append({"campaign_id": cid, "treated": n1, "holdout": n0, "rate_treated": k1 / n1 if n1 else np.nan,
                         "rate_holdout": p0, "lift": diff, "lift_low": lo, "lift_high": hi,
                         "relative_lift": diff / p0 if p0 else np.nan, "incremental_conversions": diff * n1,
                         "incremental_low": lo * n1, "incremental_high": hi * n1,
                         "value_lift_per_customer": dv, "value_lift_low": dv - Z * se, "value_lift_high": dv + Z * se,
                         "significant": bool(lo > 0 or hi < 0)})
        self.results_ = pd.DataFrame(rows)
        return self


def exposures(ws: "Workspace", *, window_days: float = 14) -> "pd.DataFrame":
    """One row per customer and campaign from ``Campaign Exposure`` events, with whether they
    bought (and how much) within ``window_days`` after; consenting customers only."""
    require_resolved(ws)
    allowed = ws.consent.allowed_profiles_sql("analytics")
    w = float(window_days) * 86400
    df = ws.backend.query(f"""
        WITH ex AS (
          SELECT s.profile_id, json_extract_string(e.properties, '$.campaign_id') AS campaign_id,
                 lower(json_extract_string(e.properties, '$.group')) AS "group", e.channel, min(e.event_time) AS t
          FROM events e JOIN identity_subjects s ON s.version = {CURRENT} AND s.subject = e.subject
          WHERE e.event = '{EVENT}' AND s.profile_id IN (SELECT profile_id FROM ({allowed}) WHERE allowed)
          GROUP BY 1, 2, 3, 4
        ), buys AS (
          SELECT s.profile_id, e.event_time AS t, coalesce(e.amount_base, 0) AS value
          FROM events_base e JOIN identity_subjects s ON s.version = {CURRENT} AND s.subject = e.subject
          WHERE e.event = 'Order Completed'
        )
        SELECT ex.campaign_id, ex."group", ex.channel, ex.profile_id,
               count(b.t) > 0 AS converted, coalesce(sum(b.value), 0) AS value
        FROM ex LEFT JOIN buys b ON b.profile_id = ex.profile_id AND epoch(b.t) - epoch(ex.t) BETWEEN 0 AND {w}
        GROUP BY ALL""").to_pandas()
    return df


def measure(ws: "Workspace", *, window_days: float = 14) -> "pd.DataFrame":
    df = exposures(ws, window_days=window_days)
    if df.empty:
        raise ModelError(f"no {EVENT} events in the log",
                         hint="record each campaign's treatment and holdout customers as "
                              f"'{EVENT}' events with properties campaign_id and group")
    res = Incrementality().fit(df).results_
    chan = df.groupby("campaign_id")["channel"].agg(lambda s: s.mode().iloc[0])
    return res.assign(channel=res["campaign_id"].map(chan))


def compare_with_attribution(incremental: "pd.DataFrame", attribution: "pd.DataFrame") -> "pd.DataFrame":
    """Incremental conversions per channel (summed over its campaigns) beside attributed ones."""
    inc = incremental.groupby("channel")[["incremental_conversions", "incremental_low", "incremental_high"]].sum()
    att = attribution.set_index("channel")["conversions"].rename("attributed_conversions")
    out = inc.join(att, how="outer").fillna({"attributed_conversions": 0.0}).reset_index()
    out["attributed_minus_incremental"] = out["attributed_conversions"] - out["incremental_conversions"]
    return out


__all__ = ["EVENT", "Incrementality", "compare_with_attribution", "exposures", "lift_interval", "measure"]
