"""Outcomes linked back to the decisions that caused them.

:func:`link` reads the log: for every offer a ``Decision Made`` showed (and every offer it held
out), whether the customer then **clicked** it (an ``Offer Clicked`` / ``Promotion Clicked``
event carrying the ``decision_id``), **redeemed** it (its coupon code on a ``Coupon Redeemed``
or an ``Order Completed``), and **bought** at all within ``window_days`` (orders and revenue) —
shown and held-out rows side by side, so each offer's effect can be measured against its own
random holdout (:mod:`plait.analytics.incrementality` reads this frame: ``campaign_id`` = offer,
``group``, ``converted``, ``orders``, ``value``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plait.engine.dialects import money_sum
from plait.identity.tables import CURRENT

if TYPE_CHECKING:
    import pandas as pd

    from plait.workspace import Workspace


def link(ws: "Workspace", *, window_days: float = 7) -> "pd.DataFrame":
    w = float(window_days) * 86400
    return ws.backend.query(f"""
        WITH d AS (
          SELECT e.message_id AS decision_id, e.event_time AS shown_at,
                 coalesce(json_extract_string(e.properties, '$.profile_id'), s.profile_id) AS profile_id,
                 json_extract_string(e.properties, '$.placement') AS placement,
                 CAST(json_extract(e.properties, '$.actions') AS JSON[]) AS actions,
                 CAST(json_extract(e.properties, '$.held_out') AS VARCHAR[]) AS held
          FROM events e LEFT JOIN identity_subjects s ON s.version = {CURRENT} AND s.subject = e.subject
          WHERE e.event = 'Decision Made'
        ), rows AS (
          SELECT decision_id, shown_at, profile_id, placement, json_extract_string(a, '$.offer_id') AS offer_id,
                 json_extract_string(a, '$.coupon') AS coupon, 'treatment' AS "group"
          FROM d, unnest(coalesce(actions, [])) AS t(a)
          UNION ALL
          SELECT decision_id, shown_at, profile_id, placement, h, NULL, 'holdout' FROM d, unnest(coalesce(held, [])) AS t(h)
        ), ev AS (
          SELECT s.profile_id, e.event, e.event_time, coalesce(e.amount_base, 0) AS value,
                 json_extract_string(e.properties, '$.decision_id') AS decision_id,
                 json_extract_string(e.properties, '$.offer_id') AS offer_id,
                 coalesce(json_extract_string(e.properties, '$.coupon_code'), json_extract_string(e.properties, '$.coupon'))
                   AS coupon,
                 CAST(json_extract(e.properties, '$.coupons') AS VARCHAR[]) AS coupons
          FROM events_base e JOIN identity_subjects s ON s.version = {CURRENT} AND s.subject = e.subject
          WHERE e.event IN ('Offer Clicked', 'Promotion Clicked', 'Coupon Redeemed', 'Order Completed')
        )
        SELECT r.decision_id, r.profile_id, r.offer_id, r."group", r.placement, r.coupon, r.shown_at,
               coalesce(bool_or(ev.event IN ('Offer Clicked', 'Promotion Clicked') AND ev.decision_id = r.decision_id
                                AND (ev.offer_id IS NULL OR ev.offer_id = r.offer_id)), false) AS clicked,
               coalesce(bool_or(r.coupon IS NOT NULL AND (ev.coupon = r.coupon OR list_contains(ev.coupons, r.coupon))),
                        false) AS redeemed,
               count(ev.event) FILTER (WHERE ev.event = 'Order Completed') AS orders,
               coalesce({money_sum('ev.value', "ev.event = 'Order Completed'")}, 0) AS value,
               count(ev.event) FILTER (WHERE ev.event = 'Order Completed') > 0 AS converted
        FROM rows r LEFT JOIN ev ON ev.profile_id = r.profile_id
             AND epoch(ev.event_time) - epoch(r.shown_at) BETWEEN 0 AND {w}
        GROUP BY ALL ORDER BY r.shown_at, r.decision_id, r.offer_id""").to_pandas()


__all__ = ["link"]
