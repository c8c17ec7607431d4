"""Association rules on baskets: frequent itemsets, rules and their measures, multi-level
rules over the product hierarchy, and cross-sell candidates per customer.

Itemsets are mined with Eclat over vertical bitsets: each item's baskets are one Python
integer with a bit per basket, so a candidate's support is ``(a & b).bit_count()`` — a
single machine-speed pass over the bits, no per-basket Python loop, and memory bounded by
the depth of the search. (mlxtend's FP-growth builds a Python tree per conditional pattern
base; arules' apriori is C but not available to Python; a vectorised bitset Eclat beats the
first and matches the second's counts — see ``benchmarks/analytics.py``.)

Counting follows arules: an itemset is frequent when its support (baskets / all baskets) is at
least ``min_support``; a rule's *length* is the number of items on both sides, limited by
``min_len`` and ``max_len`` (arules' ``minlen``/``maxlen``, default 1 and 10; ``min_len=2``
forbids rules with an empty antecedent); with ``single_consequent=True`` a rule has one item
on the right, as arules' ``apriori`` builds them.

>>> r = AssociationRules(min_support=0.5, min_confidence=0.6, min_len=2).fit(
...     [["bread", "milk"], ["bread", "milk", "eggs"], ["milk"], ["bread", "milk"]])
>>> r.rules_[["antecedents", "consequents", "support", "confidence"]].to_dict("records")[0]
{'antecedents': ('bread',), 'consequents': ('milk',), 'support': 0.75, 'confidence': 1.0}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from plait.analytics.summaries import days
from plait.errors import ModelError

RULE_COLUMNS = ["antecedents", "consequents", "antecedent_support", "consequent_support", "support", "confidence",
                "lift", "leverage", "conviction", "count"]


def _baskets(transactions: Any) -> list[list[Any]]:
    """Item lists from an iterable of item lists or a DataFrame of (basket, item) rows."""
    if hasattr(transactions, "columns"):
        df = transactions
        cols = list(df.columns)
        basket = next((c for c in ("basket_id", "basket", "transaction_id", "order_id") if c in cols), None)
        item = next((c for c in ("item", "product_id", "product", "category") if c in cols), None)
        if basket is None or item is None:
            raise ModelError(f"a basket DataFrame needs a basket column and an item column; it has {cols}",
                             hint="name them basket_id and item")
        grouped = df.groupby(basket, sort=False)[item].agg(list)
        return list(grouped)
    out = []
    for i, t in enumerate(transactions):
        if isinstance(t, (str, bytes)) or not isinstance(t, Iterable):
            raise ModelError(f"transaction {i} is {type(t).__name__}, not a list of items",
                             hint="pass an iterable of item lists, e.g. [['bread', 'milk'], ['eggs']]")
        out.append(list(t))
    return out


class AssociationRules:
    """Frequent itemsets and rules with support, confidence, lift, leverage and conviction.

    ``fit(transactions, hierarchy=None)``: with ``hierarchy`` (item → list of ancestors, e.g.
    ``{"P1": ["Dairy", "Fresh"]}``) each basket also holds its items' ancestors, so rules can
    mix levels (item → category → department); rules pairing an item with its own ancestor
    are dropped as trivially true.
    """

    def __init__(self, min_support: float = 0.01, min_confidence: float = 0.5, *, min_len: int = 1,
                 max_len: int | None = 10, single_consequent: bool = True, min_lift: float | None = None) -> None:
        self.min_support = min_support
        self.min_confidence = min_confidence
        self.min_len = min_len
        self.max_len = max_len
        self.single_consequent = single_consequent
        self.min_lift = min_lift

    def _validate(self) -> None:
        if not 0 < self.min_support <= 1:
            raise ModelError(f"min_support must be in (0, 1], got {self.min_support}")
        if not 0 <= self.min_confidence <= 1:
            raise ModelError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.max_len is not None and self.max_len < max(1, self.min_len):
            raise ModelError(f"max_len {self.max_len} is below min_len {self.min_len}")

    def fit(self, transactions: Any, hierarchy: Mapping[Any, Sequence[Any]] | None = None) -> "AssociationRules":
        import pandas as pd

        self._validate()
        baskets = _baskets(transactions)
        if hierarchy:
            baskets = [list(dict.fromkeys([*b, *(a for i in b for a in hierarchy.get(i, ()))])) for b in baskets]
        n = len(baskets)
        if n == 0:
            raise ModelError("no transactions to mine", hint="check the date range and consent filters")
        self.n_transactions_ = n
        counts, itemsets, labels = self._mine(baskets)
        self.items_ = labels
        self.itemsets_ = pd.DataFrame({
            "itemsets": [tuple(labels[i] for i in s) for s in itemsets],
            "support": np.fromiter((counts[s] for s in itemsets), float, len(itemsets)) / n,
            "count": np.fromiter((counts[s] for s in itemsets), np.int64, len(itemsets)),
        })
        ancestors = None
        if hierarchy:
            index = {lab: k for k, lab in enumerate(labels)}
            ancestors = {index[i]: {index[a] for a in anc if a in index} for i, anc in hierarchy.items() if i in index}
        self.rules_ = self._rules(counts, itemsets, labels, n, ancestors)
        return self

    # -- mining ---------------------------------------------------------------------------------
    def _mine(self, baskets: list[list[Any]]) -> tuple[dict[tuple[int, ...], int], list[tuple[int, ...]], list[Any]]:
        n = len(baskets)
        min_count = max(1, math.ceil(self.min_support * n - 1e-9))
        # Vertical layout: one big integer per item, bit k set when basket k holds it.
        positions: dict[Any, list[int]] = {}
        for k, b in enumerate(baskets):
            for item in set(b):
                positions.setdefault(item, []).append(k)
        frequent = [(item, pos) for item, pos in positions.items() if len(pos) >= min_count]
        # Rarest first keeps the conditional sets small (classic Eclat ordering).
        frequent.sort(key=lambda t: (len(t[1]), str(t[0])))
        labels = [item for item, _ in frequent]
        tids = [_bitset(pos, n) for _, pos in frequent]
        counts: dict[tuple[int, ...], int] = {}
        max_len = self.max_len or len(labels)
        stack: list[tuple[tuple[int, ...], list[tuple[int, int]]]] = [((), [(i, t) for i, t in enumerate(tids)])]
        while stack:
            prefix, cands = stack.pop()
            for j, (i, t) in enumerate(cands):
                s = (*prefix, i)
                counts[s] = t.bit_count()
                if len(s) >= max_len:
                    continue
                ext = []
                for i2, t2 in cands[j + 1:]:
                    u = t & t2
                    if u.bit_count() >= min_count:
                        ext.append((i2, u))
                if ext:
                    stack.append((s, ext))
        return counts, list(counts), labels

    # -- rules ----------------------------------------------------------------------------------
    def _rules(self, counts: dict[tuple[int, ...], int], itemsets: list[tuple[int, ...]], labels: list[Any], n: int,
               ancestors: dict[int, set[int]] | None) -> Any:
        import pandas as pd

        min_len, max_len = max(1, self.min_len), self.max_len or 10 ** 9
        ante, cons, c_rule, c_a, c_c = [], [], [], [], []
        eps = 1e-9
        for s in itemsets:
            if not min_len <= len(s) <= max_len:
                continue
            if ancestors and any(a in s for i in s for a in ancestors.get(i, ())):
                continue
            cs = counts[s]
            if len(s) == 1:     # {} => {item}: arules' rules of length 1
                if cs >= self.min_confidence * n - eps:
                    ante.append(()); cons.append(s); c_rule.append(cs); c_a.append(n); c_c.append(cs)  # noqa: E702
                continue
            sizes = (1,) if self.single_consequent else range(1, len(s))
            for k in sizes:
                for rhs in combinations(s, k):
                    lhs = tuple(i for i in s if i not in rhs)
                    ca = counts[lhs]
                    if cs >= self.min_confidence * ca - eps:
                        ante.append(lhs); cons.append(rhs); c_rule.append(cs); c_a.append(ca)  # noqa: E702
                        c_c.append(counts[rhs])
        cr, ca_, cc = (np.asarray(v, dtype=float) for v in (c_rule, c_a, c_c))
        supp, sa, sc = cr / n, ca_ / n, cc / n
        conf = cr / np.maximum(ca_, 1)
        lift = conf / np.where(sc > 0, sc, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            conviction = np.where(conf >= 1 - 1e-12, np.inf, (1 - sc) / (1 - conf))
        df = pd.DataFrame({
            "antecedents": [tuple(labels[i] for i in a) for a in ante],
            "consequents": [tuple(labels[i] for i in c) for c in cons],
            "antecedent_support": sa, "consequent_support": sc, "support": supp, "confidence": conf,
            "lift": lift, "leverage": supp - sa * sc, "conviction": conviction,
            "count": np.asarray(c_rule, dtype=np.int64),
        }, columns=RULE_COLUMNS)
        if self.min_lift is not None:
            df = df[df["lift"] >= self.min_lift]
        return df.sort_values(["lift", "confidence", "support"], ascending=False, kind="stable").reset_index(drop=True)

    # -- use ------------------------------------------------------------------------------------
    def recommend(self, basket: Iterable[Any], k: int = 5) -> list[dict[str, Any]]:
        """Cross-sell: consequents of rules whose antecedent the basket holds, not already in it,
        best first (confidence × lift), each with the rule that suggests it."""
        if not hasattr(self, "rules_"):
            raise ModelError("AssociationRules is not fitted yet", hint="call .fit(transactions) first")
        have = set(basket)
        best: dict[Any, dict[str, Any]] = {}
        for r in self.rules_.itertuples(index=False):
            if not r.antecedents or not set(r.antecedents) <= have:
                continue
            score = r.confidence * r.lift
            for item in r.consequents:
                if item not in have and (item not in best or score > best[item]["score"]):
                    best[item] = {"item": item, "score": score, "because": r.antecedents, "confidence": r.confidence,
                                  "lift": r.lift}
        return sorted(best.values(), key=lambda d: -d["score"])[:k]


class SequenceRules:
    """Sequential rules "B within ``within_days`` after A", per customer.

    For each customer and item A, the clock starts at their first purchase of A; the rule
    holds for them if they buy B (≠ A) within the window after it. Customers whose first A
    is too close to the end of the data to see the whole window are left out (no censoring
    bias). ``probability`` is the share of those customers who went on to buy B; ``lift``
    compares it with buying B within the same window after a customer's first purchase of
    anything. ``fit`` takes a DataFrame with customer (or profile_id), time (or event_time)
    and item columns; the engine (DuckDB) does the pairing.
    """

    def __init__(self, within_days: float = 30, *, min_customers: int = 10, min_probability: float = 0.05) -> None:
        self.within_days = days("within_days", within_days)
        self.min_customers = min_customers
        self.min_probability = min_probability

    def fit(self, events: Any) -> "SequenceRules":
        import duckdb

        cols = list(getattr(events, "columns", []))
        who = next((c for c in ("customer", "profile_id", "customer_id") if c in cols), None)
        when = next((c for c in ("time", "event_time", "day", "date") if c in cols), None)
        if who is None or when is None or "item" not in cols:
            raise ModelError(f"sequence rules need customer, time and item columns; got {cols}",
                             hint="pass a DataFrame with profile_id, event_time and item")
        con = duckdb.connect()
        try:
            con.register("src", events)
            w = f"INTERVAL {float(self.within_days) * 86400.0} SECOND"
            self.rules_ = con.execute(f"""
                WITH ev AS (SELECT DISTINCT "{who}" AS c, CAST("{when}" AS TIMESTAMP) AS t, CAST(item AS VARCHAR) AS item
                            FROM src WHERE item IS NOT NULL),
                lim AS (SELECT max(t) - {w} AS last_start FROM ev),
                f AS (SELECT c, item, min(t) AS t FROM ev GROUP BY 1, 2),
                elig AS (SELECT * FROM f WHERE t <= (SELECT last_start FROM lim)),
                ante AS (SELECT item AS antecedent, count(*) AS customers FROM elig GROUP BY 1),
                followed AS (
                  SELECT a.item AS antecedent, b.item AS consequent, count(DISTINCT a.c) AS followed,
                         median(date_diff('second', a.t, b.t)) / 86400.0 AS median_days
                  FROM elig a JOIN ev b ON b.c = a.c AND b.item <> a.item AND b.t > a.t AND b.t <= a.t + {w}
                  GROUP BY 1, 2),
                start AS (SELECT c, min(t) AS t FROM ev GROUP BY 1 HAVING min(t) <= (SELECT last_start FROM lim)),
                base AS (
                  SELECT b.item AS consequent, count(DISTINCT s.c) / (SELECT count(*) FROM start) AS baseline
                  FROM start s JOIN ev b ON b.c = s.c AND b.t > s.t AND b.t <= s.t + {w} GROUP BY 1)
                SELECT f.antecedent, f.consequent, a.customers, f.followed,
                       f.followed / a.customers AS probability, coalesce(bs.baseline, 0) AS baseline,
                       (f.followed / a.customers) / nullif(bs.baseline, 0) AS lift, f.median_days
                FROM followed f JOIN ante a USING (antecedent) LEFT JOIN base bs USING (consequent)
                WHERE f.followed >= {int(self.min_customers)} AND f.followed / a.customers >= {float(self.min_probability)}
                ORDER BY lift DESC NULLS LAST, probability DESC, antecedent, consequent""").df()
        finally:
            con.close()
        return self


def _bitset(positions: list[int], n: int) -> int:
    """An integer with bit k set for every k in ``positions`` (built through NumPy's packbits)."""
    bits = np.zeros(n, dtype=np.uint8)
    bits[positions] = 1
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


__all__ = ["RULE_COLUMNS", "AssociationRules", "SequenceRules"]
