"""Attribution accuracy against the simulator's causal truth.

For each seed, a simulated retailer is resolved and every attribution model fitted on its
journeys (30-day lookback); each model's credit over the campaign channels is compared with
the orders those channels' campaigns really caused (``truth/campaigns.parquet``,
``true_incremental_orders``: expected orders with the campaign minus without it). The error is
the total variation distance between the two shares — the share of credit on the wrong channel.
The holdout experiments logged by the same campaigns are scored the same way (how far their
measured incremental orders sit from the truth). Prints one JSON line: the median error per
model over the seeds, and each seed's figures.

    python benchmarks/attribution_truth.py              # 20,000 people x 180 days, 3 seeds
    python benchmarks/attribution_truth.py --quick      # 3,000 people x 120 days, 2 seeds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.people, a.days, a.seeds = 3_000, 120, 2
    import plait
    from plait.analytics.incrementality import by_channel, measure, score_attribution
    from plait.simulate import true_incremental

    per_seed = []
    for seed in range(1, a.seeds + 1):
        with tempfile.TemporaryDirectory() as tmp, plait.connect(Path(tmp) / "ws") as ws:
            ws.simulate(people=a.people, days=a.days, seed=seed)
            ws.resolve()
            t0 = time.perf_counter()
            r = ws.analytics.attribution_error("truth")
            seconds = time.perf_counter() - t0
            measured = by_channel(measure(ws, window_days=10))["incremental_conversions"]
            holdouts = score_attribution(true_incremental(ws), {
                "holdouts": measured.rename_axis("channel").reset_index().rename(
                    columns={"incremental_conversions": "conversions"})}).loc["holdouts", "error"]
        errors = {row["model"]: round(row["error"], 4) for row in r["table"] if row["model"] != "incremental"}
        per_seed.append({"seed": seed, "conversions": r["conversions"], "fit_all_models_s": round(seconds, 2),
                         "holdout_experiments": round(float(holdouts), 4), "errors": errors})
        print(f"seed {seed}: {json.dumps(per_seed[-1])}", file=sys.stderr)
    models = per_seed[0]["errors"]
    median = {m: round(statistics.median(s["errors"][m] for s in per_seed), 4) for m in models}
    print(json.dumps({"people": a.people, "days": a.days, "seeds": a.seeds,
                      "median_error": dict(sorted(median.items(), key=lambda kv: kv[1])),
                      "median_error_holdout_experiments": round(statistics.median(
                          s["holdout_experiments"] for s in per_seed), 4),
                      "runs": per_seed}))


if __name__ == "__main__":
    main()
