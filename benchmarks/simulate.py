"""Simulator benchmark: people × days of omnichannel history into a fresh workspace.

    python benchmarks/simulate.py [--quick]

Full run: 100,000 people over 365 days (the issue's target: minutes). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import plait


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10,000 people over 90 days")
    a = ap.parse_args()
    people, days = (10_000, 90) if a.quick else (100_000, 365)
    tmp = Path(tempfile.mkdtemp())
    try:
        with plait.connect(tmp / "ws") as ws:
            t0 = time.perf_counter()
            r = ws.simulate(people=people, days=days, seed=1)
            secs = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in ws.path.rglob("*") if p.is_file())
        print(json.dumps({"benchmark": "simulate", "people": people, "days": days, "events": r.events,
                          "identifiers": r.identifiers, "seconds": round(secs, 1),
                          "events_per_s": round(r.events / secs), "workspace_mb": round(size / 1e6, 1)}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
