"""Behavioural features per customer, computed by the engine from the log.

One row per profile: orders and revenue (base currency) overall and by channel, first
and last purchase, store and online visits, returns, complaints, contacts, the
favourite category, channels used and activity span. Every event reaches its customer
through its subject (``identity_subjects``), so the log is read, never rewritten.
"""

from __future__ import annotations

from plait.engine.backend import Pipeline
from plait.engine.dialects import money_sum, most_frequent

ORDER_CHANNELS = ("web", "app", "store", "call_center", "partner", "social")

FEATURE_COLUMNS = (
    "events", "orders", "revenue", *(f"orders_{c}" for c in ORDER_CHANNELS), *(f"revenue_{c}" for c in ORDER_CHANNELS),
    "first_purchase", "last_purchase", "store_visits", "online_visits", "returns", "returned_value", "cancellations",
    "complaints", "contacts", "favourite_category", "channels", "first_seen", "last_seen",
)


def features_sql(version: int) -> str:
    """SQL for ``profile_features`` of identity ``version``."""
    v = int(version)
    ordered = {c: f"event = 'Order Completed' AND channel = '{c}'" for c in ORDER_CHANNELS}
    by_channel = ",\n".join(
        f"count(*) FILTER (WHERE {w}) AS orders_{c}, coalesce({money_sum('amount_base', w)}, 0) AS revenue_{c}"
        for c, w in ordered.items())
    return Pipeline().step("ev", f"""
        SELECT s.profile_id, e.event, e.type, e.channel, e.event_time, e.day, e.amount_base, e.properties
        FROM events_base e JOIN identity_subjects s ON s.version = {v} AND s.subject = e.subject
    """).step("cats", """
        SELECT profile_id, event_time, json_extract_string(properties, '$.category') AS category FROM ev
        WHERE event IN ('Product Viewed', 'Product Added') AND properties IS NOT NULL
        UNION ALL
        SELECT profile_id, event_time, unnest(json_extract_string(properties, '$.products[*].category')) AS category
        FROM ev WHERE event = 'Order Completed' AND properties IS NOT NULL
    """).step("fav", f"""
        SELECT profile_id, {most_frequent('category', 'n', 'last_at')} AS favourite_category FROM (
          SELECT profile_id, category, count(*) AS n, max(event_time) AS last_at FROM cats
          WHERE category IS NOT NULL GROUP BY ALL) GROUP BY profile_id
    """).step("agg", f"""
        SELECT profile_id, count(*) AS events,
          count(*) FILTER (WHERE event = 'Order Completed') AS orders,
          coalesce({money_sum('amount_base', "event = 'Order Completed'")}, 0) AS revenue,
          {by_channel},
          min(event_time) FILTER (WHERE event = 'Order Completed') AS first_purchase,
          max(event_time) FILTER (WHERE event = 'Order Completed') AS last_purchase,
          count(*) FILTER (WHERE event = 'Store Visit') AS store_visits,
          count(DISTINCT day) FILTER (WHERE type IN ('page', 'screen')) AS online_visits,
          count(*) FILTER (WHERE event IN ('Product Returned', 'Order Refunded')) AS returns,
          coalesce({money_sum('amount_base', "event IN ('Product Returned', 'Order Refunded')")}, 0) AS returned_value,
          count(*) FILTER (WHERE event = 'Order Cancelled') AS cancellations,
          count(*) FILTER (WHERE event = 'Complaint Filed') AS complaints,
          count(*) FILTER (WHERE event = 'Call Center Contact') AS contacts,
          list_sort(list_distinct(list(channel))) AS channels,
          min(event_time) AS first_seen, max(event_time) AS last_seen
        FROM ev GROUP BY profile_id
    """).sql(f"SELECT {v} AS version, a.*, f.favourite_category FROM agg a LEFT JOIN fav f USING (profile_id)")


__all__ = ["FEATURE_COLUMNS", "features_sql"]
