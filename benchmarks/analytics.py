"""Analytics fit times, side by side with the reference libraries in the same run.

CLV: BG/NBD, Pareto/NBD and Gamma-Gamma on N simulated customers (default 1,000,000; a
Pareto/NBD population with dropout, so the true parameters are known) — Plait vs ``lifetimes``.
Rules: the arules Groceries baskets at support 0.001 / confidence 0.5 (one-item consequents)
— Plait vs ``mlxtend`` (TransactionEncoder + fpgrowth + association_rules): median time of
warm runs, and peak traced (tracemalloc) memory in one separate run.

The references run in another interpreter (``--reference-python``, a venv with
``pip install lifetimes mlxtend``: lifetimes pins old dependencies), on the same data files.
Prints one JSON line with the medians.

    python benchmarks/analytics.py --reference-python /tmp/refenv/bin/python
    python benchmarks/analytics.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GROCERIES = ROOT.parent / "shared" / "data" / "groceries" / "groceries.csv"

REFERENCE = r"""
import json, sys, time, tracemalloc, statistics
import numpy as np, pandas as pd
what, path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}
if what == "clv":
    from lifetimes import BetaGeoFitter, ParetoNBDFitter, GammaGammaFitter
    d = np.load(path)
    x, tx, T, m = d["x"], d["tx"], d["T"], d["m"]
    for name, fit in (("bgnbd", lambda: BetaGeoFitter().fit(x, tx, T)),
                      ("gamma_gamma", lambda: GammaGammaFitter().fit(x[x > 0], m[x > 0])),
                      ("pareto_nbd", lambda: ParetoNBDFitter().fit(x, tx, T))):
        times = []
        for _ in range(runs if name != "pareto_nbd" else 1):
            t = time.perf_counter(); f = fit(); times.append(time.perf_counter() - t)
        out[name] = {"seconds": statistics.median(times), "params": {k: float(v) for k, v in f.params_.items()}}
else:
    from mlxtend.preprocessing import TransactionEncoder
    from mlxtend.frequent_patterns import fpgrowth, association_rules
    lines = [l.rstrip("\r\n").split(",") for l in open(path)]
    def mine():
        te = TransactionEncoder()
        df = pd.DataFrame(te.fit(lines).transform(lines), columns=te.columns_)
        fi = fpgrowth(df, min_support=0.001, use_colnames=True)
        r = association_rules(fi, metric="confidence", min_threshold=0.5)
        return fi, r[r["consequents"].apply(len) == 1]
    mine()
    times, peaks = [], []
    for _ in range(runs):
        t = time.perf_counter(); fi, r = mine(); times.append(time.perf_counter() - t)
    tracemalloc.start(); mine(); peaks.append(tracemalloc.get_traced_memory()[1] / 2**20); tracemalloc.stop()
    out = {"seconds": statistics.median(times), "peak_mib": statistics.median(peaks), "rules": int(len(r)),
           "itemsets": int(len(fi))}
print(json.dumps(out))
"""


def population(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    T = rng.integers(1, 366, n).astype(float)
    lam, mu = rng.gamma(0.5, 1 / 20, n), rng.gamma(0.6, 1 / 100, n)
    obs = np.minimum(rng.exponential(1 / mu), T)
    x = rng.poisson(lam * obs).astype(float)
    tx = np.where(x > 0, np.floor(rng.beta(np.maximum(x, 1), 1) * obs), 0.0)
    m = np.where(x > 0, rng.gamma(6, 5, n), 0.0)
    return {"x": x, "tx": tx, "T": T, "m": m}


def reference(python: str | None, what: str, path: Path, runs: int) -> dict | None:
    if not python:
        return None
    p = subprocess.run([python, "-c", REFERENCE, what, str(path), str(runs)], capture_output=True, text=True,
                       timeout=3600)
    if p.returncode:
        print(p.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="100,000 customers, one run")
    ap.add_argument("--reference-python", help="interpreter with lifetimes and mlxtend installed")
    a = ap.parse_args()
    if a.quick:
        a.customers, a.runs = 100_000, 1
    from plait.analytics.baskets import AssociationRules
    from plait.analytics.clv import BetaGeoModel, GammaGammaModel, ParetoNBDModel

    pop = population(a.customers)
    x, tx, T, m = pop["x"], pop["tx"], pop["T"], pop["m"]
    BetaGeoModel().fit(x[:1000], tx[:1000], T[:1000])           # imports and first-call costs out of the timing
    result: dict = {"customers": a.customers, "runs": a.runs, "clv": {}}
    for name, fit in (("bgnbd", lambda: BetaGeoModel().fit(x, tx, T)),
                      ("pareto_nbd", lambda: ParetoNBDModel().fit(x, tx, T)),
                      ("gamma_gamma", lambda: GammaGammaModel().fit(x, m))):
        times = []
        for _ in range(a.runs):
            t = time.perf_counter()
            model = fit()
            times.append(time.perf_counter() - t)
        result["clv"][name] = {"seconds": round(statistics.median(times), 3), "all": [round(v, 3) for v in times],
                               "params": {k: round(v, 4) for k, v in model.params_.items()}}
        print(f"plait {name}: {times}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "pop.npz"
        np.savez(npz, **pop)
        ref = reference(a.reference_python, "clv", npz, a.runs)
    if ref:
        for name, r in ref.items():
            result["clv"][name]["lifetimes_seconds"] = round(r["seconds"], 3)
            result["clv"][name]["speedup"] = round(r["seconds"] / result["clv"][name]["seconds"], 1)
            result["clv"][name]["lifetimes_params"] = {k: round(v, 4) for k, v in r["params"].items()}
    if GROCERIES.exists():
        lines = [line.rstrip("\r\n").split(",") for line in GROCERIES.open()]
        AssociationRules(0.001, 0.5).fit(lines)
        times, peaks = [], []
        for _ in range(max(5, a.runs)):
            t = time.perf_counter()
            r = AssociationRules(min_support=0.001, min_confidence=0.5).fit(lines)
            times.append(time.perf_counter() - t)
        # Memory in a separate run: tracing allocations slows both libraries several-fold.
        tracemalloc.start()
        AssociationRules(min_support=0.001, min_confidence=0.5).fit(lines)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
        result["rules"] = {"data": "groceries 9,835 baskets, support 0.001, confidence 0.5", "rules": len(r.rules_),
                           "itemsets": len(r.itemsets_), "seconds": round(statistics.median(times), 4),
                           "peak_mib": round(statistics.median(peaks), 1)}
        mr = reference(a.reference_python, "rules", GROCERIES, max(5, a.runs))
        if mr:
            result["rules"].update({"mlxtend_seconds": round(mr["seconds"], 4), "mlxtend_peak_mib": round(mr["peak_mib"], 1),
                                    "mlxtend_rules": mr["rules"],
                                    "speedup": round(mr["seconds"] / result["rules"]["seconds"], 1)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
