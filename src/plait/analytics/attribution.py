"""Attribution models over journeys: which channel gets credit for a conversion.

Every model is an estimator: ``fit(paths)`` then ``attribution_`` — a DataFrame with columns
``channel``, ``conversions``, ``value``. ``paths`` is the aggregated path table marketing tools
export (``path`` with channels joined by " > " or a list, ``total_conversions``,
``total_conversion_value``, ``total_null``), as a DataFrame or a CSV file path.

- :class:`HeuristicAttribution`: first touch, last touch, last non-direct, linear (every touch
  of a path, repeats included, as ChannelAttribution counts), time decay (half-life in touches
  before the conversion when a path table carries no times), position-based (40/20/40).
- :class:`MarkovAttribution`: removal effects of an order-k Markov chain, computed *exactly* by
  solving the absorbing chain with a sparse linear solve per channel — no simulation, so results
  are identical run to run. States follow ChannelAttribution: sliding windows of k consecutive
  channels, consecutive repeated states collapsed, a path shorter than k is one state.
- :class:`ShapleyAttribution`: the channel-set game v(S) = conversions of paths whose channel set
  lies within S; the simplified formula φ_c = Σ_{T ∋ c} conv(T) / |T| and exact enumeration over
  coalitions (the two agree — a test holds them to it), and an ordered variant that shares each
  path's conversions over its touch positions.

Written here because the reference (R's ChannelAttribution) estimates Markov removal effects by
simulation and has no Python release that runs on current NumPy; the linear algebra is SciPy's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plait.errors import ModelError

SEP = " > "
DIRECT = ("direct",)


def read_paths(paths: Any) -> list[tuple[tuple[str, ...], float, float, float]]:
    """(channels, conversions, value, nulls) per path from a DataFrame, a CSV path or row dicts."""
    import pandas as pd

    if isinstance(paths, (str, Path)):
        p = Path(paths)
        if not p.exists():
            raise ModelError(f"path table {p} does not exist")
        paths = pd.read_csv(p)
    if isinstance(paths, list):
        paths = pd.DataFrame(paths)
    cols = set(paths.columns)
    if "path" not in cols or "total_conversions" not in cols:
        raise ModelError(f"a path table needs columns path and total_conversions (it has {', '.join(map(str, cols))})",
                         hint="columns: path ('a > b > c'), total_conversions, total_conversion_value, total_null")
    conv = paths["total_conversions"].fillna(0).to_numpy(float)
    value = paths["total_conversion_value"].fillna(0).to_numpy(float) if "total_conversion_value" in cols \
        else np.zeros(len(paths))
    null = paths["total_null"].fillna(0).to_numpy(float) if "total_null" in cols else np.zeros(len(paths))
    raw = paths["path"]
    if raw.map(type).eq(str).all():
        # Split and trim in Arrow: a path table can hold hundreds of thousands of rows.
        import pyarrow as pa
        import pyarrow.compute as pc

        parts = pc.split_pattern(pa.array(raw.to_numpy(object), pa.string()), SEP.strip())
        trimmed = pc.utf8_trim_whitespace(parts.flatten())
        lists = pa.ListArray.from_arrays(parts.offsets, trimmed).to_pylist()
    else:
        lists = [list(map(str, p)) for p in raw]
    bad = np.flatnonzero((conv < 0) | (null < 0) | (value < 0))
    out = []
    for i, (chans, c, v, n) in enumerate(zip(lists, conv.tolist(), value.tolist(), null.tolist())):
        chans = tuple(x for x in chans if x)
        if not chans:
            raise ModelError(f"path row {i} is empty", hint="every path needs at least one channel")
        if bad.size and i == bad[0]:
            raise ModelError(f"path row {i} ({SEP.join(chans)}) has a negative count or value")
        out.append((chans, c, v, n))
    return out


def _frame(credit: dict[str, float], value: dict[str, float]) -> Any:
    import pandas as pd

    chans = sorted(set(credit) | set(value))
    return pd.DataFrame({"channel": chans, "conversions": [credit.get(c, 0.0) for c in chans],
                         "value": [value.get(c, 0.0) for c in chans]})


class HeuristicAttribution:
    MODELS = ("first_touch", "last_touch", "last_non_direct", "linear", "time_decay", "position_based")

    def __init__(self, model: str = "last_touch", *, half_life: float = 2.0, position_weights: Sequence[float] = (0.4,
                 0.2, 0.4), direct: Sequence[str] = DIRECT) -> None:
        self.model = model
        self.half_life = half_life
        self.position_weights = position_weights
        self.direct = direct

    def weights(self, chans: tuple[str, ...]) -> np.ndarray:
        n = len(chans)
        w = np.zeros(n)
        m = self.model
        if m == "first_touch":
            w[0] = 1
        elif m == "last_touch":
            w[-1] = 1
        elif m == "last_non_direct":
            idx = [i for i, c in enumerate(chans) if c not in self.direct]
            w[idx[-1] if idx else n - 1] = 1
        elif m == "linear":
            w[:] = 1 / n
        elif m == "time_decay":
            w = 0.5 ** ((n - 1 - np.arange(n)) / self.half_life)
            w /= w.sum()
        elif m == "position_based":
            first, middle, last = self.position_weights
            if n == 1:
                w[0] = 1
            elif n == 2:
                w[0], w[1] = first / (first + last), last / (first + last)
            else:
                w[0], w[-1] = first, last
                w[1:-1] = middle / (n - 2)
        else:
            raise ModelError(f"unknown heuristic {m!r}", hint=f"use one of {', '.join(self.MODELS)}")
        return w

    def fit(self, paths: Any) -> "HeuristicAttribution":
        credit: dict[str, float] = defaultdict(float)
        value: dict[str, float] = defaultdict(float)
        for chans, conv, val, _ in read_paths(paths):
            if conv == 0 and val == 0:
                continue
            for c, w in zip(chans, self.weights(chans)):
                credit[c] += conv * w
                value[c] += val * w
        self.attribution_ = _frame(credit, value)
        return self


def markov_states(chans: tuple[str, ...], order: int) -> list[tuple[str, ...]]:
    """ChannelAttribution's states: windows of ``order`` consecutive channels, consecutive
    repeats collapsed; a path shorter than ``order`` is one state."""
    if len(chans) < order:
        states = [chans]
    else:
        states = [chans[i:i + order] for i in range(len(chans) - order + 1)]
    out: list[tuple[str, ...]] = []
    for s in states:
        if not out or out[-1] != s:
            out.append(s)
    return out


def _absorb(Q: Any, reward: np.ndarray, s0: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Expected rewards from the start of the absorbing chain ``x = r + Q x`` restricted, per
    column of ``keep``, to the kept states: one row per column, one value per reward column.

    All restrictions are iterated together (``X = keep * (R + Q X)``), converging geometrically
    at the rate of Q's spectral radius — paths end, so it is below one — until the update no
    longer changes X beyond rounding; chains that converge slowly (or are too large to hold
    every column) are solved by sparse LU per column instead. Both are exact to rounding and
    deterministic."""
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    k, m = keep.shape
    r = reward.shape[1]
    if k * m * r <= 20_000_000:
        mask = np.repeat(keep, r, axis=1).astype(float)
        R = np.tile(reward, (1, m)) * mask
        X = R.copy()
        scale = max(float(np.abs(R).max()), 1e-300)
        deltas = []
        for it in range(3000):
            nxt = mask * (R + Q @ X)
            deltas.append(float(np.abs(nxt - X).max()))
            X = nxt
            if deltas[-1] <= 1e-15 * max(scale, float(np.abs(X).max())):
                return (s0 @ X).reshape(m, r)
            if it == 40 and deltas[20] > 0 and (deltas[40] / deltas[20]) ** (1 / 20) > 0.99:
                break                       # slow to converge: solve directly
    out = np.zeros((m, r))
    for j in range(m):
        kj = keep[:, j]
        if kj.any():
            a = (sparse.identity(int(kj.sum()), format="csc") - Q[kj][:, kj]).tocsc()
            x = np.asarray(spsolve(a, reward[kj], permc_spec="MMD_ATA")).reshape(-1, r)
            out[j] = s0[kj] @ x
    return out


class MarkovAttribution:
    """Removal effects of an order-``order`` Markov chain, solved exactly.

    Conversions are shared by the removal effects on the conversion probability; value by the
    removal effects on the expected converted value (a chain whose conversions carry the mean
    value of the paths ending in each state), as ChannelAttribution separates them."""

    def __init__(self, order: int = 1) -> None:
        if not 1 <= order <= 4:
            raise ModelError(f"order must be 1 to 4, got {order}")
        self.order = order

    def fit(self, paths: Any) -> "MarkovAttribution":
        from scipy import sparse

        rows = read_paths(paths)
        index: dict[tuple[str, ...], int] = {}
        flat: list[int] = []          # every path's state ids, end to end
        lengths, weight, convs, vals = [], [], [], []
        for chans, conv, val, null in rows:
            if conv + null == 0:
                continue
            ids = [index.setdefault(s, len(index)) for s in markov_states(chans, self.order)]
            flat.extend(ids)
            lengths.append(len(ids))
            weight.append(conv + null)
            convs.append(conv)
            vals.append(val)
        total_conv, total_val = float(sum(convs)), float(sum(vals))
        if total_conv == 0:
            raise ModelError("no conversions in the path table", hint="nothing to attribute")
        k = len(index)
        ids = np.asarray(flat, dtype=np.int64)
        ln = np.asarray(lengths, dtype=np.int64)
        w = np.asarray(weight)
        ends = np.cumsum(ln) - 1
        first, last = ends - ln + 1, ends
        n_paths = float(w.sum())
        # Transitions between consecutive states of a path, weighted by the path's journeys.
        step = np.ones(ids.size, bool)
        step[last] = False
        wt = np.repeat(w, ln)
        src, dst = ids[step], ids[np.flatnonzero(step) + 1]
        out = np.bincount(ids, weights=wt, minlength=k)          # journeys leaving each state
        Q = sparse.csr_matrix((wt[step] / out[src], (src, dst)), shape=(k, k))
        Q.sum_duplicates()
        # Rewards on leaving a state: the chance of converting, and the value converted.
        reward = np.column_stack([np.bincount(ids[last], weights=np.asarray(convs), minlength=k) / out,
                                  np.bincount(ids[last], weights=np.asarray(vals), minlength=k) / out])
        s0 = np.bincount(ids[first], weights=w, minlength=k) / n_paths
        states = list(index)
        channels = sorted({c for st in states for c in st})
        # Column 0 keeps every state; column j + 1 removes the states holding channel j (they lead
        # to null). Each column is the chain solved on its kept states, for conversion and value.
        keep = np.column_stack([np.ones(k, bool)] + [np.array([c not in st for st in states]) for c in channels])
        ev = _absorb(Q, reward, s0, keep)
        base = ev[0]
        effects, value_effects = {}, {}
        for j, c in enumerate(channels, start=1):
            effects[c] = max(0.0, 1 - ev[j, 0] / base[0]) if base[0] > 0 else 0.0
            value_effects[c] = max(0.0, 1 - ev[j, 1] / base[1]) if base[1] > 0 else 0.0
        self.removal_effects_ = effects
        self.value_removal_effects_ = value_effects
        self.conversion_probability_ = float(base[0])
        self.value_per_path_ = float(base[1])
        self.n_states_ = k

        def shares(e: dict[str, float]) -> dict[str, float]:
            t = sum(e.values())
            return {c: (x / t if t else 0.0) for c, x in e.items()}

        conv_share, val_share = shares(effects), shares(value_effects)
        self.attribution_ = _frame({c: total_conv * s for c, s in conv_share.items()},
                                   {c: total_val * val_share[c] for c in conv_share})
        return self


class ShapleyAttribution:
    """Shapley values of the channel-set game; ``method`` "simplified", "exact" or "ordered"."""

    def __init__(self, method: str = "simplified", *, max_channels: int = 20) -> None:
        self.method = shapley_method(method)
        self.max_channels = max_channels

    def fit(self, paths: Any) -> "ShapleyAttribution":
        rows = read_paths(paths)
        credit: dict[str, float] = defaultdict(float)
        value: dict[str, float] = defaultdict(float)
        if self.method == "ordered":
            # Each path's conversions shared over its touch positions, a channel's share by the
            # number of its touches (repeats are separate players of the ordered game).
            for chans, conv, val, _ in rows:
                for c in chans:
                    credit[c] += conv / len(chans)
                    value[c] += val / len(chans)
        elif self.method == "simplified":
            for chans, conv, val, _ in rows:
                s = set(chans)
                for c in s:
                    credit[c] += conv / len(s)
                    value[c] += val / len(s)
        else:
            channels = sorted({c for chans, *_ in rows for c in chans})
            n = len(channels)
            if n > self.max_channels:
                raise ModelError(f"{n} channels are too many for exact enumeration (2^{n} coalitions)",
                                 hint="use method='simplified' (the same values) or group channels")
            bit = {c: 1 << i for i, c in enumerate(channels)}
            conv_of = np.zeros(1 << n)
            val_of = np.zeros(1 << n)
            for chans, conv, val, _ in rows:
                m = 0
                for c in chans:
                    m |= bit[c]
                conv_of[m] += conv
                val_of[m] += val
            # v(S) = Σ_{T ⊆ S} conv(T): a subset-sum (zeta) transform.
            v_conv, v_val = conv_of.copy(), val_of.copy()
            for i in range(n):
                b = 1 << i
                idx = np.arange(1 << n)
                has = (idx & b) != 0
                v_conv[has] += v_conv[idx[has] ^ b]
                v_val[has] += v_val[idx[has] ^ b]
            from math import factorial

            sizes = np.array([bin(s).count("1") for s in range(1 << n)])
            weight = np.array([factorial(k) * factorial(n - k - 1) / factorial(n) for k in range(n)])
            idx = np.arange(1 << n)
            for c in channels:
                b = bit[c]
                without = idx[(idx & b) == 0]
                w = weight[sizes[without]]
                credit[c] = float(w @ (v_conv[without | b] - v_conv[without]))
                value[c] = float(w @ (v_val[without | b] - v_val[without]))
        self.attribution_ = _frame(credit, value)
        return self


# The models scored side by side (``plait attribution --against``): name → estimator.
STANDARD = ("last_touch", "first_touch", "last_non_direct", "linear", "time_decay", "position_based",
            "markov_1", "markov_2", "markov_3", "shapley", "shapley_ordered")


SHAPLEY_METHODS = ("simplified", "exact", "ordered")


def shapley_method(method: str) -> str:
    if method not in SHAPLEY_METHODS:
        raise ModelError(f"unknown Shapley method {method!r}", hint="use " + ", ".join(SHAPLEY_METHODS))
    return method


def estimator(model: str, *, order: int = 1, method: str = "simplified") -> Any:
    """An unfitted model by name: ``markov`` (with ``order``) or ``markov_<k>``, ``shapley`` (with
    ``method``) or ``shapley_<method>``, or a heuristic (:attr:`HeuristicAttribution.MODELS`)."""
    shapley_method(method)                           # (checked whatever the model: a typo is not ignored)
    if model.startswith("markov"):
        return MarkovAttribution(int(model[7:]) if model[7:].isdigit() else order)
    if model.startswith("shapley"):
        return ShapleyAttribution(model[8:] or method)
    if model not in HeuristicAttribution.MODELS:
        raise ModelError(f"unknown attribution model {model!r}",
                         hint=f"use markov, shapley or one of {', '.join(HeuristicAttribution.MODELS)}")
    return HeuristicAttribution(model)


__all__ = ["STANDARD", "HeuristicAttribution", "MarkovAttribution", "ShapleyAttribution", "estimator", "markov_states",
           "read_paths"]
