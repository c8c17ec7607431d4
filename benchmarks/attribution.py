"""Attribution fit times on path tables: 1,000,000 journeys aggregated to paths, and a
10,000-path table (the size of a marketing tool's export).

Journeys: 10 channels, 1–8 touches each, conversions ~ Poisson(1), non-conversions ~ Poisson(5),
seeded; aggregated to unique paths as a path table. Each model is timed warm (imports and
first-call costs excluded), median of ``--runs``. Prints one JSON line.

    python benchmarks/attribution.py
    python benchmarks/attribution.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

CHANNELS = np.array(["email", "sms", "push", "social", "search", "display", "referral", "direct", "store",
                     "call_center"])


def path_table(journeys: int, seed: int = 0):  # noqa: ANN201
    import pandas as pd

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 9, journeys)
    picks = CHANNELS[rng.integers(0, len(CHANNELS), int(lengths.sum()))]
    ends = np.cumsum(lengths)
    paths = [" > ".join(picks[e - n:e]) for e, n in zip(ends, lengths)]
    df = pd.DataFrame({"path": paths, "total_conversions": rng.poisson(1, journeys),
                       "total_null": rng.poisson(5, journeys)})
    df["total_conversion_value"] = df["total_conversions"] * 50.0
    return df.groupby("path", as_index=False).sum()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--journeys", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="100,000 journeys, one run")
    a = ap.parse_args()
    if a.quick:
        a.journeys, a.runs = 100_000, 1
    from plait.analytics.attribution import HeuristicAttribution, MarkovAttribution, ShapleyAttribution

    small = path_table(20_000, seed=1).head(10_000)
    models = {"markov_order1": lambda: MarkovAttribution(1), "markov_order3": lambda: MarkovAttribution(3),
              "shapley_simplified": lambda: ShapleyAttribution("simplified"),
              "shapley_exact": lambda: ShapleyAttribution("exact"), "linear": lambda: HeuristicAttribution("linear")}
    result: dict = {"journeys": a.journeys, "runs": a.runs}
    for label, table in (("paths_10k", small), ("journeys_1m" if a.journeys == 1_000_000 else "journeys", None)):
        if table is None:
            t0 = time.perf_counter()
            table = path_table(a.journeys)
            result["aggregate_seconds"] = round(time.perf_counter() - t0, 2)
        result[label] = {"unique_paths": len(table)}
        for name, make in models.items():
            make().fit(table.head(200))      # warm
            times = []
            for _ in range(a.runs if label != "paths_10k" else max(5, a.runs)):
                t = time.perf_counter()
                make().fit(table)
                times.append(time.perf_counter() - t)
            result[label][name] = round(statistics.median(times), 3)
            print(f"{label} {name}: {[round(x, 3) for x in times]}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
