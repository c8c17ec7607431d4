"""Off-policy evaluation: IPS, SNIPS and doubly robust on planted truth and on the Open Bandit Dataset."""

from __future__ import annotations

import numpy as np
import pytest

from plait.decide.evaluation import doubly_robust, ips, read_obd
from plait.errors import ModelError

RATES = np.array([0.02, 0.05, 0.10, 0.04, 0.03])


def logged(rng, n=20_000):  # noqa: ANN001, ANN201
    """Uniformly random logging over 5 arms; the new policy plays arm 2 with 0.8, else uniform."""
    a = rng.integers(0, 5, n)
    r = (rng.random(n) < RATES[a]).astype(float)
    target = np.where(a == 2, 0.8 + 0.2 / 5, 0.2 / 5)
    return a, r, np.full(n, 0.2), target


def test_estimators_cover_the_new_policys_true_value():
    truth = 0.8 * RATES[2] + 0.2 * RATES.mean()
    rng = np.random.default_rng(0)
    covered = {"ips": 0, "snips": 0, "doubly_robust": 0}
    for _ in range(200):
        a, r, b, t = logged(rng)
        # A decent reward model (off by a little) for DR.
        q = RATES * 1.1
        q_t = 0.8 * q[2] + 0.2 * q.mean()
        for e in (ips(r, b, t), ips(r, b, t, self_normalised=True), doubly_robust(r, b, t, q[a], np.full(a.size, q_t))):
            covered[e.method] += e.low <= truth <= e.high
    assert all(0.91 <= c / 200 <= 0.99 for c in covered.values()), covered


def test_doubly_robust_is_more_precise_when_the_model_explains_the_reward():
    # Revenue per decision: mostly the arm's value (which a model predicts), plus noise.
    value = np.array([20.0, 50.0, 100.0, 40.0, 30.0])
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, 20_000)
    r = value[a] + rng.normal(0, 10, a.size)
    b, t = np.full(a.size, 0.2), np.where(a == 2, 0.84, 0.04)
    truth = 0.8 * value[2] + 0.2 * value.mean()
    q = value * 1.05
    e_dr = doubly_robust(r, b, t, q[a], np.full(a.size, 0.8 * q[2] + 0.2 * q.mean()))
    e_ips = ips(r, b, t)
    assert e_dr.low <= truth <= e_dr.high and e_ips.low <= truth <= e_ips.high
    assert (e_dr.high - e_dr.low) < 0.5 * (e_ips.high - e_ips.low)


def test_bad_probabilities_are_refused():
    with pytest.raises(ModelError, match="in \\(0, 1\\]"):
        ips([1, 0], [0.5, 0.0], [0.5, 0.5])
    with pytest.raises(ModelError, match="same length"):
        ips([1, 0], [0.5], [0.5, 0.5])


def test_open_bandit_dataset_thompson_sampling_evaluated_from_random_logs():
    try:
        rnd, bts = read_obd("random"), read_obd("bts")
    except ModelError as e:
        pytest.skip(str(e))
    # The Bernoulli Thompson sampling policy's action distribution per position, from its own log.
    freq = (bts.groupby(["position", "item_id"]).size() / bts.groupby("position").size()).to_dict()
    target = np.array([freq.get((p, i), 0.0) for p, i in zip(rnd["position"], rnd["item_id"])])
    r, b = rnd["click"].to_numpy(float), rnd["propensity_score"].to_numpy(float)
    on_policy = bts["click"].mean()                                  # what BTS really earned
    e_ips, e_sn = ips(r, b, target), ips(r, b, target, self_normalised=True)
    # Reward model: click rate per item and position (smoothed), fitted on the random log.
    stats = rnd.groupby(["item_id", "position"])["click"].agg(["sum", "count"])
    prior = r.mean()
    q = ((stats["sum"] + 20 * prior) / (stats["count"] + 20)).to_dict()
    q_logged = np.array([q.get((i, p), prior) for i, p in zip(rnd["item_id"], rnd["position"])])
    q_pos = {pos: sum(f * q.get((i, pos), prior) for (p2, i), f in freq.items() if p2 == pos) for pos in (1, 2, 3)}
    e_dr = doubly_robust(r, b, target, q_logged, np.array([q_pos[p] for p in rnd["position"]]))
    for e in (e_ips, e_sn, e_dr):
        assert e.low <= on_policy <= e.high, (e, on_policy)
        assert abs(e.value - on_policy) / on_policy < 0.5
    assert e_ips.ess < len(rnd)                                       # the weights cost samples
