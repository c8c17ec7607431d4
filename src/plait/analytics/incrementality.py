"""Incrementality: what a campaign caused, measured against its holdout group.

A campaign with a randomised holdout records who was in which group: a ``Campaign Exposure``
event per customer with ``properties.campaign_id`` and ``properties.group`` (``treatment`` or
``holdout``; ``control`` is read as holdout) — the customers held out get the event too, though
no message. Conversions are completed orders within ``window_days`` after the assignment.

Per campaign: conversion rates of both groups, the absolute lift in the rate with Newcombe's
hybrid Wilson score 95 % interval, relative lift, incremental conversions — counted in orders
like attribution counts them (difference in orders per customer × treated, Welch interval), or
lift × treated when only a converted flag is given — and revenue per customer with a Welch
interval. :func:`compare_with_attribution` sets these next to the conversions an attribution
model credits to the campaign's channel — the gap marketers need to see — and
:func:`score_attribution` scores attribution models against known or measured incremental
conversions per channel.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from plait.analytics.summaries import days, require_resolved
from plait.engine.dialects import money_sum
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


def _welch(a: Any, b: Any) -> tuple[float, float]:
    """Difference of means and its standard error (Welch)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    d = (x.mean() if x.size else 0.0) - (y.mean() if y.size else 0.0)
    se = math.sqrt((x.var(ddof=1) / x.size if x.size > 1 else 0.0) + (y.var(ddof=1) / y.size if y.size > 1 else 0.0))
    return d, se


class Incrementality:
    """``fit(df)`` on one row per customer and campaign: campaign_id, group, converted, and
    optionally orders (how many) and value."""

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
        counted = "orders" in d
        rows = []
        for cid, g in d.groupby("campaign_id", sort=True):
            t, h = g[g["group"] == "treatment"], g[g["group"] == "holdout"]
            n1, n0 = len(t), len(h)
            k1, k0 = float(t["converted"].sum()), float(h["converted"].sum())
            diff, lo, hi = lift_interval(k1, n1, k0, n0)
            p0 = k0 / n0 if n0 else float("nan")
            dv, se = _welch(t["value"], h["value"])
            if counted:
                do, so = _welch(t["orders"], h["orders"])
                inc = (do * n1, (do - Z * so) * n1, (do + Z * so) * n1)
            else:
                inc = (diff * n1, lo * n1, hi * n1)
            rows.append({"campaign_id": cid, "treated": n1, "holdout": n0, "rate_treated": k1 / n1 if n1 else np.nan,
                         "rate_holdout": p0, "lift": diff, "lift_low": lo, "lift_high": hi,
                         "relative_lift": diff / p0 if p0 else np.nan, "incremental_conversions": inc[0],
                         "incremental_low": inc[1], "incremental_high": inc[2],
                         "value_lift_per_customer": dv, "value_lift_low": dv - Z * se, "value_lift_high": dv + Z * se,
                         # Each at 95 %, per campaign: across many campaigns about one in 20 without
                         # any effect shows one by chance.
                         "significant": bool(lo > 0 or hi < 0),
                         "significant_orders": bool(inc[1] > 0 or inc[2] < 0)})
        self.results_ = pd.DataFrame(rows)
        return self


CONVERSIONS = {"any": "true", "store": "e.channel = 'store'", "online": "e.channel IS DISTINCT FROM 'store'"}


def exposures(ws: "Workspace", *, window_days: float = 14, conversions: str = "any") -> "pd.DataFrame":
    """One row per customer and campaign from ``Campaign Exposure`` events, with whether they
    bought (how often, how much) within ``window_days`` after; consenting customers only.
    ``conversions="store"`` counts store purchases only — a digital campaign's effect on store
    sales, through resolved identity — and ``"online"`` the rest."""
    if conversions not in CONVERSIONS:
        raise ModelError(f"conversions are any, store or online, not {conversions!r}")
    require_resolved(ws)
    allowed = ws.consent.allowed_profiles_sql("analytics")
    w = days("window_days", window_days) * 86400
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
          WHERE e.event = 'Order Completed' AND {CONVERSIONS[conversions]}
        )
        SELECT ex.campaign_id, ex."group", ex.channel, ex.profile_id,
               count(b.t) > 0 AS converted, count(b.t) AS orders, coalesce({money_sum('b.value')}, 0) AS value
        FROM ex LEFT JOIN buys b ON b.profile_id = ex.profile_id AND epoch(b.t) - epoch(ex.t) BETWEEN 0 AND {w}
        GROUP BY ALL ORDER BY ALL""").to_pandas()
    return df


def measure(ws: "Workspace", *, window_days: float = 14, conversions: str = "any") -> "pd.DataFrame":
    """Lift per campaign (see :class:`Incrementality`) from the log's exposures."""
    df = exposures(ws, window_days=window_days, conversions=conversions)
    if df.empty:
        raise ModelError(f"no {EVENT} events in the log",
                         hint="record each campaign's treatment and holdout customers as "
                              f"'{EVENT}' events with properties campaign_id and group")
    res = Incrementality().fit(df).results_
    chan = df.groupby("campaign_id")["channel"].agg(lambda s: s.mode().iloc[0])
    return res.assign(channel=res["campaign_id"].map(chan))


# Campaign tools name some channels differently from the journeys' touches.
CHANNEL_ALIASES = {"search": "paid_search", "cpc": "paid_search", "mail": "direct_mail"}


def by_channel(incremental: "pd.DataFrame") -> "pd.DataFrame":
    """Incremental conversions per channel, summed over its campaigns (bounds summed too: a
    conservative band, not a joint interval)."""
    cols = ["incremental_conversions", "incremental_low", "incremental_high"]
    return incremental.assign(channel=incremental["channel"].replace(CHANNEL_ALIASES)).groupby("channel")[cols].sum()


def compare_with_attribution(incremental: "pd.DataFrame", attribution: "pd.DataFrame") -> "pd.DataFrame":
    """Incremental conversions per channel (summed over its campaigns) beside attributed ones."""
    inc = by_channel(incremental)
    att = attribution.set_index("channel")["conversions"].rename("attributed_conversions")
    out = inc.join(att, how="outer").fillna({"attributed_conversions": 0.0}).reset_index()
    out["attributed_minus_incremental"] = out["attributed_conversions"] - out["incremental_conversions"]
    return out


def score_attribution(incremental: Any, attributions: "dict[str, pd.DataFrame]") -> "pd.DataFrame":
    """How far each attribution model's credit is from what the channels caused.

    ``incremental`` maps channel → incremental conversions (a simulator's truth, or
    :func:`by_channel` of holdout measurements); ``attributions`` maps a model's name to its
    ``attribution_`` frame. Over the channels with a known effect, each model's credit and the
    incremental conversions are turned into shares; the error is the total variation distance
    between the two — the share of credit sitting on the wrong channel (0 is perfect, 1 is
    all of it). One row per model (the first, ``incremental``, is the reference), sorted by
    error, with each channel's share as a column."""
    import pandas as pd

    truth = pd.Series(incremental, dtype=float)
    truth = truth[truth.index.notna()].clip(lower=0)
    if truth.sum() <= 0:
        raise ModelError("no channel has a positive incremental effect to score attribution against")
    rows = {"incremental": truth / truth.sum()}
    for name, frame in attributions.items():
        credit = frame.set_index("channel")["conversions"].reindex(truth.index).fillna(0).clip(lower=0)
        rows[name] = credit / credit.sum() if credit.sum() > 0 else credit
    shares = pd.DataFrame(rows).T
    shares.insert(0, "error", (shares - shares.loc["incremental"]).abs().sum(axis=1) / 2)
    return shares.sort_values("error", kind="stable").rename_axis("model")


__all__ = ["CHANNEL_ALIASES", "EVENT", "Incrementality", "by_channel", "compare_with_attribution", "exposures",
           "lift_interval", "measure", "score_attribution"]
