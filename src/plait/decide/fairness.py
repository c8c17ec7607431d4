"""Fairness: are offers, discounts and prices shared out evenly across groups of customers?

:func:`report` reads the decisions in the log (``Decision Made``) and, per group of a
dimension — ``features.age_band``, ``traits.gender``, ``traits.address.city`` or any feature or
trait — the share of decisions that gave an offer, the share that gave a discount, the mean
discount depth given, and the mean price customers paid relative to list price (from their
orders' lines and the catalogue). Each rate is compared with the most favoured group's; a group
whose ratio falls below ``min_ratio`` (the "four-fifths" rule by default) is flagged, so
personalisation does not quietly become price discrimination. Groups smaller than the
workspace's minimum group size are suppressed, as every exported aggregate is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from plait.errors import ConfigError
from plait.identity.tables import CURRENT

if TYPE_CHECKING:
    import pandas as pd

    from plait.workspace import Workspace


def _dimension_sql(ws: "Workspace", by: str) -> str:
    ns, _, rest = by.partition(".")
    name, _, sub = rest.partition(".")
    b = ws.backend
    if ns == "traits" and name:
        path = "$" + (f".{sub}" if sub else "")
        return (f"SELECT profile_id, json_extract_string(value, '{path}') AS grp FROM profile_traits "
                f"WHERE trait = '{name.replace(chr(39), '')}'")
    if ns == "features" and name:
        for table in ("analytics_features", "profile_features"):
            if b.has_table(table) and name in b.query(f"SELECT * FROM {table} LIMIT 0").column_names:
                return f"SELECT profile_id, CAST({name} AS VARCHAR) AS grp FROM {table}"
    raise ConfigError(f"cannot group customers by {by!r}",
                      hint="use traits.<name>[.<part>] or features.<column> (age_band needs `plait analyze segments` "
                           "or ws.analytics.features() first)")


def report(ws: "Workspace", by: str, *, discounts: Mapping[str, float] | None = None, min_ratio: float = 0.8,
           min_group_size: int | None = None) -> "pd.DataFrame":
    """Offer, discount and price rates per group of ``by`` (see the module docstring).
    ``discounts`` maps offer id → discount depth (0.1 for 10 % off); by default the offers'
    ``discount`` field in the workspace's rules."""
    import pandas as pd

    if not 0 < min_ratio <= 1:
        raise ConfigError(f"min_ratio must be above 0 and at most 1 (a share of the best group's rate), not {min_ratio:g}",
                         hint="0.8 is the four-fifths rule")

    if discounts is None:
        discounts = _rule_discounts(ws)
    k = min_group_size if min_group_size is not None else ws.settings.privacy.min_group_size
    ws.backend.temp_table("fair_discounts", _table(discounts))
    prices = ""
    if ws.backend.has_table("products"):
        prices = f"""
        , paid AS (
          SELECT s.profile_id, avg(try_cast(json_extract(x.line, '$.price') AS DOUBLE) / c.list_price) AS price_index
          FROM events_base e JOIN identity_subjects s ON s.version = {CURRENT} AND s.subject = e.subject,
               unnest(CAST(json_extract(e.properties, '$.products') AS JSON[])) AS x(line)
          JOIN products c ON c.product_id = json_extract_string(x.line, '$.product_id')
          WHERE e.event = 'Order Completed' AND c.list_price > 0 GROUP BY 1)"""
    df = ws.backend.query(f"""
        WITH d AS (
          SELECT coalesce(json_extract_string(e.properties, '$.profile_id'), s.profile_id) AS profile_id,
                 CAST(json_extract(e.properties, '$.offers') AS VARCHAR[]) AS offers
          FROM events e LEFT JOIN identity_subjects s ON s.version = {CURRENT} AND s.subject = e.subject
          WHERE e.event = 'Decision Made'
        ), per AS (
          SELECT d.profile_id, len(d.offers) > 0 AS offered,
                 coalesce(max(f.depth), 0) AS depth
          FROM d LEFT JOIN fair_discounts f ON list_contains(d.offers, f.offer_id)
          GROUP BY ALL
        ), g AS ({_dimension_sql(ws, by)}){prices}
        SELECT coalesce(g.grp, '(unknown)') AS "group", count(DISTINCT per.profile_id) AS customers,
               count(*) AS decisions, avg(CAST(offered AS DOUBLE)) AS offer_rate,
               avg(CAST(depth > 0 AS DOUBLE)) AS discount_rate,
               avg(depth) FILTER (WHERE depth > 0) AS mean_discount
        FROM per LEFT JOIN g USING (profile_id)
        GROUP BY 1 ORDER BY 1""").to_pandas()
    if prices:
        paid = ws.backend.query(f"""
            WITH g AS ({_dimension_sql(ws, by)}){prices}
            SELECT coalesce(g.grp, '(unknown)') AS "group", avg(price_index) AS price_index
            FROM paid LEFT JOIN g USING (profile_id) GROUP BY 1 ORDER BY 1""").to_pandas()
        df = df.merge(paid, on="group", how="left")
    ws.backend.execute("DROP TABLE IF EXISTS fair_discounts")
    if df.empty:
        return df
    df["suppressed"] = df["customers"] < k
    shown = df[~df["suppressed"]]
    for col in ("offer_rate", "discount_rate"):
        best = shown[col].max() if not shown.empty else 0
        df[f"{col}_ratio"] = df[col] / best if best else float("nan")
    # Price: the group paying the most relative to list is compared with the one paying the least.
    if "price_index" in df and not shown["price_index"].isna().all():
        df["price_ratio"] = shown["price_index"].min() / df["price_index"]
    ratios = [c for c in df.columns if c.endswith("_ratio")]
    df["flagged"] = ~df["suppressed"] & (df[ratios] < min_ratio).any(axis=1)
    df["why"] = [", ".join(f"{c[:-6].replace('_', ' ')} {r[c]:.0%} of the best group's" for c in ratios
                           if r[c] < min_ratio) if r["flagged"] else "" for _, r in df.iterrows()]
    value_cols = [c for c in df.columns if c not in ("group", "suppressed", "flagged", "why", "customers")]
    df.loc[df["suppressed"], value_cols] = float("nan")
    return pd.DataFrame(df)


def _rule_discounts(ws: "Workspace") -> dict[str, float]:
    from plait.decide.rules import RuleBook

    path = ws.path / ws.settings.decide.rules
    if not path.exists():
        return {}
    book = RuleBook.from_path(path)
    return {oid: c.defn.discount for oid, c in book.offers.items() if c.defn.discount}


def _table(discounts: Mapping[str, float]) -> Any:
    import pyarrow as pa

    return pa.table({"offer_id": pa.array(list(discounts), pa.string()),
                     "depth": pa.array([float(v) for v in discounts.values()], pa.float64())})


__all__ = ["report"]
