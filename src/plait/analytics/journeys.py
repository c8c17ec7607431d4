"""Journeys from the log: each customer's touches, in order, up to each conversion.

A *touch* is a message a customer engaged with (email or push opened or clicked; an SMS
delivered, since SMS has no open signal), a campaign received by mail, a coupon redeemed, a
social engagement, a store visit, a geofence entry that carries a campaign (a geofenced offer;
an entry on its own is the customer arriving, already counted by the store visit), a call-centre
contact, or the *first* page or screen of a web/app session (sessions end after
``session_minutes`` of inactivity), classed by its campaign medium or referrer: paid search
(cpc/ppc/paid), display, email, social, organic search (a search engine referrer), referral
(any other referrer) or direct. A *conversion* is a completed order, online or in store. A
conversion's path is the customer's touches since their previous conversion and within
``lookback_days`` of it; touches after a customer's last conversion form one non-converting
path. Paths are aggregated into the path table every attribution model reads, so the log and an
exported table are analysed the same way. Customers who withdrew analytics consent are left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plait.analytics.summaries import days, require_resolved
from plait.engine.dialects import money_sum
from plait.errors import ConfigError, ModelError
from plait.identity.tables import CURRENT

if TYPE_CHECKING:
    import pandas as pd

    from plait.workspace import Workspace

SEARCH_ENGINES = ("google.", "bing.", "yahoo.", "duckduckgo.", "baidu.", "yandex.", "ecosia.")

TOUCH_SQL = """CASE
  WHEN event IN ('Email Opened', 'Email Clicked') THEN 'email'
  WHEN event IN ('SMS Clicked', 'SMS Sent') THEN 'sms'
  WHEN event IN ('Push Opened', 'Push Clicked') THEN 'push'
  WHEN event = 'Social Engagement' THEN 'social'
  WHEN event = 'Store Visit' THEN 'store_visit'
  WHEN event = 'Geofence Entered' AND campaign_id IS NOT NULL THEN 'geofence'
  WHEN event IN ('Call Center Contact', 'Complaint Filed') THEN 'call_center'
  WHEN event IN ('Campaign Received', 'Direct Mail Received') THEN coalesce(nullif(channel, 'other'), 'direct_mail')
  WHEN event = 'Coupon Redeemed' THEN 'coupon'
END"""


def _web_source() -> str:
    engines = " OR ".join(f"contains(lower(ref), '{e}')" for e in SEARCH_ENGINES)
    return f"""CASE
      WHEN medium IN ('cpc', 'ppc', 'paid', 'paidsearch', 'paid_search') THEN 'paid_search'
      WHEN medium IN ('display', 'banner', 'cpm') THEN 'display'
      WHEN medium = 'email' THEN 'email'
      WHEN medium IN ('social', 'paid_social') THEN 'social'
      WHEN ref IS NOT NULL AND ({engines}) THEN 'organic_search'
      WHEN ref IS NOT NULL AND ref <> '' THEN 'referral'
      ELSE 'direct' END"""


DIGITAL = ("email", "sms", "push", "social", "paid_search", "display", "organic_search", "referral")


def touches_sql(ws: "Workspace", *, session_minutes: float = 30) -> str:
    """Every touch and conversion of consenting customers: profile_id, t, touch (NULL for a
    conversion), value, conv_channel, campaign_id, store_id."""
    require_resolved(ws)
    allowed = ws.consent.allowed_profiles_sql("analytics")
    gap = float(session_minutes) * 60
    return f"""
        WITH ev AS (
          SELECT s.profile_id, e.event_time AS t, e.event, e.type, e.channel, e.amount_base, e.store_id,
                 lower(json_extract_string(e.context, '$.campaign.medium')) AS medium,
                 coalesce(json_extract_string(e.properties, '$.campaign_id'),
                          json_extract_string(e.context, '$.campaign.name')) AS campaign_id,
                 coalesce(json_extract_string(e.context, '$.page.referrer'),
                          json_extract_string(e.properties, '$.referrer')) AS ref
          FROM events_base e JOIN identity_subjects s ON s.version = {CURRENT} AND s.subject = e.subject
          WHERE s.profile_id IN (SELECT profile_id FROM ({allowed}) WHERE allowed)
        ), web AS (
          SELECT *, coalesce(epoch(t) - epoch(lag(t) OVER (PARTITION BY profile_id ORDER BY t)) > {gap}, true)
                 AS starts FROM ev WHERE type IN ('page', 'screen')
        )
        SELECT profile_id, t, {TOUCH_SQL} AS touch, NULL::DOUBLE AS value, NULL AS conv_channel, campaign_id,
               store_id FROM ev WHERE {TOUCH_SQL} IS NOT NULL
        UNION ALL
        SELECT profile_id, t, {_web_source()}, NULL, NULL, campaign_id, NULL FROM web WHERE starts
        UNION ALL
        SELECT profile_id, t, NULL, coalesce(amount_base, 0), channel, NULL, store_id FROM ev
        WHERE event = 'Order Completed'"""


def journeys_sql(ws: "Workspace", *, lookback_days: float = 30, session_minutes: float = 30) -> str:
    """One row per journey: profile_id, conversion time (NULL for a non-converting one), value,
    conversion channel and store, touches (list of channels in order) and their times."""
    look = days("lookback_days", lookback_days) * 86400
    if not session_minutes > 0:
        raise ModelError(f"session_minutes must be positive, not {session_minutes:g}", hint="for example 30")
    return f"""
        WITH stream AS ({touches_sql(ws, session_minutes=session_minutes)}),
        seq AS (
          SELECT *, count(*) FILTER (WHERE touch IS NULL) OVER (PARTITION BY profile_id ORDER BY t, touch NULLS LAST
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS k
          FROM stream
        ), conv AS (
          SELECT profile_id, k, t AS conv_t, value, conv_channel, store_id AS conv_store FROM seq WHERE touch IS NULL
        ), touches AS (
          SELECT s.profile_id, s.k, s.t, s.touch FROM seq s WHERE s.touch IS NOT NULL
        )
        SELECT c.profile_id, c.conv_t, c.value, c.conv_channel, c.conv_store,
               coalesce(list(t.touch ORDER BY t.t) FILTER (WHERE t.touch IS NOT NULL), []) AS touches,
               coalesce(list(t.t ORDER BY t.t) FILTER (WHERE t.touch IS NOT NULL), []) AS touch_times
        FROM conv c LEFT JOIN touches t ON t.profile_id = c.profile_id AND t.k = c.k
             AND epoch(c.conv_t) - epoch(t.t) <= {look}
        GROUP BY c.profile_id, c.k, c.conv_t, c.value, c.conv_channel, c.conv_store
        UNION ALL
        SELECT t.profile_id, NULL, NULL, NULL, NULL, list(t.touch ORDER BY t.t), list(t.t ORDER BY t.t)
        FROM touches t WHERE t.k = (SELECT count(*) FROM conv c WHERE c.profile_id = t.profile_id)
        GROUP BY t.profile_id"""


def funnel(ws: "Workspace", *, by: str = "channel", session_minutes: float = 30) -> "pd.DataFrame":
    """Journey stages per entry channel (web/app sessions by their source) or per store
    (visits → purchases, and the median days from a store purchase's first touch to it):
    sessions, visit quality (pages per session, share viewing a product),
    add to cart, checkout, orders, conversion and revenue. The sales cycle per first-touch
    channel is :func:`plait.analytics.paths.by_first_touch`."""
    require_resolved(ws)
    allowed = ws.consent.allowed_profiles_sql("analytics")
    base = f"""
        SELECT s.profile_id, e.* EXCLUDE (subject) FROM events_base e
        JOIN identity_subjects s ON s.version = {CURRENT} AND s.subject = e.subject
        WHERE s.profile_id IN (SELECT profile_id FROM ({allowed}) WHERE allowed)"""
    if by == "store":
        return ws.backend.query(f"""
            WITH ev AS ({base}),
            v AS (SELECT store_id, profile_id, day FROM ev WHERE event = 'Store Visit' AND store_id IS NOT NULL),
            o AS (SELECT store_id, profile_id, day, amount_base FROM ev WHERE event = 'Order Completed'
                  AND channel = 'store' AND store_id IS NOT NULL),
            cyc AS (SELECT conv_store AS store_id, median(epoch(conv_t) - epoch(touch_times[1])) / 86400.0 AS days
                      FROM ({journeys_sql(ws)}) WHERE conv_channel = 'store' AND len(touches) > 0 GROUP BY 1)
            SELECT v.store_id AS store, count(*) AS visits, count(DISTINCT v.profile_id) AS visitors,
                   count(o.profile_id) AS visits_with_purchase,
                   count(o.profile_id) / count(*) AS conversion,
                   (SELECT {money_sum('amount_base')} FROM o o2 WHERE o2.store_id = v.store_id) AS store_sales,
                   any_value(c.days) AS median_days_first_touch_to_purchase
            FROM v LEFT JOIN (SELECT DISTINCT store_id, profile_id, day, 1 AS x FROM o) o
              ON o.store_id = v.store_id AND o.profile_id = v.profile_id AND o.day = v.day
            LEFT JOIN cyc c ON c.store_id = v.store_id
            GROUP BY 1 ORDER BY visits DESC, 1""").to_pandas()
    if by != "channel":
        raise ConfigError(f"a funnel is by channel or store, not {by!r}")
    gap = float(session_minutes) * 60
    return ws.backend.query(f"""
        WITH ev AS ({base} AND (e.type IN ('page', 'screen') OR e.event IN ('Product Viewed', 'Product Added',
                    'Checkout Started', 'Order Completed'))
                    AND coalesce(e.channel, '') NOT IN ('store', 'call_center', 'partner', 'social')),
        marked AS (
          SELECT *, coalesce(epoch(event_time) - epoch(lag(event_time) OVER (PARTITION BY profile_id ORDER BY event_time))
                 > {gap}, true) AS starts,
                 lower(json_extract_string(context, '$.campaign.medium')) AS medium,
                 coalesce(json_extract_string(context, '$.page.referrer'),
                          json_extract_string(properties, '$.referrer')) AS ref
          FROM ev
        ), sess AS (
          SELECT *, sum(CAST(starts AS INTEGER)) OVER (PARTITION BY profile_id ORDER BY event_time) AS sid FROM marked
        ), s AS (
          SELECT profile_id, sid, arg_min({_web_source()}, (event_time, {_web_source()})) AS entry,
                 count(*) FILTER (WHERE type IN ('page', 'screen')) AS pages,
                 coalesce(bool_or(event = 'Product Viewed'), false) AS viewed, coalesce(bool_or(event = 'Product Added'), false) AS added,
                 coalesce(bool_or(event = 'Checkout Started'), false) AS checkout, coalesce(bool_or(event = 'Order Completed'), false) AS ordered,
                 {money_sum('amount_base', "event = 'Order Completed'")} AS revenue
          FROM sess GROUP BY 1, 2
        )
        SELECT entry AS channel, count(*) AS sessions, count(DISTINCT profile_id) AS visitors,
               avg(pages) AS pages_per_session, avg(CAST(viewed AS DOUBLE)) AS viewed_product,
               avg(CAST(added AS DOUBLE)) AS added_to_cart, avg(CAST(checkout AS DOUBLE)) AS started_checkout,
               avg(CAST(ordered AS DOUBLE)) AS conversion, coalesce({money_sum('revenue')}, 0) AS revenue
        FROM s GROUP BY 1 ORDER BY sessions DESC, 1""").to_pandas()


def online_to_offline(ws: "Workspace", *, within_days: float = 7, by: str = "channel") -> "pd.DataFrame":
    """Digital touches followed by store visits and store purchases of the same (resolved)
    customer within ``within_days``, per digital channel or campaign — against the same
    customers' store activity in the ``within_days`` *before* each touch (a pre/post comparison
    of the same people: a lift estimate, not a randomised one; campaigns with holdouts give
    the causal answer)."""
    if by not in ("channel", "campaign"):
        raise ConfigError(f"group by channel or campaign, not {by!r}")
    w = days("within_days", within_days) * 86400
    key = "d.touch" if by == "channel" else "d.campaign_id"
    digital = ", ".join(f"'{c}'" for c in DIGITAL)
    return ws.backend.query(f"""
        WITH s AS ({touches_sql(ws)}),
        d AS (SELECT profile_id, t, touch, campaign_id FROM s WHERE touch IN ({digital})),
        visits AS (SELECT profile_id, t FROM s WHERE touch IN ('store_visit', 'geofence')),
        buys AS (SELECT profile_id, t, value FROM s WHERE touch IS NULL AND conv_channel = 'store'),
        per AS (
          SELECT {key} AS grp, d.profile_id, d.t,
            EXISTS (SELECT 1 FROM visits v WHERE v.profile_id = d.profile_id AND epoch(v.t) - epoch(d.t) BETWEEN 0 AND {w})
              AS visit_after,
            EXISTS (SELECT 1 FROM visits v WHERE v.profile_id = d.profile_id AND epoch(d.t) - epoch(v.t) BETWEEN 0 AND {w})
              AS visit_before,
            (SELECT coalesce({money_sum('b.value')}, 0) FROM buys b WHERE b.profile_id = d.profile_id
               AND epoch(b.t) - epoch(d.t) BETWEEN 0 AND {w}) AS sales_after,
            (SELECT coalesce({money_sum('b.value')}, 0) FROM buys b WHERE b.profile_id = d.profile_id
               AND epoch(d.t) - epoch(b.t) BETWEEN 0 AND {w}) AS sales_before
          FROM d WHERE {key} IS NOT NULL
        )
        SELECT grp AS {by}, count(*) AS touches, count(DISTINCT profile_id) AS customers,
               avg(CAST(visit_after AS DOUBLE)) AS store_visit_rate_after,
               avg(CAST(visit_before AS DOUBLE)) AS store_visit_rate_before,
               avg(CAST(sales_after > 0 AS DOUBLE)) AS store_purchase_rate_after,
               avg(CAST(sales_before > 0 AS DOUBLE)) AS store_purchase_rate_before,
               {money_sum('sales_after')} AS store_sales_after, {money_sum('sales_before')} AS store_sales_before
        FROM per GROUP BY 1 ORDER BY touches DESC, 1""").to_pandas()


def path_table(ws: "Workspace", *, value: str = "revenue", **kwargs: Any) -> "pd.DataFrame":
    """The journeys aggregated as a path table (path, total_conversions, total_conversion_value,
    total_null); conversions without any touch are counted in ``attrs['untouched']``.

    ``value="clv"`` values each conversion in expected future value instead of today's revenue:
    the customer's discounted CLV (``analytics_clv``, from ``ws.analytics.clv()``) shared
    equally over their conversions — CLV-weighted attribution."""
    if value not in ("revenue", "clv"):
        raise ConfigError(f"value is revenue or clv, not {value!r}")
    journeys = journeys_sql(ws, **kwargs)
    if value == "clv":
        if not ws.backend.has_table("analytics_clv"):
            raise ModelError("CLV-weighted attribution needs CLV first", hint="run `plait analyze clv`")
        journeys = f"""
            SELECT j.* REPLACE (CASE WHEN j.conv_t IS NOT NULL THEN coalesce(c.clv, 0)
                   / count(*) FILTER (WHERE j.conv_t IS NOT NULL) OVER (PARTITION BY j.profile_id) END AS value)
            FROM ({journeys}) j LEFT JOIN analytics_clv c USING (profile_id)"""
    df = ws.backend.query(f"""
        WITH j AS ({journeys})
        SELECT array_to_string(touches, ' > ') AS path,
               count(*) FILTER (WHERE conv_t IS NOT NULL) AS total_conversions,
               coalesce({money_sum('value', 'conv_t IS NOT NULL')}, 0) AS total_conversion_value,
               count(*) FILTER (WHERE conv_t IS NULL) AS total_null
        FROM j GROUP BY 1 ORDER BY 2 DESC, 1""").to_pandas()
    untouched = df[df["path"] == ""]
    out = df[df["path"] != ""].reset_index(drop=True)
    out.attrs["untouched"] = int(untouched["total_conversions"].sum())
    out.attrs["untouched_value"] = float(untouched["total_conversion_value"].sum())
    return out


__all__ = ["DIGITAL", "TOUCH_SQL", "funnel", "journeys_sql", "online_to_offline", "path_table", "touches_sql"]
