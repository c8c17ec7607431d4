"""Bulk import, an earlier commit against the working tree, alternated in the same minutes.

    python benchmarks/ingest_ab.py --ref REF [--kind jsonl|parquet] [--runs N] [--quick]

The machine behind these sessions is shared and its speed drifts (one session ran at half the
speed of the one before it, the same code measuring half as fast), so a change is judged against
the code before it measured at the same time: REF is checked out into a temporary git worktree
and each run imports the same file into a fresh workspace in a fresh process, REF's code and the
working tree's in turn (A B, B A, ...). Prints the medians and every run as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

_RUN = r"""
import sys, time, tempfile, shutil
import plait
kind, path = sys.argv[1], sys.argv[2]
d = tempfile.mkdtemp()
try:
    with plait.connect(d) as ws:
        if kind == "jsonl":
            t0 = time.perf_counter(); r = ws.importer.file(path); dt = time.perf_counter() - t0
        else:
            from plait.collect.bulk import parse_mapping
            m = parse_mapping(["order_id=receipt", "anonymous_id=card", "timestamp=ts", "amount=total", "store_id=store"],
                              ["event=Order Completed", "currency=USD"])
            t0 = time.perf_counter(); r = ws.importer.file(path, mapping=m, only_mapped=True); dt = time.perf_counter() - t0
finally:
    shutil.rmtree(d, ignore_errors=True)
print(r.inserted / dt)
"""


def _data(kind: str, n: int, tmp: Path) -> Path:
    """The same files as ``benchmarks/ingest.py`` makes."""
    from ingest import _pos_table, _write_jsonl

    if kind == "jsonl":
        return _write_jsonl(tmp / "e.jsonl", n // 4)
    import pyarrow.parquet as pq

    pq.write_table(_pos_table(n), tmp / "pos.parquet")
    return tmp / "pos.parquet"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="the commit to compare with (A); B is the working tree")
    ap.add_argument("--kind", choices=["jsonl", "parquet"], default="jsonl")
    ap.add_argument("--runs", type=int, default=8, help="imports of each side")
    ap.add_argument("--quick", action="store_true", help="200 k rows (50 k JSONL lines), 2 runs each")
    a = ap.parse_args()
    n, runs = (200_000, 2) if a.quick else (2_000_000, a.runs)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        worktree = tmp / "ref"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(worktree), a.ref], check=True)
        try:
            path = _data(a.kind, n, tmp)
            src = {"A": str(worktree / "src"), "B": str(ROOT / "src")}
            rates: dict[str, list[float]] = {"A": [], "B": []}
            for i in range(runs):
                for side in ("A", "B") if i % 2 == 0 else ("B", "A"):
                    env = dict(os.environ, PYTHONPATH=src[side])
                    out = subprocess.run([sys.executable, "-c", _RUN, a.kind, str(path)], env=env, check=True,
                                         capture_output=True, text=True).stdout
                    rates[side].append(float(out.strip().splitlines()[-1]))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
    from ingest import machine

    a_med, b_med = statistics.median(rates["A"]), statistics.median(rates["B"])
    print(json.dumps({"benchmark": "ingest_ab", "kind": a.kind, "ref": a.ref, "rows": n // 4 if a.kind == "jsonl" else n,
                      "machine": machine(), "a_events_per_s": round(a_med), "b_events_per_s": round(b_med),
                      "b_over_a": round(b_med / a_med, 3), "a_runs": [round(x) for x in rates["A"]],
                      "b_runs": [round(x) for x in rates["B"]]}))


if __name__ == "__main__":
    main()
