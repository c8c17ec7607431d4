"""Conditions (evaluate agrees with to_sql), automatic segments (planted ones recovered,
stable, described), rule-based segments on a workspace."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plait.analytics.segments import Segmentation
from plait.conditions import parse
from plait.errors import ConfigError

NUM = st.one_of(st.none(), st.integers(-3, 3))
TXT = st.one_of(st.none(), st.sampled_from(["a", "b", "c"]))
CONF = st.one_of(st.none(), st.sampled_from(["inferred", "observed", "declared"]))


def conditions_strategy():
    num = st.builds(lambda op, v: {"field": "features.n", "op": op, "value": v},
                    st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), st.integers(-3, 3))
    txt = st.builds(lambda op, v, mc: {"field": "traits.t", "op": op, "value": v, **({"min_confidence": mc} if mc else {})},
                    st.sampled_from(["==", "!=", "in", "not_in"]), st.sampled_from(["a", "b", ["a", "b"], ["c"]]),
                    CONF)
    txt = txt.filter(lambda d: isinstance(d["value"], list) == (d["op"] in ("in", "not_in")))
    other = st.sampled_from([{"field": "features.n", "op": "missing"}, {"field": "traits.t", "op": "exists"},
                             {"field": "features.n", "op": "between", "value": [-1, 2]},
                             {"field": "features.tags", "op": "contains", "value": "x"}])
    leaf = st.one_of(num, txt, other)
    return st.recursive(leaf, lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda x: {"not": x}, inner)), max_leaves=6)


profile = st.fixed_dictionaries({"n": NUM, "t": TXT, "conf": CONF, "tags": st.one_of(st.none(), st.lists(
    st.sampled_from(["x", "y"]), max_size=2))})


@settings(max_examples=150, deadline=None)
@given(conditions_strategy(), st.lists(profile, min_size=1, max_size=6))
def test_evaluate_and_sql_agree(cond, people):
    c = parse(cond)
    con = duckdb.connect()
    rows = []
    for i, p in enumerate(people):
        rows.append({"id": i, "features.n": p["n"], "traits.t": p["t"], "traits.t.confidence": p["conf"] if p["t"] else None,
                     "features.tags": p["tags"]})
    df = pd.DataFrame(rows).astype({"features.n": "Int64", "traits.t": "object", "traits.t.confidence": "object"})
    con.register("v", df)
    got = {r[0] for r in con.execute(f"SELECT id FROM v WHERE {c.to_sql()}").fetchall()}
    want = set()
    for i, p in enumerate(people):
        prof = {"features": {k: v for k, v in (("n", p["n"]), ("tags", p["tags"])) if v is not None},
                "traits": {"t": {"value": p["t"], "confidence": p["conf"]}} if p["t"] is not None else {}}
        if c.evaluate(prof):
            want.add(i)
        assert c.compile()(prof) == c.evaluate(prof), (cond, prof)     # the real-time form agrees too
    assert got == want, (cond, people)


def test_parse_errors_name_the_place():
    with pytest.raises(ConfigError, match=r"condition.all\[1\]: unknown op 'like'"):
        parse({"all": [{"field": "features.orders", "op": ">", "value": 1}, {"field": "x.y", "op": "like"}]})
    with pytest.raises(ConfigError, match="min_confidence applies to traits"):
        parse({"field": "features.orders", "op": ">", "value": 1, "min_confidence": "declared"})
    with pytest.raises(ConfigError, match="needs a list"):
        parse({"field": "traits.city", "op": "in", "value": "Leeds"})


def test_min_confidence_keeps_guesses_out():
    c = parse({"field": "traits.gender", "op": "==", "value": "f", "min_confidence": "observed"})
    assert c.evaluate({"traits": {"gender": {"value": "f", "confidence": "declared"}}})
    assert not c.evaluate({"traits": {"gender": {"value": "f", "confidence": "inferred"}}})


def planted(seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = {"share_store": [0.9, 0.1, 0.1], "share_web": [0.05, 0.85, 0.1], "share_app": [0.05, 0.05, 0.8],
               "monetary": [800, 150, 40], "frequency": [12, 4, 1], "returns_rate": [0.02, 0.3, 0.05]}
    truth = rng.integers(0, 3, 3000)
    df = pd.DataFrame({k: np.asarray(v)[truth] * rng.lognormal(0, 0.15, truth.size) for k, v in centers.items()})
    return df, truth


def test_planted_segments_are_recovered_stably_and_described():
    from sklearn.metrics import adjusted_rand_score

    df, truth = planted()
    seg = Segmentation(range(2, 7), seed=3).fit(df)
    assert seg.k_ == 3
    assert adjusted_rand_score(truth, seg.labels_) > 0.95
    again = Segmentation(range(2, 7), seed=3).fit(df)
    assert (again.labels_ == seg.labels_).all()                      # same seed, same labels
    other = Segmentation(range(2, 7), seed=8).fit(df)
    assert adjusted_rand_score(seg.labels_, other.labels_) > 0.95   # another seed, same segments, same numbers
    assert (other.labels_ == seg.labels_).mean() > 0.95
    words = dict(zip(seg.profiles_["segment"], seg.profiles_["description"]))
    assert "store-first" in words[0] and "high spend" in words[0]   # segment 0 is the most valuable
    assert "frequent returns" in words[1] or "web-first" in words[1]
    gmm = Segmentation(range(2, 6), method="gmm", seed=3).fit(df)
    assert adjusted_rand_score(truth, gmm.labels_) > 0.9
    assert (seg.predict(df) == seg.labels_).mean() > 0.99
