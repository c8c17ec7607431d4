"""How the simulated people answer offers: the ground truth real-time decisions are judged by.

When a customer visits, they may buy in a category anyway: ``q0 = 0.3 × (1 − (1 − taste)^2.4)``
(an order in 3 visits in 10, a basket of ~2.4 lines drawn by taste). A discount of depth ``d``
in that category adds ``Δ = (1 − q0) × min(0.9, 2.5 × d × price sensitivity × (0.3 + taste))``
purchases: price-sensitive people who like the category respond; others barely do. A purchase
is worth the category's basket value ``B`` at margin ``m`` (0.35), less the discount. So an
offer's true incremental profit is ``Δ·B·(m − d) − q0·B·d``: it pays where it *changes*
behaviour, and costs where it subsidises purchases that would have happened anyway — the
difference between targeting by propensity and targeting by uplift.

:class:`OfferTruth` gives the catalogue of offers (category × depth), the rules a decider needs
to choose among them (or no offer) with a bandit, the expected and incremental profit of any
choice, realised outcomes, and visits drawn by activity. :func:`run_day` plays a stream of visits
through any policy and scores it against the truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from plait.simulate.world import World

NO_OFFER = "no-offer"


class OfferTruth:
    def __init__(self, w: World, *, categories: Sequence[str] | None = None, depths: Sequence[float] = (0.1, 0.2),
                 margin: float = 0.35) -> None:
        self.w = w
        self.margin = margin
        popular = np.argsort(-w.taste.sum(axis=0))
        cats = list(categories) if categories else [w.categories[i] for i in popular[:6]]
        self.cat_index = {c: w.categories.index(c) for c in cats}
        price = w.products["price"]
        self.basket = {c: 2.0 * float(price[w.products["category"] == i].mean()) for c, i in self.cat_index.items()}
        self.offers = [{"id": f"{c.lower()}-{int(d * 100)}", "category": c, "discount": float(d)}
                       for c in cats for d in depths]
        self.by_id = {o["id"]: o for o in self.offers}
        self.scale = sum(self.basket.values()) * margin      # a visit's profit is at most this

    def q0(self, p: int, category: str) -> float:
        t = self.w.taste[p, self.cat_index[category]]
        return 0.3 * (1 - (1 - t) ** 2.4)

    def delta(self, p: int, category: str, d: float) -> float:
        t = self.w.taste[p, self.cat_index[category]]
        return (1 - self.q0(p, category)) * min(0.9, 2.5 * d * self.w.price_sensitivity[p] * (0.3 + t))

    def expected_profit(self, p: int, offer_id: str | None) -> float:
        """Expected profit of this visit across the offer categories, given the choice."""
        total = 0.0
        chosen = self.by_id.get(offer_id or "")
        for c in self.cat_index:
            q, m = self.q0(p, c), self.margin
            if chosen is not None and chosen["category"] == c:
                d = chosen["discount"]
                total += (q + self.delta(p, c, d)) * self.basket[c] * (m - d)
            else:
                total += q * self.basket[c] * m
        return total

    def incremental(self, p: int, offer_id: str | None) -> float:
        return self.expected_profit(p, offer_id) - self.expected_profit(p, None)

    def outcome(self, p: int, offer_id: str | None, rng: np.random.Generator) -> dict[str, float]:
        """Realised profit of the visit per offer category (what a retailer observes: what was
        bought, in which category, at what price), the chosen category discounted."""
        o = self.by_id.get(offer_id or "")
        out = {}
        for c in self.cat_index:
            q, m = self.q0(p, c), self.margin
            if o is not None and o["category"] == c:
                q, m = q + self.delta(p, c, o["discount"]), m - o["discount"]
            out[c] = float(rng.random() < q) * self.basket[c] * m
        return out

    def group(self, offer_id: str) -> str | None:
        o = self.by_id.get(offer_id)
        return o["category"] if o else None

    def visits(self, n: int, rng: np.random.Generator, people: np.ndarray | None = None) -> np.ndarray:
        """``n`` visits by ``people`` (default everyone), more for the more active."""
        pool = np.arange(self.w.n) if people is None else np.asarray(people)
        weight = self.w.activity[pool] / self.w.activity[pool].sum()
        return pool[rng.choice(pool.size, n, p=weight)]

    def rules(self, learner: str = "offers") -> dict[str, Any]:
        """Offers (and a "no offer" arm) ranked by the bandit ``learner``, one rule offering all."""
        offers = [{"id": o["id"], "name": f"{o['discount']:.0%} off {o['category']}", "value": 1.0,
                   "discount": o["discount"], "propensity": {"model": f"bandit:{learner}"}} for o in self.offers]
        offers.append({"id": NO_OFFER, "name": "no offer", "value": 1.0, "propensity": {"model": f"bandit:{learner}"}})
        return {"offers": offers, "rules": [{"id": "visit", "actions": [{"offer": o["id"]} for o in offers]}]}


def run_day(truth: OfferTruth, visits: np.ndarray, policies: dict[str, Callable[[int, int], str | None]],
            learn: dict[str, Callable[[int, str | None, dict[str, float]], None]] | None = None, *,
            seed: int = 0) -> dict[str, Any]:
    """Play ``visits`` (person indices) through each policy ``(visit_no, person) -> offer id or
    None``; ``learn[name](person, offer, realised profit per category)`` is told each outcome. Returns per
    policy the true incremental profit (expected, not sampled) in total, per 1,000 visits, and
    over the second half of the day (after learning), and the share of visits given an offer."""
    out: dict[str, Any] = {}
    for name, choose in policies.items():
        rng = np.random.default_rng(seed)
        inc = np.zeros(visits.size)
        offered = 0
        for k, p in enumerate(visits):
            o = choose(k, int(p))
            o = None if o == NO_OFFER else o
            inc[k] = truth.incremental(int(p), o)
            offered += o is not None
            if learn and name in learn:
                learn[name](int(p), o, truth.outcome(int(p), o, rng))
        half = visits.size // 2
        out[name] = {"incremental_profit": float(inc.sum()), "per_1000_visits": float(inc.mean() * 1000),
                     "per_1000_second_half": float(inc[half:].mean() * 1000), "offer_share": offered / visits.size}
    return out


__all__ = ["NO_OFFER", "OfferTruth", "run_day"]
