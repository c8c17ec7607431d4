"""Bandits: Thompson sampling converges, the contextual variant learns who likes what, and a
decider learns from outcomes."""

from __future__ import annotations

import numpy as np

from plait.config import DecideSettings
from plait.decide import Decider, RuleBook
from plait.decide.learners import LinearThompson, ThompsonSampling
from plait.profiles.online import MemoryStore


def test_thompson_sampling_finds_the_best_arm():
    rates = {"a": 0.02, "b": 0.05, "c": 0.08}
    rng = np.random.default_rng(1)
    ts = ThompsonSampling(seed=2)
    picks = []
    for _ in range(6000):
        arm = ts.choose(list(rates))
        ts.learn_one(arm, float(rng.random() < rates[arm]))
        picks.append(arm)
    late = picks[-1500:]
    assert late.count("c") / len(late) > 0.7
    assert picks[:500].count("a") > late.count("a") / 3        # explored early, abandoned later
    assert abs(ts.mean("c") - 0.08) < 0.02


def test_contextual_thompson_learns_who_likes_what():
    rng = np.random.default_rng(3)
    lt = LinearThompson(["features.young"], seed=4)

    def p(arm: str, young: int) -> float:
        return {("sneakers", 1): 0.30, ("sneakers", 0): 0.05, ("loafers", 1): 0.05, ("loafers", 0): 0.25}[(arm, young)]

    for _ in range(4000):
        young = int(rng.random() < 0.5)
        x = {"features": {"young": young}}
        arm = lt.choose(["sneakers", "loafers"], x)
        lt.learn_one(arm, float(rng.random() < p(arm, young)), x)
    wins = {y: sum(lt.choose(["sneakers", "loafers"], {"features": {"young": y}}) == best for _ in range(200))
            for y, best in ((1, "sneakers"), (0, "loafers"))}
    assert wins[1] > 170 and wins[0] > 170
    assert abs(lt.mean({"features": {"young": 1}}, "sneakers") - 0.30) < 0.06


def test_a_decider_learns_from_outcomes():
    true = {"o1": 0.02, "o2": 0.10, "o3": 0.04}
    book = RuleBook(data={"offers": [{"id": o, "value": 1, "propensity": {"model": "bandit:web"}} for o in true],
                          "rules": [{"id": "all", "actions": [{"offer": o} for o in true]}]})
    store = MemoryStore()
    for i in range(50):
        store.put({"profile_id": f"p{i}", "consent": {"personalisation": True}}, identifiers=[f"user_id:u{i}"])
    d = Decider(book, store, settings=DecideSettings(global_control=0, caps={}))
    d.learners["web"] = ThompsonSampling(seed=5)
    rng = np.random.default_rng(6)
    shown = []
    for k in range(4000):
        r = d.decide({"customer": f"user_id:u{k % 50}", "placement": "web_banner", "max_actions": 1})
        oid = r.actions[0]["offer_id"]
        shown.append(oid)
        d.outcome(r.decision_id, oid, float(rng.random() < true[oid]))
        assert "from bandit:web" in r.actions[0]["reasons"][1]
    assert shown[-1000:].count("o2") > 700
    assert d.contacts.accepted["o2"] > d.contacts.accepted["o1"]


def test_the_learned_policy_beats_random_offers_and_no_action_on_true_incremental_profit():
    # A simulated day of visits through the decider: offers ranked by an uplift bandit that learns
    # from each visit's purchases, scored against the simulator's true incremental profit.
    from datetime import date

    from plait.decide.learners import UpliftThompson
    from plait.simulate.offers import OfferTruth, run_day
    from plait.simulate.world import build_world

    w = build_world(4000, 90, date(2025, 1, 1), 11)
    truth = OfferTruth(w)
    store = MemoryStore()
    noise = np.random.default_rng(2).normal(0, 0.15, w.n)
    for p in range(w.n):      # what the retailer knows: favourite category, share bought on promotion
        store.put({"profile_id": f"p{p}", "consent": {"personalisation": True}, "scores": {},
                   "features": {"favourite_category": w.categories[int(w.taste[p].argmax())],
                                "promo_share": float(w.price_sensitivity[p] * 0.5 + noise[p])}},
                  identifiers=[f"user_id:u{p}"])
    d = Decider(RuleBook(data=truth.rules("day")), store, settings=DecideSettings(global_control=0, caps={}))
    cats = list(truth.cat_index)
    d.learners["day"] = UpliftThompson([f"features.favourite_category={c}" for c in cats] + ["features.promo_share"],
                                       {o["id"]: o["category"] for o in truth.offers}, seed=3)
    last: dict[str, str] = {}

    def learned(k: int, p: int) -> str:
        r = d.decide({"customer": f"user_id:u{p}", "placement": "web_banner", "max_actions": 1})
        last["id"], last["offer"] = r.decision_id, r.actions[0]["offer_id"]
        return last["offer"]

    def learn(p: int, offer: str | None, profit: dict[str, float]) -> None:
        d.outcome(last["id"], last["offer"], {c: profit[c] / (truth.basket[c] * truth.margin) for c in profit})

    arms = [o["id"] for o in truth.offers]
    pick = np.random.default_rng(5)
    visits = truth.visits(12_000, np.random.default_rng(6))
    # No action earns 0 incremental profit by definition, so beating it is being above 0.
    res = run_day(truth, visits, {"random": lambda k, p: arms[int(pick.integers(len(arms)))], "learned": learned},
                  {"learned": learn})
    assert res["learned"]["per_1000_second_half"] > 1.1 * res["random"]["per_1000_second_half"] > 0
    assert res["learned"]["per_1000_visits"] > res["random"]["per_1000_visits"]
