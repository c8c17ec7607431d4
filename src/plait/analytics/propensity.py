"""Propensity models: who will buy a category, churn or return something in the next N days.

Gradient boosting (scikit-learn's ``HistGradientBoostingClassifier``, LightGBM's algorithm
without the extra dependency) on features computed *as of* a cut-off date, labels from the
``horizon_days`` after it. Validation is out of time, so nothing leaks: the model is trained
at cut-off ``end − 2h`` (labels up to ``end − h``) and tested at ``end − h`` on what happened up
to ``end``; AUC and lift in the top 10 % are measured on that later window. The model is then
refitted at ``end − h`` and scores every customer as of ``end``.

Drivers: globally, the drop in test AUC when a feature is shuffled (permutation importance);
per customer, how much their score falls when one of their feature values is replaced by
the population's median — "why this customer" in the feature's own words.

Targets: ``category:<name>`` (an order line of that category), ``churn`` (no purchase),
``return`` (a returned item or refund), ``coupon`` (a coupon redeemed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from plait.errors import ModelError

if TYPE_CHECKING:
    import pandas as pd

    from plait.workspace import Workspace

BASE = ("recency_days", "frequency", "monetary", "avg_order_value", "tenure_days", "share_web", "share_app",
        "share_store", "returns_rate", "discount_share", "coupon_share", "categories", "top_category_share")


def lift_at(y: np.ndarray, score: np.ndarray, share: float = 0.1) -> float:
    """Positive rate among the top ``share`` by score over the overall positive rate."""
    n = max(1, int(round(len(y) * share)))
    top = np.argsort(-score, kind="stable")[:n]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else float("nan")


@dataclass
class Propensity:
    """An estimator: ``fit(X, y)`` on a feature frame, ``predict_proba(X)`` the positive class."""

    max_iter: int = 200
    learning_rate: float = 0.08
    seed: int = 0
    columns_: list[str] = field(default_factory=list)

    def fit(self, X: "pd.DataFrame", y: np.ndarray) -> "Propensity":
        from sklearn.ensemble import HistGradientBoostingClassifier

        y = np.asarray(y).astype(int)
        if len(set(y)) < 2:
            raise ModelError(f"every training label is {y[0] if len(y) else '—'}: nothing to learn",
                             hint="widen the horizon or pick a target that happens")
        self.columns_ = list(X.columns)
        self.medians_ = X.median(numeric_only=True)
        self.model_ = HistGradientBoostingClassifier(max_iter=self.max_iter, learning_rate=self.learning_rate,
                                                     early_stopping=False, random_state=self.seed)
        self.model_.fit(X.to_numpy(float), y)
        return self

    def predict_proba(self, X: "pd.DataFrame") -> np.ndarray:
        return self.model_.predict_proba(X[self.columns_].to_numpy(float))[:, 1]

    def importance(self, X: "pd.DataFrame", y: np.ndarray, *, repeats: int = 3, rows: int = 5000) -> dict[str, float]:
        """Permutation importance (AUC lost when a feature is shuffled) on at most ``rows`` rows
        per repeat: each of features × repeats predictions costs a pass of every tree, so on
        a million customers the full set would take hours for a ranking a sample gives."""
        from sklearn.inspection import permutation_importance

        r = permutation_importance(self.model_, X[self.columns_].to_numpy(float), np.asarray(y).astype(int),
                                   scoring="roc_auc", n_repeats=repeats, random_state=self.seed,
                                   max_samples=min(1.0, rows / max(len(X), 1)))
        return dict(sorted(zip(self.columns_, map(float, r.importances_mean)), key=lambda kv: -kv[1]))

    def drivers(self, X: "pd.DataFrame", *, top: int = 3) -> list[list[tuple[str, float]]]:
        """Per row, the features whose own value raises the score most over the median's."""
        base = self.predict_proba(X)
        deltas = np.zeros((len(X), len(self.columns_)))
        for j, c in enumerate(self.columns_):
            Xm = X[self.columns_].copy()
            Xm[c] = self.medians_.get(c, 0.0)
            deltas[:, j] = base - self.predict_proba(Xm)
        order = np.argsort(-deltas, axis=1)[:, :top]
        return [[(self.columns_[j], float(deltas[i, j])) for j in order[i] if deltas[i, j] > 0] for i in range(len(X))]


def _features(ws: "Workspace", as_of: datetime, categories: list[str]) -> "pd.DataFrame":
    from plait.analytics.summaries import customer_features, purchases_sql

    f = customer_features(ws, as_of=as_of)
    if f.empty:
        return f
    cat_cols = ", ".join(
        f"count(*) FILTER (WHERE json_extract_string(x.line, '$.category') = '{c.replace(chr(39), '')}') AS \"cat_{c}\""
        for c in categories) or "0 AS cat_none"
    when = f"CAST('{as_of.isoformat()}' AS TIMESTAMPTZ)"
    cats = ws.backend.query(f"""
        WITH p AS (SELECT * FROM ({purchases_sql(ws)}) WHERE event_time <= {when})
        SELECT p.profile_id, {cat_cols},
               count(DISTINCT p.order_id) FILTER (WHERE p.event_time > {when} - INTERVAL 30 DAY) AS orders_30d
        FROM p, unnest(CAST(p.products AS JSON[])) AS x(line) GROUP BY 1""").to_pandas()
    out = f.merge(cats, on="profile_id", how="left")
    filled = [c for c in cats.columns if c != "profile_id"]
    out[filled] = out[filled].fillna(0)
    return out


def _labels(ws: "Workspace", target: str, start: datetime, end: datetime) -> set[str]:
    from plait.analytics.summaries import purchases_sql

    s, e = (f"CAST('{t.isoformat()}' AS TIMESTAMPTZ)" for t in (start, end))
    if target.startswith("category:"):
        c = target.split(":", 1)[1].replace("'", "")
        sql = f"""SELECT DISTINCT p.profile_id FROM ({purchases_sql(ws)}) p, unnest(CAST(p.products AS JSON[])) AS x(line)
                  WHERE p.event_time > {s} AND p.event_time <= {e} AND json_extract_string(x.line, '$.category') = '{c}'"""
    elif target == "churn":   # the buyers: churners are those *not* in this set
        sql = f"SELECT DISTINCT profile_id FROM ({purchases_sql(ws)}) WHERE event_time > {s} AND event_time <= {e}"
    elif target in ("return", "coupon"):
        from plait.identity.tables import CURRENT

        events = "'Product Returned', 'Order Refunded'" if target == "return" else "'Coupon Redeemed'"
        sql = f"""SELECT DISTINCT s.profile_id FROM events e JOIN identity_subjects s
                  ON s.version = {CURRENT} AND s.subject = e.subject
                  WHERE e.event IN ({events}) AND e.event_time > {s} AND e.event_time <= {e}"""
    else:
        raise ModelError(f"unknown target {target!r}", hint="use category:<name>, churn, return or coupon")
    return {r["profile_id"] for r in ws.backend.rows(sql)}


def train(ws: "Workspace", target: str, *, horizon_days: int = 30, seed: int = 0) -> dict[str, Any]:
    """Out-of-time training and test, then a refit that scores everyone as of the log's end."""
    from plait.analytics.summaries import DATA_END, days

    days("horizon_days", horizon_days)
    end = ws.backend.scalar(f"SELECT {DATA_END}")
    if end is None:
        raise ModelError("the log holds no purchases", hint="collect or import orders first")
    h = timedelta(days=horizon_days)
    categories = [r["category"] for r in ws.backend.rows(
        "SELECT DISTINCT category FROM products WHERE category IS NOT NULL ORDER BY 1")]
    frames = []
    for cut in (end - 2 * h, end - h):
        X = _features(ws, cut, categories)
        if len(X) < 50:
            raise ModelError(f"only {len(X)} customers had purchased by {cut:%Y-%m-%d}",
                             hint="use a shorter horizon or a longer history")
        pos = _labels(ws, target, cut, cut + h)
        y = X["profile_id"].isin(pos).to_numpy()
        frames.append((X, ~y if target == "churn" else y))
    cols = [c for c in frames[0][0].columns if c in BASE or c.startswith("cat_") or c == "orders_30d"]
    (Xtr, ytr), (Xte, yte) = frames
    model = Propensity(seed=seed).fit(Xtr[cols], ytr)
    from sklearn.metrics import roc_auc_score

    p = model.predict_proba(Xte[cols])
    metrics = {"auc": float(roc_auc_score(yte, p)) if len(set(yte)) > 1 else float("nan"),
               "lift_at_10": lift_at(yte.astype(int), p), "base_rate": float(yte.mean()),
               "train_rows": len(Xtr), "test_rows": len(Xte)}
    importance = model.importance(Xte[cols], yte)
    final = Propensity(seed=seed).fit(Xte[cols], yte)
    Xnow = _features(ws, end, categories)
    scores = final.predict_proba(Xnow[cols])
    why = final.drivers(Xnow[cols])
    import pandas as pd

    out = pd.DataFrame({"profile_id": Xnow["profile_id"], "model": target, "score": scores,
                        "drivers": ["; ".join(f"{n} (+{d:.2f})" for n, d in w) for w in why]})
    return {"target": target, "horizon_days": horizon_days, "metrics": metrics, "importance": importance,
            "model": final, "scores": out, "window": (str(end - h), str(end))}




def _lines_sql(ws: "Workspace") -> str:
    """Order lines of consenting customers with list price, discount flag and whether returned."""
    from plait.analytics.summaries import purchases_sql

    return f"""
        WITH p AS ({purchases_sql(ws)}),
        l AS (
          SELECT p.profile_id, p.order_id, p.event_time, p.channel,
                 json_extract_string(x.line, '$.product_id') AS product_id,
                 json_extract_string(x.line, '$.category') AS category,
                 try_cast(json_extract(x.line, '$.price') AS DOUBLE) AS price,
                 coalesce(try_cast(json_extract(x.line, '$.quantity') AS DOUBLE), 1) AS quantity
          FROM p, unnest(CAST(p.products AS JSON[])) AS x(line) WHERE p.products IS NOT NULL
        ), ret AS (
          SELECT order_id, json_extract_string(properties, '$.product_id') AS product_id, min(event_time) AS returned_at
          FROM events WHERE event = 'Product Returned' AND order_id IS NOT NULL GROUP BY 1, 2
        )
        SELECT l.*, c.list_price, c.department,
               CASE WHEN c.list_price > 0 THEN greatest(1 - l.price / c.list_price, 0) END AS depth,
               r.order_id IS NOT NULL AS returned, r.returned_at
        FROM l LEFT JOIN products c USING (product_id)
        LEFT JOIN ret r ON r.order_id = l.order_id AND r.product_id = l.product_id"""


def discount_levels(ws: "Workspace") -> "pd.DataFrame":
    """The discount level at which each customer buys: the share of their order lines bought on
    promotion (empirical-Bayes shrunk towards everyone's, so three lines do not make a
    deal-seeker), the typical depth of those promotions, and a band a marketer can act on."""
    df = ws.backend.query(f"""
        SELECT profile_id, count(*) AS lines, count(*) FILTER (WHERE depth >= 0.05) AS discounted,
               median(depth) FILTER (WHERE depth >= 0.05) AS typical_depth
        FROM ({_lines_sql(ws)}) WHERE depth IS NOT NULL GROUP BY 1 ORDER BY 1""").to_pandas()
    if df.empty:
        raise ModelError("no order lines with a list price to compare with",
                         hint="load the product catalogue (`plait catalogue load`) or send discount on orders")
    rate = df["discounted"] / df["lines"]
    # Beta prior by the method of moments over customers with enough lines.
    solid = rate[df["lines"] >= 5]
    m, v = (solid.mean(), solid.var()) if len(solid) > 10 else (rate.mean(), rate.var())
    v = max(float(v), 1e-6)
    k = max(m * (1 - m) / v - 1, 0.5)
    a, b = m * k, (1 - m) * k
    df["observed_share"] = rate
    df["promo_share"] = (a + df["discounted"]) / (a + b + df["lines"])
    df["typical_depth"] = df["typical_depth"].fillna(float(df["typical_depth"].median()))
    df["level"] = np.select([df["promo_share"] < 0.1, df["promo_share"] < 0.3], ["full price", "occasional deals"],
                            "deal-seeker")
    return df


def line_history(ws: "Workspace") -> "pd.DataFrame":
    """Order lines in time order, each with its customer's history as it stood when they bought:
    ``prior_lines`` bought at an earlier time and ``prior_return_share``, the share of them
    already returned by then — no look-ahead: neither the other lines of the same order nor a
    return made later (a window over rows in time order saw both)."""
    return ws.backend.query(f"""
        WITH l AS ({_lines_sql(ws)}),
        marks AS (
          SELECT profile_id, event_time AS t, 1 AS bought, 0 AS back FROM l
          UNION ALL SELECT profile_id, returned_at, 0, 1 FROM l WHERE returned_at IS NOT NULL
        ), known AS (
          SELECT DISTINCT profile_id, t, coalesce(sum(bought) OVER w, 0) AS prior_lines,
                 coalesce(sum(back) OVER w, 0) AS prior_returns
          FROM marks WINDOW w AS (PARTITION BY profile_id ORDER BY t
                                  RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW EXCLUDE GROUP)
        )
        SELECT l.* EXCLUDE (returned_at), k.prior_lines,
               coalesce(k.prior_returns / nullif(k.prior_lines, 0), 0) AS prior_return_share
        FROM l JOIN known k ON k.profile_id = l.profile_id AND k.t = l.event_time
        ORDER BY l.event_time, l.order_id, l.product_id, l.price, l.quantity""").to_pandas()


def train_line_returns(ws: "Workspace", *, seed: int = 0) -> dict[str, Any]:
    """P(an order line is returned): lines of older orders train, the newest fifth test (out of
    time); features are the line's price, depth of discount, quantity, category, channel and
    the customer's history when they bought (:func:`line_history`)."""
    from sklearn.metrics import roc_auc_score

    df = line_history(ws)
    if len(df) < 500 or df["returned"].nunique() < 2:
        raise ModelError(f"{len(df)} order lines ({int(df['returned'].sum()) if len(df) else 0} returned) are too few",
                         hint="collect more orders and returns")
    X = df[["price", "quantity", "prior_return_share", "prior_lines"]].astype(float).copy()
    X["depth"] = df["depth"].astype(float).fillna(0)
    for col in ("category", "channel"):
        X = X.join(pd_dummies(df[col], col))
    X = X.fillna(0)
    y = df["returned"].to_numpy().astype(int)
    cut = int(len(df) * 0.8)
    model = Propensity(seed=seed).fit(X.iloc[:cut], y[:cut])
    p = model.predict_proba(X.iloc[cut:])
    yt = y[cut:]
    metrics = {"auc": float(roc_auc_score(yt, p)) if len(set(yt)) > 1 else float("nan"),
               "lift_at_10": lift_at(yt, p), "base_rate": float(yt.mean()), "train_rows": cut,
               "test_rows": len(df) - cut}
    importance = model.importance(X.iloc[cut:], yt)
    final = Propensity(seed=seed).fit(X, y)
    return {"metrics": metrics, "importance": importance, "model": final, "columns": list(X.columns)}


def pd_dummies(s: "pd.Series", prefix: str) -> "pd.DataFrame":
    import pandas as pd

    return pd.get_dummies(s.fillna("unknown").astype(str), prefix=prefix, dtype=float)


__all__ = ["Propensity", "discount_levels", "lift_at", "line_history", "train", "train_line_returns"]
