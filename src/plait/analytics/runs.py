"""``ws.analytics``: fit the models on the workspace's customers and store what they learn.

Each run reads summaries the engine computes from the log (:mod:`plait.analytics.summaries`,
analytics-consenting customers only), fits an estimator, writes its per-customer or per-rule
results as a workspace table (``analytics_*``), registers the fitted model
(:mod:`plait.analytics.registry`) and returns a report a CLI or API prints as it is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from plait.errors import ModelError

if TYPE_CHECKING:
    import pandas as pd

    from plait.workspace import Workspace


def _store(ws: "Workspace", table: str, df: "pd.DataFrame") -> None:
    import pyarrow as pa

    data = pa.Table.from_pandas(df, preserve_index=False)
    ws.backend.temp_table(f"_{table}_new", data)
    ws.backend.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _{table}_new")
    ws.backend.execute(f"DROP TABLE IF EXISTS _{table}_new")


class Analytics:
    def __init__(self, ws: "Workspace") -> None:
        self.ws = ws

    # -- CLV ------------------------------------------------------------------------------------
    def clv(self, *, model: str = "bgnbd", horizon_days: float = 365, discount_rate: float = 0.1,
            calibration_end: str | date | None = None, as_of: str | date | None = None) -> dict[str, Any]:
        """Fit BG/NBD (or Pareto/NBD) and Gamma-Gamma on every customer; store ``analytics_clv``.

        ``discount_rate`` is yearly; CLV sums monthly expected purchases × expected spend
        over ``horizon_days``. With ``calibration_end`` the models see only the purchases up to
        it and the report compares their predictions with what happened after."""
        from plait.analytics.clv import BetaGeoModel, GammaGammaModel, ParetoNBDModel, holdout_report
        from plait.analytics.summaries import clv_summary, days

        t0 = time.perf_counter()
        kinds = {"bgnbd": BetaGeoModel, "pareto": ParetoNBDModel}
        if model not in kinds:
            raise ModelError(f"unknown CLV model {model!r}", hint="use bgnbd or pareto")
        days("horizon_days", horizon_days)
        if not discount_rate >= 0:
            raise ModelError(f"the discount rate must be 0 or more (a yearly rate such as 0.1), not {discount_rate:g}",
                             hint="0 leaves future spend undiscounted")
        s = clv_summary(self.ws, calibration_end=calibration_end, as_of=as_of)
        if len(s) < 20 or (s["frequency"] > 0).sum() < 10:
            raise ModelError(f"{len(s)} customers with purchases ({int((s['frequency'] > 0).sum())} repeat buyers) "
                             "are too few to fit a CLV model", hint="collect more orders or widen the window")
        x, tx, T, m = (s[c].to_numpy(float) for c in ("frequency", "recency", "T", "monetary_value"))
        tm = kinds[model]().fit(x, tx, T)
        # Spend is learnt from repeat buyers whose repeat purchases kept some value after returns.
        gg = GammaGammaModel().fit(np.where(m > 0, x, 0), m)
        months = max(1, int(round(horizon_days / 30.4375)))
        out = s[["profile_id", "frequency", "recency", "T", "monetary_value"]].copy()
        out["p_alive"] = tm.p_alive(x, tx, T)
        out["expected_purchases"] = tm.predict(horizon_days, x, tx, T)
        out["expected_spend"] = gg.expected_spend(x, m)
        out["clv"] = gg.lifetime_value(tm, x, tx, T, m, periods=months, period_length=30.4375,
                                       discount_rate=(1 + discount_rate) ** (1 / 12) - 1)
        out["clv_decile"] = 10 - (out["clv"].rank(method="first", ascending=False) * 10 // (len(out) + 1)).astype(int)
        _store(self.ws, "analytics_clv", out)
        report: dict[str, Any] = {
            "model": model, "customers": len(out), "repeat_buyers": int((x > 0).sum()),
            "params": tm.params_, "log_likelihood": tm.log_likelihood_, "spend_params": gg.params_,
            "horizon_days": horizon_days, "total_clv": float(out["clv"].sum()),
            "top_decile_share": float(out.loc[out["clv_decile"] == 10, "clv"].sum() / max(out["clv"].sum(), 1e-12)),
            "mean_p_alive": float(out["p_alive"].mean()),
        }
        if calibration_end is not None:
            report["holdout"] = holdout_report(tm, (x, tx, T), s["holdout_frequency"].to_numpy(float),
                                               float(s["holdout_length"].iloc[0]))
        registry = self.ws.models
        registry.save(f"clv_{model}", tm, kind="clv", params=tm.params_, metrics={
            k: v for k, v in report.items() if k in ("log_likelihood", "customers", "holdout")},
            window=(None, calibration_end or as_of))
        registry.save("clv_spend", gg, kind="clv", params=gg.params_)
        report["seconds"] = time.perf_counter() - t0
        return report

    # -- segments -------------------------------------------------------------------------------
    def features(self) -> "pd.DataFrame":
        """Store and return ``analytics_features``: RFM and behaviour per customer (plus age band
        from a birthday trait where one is known)."""
        from plait.analytics.summaries import customer_features

        f = customer_features(self.ws)
        ages = self.ws.backend.query("""
            SELECT profile_id, date_diff('year', try_cast(json_extract_string(value, '$') AS DATE), current_date) AS age
            FROM profile_traits WHERE trait IN ('birthday', 'birthdate', 'date_of_birth')""").to_pandas() \
            if self.ws.backend.has_table("profile_traits") else None
        if ages is not None and len(ages):
            f = f.merge(ages.dropna().drop_duplicates("profile_id"), on="profile_id", how="left")
            bands = [(18, 24), (25, 34), (35, 44), (45, 54), (55, 64), (65, 120)]
            f["age_band"] = None
            for lo, hi in bands:
                f.loc[f["age"].between(lo, hi), "age_band"] = f"{lo}–{hi}" if hi < 120 else f"{lo}+"
        _store(self.ws, "analytics_features", f)
        return f

    def segments(self, *, k_min: int = 2, k_max: int = 8, method: str = "kmeans", seed: int = 0) -> dict[str, Any]:
        """Cluster customers on their features; store ``analytics_segments`` (profile_id, segment,
        description) and ``analytics_segment_profiles`` (size, words, means)."""
        from plait.analytics.segments import DEFAULT_FEATURES, Segmentation

        if k_min > k_max:
            raise ModelError(f"k_min ({k_min}) is above k_max ({k_max})", hint="for example k_min=2, k_max=8")
        t0 = time.perf_counter()
        # (Made first: its arguments are checked before anything is stored.)
        seg = Segmentation(range(k_min, k_max + 1), method=method, seed=seed, features=(*DEFAULT_FEATURES, "age"))
        f = self.features()
        if len(f) < 50:
            raise ModelError(f"{len(f)} customers with purchases are too few to segment",
                             hint="collect more orders first")
        seg.fit(f)
        words = dict(zip(seg.profiles_["segment"], seg.profiles_["description"]))
        out = f[["profile_id"]].assign(segment=seg.labels_, description=[words[s] for s in seg.labels_])
        _store(self.ws, "analytics_segments", out)
        _store(self.ws, "analytics_segment_profiles", seg.profiles_)
        self.ws.models.save("segments", seg, kind="segments", params={"k": seg.k_, "method": method, "seed": seed},
                            metrics={"scores": {str(k): v for k, v in seg.scores_.items()}})
        return {"k": seg.k_, "criterion_scores": seg.scores_, "segments": self.segment_summary(),
                "customers": len(f), "seconds": time.perf_counter() - t0}

    def segment_summary(self) -> list[dict[str, Any]]:
        """The stored segments' sizes, descriptions and means — what may leave the workspace,
        so under the minimum group size (:func:`plait.privacy.groups.suppress`)."""
        from plait.privacy.groups import suppress

        if not self.ws.backend.has_table("analytics_segment_profiles"):
            raise ModelError("no segments yet", hint="run `plait analyze segments` (or POST /v1/analytics/segments)")
        t = self.ws.backend.query("SELECT * FROM analytics_segment_profiles ORDER BY segment")
        return suppress(t, by=["segment", "description"], k=self.ws.settings.privacy.min_group_size).to_pylist()

    def rule_segment(self, name: str, condition: Any) -> dict[str, Any]:
        """Members of a rule-based segment (a condition over the profile view), stored in
        ``analytics_rule_segments`` under ``name`` (replacing an earlier definition)."""
        import json

        from plait.analytics.segments import members_sql
        from plait.conditions import parse

        cond = parse(condition)
        b = self.ws.backend
        b.execute("CREATE TABLE IF NOT EXISTS analytics_rule_segments (segment VARCHAR, profile_id VARCHAR, "
                  "definition VARCHAR)")
        b.execute("DELETE FROM analytics_rule_segments WHERE segment = ?", [name])
        b.execute(f"INSERT INTO analytics_rule_segments SELECT ?, profile_id, ? FROM ({members_sql(self.ws, cond)})",
                  [name, json.dumps(condition) if isinstance(condition, dict) else cond.to_sql()])
        n = int(b.scalar("SELECT count(*) FROM analytics_rule_segments WHERE segment = ?", [name]))
        return {"segment": name, "customers": n, "sql": cond.to_sql()}

    # -- propensities ---------------------------------------------------------------------------
    def propensity(self, target: str, *, horizon_days: int = 30, seed: int = 0) -> dict[str, Any]:
        """Train, validate out of time and score a propensity model; scores and drivers go to
        ``analytics_scores`` (profile_id, model, score, drivers), the model to the registry."""
        from plait.analytics.propensity import train

        if target == "line_return":
            return self.line_returns()
        t0 = time.perf_counter()
        r = train(self.ws, target, horizon_days=horizon_days, seed=seed)
        b = self.ws.backend
        b.execute("CREATE TABLE IF NOT EXISTS analytics_scores (profile_id VARCHAR, model VARCHAR, score DOUBLE, "
                  "drivers VARCHAR)")
        b.execute("DELETE FROM analytics_scores WHERE model = ?", [target])
        _store(self.ws, "_scores_new", r["scores"])
        b.execute("INSERT INTO analytics_scores SELECT profile_id, model, score, drivers FROM _scores_new")
        b.execute("DROP TABLE _scores_new")
        rec = self.ws.models.save(f"propensity_{target}", r["model"], kind="propensity",
                                  params={"target": target, "horizon_days": horizon_days},
                                  metrics={**r["metrics"], "importance": r["importance"]}, window=r["window"])
        top = r["scores"].sort_values("score", ascending=False).head(3)
        return {"target": target, "version": rec.version, **r["metrics"], "customers": len(r["scores"]),
                "drivers": list(r["importance"].items())[:5], "top": top.to_dict("records"),
                "seconds": time.perf_counter() - t0}

    def discount_levels(self) -> dict[str, Any]:
        """The discount level at which each customer buys; stored in ``analytics_discount``."""
        from plait.analytics.propensity import discount_levels

        df = discount_levels(self.ws)
        _store(self.ws, "analytics_discount", df)
        return {"customers": len(df), "levels": df["level"].value_counts().to_dict(),
                "mean_promo_share": float(df["promo_share"].mean()),
                "typical_depth": float(df["typical_depth"].median())}

    def line_returns(self) -> dict[str, Any]:
        """P(an order line is returned), validated out of time; model in the registry."""
        from plait.analytics.propensity import train_line_returns

        r = train_line_returns(self.ws)
        rec = self.ws.models.save("propensity_line_return", r["model"], kind="propensity",
                                  params={"target": "line_return", "columns": r["columns"]},
                                  metrics={**r["metrics"], "importance": r["importance"]})
        return {"target": "line_return", "version": rec.version, **r["metrics"],
                "drivers": list(r["importance"].items())[:5]}

    # -- attribution ----------------------------------------------------------------------------
    def attribution(self, model: str = "markov", *, order: int = 1, method: str = "simplified",
                    lookback_days: float = 30, session_minutes: float = 30, value: str = "revenue") -> dict[str, Any]:
        """Credit per channel from the log's journeys; stored in ``analytics_attribution``."""
        from plait.analytics.attribution import estimator
        from plait.analytics.journeys import path_table

        est = estimator(model, order=order, method=method)
        paths = path_table(self.ws, lookback_days=lookback_days, session_minutes=session_minutes, value=value)
        table = est.fit(paths).attribution_.sort_values("conversions", ascending=False).reset_index(drop=True)
        _store(self.ws, "analytics_attribution", table.assign(model=model, order=order if model == "markov" else None))
        from plait.analytics.paths import chains

        return {"model": model, "paths": len(paths), "conversions": int(paths["total_conversions"].sum()),
                "top_chains": chains(paths, 5).to_dict("records"),
                "untouched_conversions": paths.attrs["untouched"], "table": table.to_dict("records"),
                "top_paths": paths.head(5).to_dict("records")}

    def attribution_error(self, against: str = "holdouts", *, models: Sequence[str] | None = None, lookback_days: float = 30,
                          window_days: float = 14) -> dict[str, Any]:
        """Each attribution model's credit beside what the channels caused: the incremental
        conversions measured by the log's holdout experiments (``against="holdouts"``) or, in a
        simulated workspace, the simulator's truth (``against="truth"``). See
        :func:`plait.analytics.incrementality.score_attribution`."""
        from plait.analytics.attribution import STANDARD, estimator
        from plait.analytics.incrementality import by_channel, measure, score_attribution
        from plait.analytics.journeys import path_table

        if against == "truth":
            from plait.simulate import true_incremental

            incremental = true_incremental(self.ws)
        elif against == "holdouts":
            incremental = by_channel(measure(self.ws, window_days=window_days))["incremental_conversions"]
        else:
            raise ModelError(f"score attribution against truth or holdouts, not {against!r}")
        paths = path_table(self.ws, lookback_days=lookback_days)
        fitted = {m: estimator(m).fit(paths).attribution_ for m in (models or STANDARD)}
        scores = score_attribution(incremental, fitted)
        return {"against": against, "conversions": int(paths["total_conversions"].sum()),
                "incremental": {k: float(v) for k, v in incremental.items()},
                "table": scores.reset_index().to_dict("records")}

    # -- imputation -----------------------------------------------------------------------------
    def impute(self, trait: str, *, min_probability: float = 0.5) -> dict[str, Any]:
        """Predict ``trait`` where it is unknown; predictions go to ``inferred_traits`` (see
        :mod:`plait.analytics.imputation`)."""
        from plait.analytics.imputation import impute

        if trait == "age_band":
            self.features()      # derives age bands from birthdays
        return impute(self.ws, trait, min_probability=min_probability)

    # -- rules ----------------------------------------------------------------------------------
    def rules(self, *, level: str = "category", min_support: float = 0.01, min_confidence: float = 0.2,
              max_len: int = 4, multilevel: bool = False, within_days: float = 30,
              segment_column: str | None = None) -> dict[str, Any]:
        """Basket rules at ``level`` (``analytics_rules``), sequential rules ``analytics_sequences``
        (B within ``within_days`` after A), and, with ``segment_column`` of ``analytics_segments``,
        rules per segment."""
        from plait.analytics.baskets import AssociationRules, SequenceRules
        from plait.analytics.summaries import baskets

        t0 = time.perf_counter()
        seq = SequenceRules(within_days)                 # (its arguments checked before anything is stored)
        if segment_column:
            have = [f.name for f in self.ws.backend.query("SELECT * FROM analytics_segments LIMIT 0").schema] \
                if self.ws.backend.has_table("analytics_segments") else []
            if segment_column not in have or segment_column == "profile_id":
                raise ModelError(f"segment_column {segment_column!r} is not a column of analytics_segments",
                                 hint=f"use one of: {', '.join(c for c in have if c != 'profile_id')}" if have
                                 else "fit segments first (plait analyze segments)")
        df = baskets(self.ws, level)
        if df.empty:
            raise ModelError("no order lines to mine", hint="orders need properties.products with product_id/category")
        hierarchy = None
        if multilevel:
            hierarchy = self.ws.catalogue.hierarchy() if level == "product" else {
                r["category"]: [r["department"]] for r in self.ws.backend.rows(
                    "SELECT DISTINCT category, department FROM products WHERE department IS NOT NULL")}
        est = AssociationRules(min_support, min_confidence, min_len=2, max_len=max_len).fit(
            df[["basket_id", "item"]], hierarchy=hierarchy)
        rules = est.rules_.copy()
        rules["segment"] = None
        if segment_column:
            seg = self.ws.backend.query(f'SELECT profile_id, CAST("{segment_column}" AS VARCHAR) AS segment '
                                        "FROM analytics_segments").to_pandas()
            joined = df.merge(seg, on="profile_id")
            parts = [rules]
            for name, part in joined.groupby("segment"):
                if part["basket_id"].nunique() >= 50:
                    r = AssociationRules(min_support, min_confidence, min_len=2, max_len=max_len).fit(
                        part[["basket_id", "item"]]).rules_
                    r["segment"] = name
                    parts.append(r)
            import pandas as pd

            rules = pd.concat(parts, ignore_index=True)
        stored = rules.assign(antecedents=rules["antecedents"].map(list), consequents=rules["consequents"].map(list))
        stored["conviction"] = stored["conviction"].replace(np.inf, np.nan)
        seq.fit(df.rename(columns={"profile_id": "customer", "event_time": "time"}))
        _store(self.ws, "analytics_rules", stored)
        _store(self.ws, "analytics_sequences", seq.rules_)
        self.ws.models.save(f"rules_{level}", est, kind="rules",
                            params={"min_support": min_support, "min_confidence": min_confidence, "level": level},
                            metrics={"rules": len(est.rules_), "baskets": est.n_transactions_})
        return {"level": level, "baskets": est.n_transactions_, "itemsets": len(est.itemsets_),
                "rules": len(est.rules_), "segment_rules": int(rules["segment"].notna().sum()),
                "sequences": len(seq.rules_), "top": est.rules_.head(5).to_dict("records"),
                "top_sequences": seq.rules_.head(5).to_dict("records"), "seconds": time.perf_counter() - t0}

    def cross_sell(self, ref: str, *, k: int = 5, level: str = "category") -> list[dict[str, Any]]:
        """Cross-sell candidates for one customer from the stored rules and what they bought."""
        pid = self.ws.profiles._id(ref)
        est = self.ws.models.load(f"rules_{level}")
        from plait.analytics.summaries import baskets

        return est.recommend(set(baskets(self.ws, level, profile_id=pid)["item"]), k=k)

    def up_sell(self, ref: str, *, k: int = 5, step: float = 1.2) -> list[dict[str, Any]]:
        """Up-sell candidates: in the categories a customer buys most, products priced at least
        ``step`` × what they usually pay there, that they have not bought, ranked by how many
        customers buy them."""
        from plait.analytics.propensity import _lines_sql

        pid = self.ws.profiles._id(ref)
        return self.ws.backend.rows(f"""
            WITH l AS ({_lines_sql(self.ws)}),
            mine AS (SELECT category, count(*) AS n, avg(price) AS usual FROM l WHERE profile_id = ? AND price > 0
                     GROUP BY 1 ORDER BY n DESC LIMIT 3),
            pop AS (SELECT product_id, count(DISTINCT profile_id) AS buyers FROM l GROUP BY 1)
            SELECT c.product_id, c.category, c.list_price, round(m.usual, 2) AS usual_price, coalesce(p.buyers, 0) AS buyers
            FROM products c JOIN mine m ON m.category = c.category
            LEFT JOIN pop p USING (product_id)
            WHERE c.list_price >= m.usual * {float(step)}
              AND c.product_id NOT IN (SELECT product_id FROM l WHERE profile_id = ? AND product_id IS NOT NULL)
            ORDER BY m.n DESC, buyers DESC, c.list_price LIMIT {int(k)}""", [pid, pid])


__all__ = ["Analytics"]
