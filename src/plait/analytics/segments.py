"""Segmentation: automatic clusters described in a marketer's words, and rule-based segments.

:class:`Segmentation` standardises behavioural and descriptive features, clusters them with
k-means (scikit-learn) for every k in a range and keeps the k with the best silhouette score
on a fixed sample of 4,000 customers (the score costs n² distances: 6.8 s for five k at 10,000
on 2 cores, ~1 s at 4,000) — the stated criterion (``criterion="bic"`` with ``method="gmm"`` uses a
Gaussian mixture's BIC instead). Segments are numbered by descending mean monetary value
(then size) so labels mean the same thing across refits, and each is described by what
distinguishes it: the features whose segment mean lies furthest (in standard deviations) from
everyone's, turned into words — "store-first, high basket, frequent returns".

Rule-based segments are conditions (:mod:`plait.conditions`) compiled to SQL over
:func:`profile_view_sql`, one row per customer with dotted columns (``features.orders``,
``traits.city``, ``clv.p_alive``, ``segment``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from plait.conditions import Condition, parse
from plait.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import pandas as pd

    from plait.workspace import Workspace

DEFAULT_FEATURES = ("recency_days", "frequency", "monetary", "avg_order_value", "tenure_days", "share_web",
                    "share_app", "share_store", "returns_rate", "discount_share", "categories")

SKEWED = ("monetary", "avg_order_value", "frequency", "categories")

# (feature, words when high, words when low); None = not worth saying.
WORDS = {
    "share_web": ("web-first", None), "share_app": ("app-first", None), "share_store": ("store-first", "online"),
    "share_other": ("call-centre and partner buyers", None),
    "monetary": ("high spend", "low spend"), "avg_order_value": ("high basket", "small basket"),
    "frequency": ("frequent", "one-off"), "recency_days": ("lapsed", "recent"),
    "tenure_days": ("long-standing", "new"), "returns_rate": ("frequent returns", None),
    "discount_share": ("discount-driven", "full price"), "categories": ("broad range", "narrow range"),
    "age": ("older", "younger"),
}


def _span(ks: Sequence[int]) -> str:
    ks = list(ks)
    return "none" if not ks else f"{ks[0]}" if len(ks) == 1 else f"{min(ks)}–{max(ks)}"


class Segmentation:
    """k-means (or Gaussian mixture) segments with k chosen by silhouette (or BIC)."""

    def __init__(self, k_range: Sequence[int] = range(2, 9), *, method: str = "kmeans", criterion: str | None = None,
                 features: Sequence[str] | None = None, seed: int = 0, sample: int = 4_000,
                 describe_top: int = 3) -> None:
        # Arguments are checked here, before any data is read or anything stored.
        if method not in ("kmeans", "gmm"):
            raise ModelError(f"unknown method {method!r}", hint="use kmeans or gmm")
        if seed < 0:
            raise ModelError(f"the random seed must be 0 or more, not {seed}")
        if not any(k >= 2 for k in k_range):
            raise ModelError(f"segment counts to try must include 2 or more, got {_span(k_range)}",
                             hint="for example k_min=2, k_max=8 (--k-min 2 --k-max 8)")
        chosen = criterion or ("silhouette" if method == "kmeans" else "bic")
        if chosen not in ("silhouette", "bic") or (chosen == "bic" and method != "gmm"):
            raise ModelError(f"criterion {chosen!r} does not fit method {method!r}",
                             hint="kmeans uses silhouette; gmm uses bic or silhouette")
        self.k_range = k_range
        self.method = method
        self.criterion = criterion
        self.features = features
        self.seed = seed
        self.sample = sample
        self.describe_top = describe_top

    def fit(self, data: "pd.DataFrame") -> "Segmentation":
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score
        from sklearn.mixture import GaussianMixture
        from sklearn.preprocessing import StandardScaler

        criterion = self.criterion or ("silhouette" if self.method == "kmeans" else "bic")
        # A feature nobody has, or everyone has alike, says nothing about who differs.
        cols = [c for c in (self.features or DEFAULT_FEATURES)
                if c in data.columns and data[c].astype(float).nunique(dropna=True) > 1]
        if not cols:
            raise ModelError("none of the segmentation features is in the data",
                             hint=f"expected some of {', '.join(self.features or DEFAULT_FEATURES)}")
        self.columns_ = cols
        self.medians_ = data[cols].astype(float).median()
        X = self._matrix(data)
        ks = [k for k in self.k_range if 2 <= k < len(X)]
        if not ks:
            raise ModelError(f"{len(X)} customers are too few to segment into {_span(self.k_range)} groups",
                             hint="lower k_range or add customers")
        self.scaler_ = StandardScaler().fit(X)
        Z = self.scaler_.transform(X)
        rng = np.random.default_rng(self.seed)
        idx = rng.choice(len(Z), min(self.sample, len(Z)), replace=False)
        scores, models = {}, {}
        for k in ks:
            if self.method == "kmeans":
                m = KMeans(k, n_init=10, random_state=self.seed).fit(Z)
                labels = m.labels_
            else:
                m = GaussianMixture(k, covariance_type="full", n_init=2, random_state=self.seed).fit(Z)
                labels = m.predict(Z)
            if criterion == "bic":
                scores[k] = -m.bic(Z)
            else:
                scores[k] = float(silhouette_score(Z[idx], labels[idx])) if len(set(labels[idx])) > 1 else -1.0
            models[k] = (m, labels)
        self.scores_ = scores
        self.k_ = max(scores, key=lambda k: (scores[k], -k))
        self.model_, raw = models[self.k_]
        # Stable numbering: by descending mean monetary value (or first feature), then size.
        key = cols.index("monetary") if "monetary" in cols else 0
        order = sorted(range(self.k_), key=lambda c: (-X[raw == c, key].mean(), -(raw == c).sum()))
        remap = {old: new for new, old in enumerate(order)}
        self.labels_ = np.array([remap[v] for v in raw])
        self._remap = remap
        self.profiles_ = self._describe(data, X, cols)
        return self

    def _matrix(self, data: "pd.DataFrame") -> np.ndarray:
        """The fitted columns, gaps filled with the training medians, skewed ones on a log scale
        (so a few big spenders do not make their own segment)."""
        X = data[self.columns_].astype(float).fillna(self.medians_).to_numpy()
        skewed = [i for i, c in enumerate(self.columns_) if c in SKEWED]
        X[:, skewed] = np.log1p(np.clip(X[:, skewed], 0, None))
        return X

    def predict(self, data: "pd.DataFrame") -> np.ndarray:
        raw = self.model_.predict(self.scaler_.transform(self._matrix(data)))
        return np.array([self._remap[v] for v in raw])

    def _describe(self, data: "pd.DataFrame", X: np.ndarray, cols: list[str]) -> "pd.DataFrame":
        import pandas as pd

        mu, sd = X.mean(axis=0), X.std(axis=0) + 1e-12
        rows = []
        for s in range(self.k_):
            sel = self.labels_ == s
            z = (X[sel].mean(axis=0) - mu) / sd
            words = []
            for i in np.argsort(-np.abs(z)):
                if len(words) >= self.describe_top or abs(z[i]) < 0.3:
                    break
                hi, lo = WORDS.get(cols[i], (f"high {cols[i]}", f"low {cols[i]}"))
                w = hi if z[i] > 0 else lo
                if w and w not in words:
                    words.append(w)
            for cat in ("top_category", "age_band"):
                if cat in data.columns:
                    share = data.loc[sel, cat].value_counts(normalize=True)
                    base = data[cat].value_counts(normalize=True)
                    if len(share) and share.iloc[0] >= 1.5 * base.get(share.index[0], 1) and share.iloc[0] >= 0.3:
                        words.append(str(share.index[0]) if cat == "age_band" else f"loves {share.index[0]}")
            row = {"segment": s, "customers": int(sel.sum()), "share": float(sel.mean()),
                   "description": ", ".join(words) or "average customers"}
            for c in cols:
                row[f"mean_{c}"] = float(data.loc[sel, c].astype(float).mean())
            rows.append(row)
        return pd.DataFrame(rows)


def profile_view_sql(ws: "Workspace", fields: set[str]) -> str:
    """One row per current customer with a column per dotted field used by a condition."""
    from plait.identity.tables import CURRENT

    b = ws.backend
    select, joins = ["p.profile_id"], []
    feats = set(b.query("SELECT * FROM profile_features LIMIT 0").column_names) if b.has_table("profile_features") else set()
    extra = set(b.query("SELECT * FROM analytics_features LIMIT 0").column_names) \
        if b.has_table("analytics_features") else set()
    tables = {"clv": "analytics_clv"}
    # Inferred traits fill gaps in golden ones, for customers who allow profiling (analytics) only.
    inferred = b.has_table("inferred_traits")
    allowed = ws.consent.allowed_profiles_sql("analytics") if inferred else ""
    seen_traits: dict[str, str] = {}
    for f in sorted(fields):
        ns, _, rest = f.partition(".")
        col = '"' + f.replace('"', '""') + '"'
        if ns == "features" and rest in feats:
            select.append(f"pf.{rest} AS {col}")
        elif ns == "features" and rest in extra:
            select.append(f"af.{rest} AS {col}")
        elif ns == "traits":
            name, _, conf = rest.partition(".")
            if name not in seen_traits:
                alias = f"t{len(seen_traits)}"
                seen_traits[name] = alias
                joins.append(f"LEFT JOIN profile_traits {alias} ON {alias}.profile_id = p.profile_id AND "
                             f"{alias}.trait = '{name.replace(chr(39), '')}'")
            a = seen_traits[name]
            if inferred and f"i{a}" not in "".join(joins):
                joins.append(f"LEFT JOIN inferred_traits i{a} ON i{a}.profile_id = p.profile_id AND i{a}.trait = "
                             f"'{name.replace(chr(39), '')}' AND p.profile_id IN (SELECT profile_id FROM ({allowed}) "
                             "WHERE allowed)")
            golden_v = f"try_cast(json_extract_string({a}.value, '$') AS VARCHAR)"
            if conf == "confidence":
                select.append(f"CASE WHEN {a}.value IS NOT NULL THEN {a}.confidence "
                              + (f"WHEN i{a}.value IS NOT NULL THEN 'inferred' " if inferred else "") + f"END AS {col}")
            else:
                select.append(f"coalesce({golden_v}, i{a}.value) AS {col}" if inferred else f"{golden_v} AS {col}")
        elif ns == "scores" and rest and b.has_table("analytics_scores"):
            select.append(f"(SELECT max(score) FROM analytics_scores s WHERE s.profile_id = p.profile_id AND s.model = "
                          f"'{rest.replace(chr(39), '')}') AS {col}")
        elif ns in tables and b.has_table(tables[ns]) and rest:
            select.append(f"{ns}.{rest} AS {col}")
        elif f == "segment" and b.has_table("analytics_segments"):
            select.append(f"seg.segment AS {col}")
        else:
            raise ConfigError(f"field {f!r} is not known to the profile view",
                              hint="use features.<profile feature>, traits.<trait>, clv.<column>, scores.<model> "
                                   "or segment; build profiles and run the analyses first")
    joins.append("LEFT JOIN profile_features pf ON pf.profile_id = p.profile_id")
    if extra:
        joins.append("LEFT JOIN analytics_features af ON af.profile_id = p.profile_id")
    for ns, t in tables.items():
        if b.has_table(t):
            joins.append(f"LEFT JOIN {t} {ns} ON {ns}.profile_id = p.profile_id")
    if b.has_table("analytics_segments"):
        joins.append("LEFT JOIN analytics_segments seg ON seg.profile_id = p.profile_id")
    return (f"SELECT {', '.join(select)} FROM (SELECT DISTINCT profile_id FROM identity_subjects "
            f"WHERE version = {CURRENT}) p {' '.join(joins)}")


def members_sql(ws: "Workspace", condition: Mapping[str, Any] | Condition) -> str:
    """SQL listing the profile ids a condition selects."""
    c = parse(condition)
    return f"SELECT profile_id FROM ({profile_view_sql(ws, c.fields())}) v WHERE {c.to_sql()}"


__all__ = ["DEFAULT_FEATURES", "Segmentation", "members_sql", "profile_view_sql"]
