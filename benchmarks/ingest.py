"""Ingestion benchmark: HTTP batches, HTTP single events, bulk Parquet, CSV and JSONL import.

    python benchmarks/ingest.py [--quick]

The collector runs as `plait serve --fronts N` (``--fronts``, default 2: front processes
parse and answer HTTP, one writer process owns the log; 0: one process) in its own process; the load
comes from wrk (Debian package `wrk`) in another process, with unique message ids per
request so every event is really written. Every 200 means the events are durably in the
log (group commit). Bulk imports run in this process. Prints one JSON line at the end.

References measured in the same run, since the shared machine's speed drifts between sessions:
a trivial FastAPI app and a raw ASGI app decoding with msgspec under the same single-event load
(``ref_plain_fastapi_*``, ``ref_raw_asgi_*``; the issue set its targets beside "~4,400 trivial
POSTs/s per worker" and "~14,000–28,000"), and DuckDB alone copying the same
files into a table (``ref_duckdb_read_*``) and appending the log's rows 100 k at a time
(``ref_arrow_appends_100k``; the issue's "~660,000 rows/s").
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
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
                          f"http://127.0.0.1:{port}"], check=True, capture_output=True, text=True, env=env).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.MULTILINE))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"requests_per_s": rps, "events_per_s": rps * max(batch, 1), "p50_ms": _ms(lat["50"]),
            "p99_ms": _ms(lat["99"]), "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else ""}


# The issue's orientation references: "plain FastAPI on uvicorn answers ~4,400 trivial POSTs/s per
# worker, a raw ASGI app with msgspec validation ~14,000–28,000".
_REFERENCE_APPS = {
    "plain_fastapi": """
from fastapi import FastAPI

app = FastAPI()


@app.post("/v1/track")
async def track(body: dict) -> dict:
    return {"success": True}
""",
    # Decodes into the collector's own Segment call struct: the same validation, no more.
    "raw_asgi": """
import msgspec

from plait.events.contract import Call

decode = msgspec.json.Decoder(Call).decode


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    decode(body)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"success":true}'})
""",
}


@contextlib.contextmanager
def _reference_app(tmp: Path, name: str, port: int) -> Iterator[None]:
    """One of :data:`_REFERENCE_APPS` on uvicorn (one worker, the same uvloop and httptools)
    serving ``POST /v1/track``: the references the issue set its HTTP targets beside."""
    (tmp / f"{name}_app.py").write_text(_REFERENCE_APPS[name])
    p = subprocess.Popen([sys.executable, "-m", "uvicorn", f"{name}_app:app", "--app-dir", str(tmp), "--port", str(port),
                          "--log-level", "warning", "--no-access-log"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(30)


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
    secs = 5 if quick else 20
    runs = 1 if quick else 3
    server = _serve(tmp / "ws", port, fronts)
    refs: dict[str, list[dict]] = {name: [] for name in _REFERENCE_APPS}
    single: list[dict] = []
    try:
        before = _health(port)["events"]
        batch = [_wrk(port, auth, 100, 8, secs, script) for _ in range(runs)]
        batch_catch_up = _settle(port)
        mid = _health(port)["events"]
        # The reference and the collector in turn, each run after the collector has caught up.
        single_catch_up = 0.0
        with contextlib.ExitStack() as stack:
            for i, name in enumerate(refs, 1):
                stack.enter_context(_reference_app(tmp, name, port + i))
            for _ in range(runs):
                for i, name in enumerate(refs, 1):
                    refs[name].append(_wrk(port + i, auth, 0, 50, secs, script))
                single.append(_wrk(port, auth, 0, 50, secs, script))
                single_catch_up = max(single_catch_up, _settle(port))
        after = _health(port)["events"]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    out = {
        "batch100_events_per_s": med(batch, "events_per_s"), "batch100_p99_ms": med(batch, "p99_ms"),
        "batch100_non_2xx": sum(r["non_2xx"] for r in batch), "batch_events_logged": mid - before,
        "single_requests_per_s": med(single, "requests_per_s"), "single_p50_ms": med(single, "p50_ms"),
        "single_p99_ms": med(single, "p99_ms"), "single_non_2xx": sum(r["non_2xx"] for r in single),
        "single_events_logged": after - mid, "runs": runs, "seconds_each": secs,
        "realtime_identity": realtime_identity, "fronts": fronts,
        "batch_catch_up_s": round(batch_catch_up, 1), "single_catch_up_s": round(single_catch_up, 1),
    }
    for name, rs in refs.items():
        out |= {f"ref_{name}_requests_per_s": med(rs, "requests_per_s"), f"ref_{name}_p99_ms": med(rs, "p99_ms"),
                f"ref_{name}_non_2xx": sum(r["non_2xx"] for r in rs),
                f"single_over_{name}": round(med(single, "requests_per_s") / med(rs, "requests_per_s"), 3),
                f"single_over_{name}_runs": [round(x["requests_per_s"] / y["requests_per_s"], 3) for x, y in zip(single, rs)]}
    return out


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


def _duckdb_ctas(source: str) -> Callable[[Path], int]:
    """A reference: DuckDB alone copying a file into a table of a new database file, unchecked
    (``read_json`` guesses the columns), as a data engineer might without Plait."""
    def run(db: Path) -> int:
        con = duckdb.connect(str(db))
        try:
            con.execute(f"CREATE TABLE t AS SELECT * FROM {source}")
            con.execute("CHECKPOINT")
            return int(con.execute("SELECT count(*) FROM t").fetchone()[0])
        finally:
            con.close()
    return run


def _arrow_appends(rows: pa.Table, ddl: str) -> Callable[[Path], int]:
    """The issue's orientation figure ("DuckDB appends Arrow batches of 100k at ~660,000
    rows/s"): the log's rows appended to a table of the log's layout, 100 k at a time."""
    batches = [rows.slice(i, 100_000) for i in range(0, rows.num_rows, 100_000)]

    def run(db: Path) -> int:
        con = duckdb.connect(str(db))
        try:
            con.execute(ddl)
            for batch in batches:  # read by DuckDB by name (replacement scan)
                con.execute("INSERT INTO event_rows SELECT * FROM batch")
            con.execute("CHECKPOINT")
        finally:
            con.close()
        return rows.num_rows
    return run


def _plait(run: Callable[[plait.Workspace], object]) -> Callable[[Path], int]:
    def go(path: Path) -> int:
        with plait.connect(path) as ws:
            return run(ws).inserted
    return go


def bulk(quick: bool) -> dict:
    """Each import into a fresh workspace, ``reps`` times in turn; the median of each (the machine
    is shared, and one run of a 2-second import moved by ±20 % here). DuckDB alone does the same
    copies in the same turns (``ref_*``), so each import can be given as a ratio to the engine's
    own speed in the same minutes (the machine's speed has drifted 2× between sessions)."""
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
        log_rows = ws.log.backend.query("SELECT * FROM events")
        ddl = ws.log.backend.scalar("SELECT sql FROM duckdb_tables() WHERE table_name = 'event_rows'")
    runs: dict[str, Callable[[Path], int]] = {
        "parquet_mapped": _plait(lambda ws: ws.importer.file(tmp / "pos.parquet", mapping=m, only_mapped=True)),
        "ref_duckdb_read_parquet": _duckdb_ctas(f"read_parquet('{tmp / 'pos.parquet'}')"),
        "csv_mapped": _plait(lambda ws: ws.importer.file(tmp / "pos.csv", mapping=m, only_mapped=True)),
        "parquet_log_reimport": _plait(lambda ws: ws.log.import_parquet(tmp / "export")),
        "jsonl": _plait(lambda ws: ws.importer.file(tmp / "e.jsonl")),
        "ref_duckdb_read_json": _duckdb_ctas(f"read_json('{tmp / 'e.jsonl'}', format = 'newline_delimited')"),
        "ref_arrow_appends_100k": _arrow_appends(log_rows, ddl),
    }
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for rep in range(reps):
        for name, run in runs.items():
            out = tmp / f"{name}-{rep}"
            t0 = time.perf_counter()
            rows = run(out)
            rates[name].append(rows / (time.perf_counter() - t0))
            shutil.rmtree(out, ignore_errors=True)
            out.unlink(missing_ok=True)
    res: dict = {"rows": n, "jsonl_rows": nj, "reps": reps}
    for name, v in rates.items():
        res[f"{name}_events_per_s"] = statistics.median(v)
        res[f"{name}_runs"] = [round(x) for x in v]
    for mine, ref in (("parquet_mapped", "ref_duckdb_read_parquet"), ("jsonl", "ref_duckdb_read_json")):
        res[f"{mine}_over_{ref[4:]}"] = round(res[f"{mine}_events_per_s"] / res[f"{ref}_events_per_s"], 3)
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
