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
