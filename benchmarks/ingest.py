"""Ingestion benchmark: HTTP batches, HTTP single events, bulk Parquet, CSV and JSONL import.

    python benchmarks/ingest.py [--quick]

The collector runs as `plait serve --fronts N` (``--fronts``, default 2: front processes
parse and answer HTTP, one writer process owns the log; 0: one process) in its own process; the load
comes from wrk (Debian package `wrk`) in another process, with unique message ids per
request so every event is really written. Every 200 means the events are durably in the
log (group commit). Bulk imports run in this process. Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

import plait

LUA = r"""
local n = tonumber(os.getenv("PLAIT_BATCH"))
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("PLAIT_AUTH")
local run = tostring(os.time())
request = function()
  counter = counter + 1
  local t = tid or 0
  if n == 0 then
    return wrk.format(nil, "/v1/track", nil, string.format(
      '{"event":"Product Viewed","userId":"u%d","messageId":"%s-%d-%d","properties":{"product_id":"P%d","price":9.99}}',
      counter % 997, run, t, counter, counter % 400))
  end
  local parts = {}
  for i = 1, n do
    parts[i] = string.format(
      '{"type":"track","event":"Product Viewed","userId":"u%d","messageId":"%s-%d-%d-%d","properties":{"product_id":"P%d","price":9.99}}',
      (counter * n + i) % 997, run, t, counter, i, i % 400)
  end
  return wrk.format(nil, "/v1/batch", nil, '{"batch":[' .. table.concat(parts, ",") .. ']}')
end
"""


def _health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return json.loads(r.read())


def _serve(workspace: Path, port: int, fronts: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "plait.cli.main", "--workspace", str(workspace), "serve",
                          "--port", str(port), "--fronts", str(fronts)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            _health(port)
            return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise RuntimeError("server did not start: " + p.stderr.read().decode()[-2000:])


def _settle(port: int, timeout: float = 300) -> float:
    """Wait until every acknowledged event is in the log (a journaling server loads them a little
    later: its /health reports the journal's backlog); the seconds it took."""
    t0 = time.perf_counter()
    last = _health(port)
    while time.perf_counter() - t0 < timeout:
        time.sleep(0.5)
        now = _health(port)
        if now.get("journal", {}).get("backlog_bytes", 0) == 0 and now["events"] == last["events"]:
            break
        last = now
    return time.perf_counter() - t0


def _ms(s: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v if u == "ms" else v * 1000


def _wrk(port: int, auth: str, batch: int, conns: int, seconds: int, script: Path) -> dict:
    env = {**os.environ, "PLAIT_BATCH": str(batch), "PLAIT_AUTH": auth}
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, env=env).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.MULTILINE))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"requests_per_s": rps, "events_per_s": rps * max(batch, 1), "p50_ms": _ms(lat["50"]),
            "p99_ms": _ms(lat["99"]), "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else ""}


def http(quick: bool, realtime_identity: bool = True, fronts: int = 2) -> dict:
    if shutil.which("wrk") is None:
        return {"skipped": "wrk not installed (apt-get install wrk)"}
    tmp = Path(tempfile.mkdtemp())
    script = tmp / "load.lua"
    script.write_text(LUA)
    with plait.connect(tmp / "ws") as ws:
        key = ws.keys.create("bench")
        ws.settings.identity.realtime = realtime_identity
        ws.settings.save(ws.path)
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    port = 18080
    server = _serve(tmp / "ws", port, fronts)
    secs = 5 if quick else 20
    runs = 1 if quick else 3
    try:
        before = _health(port)["events"]
        batch = [_wrk(port, auth, 100, 8, secs, script) for _ in range(runs)]
        batch_catch_up = _settle(port)
        mid = _health(port)["events"]
        single = [_wrk(port, auth, 0, 50, secs, script) for _ in range(runs)]
        single_catch_up = _settle(port)
        after = _health(port)["events"]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    return {
        "batch100_events_per_s": med(batch, "events_per_s"), "batch100_p99_ms": med(batch, "p99_ms"),
        "batch100_non_2xx": sum(r["non_2xx"] for r in batch), "batch_events_logged": mid - before,
        "single_requests_per_s": med(single, "requests_per_s"), "single_p50_ms": med(single, "p50_ms"),
        "single_p99_ms": med(single, "p99_ms"), "single_non_2xx": sum(r["non_2xx"] for r in single),
        "single_events_logged": after - mid, "runs": runs, "seconds_each": secs,
        "realtime_identity": realtime_identity, "fronts": fronts,
        "batch_catch_up_s": round(batch_catch_up, 1), "single_catch_up_s": round(single_catch_up, 1),
    }


def _pos_table(n: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = np.datetime64("2025-01-01T00:00:00", "us") + rng.integers(0, 365 * 86400, n).astype("timedelta64[s]")
    return pa.table({
        "receipt": pa.array(np.char.add("r", np.arange(n).astype(str))),
        "card": pa.array(np.char.add("LC", rng.integers(0, n // 5 + 1, n).astype(str))),
        "ts": pa.array(ts), "total": np.round(rng.gamma(2, 20, n), 2), "store": rng.integers(0, 50, n),
    })


def pos_mapping():
    """The column mapping of :func:`_pos_table`'s till receipts."""
    from plait.collect.bulk import parse_mapping

    return parse_mapping(["order_id=receipt", "anonymous_id=card", "timestamp=ts", "amount=total", "store_id=store"],
                         ["event=Order Completed", "currency=USD"])


def _write_jsonl(path: Path, n: int) -> Path:
    """``n`` Segment track events from analytics.js, one per line."""
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"type": "track", "event": "Product Viewed", "userId": f"u{i % 9973}",
                                "messageId": f"m{i}", "timestamp": "2025-03-01T10:00:00Z",
                                "context": {"library": {"name": "analytics.js", "version": "2.1"}},
                                "properties": {"product_id": f"P{i % 400}", "price": 9.99, "currency": "USD"}}) + "\n")
    return path


def bulk(quick: bool) -> dict:
    """Each import into a fresh workspace, ``reps`` times in turn; the median of each (the machine
    is shared, and one run of a 2-second import moved by ±20 % here)."""
    n = 200_000 if quick else 2_000_000
    reps = 1 if quick else 3
    tmp = Path(tempfile.mkdtemp())
    pq.write_table(_pos_table(n), tmp / "pos.parquet")
    pcsv.write_csv(_pos_table(n), tmp / "pos.csv")
    m = pos_mapping()
    nj = n // 4
    _write_jsonl(tmp / "e.jsonl", nj)
    with plait.connect(tmp / "exported") as ws:
        ws.importer.file(tmp / "pos.parquet", mapping=m, only_mapped=True)
        ws.log.export_parquet(tmp / "export")
    runs = {
        "parquet_mapped": lambda ws: ws.importer.file(tmp / "pos.parquet", mapping=m, only_mapped=True),
        "csv_mapped": lambda ws: ws.importer.file(tmp / "pos.csv", mapping=m, only_mapped=True),
        "parquet_log_reimport": lambda ws: ws.log.import_parquet(tmp / "export"),
        "jsonl": lambda ws: ws.importer.file(tmp / "e.jsonl"),
    }
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for rep in range(reps):
        for name, run in runs.items():
            with plait.connect(tmp / f"{name}-{rep}") as ws:
                t0 = time.perf_counter()
                r = run(ws)
                rates[name].append(r.inserted / (time.perf_counter() - t0))
            shutil.rmtree(tmp / f"{name}-{rep}", ignore_errors=True)
    res: dict = {"rows": n, "jsonl_rows": nj, "reps": reps}
    for name, v in rates.items():
        res[f"{name}_events_per_s"] = statistics.median(v)
        res[f"{name}_runs"] = [round(x) for x in v]
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def machine() -> dict:
    """Which CPU ran this, and a fixed Python workload's time on it (median of 5): the
    machine behind these sessions has changed under us (AMD EPYC, later an Intel Xeon about
    twice as fast), so figures from different runs compare only with this beside them."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        json.dumps([{"i": i, "s": str(i)} for i in range(200_000)])
        times.append(time.perf_counter() - t0)
    return {"cpu": model, "cpus": os.cpu_count(), "python_ref_ms": round(statistics.median(times) * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small run, under a minute")
    ap.add_argument("--only", choices=["http", "bulk"], default=None)
    ap.add_argument("--no-realtime-identity", action="store_true",
                    help="serve without assigning collected events to customers as they arrive")
    ap.add_argument("--fronts", type=int, default=2,
                    help="front processes answering HTTP before the writer (0: one process does everything)")
    a = ap.parse_args()
    out: dict = {"benchmark": "ingest", "quick": a.quick, "cpus": os.cpu_count(), "machine": machine()}
    if a.only in (None, "bulk"):
        out["bulk"] = bulk(a.quick)
        print("bulk:", out["bulk"], file=sys.stderr)
    if a.only in (None, "http"):
        out["http"] = http(a.quick, not a.no_realtime_identity, a.fronts)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
