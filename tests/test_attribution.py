"""Attribution models on path tables: definitions, exactness, efficiency, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plait.analytics.attribution import (HeuristicAttribution, MarkovAttribution, ShapleyAttribution, markov_states,
                                         read_paths)
from plait.errors import ModelError

TABLE = pd.DataFrame({
    "path": ["email > search > direct", "social > search", "direct", "email", "search > search > store"],
    "total_conversions": [3, 2, 1, 0, 4], "total_conversion_value": [30.0, 20.0, 5.0, 0.0, 80.0],
    "total_null": [5, 10, 20, 7, 1]})


def credits(model) -> dict[str, float]:  # noqa: ANN001
    a = model.fit(TABLE).attribution_
    assert list(a.columns) == ["channel", "conversions", "value"]
    return {c: v for c, v in zip(a["channel"], a["conversions"]) if v}


def test_heuristics_count_like_channelattribution():
    assert credits(HeuristicAttribution("first_touch")) == {"direct": 1, "email": 3, "search": 4, "social": 2}
    assert credits(HeuristicAttribution("last_touch")) == {"direct": 4, "search": 2, "store": 4}
    lnd = credits(HeuristicAttribution("last_non_direct"))
    assert lnd["search"] == 5 and lnd["direct"] == 1
    lin = credits(HeuristicAttribution("linear"))        # every touch, repeats included
    assert lin["search"] == pytest.approx(1 + 1 + 4 * 2 / 3) and lin["store"] == pytest.approx(4 / 3)
    pos = HeuristicAttribution("position_based").weights(("a", "b", "c", "d"))
    assert list(pos) == pytest.approx([0.4, 0.1, 0.1, 0.4])
    td = HeuristicAttribution("time_decay", half_life=1).weights(("a", "b", "c"))
    assert td[2] == pytest.approx(2 * td[1]) == pytest.approx(4 * td[0])
    with pytest.raises(ModelError, match="unknown heuristic"):
        HeuristicAttribution("vibes").fit(TABLE)


def test_markov_states_follow_the_reference_construction():
    assert markov_states(("a", "a", "b"), 1) == [("a",), ("b",)]
    assert markov_states(("a", "b", "a", "b"), 2) == [("a", "b"), ("b", "a"), ("a", "b")]
    assert markov_states(("a",), 3) == [("a",)]
    assert markov_states(("a", "a", "a", "b"), 2) == [("a", "a"), ("a", "b")]


def power_iteration_p_conv(rows, order, removed=None) -> float:  # noqa: ANN001
    """An independent reference: the same chain, solved by iterating its transitions to convergence."""
    from collections import defaultdict

    out, nxt, conv, start = defaultdict(float), defaultdict(float), defaultdict(float), defaultdict(float)
    total = 0.0
    for chans, c, _, null in rows:
        n = c + null
        if not n:
            continue
        total += n
        s = markov_states(chans, order)
        start[s[0]] += n
        for a, b in zip(s, s[1:]):
            nxt[(a, b)] += n
            out[a] += n
        conv[s[-1]] += c
        out[s[-1]] += n
    states = list(out)
    x = {s: 0.0 for s in states}
    for _ in range(2000):
        new = {}
        for s in states:
            if removed and removed in s:
                new[s] = 0.0
                continue
            v = conv[s] / out[s]
            for (a, b), n in nxt.items():
                if a == s:
                    v += n / out[s] * x[b]
            new[s] = v
        x = new
    return sum(start[s] / total * x[s] for s in start)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_markov_is_exact_and_efficient(order):
    m = MarkovAttribution(order).fit(TABLE)
    a = m.attribution_
    assert a["conversions"].sum() == pytest.approx(TABLE["total_conversions"].sum())
    assert a["value"].sum() == pytest.approx(TABLE["total_conversion_value"].sum())
    rows = read_paths(TABLE)
    assert m.conversion_probability_ == pytest.approx(power_iteration_p_conv(rows, order), rel=1e-9)
    for c, eff in m.removal_effects_.items():
        ref = 1 - power_iteration_p_conv(rows, order, removed=c) / m.conversion_probability_
        assert eff == pytest.approx(max(ref, 0.0), abs=1e-9), c
    again = MarkovAttribution(order).fit(TABLE).attribution_
    assert again.equals(a)                                   # bit-identical run to run


paths_strategy = st.lists(st.tuples(st.lists(st.sampled_from("abcde"), min_size=1, max_size=6),
                                    st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(paths_strategy, st.integers(1, 4))
def test_efficiency_on_random_path_tables(rows, order):
    df = pd.DataFrame({"path": [" > ".join(p) for p, _, _ in rows], "total_conversions": [c for _, c, _ in rows],
                       "total_conversion_value": [2.5 * c for _, c, _ in rows], "total_null": [n for _, _, n in rows]})
    total = df["total_conversions"].sum()
    for model in (HeuristicAttribution("linear"), HeuristicAttribution("time_decay"), HeuristicAttribution(
            "position_based"), ShapleyAttribution("simplified"), ShapleyAttribution("exact"), ShapleyAttribution("ordered")):
        assert model.fit(df).attribution_["conversions"].sum() == pytest.approx(total)
    exact = ShapleyAttribution("exact").fit(df).attribution_.set_index("channel")["conversions"]
    simple = ShapleyAttribution("simplified").fit(df).attribution_.set_index("channel")["conversions"]
    assert np.allclose(exact.reindex(simple.index).fillna(0), simple)
    if total:
        m = MarkovAttribution(order).fit(df).attribution_
        assert m["conversions"].sum() == pytest.approx(total) and (m["conversions"] >= -1e-12).all()
    else:
        with pytest.raises(ModelError, match="no conversions"):
            MarkovAttribution(order).fit(df)


def test_bad_tables_get_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="needs columns path and total_conversions"):
        MarkovAttribution().fit(pd.DataFrame({"p": ["a"]}))
    with pytest.raises(ModelError, match="row 1 is empty"):
        HeuristicAttribution().fit(pd.DataFrame({"path": ["a", " > "], "total_conversions": [1, 1]}))
    f = tmp_path / "paths.csv"
    TABLE.to_csv(f, index=False)
    assert MarkovAttribution(2).fit(str(f)).attribution_["conversions"].sum() == pytest.approx(10)


def test_cli_contract(tmp_path):
    import json

    from typer.testing import CliRunner

    from plait.cli.main import app

    f = tmp_path / "paths.csv"
    TABLE.to_csv(f, index=False)
    r = CliRunner().invoke(app, ["attribution", "--model", "markov", "--order", "2", "--paths", str(f), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert sum(x["conversions"] for x in rows) == pytest.approx(10)
    want = MarkovAttribution(2).fit(TABLE).attribution_.set_index("channel")["conversions"]
    assert {x["channel"]: x["conversions"] for x in rows} == pytest.approx(want.to_dict())
    r = CliRunner().invoke(app, ["attribution", "--model", "linear", "--paths", str(f)])
    assert r.exit_code == 0 and "search" in r.output


def test_path_analysis_tables():
    from plait.analytics.paths import chains, sankey, top_paths, transitions

    tops = top_paths(TABLE, n=2)
    assert list(tops["converting"]["path"]) == ["search > search > store", "email > search > direct"]
    assert tops["non_converting"]["path"].iloc[0] == "direct"
    ch = chains(TABLE)
    assert "search > store" in set(ch["chain"])                 # consecutive repeats collapsed
    tr = transitions(TABLE)
    assert tr.groupby("from")["probability"].sum().round(12).eq(1).all()
    start = tr[tr["from"] == "(start)"].set_index("to")["count"]
    assert start.sum() == (TABLE["total_conversions"] + TABLE["total_null"]).sum()
    conv = tr[tr["to"] == "(conversion)"]["count"].sum()
    assert conv == TABLE["total_conversions"].sum()
    sk = sankey(TABLE)
    # Every journey's flow is conserved: what enters step 1 leaves as conversions or nulls.
    first = sk[sk["source"].str.startswith("1 ")]
    assert sk[sk["target"].isin(["(conversion)", "(null)"])]["value"].sum() == \
        (TABLE["total_conversions"] + TABLE["total_null"]).sum()
    assert len(first) > 0


def test_markov_value_has_its_own_removal_effects():
    # Paths through "b" convert rarely but for a lot; "a" converts often for little.
    df = pd.DataFrame({"path": ["a", "b", "a > b"], "total_conversions": [8, 2, 1],
                       "total_conversion_value": [80.0, 400.0, 50.0], "total_null": [2, 8, 4]})
    m = MarkovAttribution(1).fit(df)
    a = m.attribution_.set_index("channel")
    assert a["value"].sum() == pytest.approx(530.0) and a["conversions"].sum() == pytest.approx(11)
    assert a.loc["a", "conversions"] > a.loc["b", "conversions"] and a.loc["b", "value"] > a.loc["a", "value"]
    # Solved by hand: from the start a 15/25, b 10/25; a converts 8/15 (value 80/15) and moves to b
    # 5/15; b converts 3/15 (value 450/15). Expected value 21.2 per path; without b 3.2, without a 12.
    assert m.value_per_path_ == pytest.approx(21.2) and m.conversion_probability_ == pytest.approx(0.44)
    assert m.value_removal_effects_["b"] == pytest.approx(1 - 3.2 / 21.2)
    assert m.value_removal_effects_["a"] == pytest.approx(1 - 12 / 21.2)
    vb, va = 1 - 3.2 / 21.2, 1 - 12 / 21.2
    assert a.loc["b", "value"] == pytest.approx(530 * vb / (va + vb))
    assert a.loc["a", "conversions"] == pytest.approx(11 * (1 - 0.08 / 0.44) / ((1 - 0.08 / 0.44) + (1 - 0.32 / 0.44)))


@pytest.mark.parametrize("leak", [0.5, 0.0005])   # fast (iterated) and slow (solved by LU) chains
def test_absorbing_chain_solutions_are_exact(leak):
    from scipy import sparse

    from plait.analytics.attribution import _absorb

    rng = np.random.default_rng(4)
    k = 60
    P = rng.random((k, k)) * (rng.random((k, k)) < 0.1)
    P = P / np.maximum(P.sum(axis=1, keepdims=True), 1e-12) * (1 - leak)
    reward = np.column_stack([np.full(k, leak), rng.random(k) * leak])
    s0 = rng.dirichlet(np.ones(k))
    keep = np.column_stack([np.ones(k, bool), rng.random(k) < 0.7, rng.random(k) < 0.4])
    got = _absorb(sparse.csr_matrix(P), reward, s0, keep)
    for j in range(keep.shape[1]):
        kj = keep[:, j]
        x = np.linalg.solve(np.eye(kj.sum()) - P[kj][:, kj], reward[kj])
        assert got[j] == pytest.approx(s0[kj] @ x, rel=1e-10)
