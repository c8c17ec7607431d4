"""Association rules: the published arules counts on Groceries, measures, levels, cross-sell."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from plait.analytics.baskets import AssociationRules
from plait.errors import ModelError
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def groceries() -> list[list[str]]:
    # Strip only the line ending: two arules labels end in a space ("cream cheese ").
    with shared_file("groceries", "groceries.csv").open() as f:
        return [line.rstrip("\r\n").split(",") for line in f]


def test_arules_counts_on_groceries(groceries):
    assert len(groceries) == 9835
    r = AssociationRules(min_support=0.001, min_confidence=0.5).fit(groceries)
    assert len(r.rules_) == 5668 and len({i for b in groceries for i in b}) == 169
    assert (r.rules_["consequents"].map(len) == 1).all()
    r2 = AssociationRules(min_support=0.006, min_confidence=0.25, min_len=2).fit(groceries)
    assert len(r2.rules_) == 463
    # A rule arules prints for this data: {herbs} => {root vegetables}, support 0.0070, confidence 0.431, lift 3.956.
    row = r2.rules_[(r2.rules_["antecedents"] == ("herbs",)) & (r2.rules_["consequents"] == ("root vegetables",))].iloc[0]
    assert (round(row["support"], 4), round(row["confidence"], 3), round(row["lift"], 3)) == (0.0070, 0.431, 3.956)


def test_measures_follow_their_definitions():
    t = [["a", "b"], ["a", "b", "c"], ["a"], ["b", "c"], ["a", "b"], ["c"]]
    r = AssociationRules(min_support=0.1, min_confidence=0.0, min_len=2, single_consequent=False).fit(t)
    rule = r.rules_[(r.rules_["antecedents"] == ("a",)) & (r.rules_["consequents"] == ("b",))].iloc[0]
    sa, sb, sab = 4 / 6, 4 / 6, 3 / 6
    assert rule["support"] == pytest.approx(sab) and rule["confidence"] == pytest.approx(sab / sa)
    assert rule["lift"] == pytest.approx(sab / sa / sb) and rule["leverage"] == pytest.approx(sab - sa * sb)
    assert rule["conviction"] == pytest.approx((1 - sb) / (1 - sab / sa))
    # Multi-item consequents when asked; every non-empty split of a frequent itemset is a candidate.
    assert ("b", "c") in set(r.rules_["consequents"]) or ("c", "b") in set(r.rules_["consequents"])
    sure = AssociationRules(min_support=0.1, min_confidence=0.0, min_len=2).fit([["x", "y"], ["x", "y"]])
    assert math.isinf(sure.rules_["conviction"].iloc[0])
    # max_len caps the rule length.
    short = AssociationRules(min_support=0.1, min_confidence=0.0, min_len=2, max_len=2).fit(t)
    assert (short.rules_["antecedents"].map(len) + short.rules_["consequents"].map(len) <= 2).all()


def test_multilevel_rules_and_dataframe_input():
    df = pd.DataFrame({"basket_id": [1, 1, 2, 2, 3, 3, 4], "item": ["milk", "bread", "yogurt", "bread", "cheese",
                                                                     "bread", "apple"]})
    hierarchy = {"milk": ["Dairy"], "yogurt": ["Dairy"], "cheese": ["Dairy"], "bread": ["Bakery"], "apple": ["Fruit"]}
    r = AssociationRules(min_support=0.5, min_confidence=0.9, min_len=2).fit(df, hierarchy=hierarchy)
    rules = {(a, c) for a, c in zip(r.rules_["antecedents"], r.rules_["consequents"])}
    # No single item reaches the support, but its category does: Dairy => Bakery in 3 of 3 dairy baskets.
    assert (("Dairy",), ("Bakery",)) in rules or (("Dairy",), ("bread",)) in rules
    assert not any("Dairy" in a + c and {"milk", "yogurt", "cheese"} & set(a + c) for a, c in rules)


def test_cross_sell_and_errors(groceries):
    r = AssociationRules(min_support=0.002, min_confidence=0.4, min_len=2).fit(groceries)
    recs = r.recommend(["yogurt", "tropical fruit", "root vegetables"], k=3)
    assert recs and all(x["item"] not in {"yogurt", "tropical fruit", "root vegetables"} for x in recs)
    assert recs[0]["score"] >= recs[-1]["score"] and set(recs[0]["because"]) <= {"yogurt", "tropical fruit",
                                                                                  "root vegetables"}
    with pytest.raises(ModelError, match="transaction 1 is str"):
        AssociationRules().fit([["a"], "ab"])
    with pytest.raises(ModelError, match="min_support"):
        AssociationRules(min_support=0).fit([["a"]])
    with pytest.raises(ModelError, match="not fitted"):
        AssociationRules().recommend(["a"])
