"""Learning from outcomes: bandits that choose among offers and learn online, one outcome at a time.

- :class:`ThompsonSampling`: Beta-Bernoulli Thompson sampling per arm (offer). Each decision
  draws a plausible response rate per arm from its posterior; arms that are uncertain get
  tried, arms that disappoint fade. ``learn_one(arm, reward)``.
- :class:`LinearThompson`: the contextual variant — per arm a Bayesian linear model of the
  reward on the decision's features (dotted fields of the view: ``features.orders``,
  ``context.hour``…), sampled the same way (Agrawal & Goyal 2013). ``learn_one(arm, x, reward)``.

Both follow the online contract (river's ``learn_one`` / ``predict_proba_one``) and draw from a
seeded generator, so a simulation replays exactly. A decider uses a learner as an offer's
propensity: ``propensity: {model: "bandit:<name>"}`` with the learner registered under
``<name>``; :meth:`plait.decide.engine.Decider.outcome` feeds rewards back.

Written here rather than taken from a library: the arithmetic is a few lines (Beta draws,
a rank-one update of a small matrix), and the river/vowpal alternatives would bring a heavy
dependency for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from plait.decide.scoring import _at, _num


class ThompsonSampling:
    """Beta(``alpha``, ``beta``) prior per arm; rewards in [0, 1]."""

    def __init__(self, *, alpha: float = 1.0, beta: float = 1.0, seed: int | None = None) -> None:
        self.alpha, self.beta = alpha, beta
        self.rng = np.random.default_rng(seed)
        self.wins: dict[str, float] = {}
        self.trials: dict[str, float] = {}

    def draw(self, arm: str) -> float:
        w, n = self.wins.get(arm, 0.0), self.trials.get(arm, 0.0)
        return float(self.rng.beta(self.alpha + w, self.beta + n - w))

    def predict_proba_one(self, x: Mapping[str, Any] | None = None, *, arm: str) -> float:
        """A posterior draw for ``arm`` (what a decision ranks by)."""
        return self.draw(arm)

    def mean(self, arm: str) -> float:
        w, n = self.wins.get(arm, 0.0), self.trials.get(arm, 0.0)
        return (self.alpha + w) / (self.alpha + self.beta + n)

    def choose(self, arms: Sequence[str]) -> str:
        draws = [self.draw(a) for a in arms]
        return arms[int(np.argmax(draws))]

    def learn_one(self, arm: str, reward: float, x: Mapping[str, Any] | None = None) -> "ThompsonSampling":
        r = min(max(float(reward), 0.0), 1.0)
        self.wins[arm] = self.wins.get(arm, 0.0) + r
        self.trials[arm] = self.trials.get(arm, 0.0) + 1.0
        return self


class LinearThompson:
    """Per arm: reward ≈ θ·x with θ ~ N(A⁻¹b, v²A⁻¹), A = λI + Σxxᵀ, b = Σ r x; ``features`` are
    dotted paths (missing values count as 0), or ``path=value`` indicators; a constant term is added."""

    def __init__(self, features: Sequence[str], *, l2: float = 1.0, v: float = 0.25, seed: int | None = None) -> None:
        self.features = list(features)
        self.l2, self.v = l2, v
        self.rng = np.random.default_rng(seed)
        self.d = len(self.features) + 1
        # Each dotted path is split once and read once a vector: indicators usually share one
        # (features.favourite_category=Dairy, =Produce, ...).
        paths = list(dict.fromkeys(f.partition("=")[0] if "=" in f else f for f in self.features))
        self._paths = [p.split(".") for p in paths]
        self._slots = [(paths.index(f.partition("=")[0]), f.partition("=")[2]) if "=" in f else (paths.index(f), None)
                       for f in self.features]
        self.A: dict[str, np.ndarray] = {}
        self.A_inv: dict[str, np.ndarray] = {}
        self.b: dict[str, np.ndarray] = {}

    def vector(self, x: Mapping[str, Any]) -> np.ndarray:
        values = [_at(x, parts) for parts in self._paths]
        out = [1.0]
        for j, want in self._slots:
            v = values[j]
            if want is not None:               # an indicator
                out.append(1.0 if str(v) == want else 0.0)
            else:
                n = _num(v)
                out.append(0.0 if n is None else n)
        return np.array(out)

    def _arm(self, arm: str) -> None:
        if arm not in self.A:
            self.A[arm] = self.l2 * np.eye(self.d)
            self.A_inv[arm] = np.eye(self.d) / self.l2
            self.b[arm] = np.zeros(self.d)

    def predict_proba_one(self, x: Mapping[str, Any], *, arm: str) -> float:
        """A posterior draw of the expected reward for ``arm`` given ``x`` (clipped to [0, 1])."""
        return self.draw(self.vector(x), arm)

    def draw(self, z: np.ndarray, arm: str) -> float:
        """:meth:`predict_proba_one` on an already built :meth:`vector`."""
        self._arm(arm)
        A_inv = self.A_inv[arm]
        mu = A_inv @ self.b[arm]
        # θ·z is normal: mean μ·z, variance v² zᵀA⁻¹z — one draw instead of a d-dimensional one.
        s = self.v * float(np.sqrt(max(z @ A_inv @ z, 0.0)))
        return float(min(max(mu @ z + s * self.rng.standard_normal(), 0.0), 1.0))

    def mean(self, x: Mapping[str, Any], arm: str) -> float:
        return self.mean_at(self.vector(x), arm)

    def mean_at(self, z: np.ndarray, arm: str) -> float:
        self._arm(arm)
        return float((self.A_inv[arm] @ self.b[arm]) @ z)

    def choose(self, arms: Sequence[str], x: Mapping[str, Any]) -> str:
        z = self.vector(x)
        return arms[int(np.argmax([self.draw(z, a) for a in arms]))]

    def learn_one(self, arm: str, reward: float, x: Mapping[str, Any] | None = None) -> "LinearThompson":
        return self.learn_at(self.vector(x or {}), arm, reward)

    def learn_at(self, z: np.ndarray, arm: str, reward: float) -> "LinearThompson":
        """:meth:`learn_one` on an already built :meth:`vector`."""
        self._arm(arm)
        Ai = self.A_inv[arm]
        Az = Ai @ z
        self.A_inv[arm] = Ai - np.outer(Az, Az) / (1.0 + z @ Az)      # Sherman–Morrison
        self.A[arm] += np.outer(z, z)
        self.b[arm] += float(reward) * z
        return self


class UpliftThompson:
    """Chooses the offer with the largest sampled *uplift* — what it adds over not offering —
    or no offer when none adds anything.

    Offers belong to groups (an offer's category); the outcome of a decision is observed per
    group (profit or purchases in each category). A baseline model per group learns the outcome
    without an offer in that group from every decision that did not offer it (so every
    decision teaches the baselines of the groups it left alone), and a model per offer learns
    the outcome in its group when offered; the uplift is their difference. Both are the
    contextual linear models of :class:`LinearThompson`; ``groups`` maps offer → group."""

    def __init__(self, features: Sequence[str], groups: Mapping[str, str], *, none: str = "no-offer",
                 l2: float = 1.0, v: float = 0.05, seed: int | None = None) -> None:
        self.groups = dict(groups)
        self.none = none
        self.offer = LinearThompson(features, l2=l2, v=v, seed=seed)
        self.base = LinearThompson(features, l2=l2, v=v, seed=None if seed is None else seed + 1)

    def predict_proba_one(self, x: Mapping[str, Any], *, arm: str) -> float:
        """A sampled uplift for ``arm`` (0 for the no-offer arm); may be negative."""
        g = self.groups.get(arm)
        if g is None:
            return 0.0
        z = self.offer.vector(x)                 # (both models read the same features)
        return self.offer.draw(z, arm) - self.base.mean_at(z, g)

    def choose(self, arms: Sequence[str], x: Mapping[str, Any]) -> str:
        return arms[int(np.argmax([self.predict_proba_one(x, arm=a) for a in arms]))]

    def learn_one(self, arm: str, reward: Mapping[str, float], x: Mapping[str, Any] | None = None) -> "UpliftThompson":
        """``reward`` maps each group to its (normalised) outcome in this decision."""
        g_offered = self.groups.get(arm)
        z = self.offer.vector(x or {})
        for g, r in reward.items():
            if g == g_offered:
                self.offer.learn_at(z, arm, r)
            else:
                self.base.learn_at(z, g, r)
        return self


__all__ = ["LinearThompson", "ThompsonSampling", "UpliftThompson"]
