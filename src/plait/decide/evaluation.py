"""Off-policy evaluation: what a new policy would have earned, from decisions logged under another.

Every logged decision records the action taken, the probability the logging policy gave it
(``behavior``), and the reward that followed. For a new policy that would have taken that action
with probability ``target``:

- :func:`ips` — inverse propensity scoring: the mean of ``reward × target / behavior``
  (unbiased when the logging probabilities are right and never zero where the new policy acts);
  ``self_normalised=True`` divides by the mean weight instead (SNIPS: a little bias, much less
  variance when weights are extreme);
- :func:`doubly_robust` — a reward model's prediction for the new policy, corrected by the
  importance-weighted error of that model on the logged actions (Dudík et al. 2011): unbiased if
  either the propensities or the reward model are right, and lower variance than IPS when the
  model is decent.

Each returns an :class:`Estimate` with a normal 95 % interval and the effective sample size
(how many logged decisions the weights are worth). :func:`read_obd` reads the Open Bandit
Dataset sample that ships inside the ``obp`` wheel (ZOZOTOWN fashion recommendations logged
under uniform random and Bernoulli Thompson sampling policies) by path, without importing obp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from plait.errors import ModelError

if TYPE_CHECKING:
    import pandas as pd

Z = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int
    ess: float                  # effective sample size of the weights
    method: str

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "value": self.value, "low": self.low, "high": self.high, "n": self.n,
                "effective_n": self.ess}


def _weights(behavior: Any, target: Any, n: int) -> np.ndarray:
    b = np.asarray(behavior, float)
    t = np.asarray(target, float)
    if b.shape != (n,) or t.shape != (n,):
        raise ModelError(f"rewards, behavior and target must have the same length ({n})")
    if (b <= 0).any() or (b > 1).any() or (t < 0).any() or (t > 1).any():
        raise ModelError("probabilities must lie in (0, 1] for the logging policy and [0, 1] for the new one",
                         hint="a logged action with probability 0 cannot have been logged; check the logging")
    return t / b


def _estimate(terms: np.ndarray, w: np.ndarray, method: str, scale: float = 1.0) -> Estimate:
    n = terms.size
    value = float(terms.mean()) / scale
    se = float(terms.std(ddof=1) / math.sqrt(n)) / scale if n > 1 else float("inf")
    ess = float(w.sum() ** 2 / (w ** 2).sum()) if (w ** 2).sum() > 0 else 0.0
    return Estimate(value, value - Z * se, value + Z * se, n, ess, method)


def ips(rewards: Any, behavior: Any, target: Any, *, self_normalised: bool = False) -> Estimate:
    """The new policy's mean reward by (self-normalised) inverse propensity scoring."""
    r = np.asarray(rewards, float)
    w = _weights(behavior, target, r.size)
    if not self_normalised:
        return _estimate(w * r, w, "ips")
    mean_w = float(w.mean())
    if mean_w == 0:
        raise ModelError("the new policy never takes a logged action: nothing to evaluate it on")
    # Delta method: the ratio's variance from the linearised terms w (r - V).
    v = float((w * r).sum() / w.sum())
    est = _estimate(w * (r - v), w, "snips", scale=mean_w)
    return Estimate(v, v + est.low - est.value, v + est.high - est.value, est.n, est.ess, "snips")


def doubly_robust(rewards: Any, behavior: Any, target: Any, q_logged: Any, q_target: Any) -> Estimate:
    """``q_logged``: the reward model's prediction for each logged action; ``q_target``: its
    expected reward under the new policy in the same context (Σₐ target(a|x) q(x, a))."""
    r = np.asarray(rewards, float)
    w = _weights(behavior, target, r.size)
    q_l, q_t = np.asarray(q_logged, float), np.asarray(q_target, float)
    if q_l.shape != r.shape or q_t.shape != r.shape:
        raise ModelError("q_logged and q_target need one value per logged decision")
    return _estimate(q_t + w * (r - q_l), w, "doubly_robust")


def read_obd(behavior: str = "random", campaign: str = "all", path: str | Path | None = None) -> "pd.DataFrame":
    """The Open Bandit Dataset sample logged by ``behavior`` ("random" or "bts") for ``campaign``
    ("all", "men", "women"): one row per impression with item_id, position, click,
    propensity_score and the user and affinity features."""
    import importlib.util

    import pandas as pd

    if path is None:
        spec = importlib.util.find_spec("obp")
        if spec is None or not spec.submodule_search_locations:
            raise ModelError("the Open Bandit Dataset sample is not installed",
                             hint="pip install --no-deps obp (its wheel ships the sample)")
        path = Path(list(spec.submodule_search_locations)[0]) / "dataset" / "obd" / behavior / campaign / f"{campaign}.csv"
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p} does not exist", hint="behavior is random or bts; campaign all, men or women")
    return pd.read_csv(p, index_col=0)


__all__ = ["Estimate", "doubly_robust", "ips", "read_obd"]
