"""Imputation: missing attributes predicted with a confidence, kept apart from facts.

For a trait — ``age_band`` (from a birthday), ``home_store`` (the store a customer buys in
most), ``preferred_channel`` (where they buy most), or any golden trait such as ``gender`` — a
gradient-boosted classifier learns from the customers for whom it is known (declared or
observed) and predicts it for the others from their behaviour (channel shares, spend,
frequency, category mix) and, where known, their city. Each prediction carries the class
probability as its confidence and is written to ``inferred_traits`` — never into the golden
traits, so an inferred value can never overwrite an observed or declared one. Accuracy on a
held-out fifth of the known customers, against always guessing the most common value, is
reported, and a model that does not beat that baseline imputes nothing.

Customers who withdrew analytics consent are neither learnt from nor imputed, and
:meth:`plait.profiles.Profiles.get` shows inferred traits only while personalisation by
profiling is allowed (the one consent check).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from plait.engine.dialects import most_frequent
from plait.errors import ModelError
from plait.identity.tables import CURRENT

if TYPE_CHECKING:
    import pandas as pd

    from plait.workspace import Workspace

DERIVED = ("age_band", "home_store", "preferred_channel")
INPUTS = ("recency_days", "frequency", "monetary", "avg_order_value", "tenure_days", "share_web", "share_app",
          "share_store", "share_other", "returns_rate", "discount_share", "categories", "top_category_share")
DDL = ("CREATE TABLE IF NOT EXISTS inferred_traits (profile_id VARCHAR, trait VARCHAR, value VARCHAR, "
       "probability DOUBLE, model_version INTEGER, inferred_at TIMESTAMPTZ)")


def _known(ws: "Workspace", trait: str, features: "pd.DataFrame") -> "pd.Series":
    """The trait's known value per profile (index profile_id)."""
    import pandas as pd

    b = ws.backend
    if trait == "age_band":
        return features.set_index("profile_id")["age_band"].dropna() if "age_band" in features else pd.Series(dtype=str)
    if trait == "home_store":
        rows = b.query(f"""
            SELECT profile_id, {most_frequent('store_id', 'n', 'last_at')} AS v FROM (
              SELECT s.profile_id, e.store_id, count(*) AS n, max(e.event_time) AS last_at
              FROM events e JOIN identity_subjects s ON s.version = {CURRENT} AND s.subject = e.subject
              WHERE e.store_id IS NOT NULL AND e.event IN ('Order Completed', 'Store Visit') GROUP BY 1, 2)
            GROUP BY 1""").to_pandas()
        return rows.set_index("profile_id")["v"]
    if trait == "preferred_channel":
        f = features.set_index("profile_id")
        shares = f[["share_web", "share_app", "share_store"]]
        clear = shares.max(axis=1) >= 0.6           # a clear majority is observed; a split is not
        return shares[clear].idxmax(axis=1).str.replace("share_", "", regex=False)
    rows = b.query("SELECT profile_id, json_extract_string(value, '$') AS v FROM profile_traits WHERE trait = ? "
                   "AND confidence IN ('declared', 'observed')", [trait]).to_pandas()
    return rows.set_index("profile_id")["v"].dropna()


def impute(ws: "Workspace", trait: str, *, min_probability: float = 0.5, seed: int = 0) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from plait.analytics.summaries import customer_features

    if not 0 <= min_probability <= 1:
        raise ModelError(f"min_probability must be between 0 and 1, not {min_probability:g}",
                         hint="0.5 imputes a value only where the model gives it even odds or better")
    f = customer_features(ws)
    if trait == "age_band" and ws.backend.has_table("analytics_features"):
        ages = ws.backend.query("SELECT * FROM analytics_features LIMIT 0").column_names
        if "age_band" in ages:
            f = f.merge(ws.backend.query("SELECT profile_id, age_band FROM analytics_features").to_pandas(),
                        on="profile_id", how="left")
    known = _known(ws, trait, f)
    city = ws.backend.query("SELECT profile_id, json_extract_string(value, '$') AS city FROM profile_traits "
                            "WHERE trait = 'city'").to_pandas() if ws.backend.has_table("profile_traits") else None
    # Never predict a trait from the columns it is derived from.
    inputs = [c for c in INPUTS if c in f.columns and not (trait == "preferred_channel" and c.startswith("share_"))]
    X = f.set_index("profile_id")[inputs].astype(float)
    if city is not None and len(city):
        top = city["city"].value_counts().index[:20]
        c = city.set_index("profile_id")["city"].reindex(X.index)
        for name in top:
            X[f"city_{name}"] = (c == name).astype(float)
    X = X.fillna(X.median())
    labelled = X.index.intersection(known.index)
    if len(labelled) < 50 or known.loc[labelled].nunique() < 2:
        raise ModelError(f"only {len(labelled)} customers have a known {trait} ({known.loc[labelled].nunique()} "
                         "distinct values): too few to learn from", hint="collect the trait for more customers")
    y = known.loc[labelled].astype(str)
    rng = np.random.default_rng(seed)
    test = rng.random(len(labelled)) < 0.2
    model = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.08, random_state=seed)
    model.fit(X.loc[labelled[~test]].to_numpy(), y[~test])
    acc = float((model.predict(X.loc[labelled[test]].to_numpy()) == y[test]).mean()) if test.any() else float("nan")
    baseline = float((y[test] == y[~test].mode().iloc[0]).mean()) if test.any() else float("nan")
    model.fit(X.loc[labelled].to_numpy(), y)
    missing = X.index.difference(known.index)
    rows = []
    useful = not test.any() or acc > baseline + 0.01
    if len(missing) and useful:
        proba = model.predict_proba(X.loc[missing].to_numpy())
        best = proba.argmax(axis=1)
        for pid, k, p in zip(missing, best, proba[np.arange(len(best)), best]):
            if p >= min_probability:
                rows.append((pid, trait, str(model.classes_[k]), float(p)))
    rec = ws.models.save(f"impute_{trait}", model, kind="imputation", params={"trait": trait},
                         metrics={"accuracy": acc, "baseline": baseline, "known": len(labelled)})
    b = ws.backend
    b.execute(DDL)
    b.execute("DELETE FROM inferred_traits WHERE trait = ?", [trait])
    if rows:
        import pyarrow as pa

        b.temp_table("_inferred", pa.table({"profile_id": [r[0] for r in rows], "trait": [r[1] for r in rows],
                                            "value": [r[2] for r in rows], "probability": [r[3] for r in rows]}))
        b.execute(f"INSERT INTO inferred_traits SELECT profile_id, trait, value, probability, {rec.version}, now() "
                  "FROM _inferred")
        b.execute("DROP TABLE IF EXISTS _inferred")
    return {"trait": trait, "known": len(labelled), "missing": len(missing), "imputed": len(rows),
            "accuracy": acc, "baseline": baseline, "version": rec.version,
            "note": "" if useful else "no better than guessing the most common value: nothing imputed"}


__all__ = ["DERIVED", "impute"]
