"""Customer lifetime value: BG/NBD, Pareto/NBD and Gamma-Gamma by maximum likelihood.

Each model takes the classic repeat-purchase summary per customer — ``frequency`` (repeat
purchases, x), ``recency`` (time of the last purchase since the first, t_x), ``T`` (time since
the first purchase) and, for Gamma-Gamma, ``monetary_value`` (mean value of the repeat
purchases) — as arrays or a DataFrame, and follows the estimator conventions: ``__init__``
stores settings, ``fit`` returns ``self``, learned state ends in ``_`` (``params_``,
``log_likelihood_``).

Why written here rather than imported: ``lifetimes`` is unmaintained (its last release predates
NumPy 2 and pandas 2) and its Pareto/NBD fit is slow. The log-likelihoods below are the
published ones (Fader, Hardie & Lee 2005 for BG/NBD; Fader & Hardie's 2005 note for
Pareto/NBD; Fader, Hardie & Berger 2004 for Gamma-Gamma), written in log space with
``logaddexp``/``log1p`` so no term overflows, and evaluated once per *distinct* (x, t_x, T)
triple weighted by how many customers share it — on a million customers that is a fraction
of the rows. Parameters are optimised on the log scale (they are all positive) with
L-BFGS-B and analytic-free finite differences; SciPy does the optimisation and the special
functions.

>>> import numpy as np
>>> m = BetaGeoModel().fit([2, 1, 0, 0, 5], [30.4, 1.7, 0, 0, 31.0], [38.9, 38.9, 38.9, 38.0, 38.0])
>>> sorted(m.params_)
['a', 'alpha', 'b', 'r']
>>> bool(np.all(m.p_alive([0], [0], [10]) == 1.0))
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from plait.errors import ModelError


ArrayLike = Any


def _arrays(frequency: ArrayLike, recency: ArrayLike | None, T: ArrayLike | None,
            monetary_value: ArrayLike | None = None, *, need_monetary: bool = False) -> tuple[np.ndarray, ...]:
    """Columns as float arrays, from arrays or a DataFrame with frequency/recency/T[/monetary_value]."""
    if recency is None and hasattr(frequency, "columns"):
        df = frequency
        cols = {c.lower(): c for c in df.columns}
        pick = lambda *names: next((df[cols[n]] for n in names if n in cols), None)  # noqa: E731
        frequency, recency, T = pick("frequency", "x"), pick("recency", "t_x"), pick("t")
        monetary_value = pick("monetary_value", "zbar", "m")
        if frequency is None or (recency is None and not need_monetary) or (T is None and not need_monetary):
            raise ModelError("a summary DataFrame needs columns frequency, recency and T",
                             hint="compute them with plait.analytics.summaries or rename your columns")
    x = np.asarray(frequency, dtype=float)
    out = [x]
    for name, v in (("recency", recency), ("T", T)):
        if v is None:
            if need_monetary:
                continue
            raise ModelError(f"{name} is missing", hint="pass frequency, recency and T")
        a = np.asarray(v, dtype=float)
        if a.shape != x.shape:
            raise ModelError(f"{name} has {a.size} values but frequency has {x.size}")
        out.append(a)
    if need_monetary:
        if monetary_value is None:
            raise ModelError("monetary_value is missing", hint="pass the mean value of each customer's repeat purchases")
        m = np.asarray(monetary_value, dtype=float)
        if m.shape != x.shape:
            raise ModelError(f"monetary_value has {m.size} values but frequency has {x.size}")
        out.append(m)
    bad = ~np.isfinite(np.stack(out)).all(axis=0) | (x < 0)
    if len(out) >= 3:
        bad |= (out[1] < 0) | (out[2] < out[1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ModelError(f"customer at position {i} has an impossible summary "
                         f"({', '.join(f'{v[i]:g}' for v in out)}): counts must be ≥ 0 and 0 ≤ recency ≤ T",
                         hint="check the observation end date and the unit of time")
    if len(out) >= 3 and np.any((x == 0) & (out[1] > 0)):
        i = int(np.flatnonzero((x == 0) & (out[1] > 0))[0])
        raise ModelError(f"customer at position {i} has no repeat purchase but recency {out[1][i]:g}",
                         hint="recency is the time of the last *repeat* purchase since the first; 0 when there is none")
    return tuple(out)


def _compress(*cols: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Distinct rows of ``cols`` and how many customers share each."""
    key, counts = _codes(cols)
    first = np.unique(key, return_index=True)[1]
    return tuple(c[first] for c in cols), counts.astype(float)


def _codes(cols: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A code per row equal exactly when the rows are (sorted codes order = np.unique order)."""
    code = np.zeros(cols[0].size, dtype=np.int64)
    for c in cols:
        _, inv = np.unique(c, return_inverse=True)
        code = code * (int(inv.max()) + 1 if inv.size else 1) + inv
        code = np.unique(code, return_inverse=True)[1]   # re-densify so products never overflow
    _, counts = np.unique(code, return_counts=True)
    return code, counts


class _Summary:
    """(x, t_x, T) compressed to distinct triples with weights; terms that depend on fewer
    columns are computed once per distinct (x), (x, t_x) or (x, T) and gathered — the
    likelihood's costly special functions then run on a few thousand values, not millions."""

    def __init__(self, x: np.ndarray, tx: np.ndarray, T: np.ndarray, *, compress: bool = True) -> None:
        if compress:
            (x, tx, T), self.w = _compress(x, tx, T)
        else:
            self.w = np.ones_like(x)
        self.x, self.tx, self.T = x, tx, T
        self._keys = {"x": (x,), "tx": (x, tx), "T": (x, T)}
        self._index: dict[str, tuple[tuple[np.ndarray, ...], np.ndarray]] = {}

    def by(self, key: str, f: Any) -> np.ndarray:
        """``f`` evaluated on each distinct value of columns ``key`` ("x", "tx" or "T"), per row."""
        if key not in self._index:
            cols = self._keys[key]
            code, _ = _codes(cols)
            _, first, inv = np.unique(code, return_index=True, return_inverse=True)
            self._index[key] = (tuple(c[first] for c in cols), inv)
        cols, inv = self._index[key]
        return np.asarray(f(*cols))[inv]


@dataclass
class _Fit:
    names: tuple[str, ...]

    def run(self, nll, n: float, x0: Sequence[float], grad=None) -> tuple[dict[str, float], float, bool]:  # noqa: ANN001
        """Minimise ``nll`` over log-parameters; ``grad(params)`` (d nll / d params), when the
        model has one, replaces finite differences (chain rule: × params on the log scale)."""
        from scipy.optimize import minimize

        def f(z: np.ndarray) -> float:
            v = nll(np.exp(z))
            return v / n if np.isfinite(v) else 1e300

        def fg(z: np.ndarray) -> tuple[float, np.ndarray]:
            p = np.exp(z)
            v = nll(p)
            if not np.isfinite(v):
                return 1e300, np.zeros_like(z)
            return v / n, grad(p) * p / n

        res = minimize(fg if grad else f, np.log(np.asarray(x0, dtype=float)), method="L-BFGS-B", jac=bool(grad),
                       bounds=[(-20.0, 20.0)] * len(x0), options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9})
        params = dict(zip(self.names, map(float, np.exp(res.x))))
        return params, -float(res.fun) * n, bool(res.success)


class _Model:
    _names: tuple[str, ...] = ()
    params_: dict[str, float]
    log_likelihood_: float

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def _check(self) -> dict[str, float]:
        if not hasattr(self, "params_"):
            raise ModelError(f"{type(self).__name__} is not fitted yet", hint="call .fit(...) first")
        return self.params_

    def _penalty(self, p: np.ndarray) -> float:
        return self.penalizer * float(np.sum(p ** 2))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.4g}" for k, v in getattr(self, "params_", {}).items())
        return f"{type(self).__name__}({inner or 'unfitted'})"


class BetaGeoModel(_Model):
    """BG/NBD: purchases while alive follow a Poisson process (rates ~ Gamma(r, α)); after
    each purchase the customer drops out with probability p (~ Beta(a, b))."""

    _names = ("r", "alpha", "a", "b")

    @staticmethod
    def _ll(p: np.ndarray, d: _Summary) -> np.ndarray:
        from scipy.special import gammaln

        r, alpha, a, b = p
        a12 = d.by("x", lambda x: gammaln(r + x) - gammaln(r) + r * np.log(alpha)
                   + gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x))
        a3 = d.by("T", lambda x, T: -(r + x) * np.log(alpha + T))

        def a4(x: np.ndarray, tx: np.ndarray) -> np.ndarray:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + tx),
                                -np.inf)
        return a12 + np.logaddexp(a3, d.by("tx", a4))

    def fit(self, frequency: ArrayLike, recency: ArrayLike | None = None, T: ArrayLike | None = None,
            initial: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> "BetaGeoModel":
        x, tx, TT = _arrays(frequency, recency, T)
        d = _Summary(x, tx, TT)
        nll = lambda p: -float(d.w @ self._ll(p, d)) + self._penalty(p)  # noqa: E731
        grad = lambda p: -self._grad(p, d) + 2 * self.penalizer * p  # noqa: E731
        self.params_, self.log_likelihood_, self.converged_ = _Fit(self._names).run(nll, d.w.sum(), initial, grad)
        self.n_customers_ = int(x.size)
        return self

    @staticmethod
    def _grad(p: np.ndarray, d: _Summary) -> np.ndarray:
        """d LL / d (r, α, a, b), summed over customers."""
        from scipy.special import digamma

        r, alpha, a, b = p
        x, tx, T, w = d.x, d.tx, d.T, d.w
        a3 = -(r + x) * np.log(alpha + T)
        with np.errstate(divide="ignore", invalid="ignore"):
            a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + tx), -np.inf)
        top = np.logaddexp(a3, a4)
        w3, w4 = np.exp(a3 - top), np.exp(a4 - top)
        dr = d.by("x", lambda x: digamma(r + x)) - digamma(r) + np.log(alpha) - w3 * np.log(alpha + T) \
            - w4 * np.log(alpha + tx)
        dalpha = r / alpha - w3 * (r + x) / (alpha + T) - w4 * (r + x) / (alpha + tx)
        dpsi = digamma(a + b) - d.by("x", lambda x: digamma(a + b + x))
        da = dpsi + w4 / a
        with np.errstate(divide="ignore", invalid="ignore"):
            db = dpsi + d.by("x", lambda x: digamma(b + x)) - digamma(b) - np.where(x > 0, w4 / np.maximum(b + x - 1, 1e-300), 0)
        return np.array([w @ dr, w @ dalpha, w @ da, w @ db])

    def _p(self) -> tuple[float, ...]:
        p = self._check()
        return p["r"], p["alpha"], p["a"], p["b"]

    def p_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
        """Probability each customer is still active at the end of observation."""
        r, alpha, a, b = self._p()
        x, tx, TT = _arrays(frequency, recency, T)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_odds = np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) + (r + x) * (np.log(alpha + TT) - np.log(alpha + tx))
        return np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_odds, 700))), 1.0)

    def expected_purchases(self, t: float | ArrayLike) -> np.ndarray:
        """Expected purchases of a new customer in ``t`` time units."""
        from scipy.special import hyp2f1

        r, alpha, a, b = self._p()
        t = np.asarray(t, dtype=float)
        return (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, t / (alpha + t)))

    def predict(self, t: float, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
        """Expected purchases of each customer in the next ``t`` time units, given their history."""
        from scipy.special import hyp2f1

        r, alpha, a, b = self._p()
        x, tx, TT = _arrays(frequency, recency, T)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            head = (a + b + x - 1) / (a - 1)
            tail = 1 - np.exp((r + x) * (np.log(alpha + TT) - np.log(alpha + TT + t))) * hyp2f1(
                r + x, b + x, a + b + x - 1, t / (alpha + TT + t))
            log_odds = np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) + (r + x) * (np.log(alpha + TT) - np.log(alpha + tx))
            odds = np.where(x > 0, np.exp(np.minimum(log_odds, 700)), 0.0)
        return head * tail / (1 + odds)


class ParetoNBDModel(_Model):
    """Pareto/NBD: Poisson purchases while alive (rates ~ Gamma(r, α)) and an exponential
    lifetime (dropout rates ~ Gamma(s, β)), unobserved."""

    _names = ("r", "alpha", "s", "beta")

    @staticmethod
    def _log_a0(p: np.ndarray, d: _Summary) -> np.ndarray:
        """log A0 of Fader & Hardie's note (eq. 22), stable: the Euler transform turns each
        2F1 into (1-z)^(-k) · 2F1(1, ·; ·; z), a series of positive terms."""
        from scipy.special import hyp2f1

        r, alpha, s, beta = p
        if alpha >= beta:    # 2F1(rsx, s+1; rsx+1; z) = (1-z)^-s 2F1(1, r+x; rsx+1; z)
            big, k, inner = alpha, (lambda x: s), (lambda x: r + x)
        else:                # 2F1(rsx, r+x; rsx+1; z) = (1-z)^(1-r-x) 2F1(1, s+1; rsx+1; z)
            big, k, inner = beta, (lambda x: r + x - 1), (lambda x: s + 1)

        def term(x: np.ndarray, t: np.ndarray) -> np.ndarray:
            z = abs(alpha - beta) / (big + t)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.log(hyp2f1(1.0, inner(x), r + s + x + 1, z)) - k(x) * np.log1p(-z) - (r + s + x) * np.log(big + t)
        l1, l2 = d.by("tx", term), d.by("T", term)
        with np.errstate(divide="ignore", invalid="ignore"):
            return l1 + np.log(-np.expm1(np.minimum(l2 - l1, 0.0)))    # log(e^l1 - e^l2); -inf when tx == T

    @classmethod
    def _ll(cls, p: np.ndarray, d: _Summary) -> np.ndarray:
        from scipy.special import gammaln

        r, alpha, s, beta = p
        head = d.by("x", lambda x: gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta))
        first = d.by("T", lambda x, T: -(r + x) * np.log(alpha + T) - s * np.log(beta + T))
        second = d.by("x", lambda x: np.log(s) - np.log(r + s + x)) + cls._log_a0(p, d)
        return head + np.logaddexp(first, second)

    def fit(self, frequency: ArrayLike, recency: ArrayLike | None = None, T: ArrayLike | None = None,
            initial: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> "ParetoNBDModel":
        x, tx, TT = _arrays(frequency, recency, T)
        d = _Summary(x, tx, TT)
        nll = lambda p: -float(d.w @ self._ll(p, d)) + self._penalty(p)  # noqa: E731
        self.params_, self.log_likelihood_, self.converged_ = _Fit(self._names).run(nll, d.w.sum(), initial)
        self.n_customers_ = int(x.size)
        return self

    def _p(self) -> np.ndarray:
        p = self._check()
        return np.array([p["r"], p["alpha"], p["s"], p["beta"]])

    def p_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
        p = self._p()
        r, alpha, s, beta = p
        x, tx, TT = _arrays(frequency, recency, T)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            lt = (np.log(s) - np.log(r + s + x) + (r + x) * np.log(alpha + TT) + s * np.log(beta + TT)
                  + self._log_a0(p, _Summary(x, tx, TT, compress=False)))
        return 1.0 / (1.0 + np.exp(np.minimum(lt, 700)))

    def expected_purchases(self, t: float | ArrayLike) -> np.ndarray:
        r, alpha, s, beta = self._p()
        t = np.asarray(t, dtype=float)
        if abs(s - 1) < 1e-9:
            return r * beta / alpha * np.log((beta + t) / beta)
        return r * beta / (alpha * (s - 1)) * (1 - (beta / (beta + t)) ** (s - 1))

    def predict(self, t: float, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
        r, alpha, s, beta = self._p()
        x, tx, TT = _arrays(frequency, recency, T)
        if abs(s - 1) < 1e-9:
            body = (r + x) * (beta + TT) / (alpha + TT) * np.log((beta + TT + t) / (beta + TT))
        else:
            body = (r + x) * (beta + TT) / ((alpha + TT) * (s - 1)) * (1 - ((beta + TT) / (beta + TT + t)) ** (s - 1))
        return body * self.p_alive(x, tx, TT)


class GammaGammaModel(_Model):
    """Gamma-Gamma spend: a customer's transaction values ~ Gamma(p, ν), ν ~ Gamma(q, γ)
    across customers (``v`` is γ). Fit on customers with at least one repeat purchase."""

    _names = ("p", "q", "v")

    @staticmethod
    def _ll(par: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        from scipy.special import gammaln

        p, q, v = par
        px = p * x
        return (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v) + (px - 1) * np.log(m)
                + px * np.log(x) - (px + q) * np.log(x * m + v))

    def fit(self, frequency: ArrayLike, monetary_value: ArrayLike | None = None,
            initial: Sequence[float] = (1.0, 1.0, 1.0)) -> "GammaGammaModel":
        x, m = _arrays(frequency, None, None, monetary_value, need_monetary=True)
        keep = x > 0
        if not keep.any():
            raise ModelError("Gamma-Gamma needs customers with repeat purchases", hint="no customer has frequency > 0")
        if np.any(m[keep] <= 0):
            raise ModelError("monetary_value must be positive for customers with repeat purchases",
                             hint="drop zero-value orders or refunds before summarising")
        ux, um = x[keep], m[keep]
        nll = lambda p: -float(self._ll(p, ux, um).sum()) + self._penalty(p)  # noqa: E731
        grad = lambda p: -self._grad(p, ux, um) + 2 * self.penalizer * p  # noqa: E731
        self.params_, self.log_likelihood_, self.converged_ = _Fit(self._names).run(nll, float(ux.size), initial, grad)
        self.n_customers_ = int(keep.sum())
        return self

    @staticmethod
    def _grad(par: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """d LL / d (p, q, v), summed over customers."""
        from scipy.special import digamma

        p, q, v = par
        px = p * x
        psi = digamma(px + q)
        lxm = np.log(x * m + v)
        dp = x * (psi - digamma(px) + np.log(m) + np.log(x) - lxm)
        dq = psi - digamma(q) + np.log(v) - lxm
        dv = q / v - (px + q) / (x * m + v)
        return np.array([dp.sum(), dq.sum(), dv.sum()])

    def expected_spend(self, frequency: ArrayLike, monetary_value: ArrayLike) -> np.ndarray:
        """Expected mean transaction value per customer (the population mean for x = 0)."""
        par = self._check()
        p, q, v = par["p"], par["q"], par["v"]
        x, m = _arrays(frequency, None, None, monetary_value, need_monetary=True)
        m = np.where(x > 0, m, 0.0)
        return p * (v + x * m) / (p * x + q - 1)

    def lifetime_value(self, model: BetaGeoModel | ParetoNBDModel, frequency: ArrayLike, recency: ArrayLike,
                       T: ArrayLike, monetary_value: ArrayLike, *, periods: int = 12, period_length: float = 30.0,
                       discount_rate: float = 0.01) -> np.ndarray:
        """Discounted CLV: expected purchases in each of ``periods`` periods of ``period_length``
        time units × expected spend, discounted at ``discount_rate`` per period."""
        x, tx, TT = _arrays(frequency, recency, T)
        spend = self.expected_spend(x, monetary_value)
        total = np.zeros_like(x)
        before = np.zeros_like(x)
        for i in range(1, periods + 1):
            upto = model.predict(i * period_length, x, tx, TT)
            total += (upto - before) / (1 + discount_rate) ** i
            before = upto
        return total * spend


def holdout_report(model: BetaGeoModel | ParetoNBDModel, calibration: Any, holdout_purchases: ArrayLike,
                   horizon: float, *, max_frequency: int = 7) -> dict[str, Any]:
    """Predicted vs actual holdout purchases: overall, per calibration frequency (capped at
    ``max_frequency``+), mean absolute error and correlation per customer."""
    x, tx, TT = _arrays(calibration, None, None) if hasattr(calibration, "columns") else _arrays(*calibration)
    actual = np.asarray(holdout_purchases, dtype=float)
    pred = model.predict(horizon, x, tx, TT)
    bucket = np.minimum(x, max_frequency).astype(int)
    rows = []
    for k in range(max_frequency + 1):
        sel = bucket == k
        if sel.any():
            rows.append({"frequency": f"{k}+" if k == max_frequency else str(k), "customers": int(sel.sum()),
                         "actual": float(actual[sel].mean()), "predicted": float(pred[sel].mean())})
    return {
        "customers": int(x.size), "horizon": horizon,
        "actual_total": float(actual.sum()), "predicted_total": float(pred.sum()),
        "mae": float(np.abs(pred - actual).mean()),
        "correlation": float(np.corrcoef(pred, actual)[0, 1]) if x.size > 1 and actual.std() > 0 else float("nan"),
        "by_frequency": rows,
    }


__all__ = ["BetaGeoModel", "GammaGammaModel", "ModelError", "ParetoNBDModel", "holdout_report"]
