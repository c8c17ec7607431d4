"""Bulk import, an earlier commit against the working tree, alternated in the same minutes.

    python benchmarks/ingest_ab.py --ref REF [--kind jsonl|parquet|http] [--rows N] [--runs N] [--quick]

The machine behind these sessions is shared and its speed drifts (one session ran at half the
speed of the one before it, the same code measuring half as fast), so a change is judged against
the code before it measured at the same time: REF is checked out into a temporary git worktree
and each run imports the same file into a fresh workspace in a fresh process, REF's code and the
working tree's in turn (A B, B A, ...) after one untimed import of each. ``--kind http`` runs
``benchmarks/ingest.py --only http --quick`` instead, its server on each side's code, and
compares the collector's rates and their ratios to the raw ASGI reference of the same run.
Prints the medians and every run as one JSON line.
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
sys.path.insert(0, sys.argv[3])
import plait
from ingest import pos_mapping
kind, path = sys.argv[1], sys.argv[2]
d = tempfile.mkdtemp()
try:
    with plait.connect(d) as ws:
        m = pos_mapping() if kind == "parquet" else None
        t0 = time.perf_counter()
        r = ws.importer.file(path, mapping=m, only_mapped=m is not None)
        dt = time.perf_counter() - t0
finally:
    shutil.rmtree(d, ignore_errors=True)
print(r.inserted / dt)
"""


def _data(kind: str, n: int, tmp: Path) -> Path:
    """The files ``benchmarks/ingest.py`` makes: ``n`` POS rows, or ``n`` JSONL lines."""
    from ingest import _pos_table, _write_jsonl

    if kind == "jsonl":
        return _write_jsonl(tmp / "e.jsonl", n)
    import pyarrow.parquet as pq

    pq.write_table(_pos_table(n), tmp / "pos.parquet")
    return tmp / "pos.parquet"


# What an HTTP run compares: the collector's rates, and the same as a share of the raw ASGI app's.
_HTTP = ("single_requests_per_s", "batch100_events_per_s", "single_over_raw_asgi", "single_p99_ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="the commit to compare with (A); B is the working tree")
    ap.add_argument("--kind", choices=["jsonl", "parquet", "http"], default="jsonl")
    ap.add_argument("--runs", type=int, default=8, help="imports of each side")
    ap.add_argument("--rows", type=int, default=None,
                    help="rows in the file (default as benchmarks/ingest.py: 2 M POS rows, 500 k JSONL lines)")
    ap.add_argument("--quick", action="store_true", help="a tenth of the default rows, 2 runs each")
    a = ap.parse_args()
    n = a.rows or (500_000 if a.kind == "jsonl" else 2_000_000)
    n, runs = (n // 10, 2) if a.quick else (n, a.runs)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        worktree = tmp / "ref"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(worktree), a.ref], check=True)
        try:
            path = _data(a.kind, n, tmp) if a.kind != "http" else None
            src = {"A": str(worktree / "src"), "B": str(ROOT / "src")}

            def run(side: str) -> dict[str, float]:
                env = dict(os.environ, PYTHONPATH=src[side])
                if a.kind == "http":
                    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ingest.py"), "--only", "http", "--quick"],
                                         env=env, check=True, capture_output=True, text=True).stdout
                    h = json.loads(out.strip().splitlines()[-1])["http"]
                    return {k: h[k] for k in _HTTP}
                out = subprocess.run([sys.executable, "-c", _RUN, a.kind, str(path), str(ROOT / "benchmarks")],
                                     env=env, check=True, capture_output=True, text=True).stdout
                return {"events_per_s": float(out.strip().splitlines()[-1])}

            if a.kind != "http":
                # One untimed import each first: the fresh worktree has no compiled bytecode yet, and
                # its first run paid for compiling the modules imported lazily during the import.
                run("A"), run("B")
            got: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
            for i in range(runs):
                for side in ("A", "B") if i % 2 == 0 else ("B", "A"):
                    got[side].append(run(side))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
    from ingest import machine

    out: dict = {"benchmark": "ingest_ab", "kind": a.kind, "ref": a.ref, "machine": machine()}
    if a.kind != "http":
        out["rows"] = n
    r = lambda x: round(x) if x >= 1000 else round(x, 3)  # rates whole, ratios and ms to 3 places
    for key in got["A"][0]:
        name = "" if key == "events_per_s" else key + "_"    # an import's keys as before: a_runs, b_over_a
        a_runs, b_runs = [x[key] for x in got["A"]], [x[key] for x in got["B"]]
        a_med, b_med = statistics.median(a_runs), statistics.median(b_runs)
        out |= {f"a_{key}": r(a_med), f"b_{key}": r(b_med), f"{name}b_over_a": round(b_med / a_med, 3),
                f"a_{name}runs": [r(x) for x in a_runs], f"b_{name}runs": [r(x) for x in b_runs]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
