"""What the models read: per-customer and per-basket summaries computed by the engine from the log.

Every summary starts from the same purchase facts — ``Order Completed`` events reached through
the newest identity version (``identity_subjects``), minus orders later cancelled, net of
returned value, in the base currency — and from customers whose consent allows analytics
(the one consent check), so no model ever sees a customer who withdrew it.

- :func:`clv_summary`: frequency / recency / T / monetary value per customer, in a time unit
  (days by default), purchases on one day counted as one transaction (the convention of the
  BG/NBD literature), optionally split at a calibration date with the holdout purchases.
- :func:`baskets`: (basket, customer, item) rows at the product, category or department level.
- :func:`customer_features`: RFM scores and behaviour by channel — recency, frequency,
  monetary, tenure, orders and revenue per channel, returns rate, discount share, category mix.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from plait.engine.dialects import money_sum, most_frequent, quote_literal
from plait.errors import ConfigError, IdentityError, ModelError
from plait.identity.tables import CURRENT
from plait.log.store import instant

if TYPE_CHECKING:
    import pandas as pd

    from plait.workspace import Workspace

LEVELS = ("product", "category", "department")
# The end of the observed data: the last purchase (consent records or a late-arriving
# operational event written "now" must not stretch every customer's T into empty time).
DATA_END = "(SELECT max(event_time) FROM events WHERE event = 'Order Completed')"


def require_resolved(ws: "Workspace") -> None:
    """Raise a clear error when identity has not been resolved (no purchase has a customer yet)."""
    if ws.identity.version is None:
        raise IdentityError("identity has not been resolved yet, so purchases have no customers",
                            hint="run `plait resolve` first")


def purchases_sql(ws: "Workspace", purpose: str = "analytics") -> str:
    """One row per completed, uncancelled order of a customer allowing ``purpose``:
    profile_id, order_id, event_time, day, channel, store_id, value (net of returns), products (JSON)."""
    allowed = ws.consent.allowed_profiles_sql(purpose)
    return f"""
        WITH o AS (
          SELECT s.profile_id, e.order_id, e.event_time, e.day, e.channel, e.store_id,
                 -- An order without a total is worth the sum of its lines.
                 coalesce(e.amount_base, list_sum([
                   coalesce(try_cast(json_extract(x, '$.price') AS DOUBLE), 0)
                   * coalesce(try_cast(json_extract(x, '$.quantity') AS DOUBLE), 1)
                   for x in CAST(json_extract(e.properties, '$.products') AS JSON[])])) AS value,
                 json_extract(e.properties, '$.products') AS products,
                 try_cast(json_extract(e.properties, '$.discount') AS DOUBLE) AS discount,
                 json_extract_string(e.properties, '$.coupon') AS coupon
          FROM events_base e JOIN identity_subjects s ON s.version = {CURRENT} AND s.subject = e.subject
          WHERE e.event = 'Order Completed'
            AND s.profile_id IN (SELECT profile_id FROM ({allowed}) WHERE allowed)
        ), cancelled AS (
          SELECT DISTINCT order_id FROM events WHERE event = 'Order Cancelled' AND order_id IS NOT NULL
        ), returned AS (
          SELECT order_id, {money_sum('amount_base')} AS value FROM events_base
          WHERE event IN ('Product Returned', 'Order Refunded') AND order_id IS NOT NULL GROUP BY order_id
        )
        SELECT o.profile_id, o.order_id, o.event_time, o.day, o.channel, o.store_id,
               greatest(coalesce(o.value, 0) - coalesce(r.value, 0), 0) AS value,
               coalesce(r.value, 0) AS returned_value, o.products, o.discount, o.coupon
        FROM o LEFT JOIN returned r USING (order_id)
        WHERE o.order_id IS NULL OR o.order_id NOT IN (SELECT order_id FROM cancelled)"""


def days(name: str, value: float, *, most: float = 3650) -> float:
    """A window or horizon in days, checked: more than 0 and at most ``most`` (ten years), or a
    :class:`ModelError` naming ``name`` (a negative window once gave empty or nonsense tables, a
    huge one an overflow or a loop that never ended)."""
    if not 0 < value <= most:
        raise ModelError(f"{name} must be a positive number of days up to {most:g}, not {value:g}",
                         hint=f"for example {name}=30 (--{name.replace('_', '-')} 30)")
    return float(value)


def _when(name: str, value: str | date | datetime | None, default_sql: str) -> str:
    if value is None:
        return default_sql
    return f"CAST({quote_literal(instant(name, value).isoformat())} AS TIMESTAMPTZ)"


def clv_summary(ws: "Workspace", *, as_of: str | date | None = None, calibration_end: str | date | None = None,
                unit_days: float = 1.0) -> "pd.DataFrame":
    """Per customer: frequency (repeat purchase days), recency and T in units of ``unit_days``,
    monetary_value (mean value of repeat purchase days), and with ``calibration_end`` the
    purchases after it up to ``as_of`` (``holdout_frequency``) and the holdout length."""
    require_resolved(ws)
    if unit_days <= 0:
        raise ConfigError(f"unit_days must be positive, got {unit_days}")
    end = _when("as_of", as_of, DATA_END)
    cut = _when("calibration_end", calibration_end, end)
    u = float(unit_days) * 86400.0
    df = ws.backend.query(f"""
        WITH p AS ({purchases_sql(ws)}),
        days AS (
          SELECT profile_id, CAST(date_trunc('day', event_time) AS TIMESTAMPTZ) AS d, {money_sum('value')} AS value
          FROM p WHERE event_time <= {end} GROUP BY 1, 2
        ), cal AS (
          SELECT profile_id, d, value, row_number() OVER (PARTITION BY profile_id ORDER BY d) AS k
          FROM days WHERE d <= {cut}
        )
        SELECT c.profile_id,
               count(*) - 1 AS frequency,
               epoch(max(c.d) - min(c.d)) / {u} AS recency,
               epoch({cut} - min(c.d)) / {u} AS "T",
               coalesce(avg(c.value) FILTER (WHERE c.k > 1), 0) AS monetary_value,
               {money_sum('c.value')} AS calibration_value,
               (SELECT count(*) FROM days h WHERE h.profile_id = c.profile_id AND h.d > {cut}) AS holdout_frequency,
               (SELECT coalesce({money_sum('h.value')}, 0) FROM days h WHERE h.profile_id = c.profile_id AND h.d > {cut})
                 AS holdout_value,
               epoch({end} - {cut}) / {u} AS holdout_length
        FROM cal c GROUP BY c.profile_id ORDER BY c.profile_id""").to_pandas()
    df["T"] = df["T"].clip(lower=df["recency"])
    return df


def baskets(ws: "Workspace", level: str = "product", *, profile_id: str | None = None) -> "pd.DataFrame":
    """Order lines as (basket_id, profile_id, event_time, item) at ``level``; an item appears once
    per basket. With ``profile_id``, one customer's only."""
    if level not in LEVELS:
        raise ConfigError(f"unknown level {level!r}", hint=f"use one of {', '.join(LEVELS)}")
    require_resolved(ws)
    if level == "department":
        if not ws.catalogue.count():
            raise ConfigError("department-level baskets need the product catalogue",
                              hint="load it with `plait catalogue load FILE` (product_id, category, department)")
        item = "coalesce(c.department, l.category)"
        join = "LEFT JOIN products c ON c.product_id = l.product_id"
    else:
        item, join = ("l.product_id" if level == "product" else "coalesce(l.category, c.category)"), \
            "LEFT JOIN products c ON c.product_id = l.product_id"
    return ws.backend.query(f"""
        WITH p AS (SELECT * FROM ({purchases_sql(ws)}) WHERE {"profile_id = " + quote_literal(profile_id)
                                                               if profile_id else "true"}),
        l AS (
          SELECT coalesce(p.order_id, p.profile_id || '@' || CAST(p.event_time AS VARCHAR)) AS basket_id, p.profile_id,
                 p.event_time, json_extract_string(x.line, '$.product_id') AS product_id,
                 json_extract_string(x.line, '$.category') AS category
          FROM p, unnest(CAST(p.products AS JSON[])) AS x(line) WHERE p.products IS NOT NULL
        )
        SELECT DISTINCT l.basket_id, l.profile_id, l.event_time, {item} AS item
        FROM l {join} WHERE {item} IS NOT NULL ORDER BY 1, 4""").to_pandas()


def _quintile(order: str) -> str:
    """A 1–5 score by where a customer stands among all (the RFM scores): equal values get equal
    scores. ``ntile`` split a run of equal values at its boundaries by whichever row came first,
    so two customers with the same number of orders got different F scores, differently each run."""
    return f"least(5, 1 + CAST(floor(5 * percent_rank() OVER (ORDER BY {order})) AS INTEGER))"


def customer_features(ws: "Workspace", *, as_of: str | date | None = None) -> "pd.DataFrame":
    """Per customer: recency_days, frequency, monetary, tenure_days, RFM scores (1–5 by percentile
    rank, equal values sharing a score: :func:`_quintile`),
    orders and revenue share per channel, returns rate, discount share, category mix."""
    require_resolved(ws)
    end = _when("as_of", as_of, DATA_END)
    df = ws.backend.query(f"""
        WITH p AS (SELECT * FROM ({purchases_sql(ws)}) WHERE event_time <= {end}),
        lines AS (
          SELECT p.profile_id, p.event_time, json_extract_string(x.line, '$.category') AS category,
                 try_cast(json_extract(x.line, '$.price') AS DOUBLE) * coalesce(try_cast(json_extract(x.line, '$.quantity')
                   AS DOUBLE), 1) AS paid,
                 c.list_price * coalesce(try_cast(json_extract(x.line, '$.quantity') AS DOUBLE), 1) AS list_value
          FROM p, unnest(CAST(p.products AS JSON[])) AS x(line)
          LEFT JOIN products c ON c.product_id = json_extract_string(x.line, '$.product_id')
          WHERE p.products IS NOT NULL
        ), mix AS (
          SELECT profile_id, category, count(*) AS n, max(event_time) AS last_at FROM lines
          WHERE category IS NOT NULL GROUP BY 1, 2
        ), top AS (
          SELECT profile_id, {most_frequent('category', 'n', 'last_at')} AS top_category,
                 max(n) / sum(n) AS top_category_share,
                 count(*) AS categories FROM mix GROUP BY 1
        ), disc AS (
          SELECT profile_id,
                 CASE WHEN {money_sum('list_value')} > 0
                      THEN greatest(1 - {money_sum('paid')} / {money_sum('list_value')}, 0) END AS catalogue_discount
          FROM lines WHERE list_value IS NOT NULL AND paid IS NOT NULL GROUP BY 1
        ), agg AS (
          SELECT profile_id, count(*) AS frequency, {money_sum('value')} AS monetary,
                 {money_sum('value')} / count(*) AS avg_order_value,
                 date_diff('day', max(event_time), {end}) AS recency_days,
                 date_diff('day', min(event_time), {end}) AS tenure_days,
                 count(*) FILTER (WHERE channel = 'web') / count(*) AS share_web,
                 count(*) FILTER (WHERE channel = 'app') / count(*) AS share_app,
                 count(*) FILTER (WHERE channel = 'store') / count(*) AS share_store,
                 count(*) FILTER (WHERE channel NOT IN ('web', 'app', 'store')) / count(*) AS share_other,
                 {money_sum('returned_value')} / nullif({money_sum('value')} + {money_sum('returned_value')}, 0)
                   AS returns_rate,
                 {money_sum('coalesce(discount, 0)')} / nullif({money_sum('value')} + {money_sum('coalesce(discount, 0)')}, 0)
                   AS order_discount,
                 count(*) FILTER (WHERE coupon IS NOT NULL) / count(*) AS coupon_share
          FROM p WHERE event_time <= {end} GROUP BY 1
        )
        SELECT a.*, greatest(coalesce(d.catalogue_discount, 0), coalesce(a.order_discount, 0)) AS discount_share,
               t.top_category, t.top_category_share, t.categories,
               {_quintile('a.recency_days DESC')} AS r_score,
               {_quintile('a.frequency')} AS f_score,
               {_quintile('a.monetary')} AS m_score
        FROM agg a LEFT JOIN top t USING (profile_id) LEFT JOIN disc d USING (profile_id)
        ORDER BY a.profile_id""").to_pandas()
    df["rfm"] = df["r_score"].astype(str) + df["f_score"].astype(str) + df["m_score"].astype(str)
    return df.drop(columns=["order_discount"]).fillna({"returns_rate": 0.0})



__all__ = ["DATA_END", "LEVELS", "baskets", "clv_summary", "customer_features", "purchases_sql", "require_resolved"]
