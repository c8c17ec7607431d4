"""Identity benchmark: batch resolution, probabilistic matching and real-time assignment.

    python benchmarks/identity.py [--quick] [--people N] [--runs R]

Full run: a simulated world of 43,000 people over 90 days (≈ 1.0 M events, ≈ 0.37 M
identifiers), resolved ``--runs`` times (median quoted). Probabilistic matching speed is
records compared per second including training (u sampling, blocking, EM, scoring);
accuracy is pairwise against the simulator's truth. Real-time assignment is timed per
event on the stitcher restored from the resolved version, for new events shaped like the
world's (returning cookies, logins from new devices, new cards at the till).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import plait
from plait.identity.quality import score


def _scores(ws) -> dict:  # noqa: ANN001
    keep = ("precision", "recall", "f1", "purity")
    return {name: {k: round(v[k], 5) for k in keep} for name, v in score(ws).items()}


def _realtime(ws, n: int, people: int) -> dict:  # noqa: ANN001
    rng = np.random.default_rng(5)
    ws.identity.follow()
    records = []
    for i in range(n):
        p = int(rng.integers(0, people))
        kind = i % 4
        if kind == 0:
            body = {"type": "page", "anonymousId": f"ck-{p}-1", "properties": {"path": "/"}}
        elif kind == 1:
            body = {"type": "identify", "userId": f"web-{p}", "anonymousId": f"new-device-{i}"}
        elif kind == 2:
            body = {"type": "track", "event": "Order Completed", "anonymousId": f"LC9{i:07d}",
                    "properties": {"order_id": f"rt-{i}", "total": 10, "currency": "USD"},
                    "context": {"externalIds": [{"id": f"LC9{i:07d}", "type": "loyalty_card"}],
                                "traits": {"email": f"rt{i}@example.net", "phone": f"+4477009{i:05d}"}}}
        else:
            body = {"type": "track", "event": "Product Viewed", "userId": f"web-{p}", "properties": {"product_id": "P1"}}
        body["messageId"] = f"rt-{i}"
        records.append(ws.parser.parse(body, received_at=0, source="bench"))
    observe = ws.identity.observe
    lat = []
    for r in records:
        t = time.perf_counter_ns()
        observe([r])
        lat.append(time.perf_counter_ns() - t)
    us = np.array(lat) / 1000
    return {"events": n, "p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
            "max_us": round(float(us.max()), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="5,000 people, one run")
    ap.add_argument("--people", type=int, default=None)
    ap.add_argument("--runs", type=int, default=None)
    a = ap.parse_args()
    people = a.people or (5_000 if a.quick else 43_000)
    runs = a.runs or (1 if a.quick else 3)
    tmp = Path(tempfile.mkdtemp())
    try:
        with plait.connect(tmp / "ws") as ws:
            sim = ws.simulate(people=people, days=90, seed=3)
            reports = [ws.identity.resolve() for _ in range(runs)]
            secs = [r.seconds for r in reports]
            med = sorted(reports, key=lambda r: r.seconds)[len(reports) // 2]
            match_secs = [r.stages["records"] + r.stages["match"] for r in reports]
            prof = ws.profiles.build()
            acc = _scores(ws)
            rt = _realtime(ws, 20_000, people)
        out = {
            "benchmark": "identity", "people": people, "events": sim.events, "identifiers": med.identifiers,
            "profiles": med.profiles, "runs": runs,
            "resolve_seconds_median": round(statistics.median(secs), 2), "resolve_seconds": [round(s, 2) for s in secs],
            "stages_median_run": med.stages, "profiles_build_seconds": round(prof.seconds, 2),
            "match_records": med.records, "match_candidate_pairs": med.candidate_pairs, "match_links": med.match_links,
            "match_records_per_s_median": round(med.records / statistics.median(match_secs)),
            "accuracy": acc, "realtime": rt,
        }
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
