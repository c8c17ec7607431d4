"""Decision throughput and latency: POST /v1/decide served by `plait serve` (``--fronts`` front
processes answering HTTP — 1 by default, 0 for one HTTP process that also writes the log — and
``--workers`` decide workers — 2 by default, 0 for the server deciding itself),
driven by a load generator in a separate process over keep-alive HTTP/1.1. Each run also reports
the CPU the server and its workers spent per decision (from /proc).

Set-up: a simulated retailer (20,000 people × 120 days; --quick: 3,000 × 60), resolved; 50
offers and 20 active rules (conditions over features, traits, events and context); a real-time
logistic propensity model in the path; context enrichment from the simulated stores (geofences,
nearest store), weather and local-event calendar; decisions recorded to the log. Requests mix
web/app/store placements by customer id with geofence-entry and page events.

Two runs: *sustained* — an open-loop generator sending ``--rate`` requests/s on a fixed schedule
(latency counted from each request's scheduled time, so queueing is not hidden); *peak* —
``--connections`` closed-loop connections as fast as the server answers. Prints one JSON line
with ``decisions_per_s`` (peak), ``p50_ms`` and ``p99_ms`` (sustained) and the details.

    python benchmarks/decide.py
    python benchmarks/decide.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


# -- set-up ---------------------------------------------------------------------------------------
def build(ws_dir: Path, people: int, days: int) -> list[bytes]:
    import pyarrow.parquet as pq

    import plait
    from plait.decide.scoring import LogisticScorer
    from plait.profiles.online import load

    ws = plait.connect(ws_dir)
    ws.simulate(people=people, days=days, seed=3)
    ws.resolve()
    truth = ws.truth_dir
    shutil.copy(truth / "stores.parquet", ws_dir / "stores.parquet")
    shutil.copy(truth / "weather.parquet", ws_dir / "weather.parquet")
    events = pq.read_table(truth / "local_events.parquet").to_pylist()
    (ws_dir / "calendar.json").write_text(json.dumps({
        "holidays": {"2025-05-26": "Spring bank holiday"}, "paydays": ["last_working_day", 15],
        "events": [{"store_id": e["store_id"], "day": e["day"], "name": "local event"} for e in events]}))
    s = ws.settings
    s.decide.context.stores, s.decide.context.weather, s.decide.context.calendar = (
        "stores.parquet", "weather.parquet", "calendar.json")
    s.privacy.defaults["personalisation"] = True        # on-site personalisation under legitimate interest
    s.save(ws_dir)
    store = load(ws)
    snaps = list(store.profiles.values())
    rng = random.Random(1)
    # A real-time model: P(buys in store) from behaviour and the hour.
    rows = [{**p, "context": {"hour": rng.randint(8, 21)}} for p in snaps]
    y = [int((p["features"].get("orders_store") or 0) > 0) for p in snaps]
    scorer = LogisticScorer(["features.online_visits", "features.store_visits", "features.returns",
                             "features.contacts", "features.revenue", "context.hour"]).fit(rows, y)
    (ws_dir / "scorers").mkdir(exist_ok=True)
    (ws_dir / "scorers" / "store_buyer.json").write_text(json.dumps(scorer.to_dict()))
    cats = sorted({p["features"].get("favourite_category") for p in snaps if p["features"].get("favourite_category")})
    offers = []
    for i in range(50):
        cat = cats[i % len(cats)]
        o = {"id": f"offer-{i}", "name": f"{cat} offer {i}", "value": round(1 + (i * 7) % 19, 2),
             "propensity": {"model": "store_buyer" if i % 3 == 0 else f"cat-{i}", "default": 0.02 + (i % 10) / 100},
             "context_weights": [{"when": {"field": "context.weather.rain", "op": "==", "value": True}, "weight": 1.3},
                                 {"when": {"field": "context.calendar.payday", "op": "==", "value": True}, "weight": 1.2}],
             "holdout": 0.05, "coupon_prefix": f"O{i}-"}
        if i % 4 == 0:
            o["eligibility"] = {"field": "features.favourite_category", "op": "==", "value": cat}
        offers.append(o)
    rules = []
    for j in range(20):
        acts = [{"offer": f"offer-{(j * 5 + k) % 50}"} for k in range(5)]
        conds = [{"field": "features.orders", "op": ">=", "value": j % 4},
                 {"any": [{"field": "context.hour", "op": "between", "value": [7, 22]},
                          {"field": "context.weekend", "op": "==", "value": True}]}]
        if j % 5 == 0:
            conds.append({"field": "features.returns", "op": "<=", "value": 3})
        if j % 7 == 0:
            conds.append({"field": "traits.email", "op": "exists", "min_confidence": "observed"})
        r = {"id": f"rule-{j}", "priority": 10 + j, "condition": {"all": conds}, "actions": acts}
        if j % 6 == 1:
            r["events"] = ["Geofence Entered"]
        rules.append(r)
    (ws_dir / "rules").mkdir(exist_ok=True)
    (ws_dir / "rules" / "bench.json").write_text(json.dumps({"offers": offers, "rules": rules}))
    key = ws.keys.create("bench")
    ws.close()
    stores = pq.read_table(truth / "stores.parquet").to_pylist()
    users = [sid for p in snaps for sid in store.subjects(p["profile_id"])[:1] if sid.startswith("user_id:")]
    bodies = []
    for k in range(4000):
        u = rng.choice(users)
        kind = k % 4
        if kind == 3:
            st = rng.choice(stores)
            ev = {"type": "track", "event": "Geofence Entered", "userId": u.split(":", 1)[1], "channel": "app",
                  "properties": {"latitude": st["lat"] + rng.uniform(-0.001, 0.001),
                                 "longitude": st["lon"] + rng.uniform(-0.001, 0.001)}}
            req = {"event": ev, "placement": "app_screen"}
        else:
            req = {"customer": u, "placement": ["web_banner", "app_screen", "store_screen"][kind]}
        body = json.dumps(req).encode()
        bodies.append(b"POST /v1/decide HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
                      + b"\r\n\r\n" + body)
    return bodies


# -- server ---------------------------------------------------------------------------------------
def serve(ws_dir: str, port: int, workers: int, fronts: int) -> None:
    import uvicorn

    import plait
    from plait.server.app import create_app
    from plait.server.fronts import serve as serve_split

    ws = plait.connect(ws_dir)
    ws.settings.decide.workers = workers
    if fronts:
        serve_split(ws, host="127.0.0.1", port=port, fronts=fronts)
        return
    uvicorn.run(create_app(ws), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools", lifespan="on")


# -- load generator -------------------------------------------------------------------------------
async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    i = head.lower().find(b"content-length:")
    n = int(head[i + 15:head.find(b"\r\n", i)])
    await reader.readexactly(n)
    return status


async def _load(port: int, bodies: list[bytes], mode: str, rate: float, seconds: float, conns: int) -> dict:
    lat: list[float] = []
    errors = 0
    sent = 0
    start = time.perf_counter() + 0.2
    end = start + seconds

    async def worker(w: int) -> None:
        nonlocal errors, sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        k = w
        interval = conns / rate if mode == "sustained" else 0.0
        due = start + w * (interval / conns if interval else 0)
        while True:
            if mode == "sustained":
                now = time.perf_counter()
                if due > now:
                    await asyncio.sleep(due - now)
                t0 = due
                due += interval
            else:
                t0 = time.perf_counter()
            if t0 >= end:
                break
            writer.write(bodies[k % len(bodies)])
            k += conns
            status = await _read_response(reader)
            sent += 1
            if status != 200:
                errors += 1
            if t0 >= start:
                lat.append(time.perf_counter() - t0)
        writer.close()

    await asyncio.gather(*(worker(w) for w in range(conns)))
    took = max(time.perf_counter(), end) - start
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    return {"mode": mode, "requests": len(lat), "errors": errors, "per_s": round(len(lat) / took, 1),
            "p50_ms": round(q(0.5), 3), "p90_ms": round(q(0.9), 3), "p99_ms": round(q(0.99), 3),
            "max_ms": round(lat[-1] * 1000, 3) if lat else None}


def load(port: int, bodies_file: str, mode: str, rate: float, seconds: float, conns: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    bodies = json.loads(Path(bodies_file).read_text())
    res = asyncio.run(_load(port, [b.encode("latin-1") for b in bodies], mode, rate, seconds, conns))
    print(json.dumps(res))


# -- orchestration --------------------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its live children (the decide workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int, timeout: float = 120) -> None:
    t = time.time() + timeout
    while time.time() < t:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("the server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--people", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="decide worker processes (0: the server decides)")
    ap.add_argument("--fronts", type=int, default=1,
                    help="front processes answering HTTP before the writer (0: the HTTP process writes the log too)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--load", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="sustained", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve, a.port, a.workers, a.fronts)
        return
    if a.load:
        load(a.port, a.load, a.mode, a.rate, a.seconds, a.connections)
        return
    if a.quick:
        a.people, a.days, a.seconds, a.runs = 3_000, 60, 5, 1
    tmp = Path(tempfile.mkdtemp(prefix="plait-decide-bench-"))
    try:
        t0 = time.perf_counter()
        bodies = build(tmp / "ws", a.people, a.days)
        setup_s = time.perf_counter() - t0
        (tmp / "bodies.json").write_text(json.dumps([b.decode("latin-1") for b in bodies]))
        port = _free_port()
        server = subprocess.Popen([sys.executable, str(HERE), "--serve", str(tmp / "ws"), "--port", str(port),
                                   "--workers", str(a.workers), "--fronts", str(a.fronts)],
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            _wait(port)
            # Warm-up: the first requests load code paths and caches.
            gen = [sys.executable, str(HERE), "--load", str(tmp / "bodies.json"), "--port", str(port)]
            subprocess.run(gen + ["--mode", "peak", "--seconds", "2", "--connections", "8"], check=True,
                           capture_output=True)
            runs: dict[str, list[dict]] = {"sustained": [], "peak": []}
            for _ in range(a.runs):
                for mode, extra in (("sustained", ["--rate", str(a.rate), "--connections", str(a.connections)]),
                                    ("peak", ["--connections", str(a.connections)])):
                    c0 = _cpu_s(server.pid)
                    out = subprocess.run(gen + ["--mode", mode, "--seconds", str(a.seconds), *extra], check=True,
                                         capture_output=True, text=True).stdout
                    r = json.loads(out.strip().splitlines()[-1])
                    r["server_cpu_us_per_decision"] = round((_cpu_s(server.pid) - c0) / max(r["requests"], 1) * 1e6, 1)
                    runs[mode].append(r)
                    print(f"{mode}: {runs[mode][-1]}", file=sys.stderr)
        finally:
            server.terminate()
            server.wait(timeout=60)
        med = lambda mode, k: statistics.median(r[k] for r in runs[mode])  # noqa: E731
        print(json.dumps({
            "people": a.people, "rules": 20, "offers": 50, "runs": a.runs, "seconds": a.seconds,
            "decisions_per_s": med("peak", "per_s"), "p50_ms": med("sustained", "p50_ms"),
            "p99_ms": med("sustained", "p99_ms"), "sustained_rate": a.rate,
            "sustained_per_s": med("sustained", "per_s"), "peak_p50_ms": med("peak", "p50_ms"),
            "peak_p99_ms": med("peak", "p99_ms"), "errors": sum(r["errors"] for m in runs.values() for r in m),
            "setup_s": round(setup_s, 1), "detail": runs}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
