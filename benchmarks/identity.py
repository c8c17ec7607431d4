"""Identity benchmark: batch resolution, probabilistic matching and real-time assignment.

    python benchmarks/identity.py [--quick] [--people N] [--runs R]

Full run: a simulated world of 43,000 people over 90 days (≈ 1.0 M events, ≈ 0.37 M
identifiers), resolved ``--runs`` times (median quoted). Probabilistic matching speed is
records compared per second including training (u sampling, blocking, EM, scoring);
accuracy is pairwise against the simulator's truth. Real-time assignment is timed per
event on the stitcher restored from the resolved version, for new events shaped like the
world's (returning cookies, logins from new devices, new cards at the till).
With ``--splink-python`` the person records are also matched by Splink (run in its own
environment by ``benchmarks/splink_reference.py``) and both are scored at record level.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import plait
from plait.identity.matching import Matcher, MatchModel, default_comparisons
from plait.identity.quality import pairwise_scores, score, truth_keys


def _scores(ws) -> dict:  # noqa: ANN001
    keep = ("precision", "recall", "f1", "purity")
    return {name: {k: round(v[k], 5) for k in keep} for name, v in score(ws).items()}


def _record_scores(records: pa.Table, links: pa.Table, person: dict[str, int]) -> dict:
    """Record-level pairwise accuracy of deterministic customers joined by ``links``."""
    comp = records.column("comp").to_numpy()
    parent = list(range(records.num_rows))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[int, int] = {}
    for rid, c in enumerate(comp):
        if c in first:
            parent[find(rid)] = find(first[c])
        else:
            first[c] = rid
    for a_, b_ in zip(links.column("rid_l").to_pylist(), links.column("rid_r").to_pylist()):
        ra, rb = find(int(a_)), find(int(b_))
        if ra != rb:
            parent[rb] = ra
    anchors = records.column("anchor").to_pylist()
    keep = [i for i, k in enumerate(anchors) if person.get(k, -1) >= 0]
    pred = pa.table({"identifier": [str(i) for i in keep], "profile_id": [str(find(i)) for i in keep]})
    truth = pa.table({"identifier": [str(i) for i in keep], "person_id": [person[anchors[i]] for i in keep]})
    s = pairwise_scores(pred, truth)
    return {k: round(s[k], 5) for k in ("precision", "recall", "f1")}


def _versus_splink(ws, python: str) -> dict:  # noqa: ANN001
    """Plait's matcher and Splink on the same person records, scored the same way."""
    records = ws.backend.query("SELECT * FROM match_records ORDER BY rid")
    t = truth_keys(ws)
    person: dict[str, int] = {}
    for k, p in zip(t.column("identifier").to_pylist(), t.column("person_id").to_pylist()):
        person[k] = -1 if k in person and person[k] != p else p
    ms = ws.settings.identity.match
    out: dict = {"records": records.num_rows, "threshold": ms.threshold}
    empty = pa.table({"rid_l": pa.array([], pa.int64()), "rid_r": pa.array([], pa.int64())})
    out["deterministic_only"] = _record_scores(records, empty, person)
    t0 = time.perf_counter()
    model = MatchModel(default_comparisons(list(ms.extra_traits)), threshold=ms.threshold, min_fields=ms.min_fields)
    ours = Matcher(ws.backend, model).run(records)
    secs = time.perf_counter() - t0
    out["plait"] = {**_record_scores(records, ours, person), "seconds": round(secs, 2),
                    "records_per_s": round(records.num_rows / secs)}
    with tempfile.TemporaryDirectory() as d:
        pq.write_table(records, f"{d}/records.parquet")
        run = subprocess.run([python, str(Path(__file__).with_name("splink_reference.py")), f"{d}/records.parquet",
                              f"{d}/links.parquet", "--threshold", str(ms.threshold)],
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            out["splink"] = {"error": run.stderr.strip().splitlines()[-1:] or ["failed"]}
            return out
        info = json.loads(run.stdout.strip().splitlines()[-1])
        theirs = pq.read_table(f"{d}/links.parquet")
    out["splink"] = {**_record_scores(records, theirs, person), "seconds": info["seconds"],
                     "train_seconds": info["train_seconds"], "records_per_s": round(records.num_rows / info["seconds"])}
    out["speed_ratio_plait_over_splink"] = round(out["plait"]["records_per_s"] / out["splink"]["records_per_s"], 2)
    return out


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
    ap.add_argument("--splink-python", default=None,
                    help="a Python with Splink installed: also run the reference library on the same records")
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
            versus = _versus_splink(ws, a.splink_python) if a.splink_python else None
            rt = _realtime(ws, 20_000, people)
        out = {
            "benchmark": "identity", "people": people, "events": sim.events, "identifiers": med.identifiers,
            "profiles": med.profiles, "runs": runs,
            "resolve_seconds_median": round(statistics.median(secs), 2), "resolve_seconds": [round(s, 2) for s in secs],
            "stages_median_run": med.stages, "profiles_build_seconds": round(prof.seconds, 2),
            "match_records": med.records, "match_candidate_pairs": med.candidate_pairs, "match_links": med.match_links,
            "match_records_per_s_median": round(med.records / statistics.median(match_secs)),
            "accuracy": acc, "realtime": rt, "matching_vs_splink": versus,
        }
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
