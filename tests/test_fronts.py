"""``plait serve --fronts N``: front processes answer HTTP, the writer owns the workspace."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import plait
from plait.errors import ConfigError
from plait.server.fronts import listen

httpx = pytest.importorskip("httpx", reason="httpx is a test dependency")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="front processes need os.fork")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except FileNotFoundError:
        return []


class Server:
    def __init__(self, path: Path, *args: str) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "plait.cli.main", "--workspace", str(path), "serve",
                                      "--port", str(self.port), *args], stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.proc.kill()
        raise AssertionError("server did not start: " + self.proc.stderr.read().decode()[-3000:])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(60)


@pytest.fixture
def world(tmp_path):
    path = tmp_path / "ws"
    with plait.connect(path) as ws:
        key = ws.keys.create("shop")
        analyst = ws.keys.create("bi", role="analyst")
        admin = ws.keys.create("ops", role="admin")
        ws.log.append([ws.parser.parse({"type": "identify", "userId": f"u{i}"}, received_at=0, source="test")
                       for i in range(6)])
        ws.resolve()
        for i in range(6):
            ws.consent.set(f"user_id:u{i}", "marketing", True)
            ws.consent.set(f"user_id:u{i}", "personalisation", True)
        (ws.path / "rules").mkdir()
        (ws.path / "rules" / "crm.json").write_text(json.dumps({
            "offers": [{"id": "banner", "value": 2, "channels": ["web"]}],
            "rules": [{"id": "all", "actions": [{"offer": "banner"}]}]}))
        ws.settings.decide.global_control = 0
        ws.settings.save(ws.path)
    return path, key, analyst, admin


def test_fronts_collect_durably_decide_and_pass_everything_else(world):
    path, key, analyst, key_admin = world
    srv = Server(path, "--fronts", "2", "--decide-workers", "2")
    try:
        kids = _children(srv.proc.pid)
        fronts = httpx.get(srv.url + "/health").json()["fronts"]["pids"]
        assert len(fronts) == 2 and set(fronts) < set(kids)
        assert len(kids) == 5                               # 2 fronts, 2 decide workers, the zygote
        c = httpx.Client(base_url=srv.url, auth=(key, ""), timeout=10)
        before = httpx.get(srv.url + "/health").json()["events"]
        # The collector, answered by a front; 200 only once the writer committed the events.
        for i in range(20):
            r = c.post("/v1/track", json={"userId": f"u{i % 6}", "event": "Product Viewed", "messageId": f"t{i}",
                                          "properties": {"price": 3}})
            assert r.status_code == 200, r.text
        body = gzip.compress(json.dumps({"batch": [
            {"type": "track", "userId": "u1", "event": "Cart Viewed", "messageId": "b1"},
            {"type": "track", "event": "No one"},
        ]}).encode())
        r = c.post("/v1/batch", content=body, headers={"content-encoding": "gzip", "content-type": "application/json"})
        assert r.status_code == 400 and r.json()["accepted"] == 1
        assert r.json()["errors"][0]["index"] == 1 and r.json()["errors"][0]["field"] == "userId"
        assert httpx.post(srv.url + "/v1/track", json={"userId": "u1", "event": "X"}, auth=("wrong", "")).status_code == 401
        assert c.post("/v1/track", content=b"{not json").status_code == 400
        # Decisions, routed by the fronts to the worker owning the customer.
        got = [c.post("/v1/decide", json={"customer": f"user_id:u{i}", "placement": "web_banner"}).json()
               for i in range(6)]
        assert all([a["offer_id"] for a in g["actions"]] == ["banner"] for g in got)
        # Everything else is answered by the writer's app, key checks and all.
        # Acknowledged events are in the journal; the log has them within collector.journal_load_ms.
        deadline = time.time() + 10
        while ((health := httpx.get(srv.url + "/health").json())["events"] < before + 21
               or health["rejected"] < 2) and time.time() < deadline:
            time.sleep(0.05)
        assert health["events"] >= before + 20 + 1 and health["rejected"] == 2    # (+ decisions recorded meanwhile)
        assert httpx.get(srv.url + "/openapi.json").json()["info"]["title"] == "Plait"
        prof = httpx.get(srv.url + "/v1/profiles/lookup", params={"identifier": "user_id:u1"}, auth=(analyst, ""))
        assert prof.status_code == 200 and prof.json()["profile_id"] and prof.headers["content-type"].startswith("application/json")
        assert httpx.get(srv.url + "/v1/decide/rules", auth=(key, "")).status_code == 403
        assert httpx.get(srv.url + "/v1/decide/rules", auth=(analyst, "")).json()["rules"] == ["all"]
        assert httpx.get(srv.url + "/nowhere").status_code == 404
        # A reload reaches the writer, both workers and both fronts (they route by the same store).
        admin = key_admin
        r = httpx.post(srv.url + "/v1/decide/reload", auth=(admin, ""), timeout=30)
        assert r.status_code == 200 and r.json()["processes"] == 5 and r.json()["customers"] == 6
        assert c.post("/v1/decide", json={"customer": "user_id:u1", "placement": "web_banner"}).status_code == 200
        assert not list(path.glob(".decide-store-*"))       # the profiles' copy never outlives the reload
    finally:
        assert srv.stop() == 0
    assert all(not Path(f"/proc/{p}").exists() for p in kids)  # every process of the server ended
    with plait.connect(path) as ws:
        rows = ws.log.events(limit=None).to_pylist()
        assert {r["message_id"] for r in rows} >= {f"t{i}" for i in range(20)} | {"b1"}
        assert sum(r["event"] == "Decision Made" for r in rows) == 7     # the workers' record reached the log
        assert ws.log.rejected_count() == 2


def test_a_killed_front_is_replaced_and_what_it_acknowledged_is_kept(world):
    path, key, _, _ = world
    srv = Server(path, "--fronts", "1")
    try:
        (front,) = httpx.get(srv.url + "/health").json()["fronts"]["pids"]
        r = httpx.post(srv.url + "/v1/track", json={"userId": "u1", "event": "Kept", "messageId": "k1"}, auth=(key, ""))
        assert r.status_code == 200
        os.kill(front, signal.SIGKILL)
        deadline = time.time() + 30
        health: dict = {}
        while time.time() < deadline:
            try:
                health = httpx.get(srv.url + "/health", timeout=2).json()
                if health["fronts"]["replaced"] == 1 and health["fronts"]["pids"]:
                    break
            except httpx.TransportError:              # no front accepting for a moment
                pass
            time.sleep(0.1)
        (replacement,) = health["fronts"]["pids"]
        assert replacement != front and srv.proc.poll() is None
        r = httpx.post(srv.url + "/v1/track", json={"userId": "u2", "event": "Kept", "messageId": "k2"}, auth=(key, ""))
        assert r.status_code == 200
    finally:
        assert srv.stop() == 0
    assert not Path(f"/proc/{replacement}").exists() or "zombie" in Path(f"/proc/{replacement}/status").read_text()
    with plait.connect(path) as ws:
        assert {"k1", "k2"} <= {r["message_id"] for r in ws.log.events(limit=None).to_pylist()}


def test_connections_spread_over_the_fronts_and_skip_a_dead_one(world):
    path, key, _, _ = world
    srv = Server(path, "--fronts", "2")
    try:
        fronts = httpx.get(srv.url + "/health").json()["fronts"]["pids"]
        assert len(fronts) == 2

        def connections(pid: int) -> int:
            """Established connections to the server's port that this process holds."""
            inodes = set()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    link = os.readlink(fd)
                except FileNotFoundError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
            n = 0
            for table in ("/proc/net/tcp", "/proc/net/tcp6"):
                for line in Path(table).read_text().splitlines()[1:]:
                    f = line.split()
                    if f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == srv.port and f[9] in inodes:
                        n += 1
            return n

        # Each connection lands on one front's socket (SO_REUSEPORT): of 16 kept open, both
        # fronts hold some (one front taking all 16 by chance: 1 in 32,768).
        clients = [httpx.Client(base_url=srv.url, auth=(key, ""), timeout=10) for _ in range(16)]
        for i, c in enumerate(clients):
            assert c.post("/v1/track", json={"userId": f"u{i}", "event": "Spread"}).status_code == 200
        held = [connections(p) for p in fronts]
        assert sum(held) == 16 and min(held) > 0, held
        for c in clients:
            c.close()
        os.kill(fronts[0], signal.SIGKILL)            # its socket closes with it: no connection is stranded
        time.sleep(0.3)
        for i in range(20):
            with httpx.Client(base_url=srv.url, auth=(key, ""), timeout=5) as c:
                assert c.post("/v1/track", json={"userId": f"v{i}", "event": "After"}).status_code == 200
    finally:
        assert srv.stop() == 0


def test_a_port_in_use_is_a_clear_error(world):
    path, _, _, _ = world
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "plait.cli.main", "--workspace", str(path), "serve",
                            "--port", str(port), "--fronts", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "another --port" in r.stderr


def test_acknowledged_events_survive_a_killed_server_and_consent_skips_the_journal(world):
    path, key, _, _ = world
    with plait.connect(path) as ws:
        ws.settings.collector.journal_load_ms = 60_000     # nothing reaches the log by the timer
        ws.settings.save(ws.path)
    srv = Server(path, "--fronts", "1")
    kids = _children(srv.proc.pid)
    c = httpx.Client(base_url=srv.url, auth=(key, ""), timeout=10)
    before = c.get("/health").json()["events"]
    for i in range(30):
        assert c.post("/v1/track", json={"userId": "u1", "event": "Product Viewed", "messageId": f"j{i}"}).status_code == 200
    assert c.post("/v1/batch", json={"batch": [{"type": "track", "userId": "u2", "event": "X", "messageId": "jb"},
                                                {"type": "track", "event": "no id"}]}).status_code == 400
    health = c.get("/health").json()
    assert health["events"] == before and health["journal"]["backlog_bytes"] > 0   # journaled, not yet loaded
    # A consent choice is in the log when its 200 goes out (decisions read consent from the log).
    r = c.post("/v1/track", json={"userId": "u1", "event": "Consent Updated", "messageId": "cons1",
                                  "properties": {"purpose": "marketing", "granted": False}})
    assert r.status_code == 200 and c.get("/health").json()["events"] == before + 1
    assert list((path / "journal").glob("*.journal"))
    for pid in [srv.proc.pid, *kids]:                             # a crash: no shutdown at all
        os.kill(pid, signal.SIGKILL)
    srv.proc.wait(30)
    with plait.connect(path) as ws:                               # opening replays the journal
        ids = {r["message_id"] for r in ws.log.events(limit=None).to_pylist()}
        assert {f"j{i}" for i in range(30)} | {"jb", "cons1"} <= ids
        assert ws.log.rejected_count() == 1
        assert not list((path / "journal").glob("*.journal"))
    with plait.connect(path) as ws:                               # and only once
        assert len([m for m in (r["message_id"] for r in ws.log.events(limit=None).to_pylist()) if m.startswith("j")]) == 31


def test_the_writers_engine_leaves_the_fronts_their_cores_unless_told(tmp_path, monkeypatch):
    from plait.server.fronts import share_cores

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    with plait.connect(tmp_path / "a") as ws:
        share_cores(ws, 3)
        assert ws.backend.scalar("SELECT current_setting('threads')") == 1
        share_cores(ws, 1)
        assert ws.backend.scalar("SELECT current_setting('threads')") == 3
    with plait.connect(tmp_path / "b") as ws:
        ws.settings.engine.threads = 1
        ws.settings.save(ws.path)
    with plait.connect(tmp_path / "b") as ws:
        share_cores(ws, 1)                                   # the workspace's setting wins over 4 - 1
        assert ws.backend.scalar("SELECT current_setting('threads')") == 1


def test_nothing_outlives_a_killed_writer(world):
    path, _, _, _ = world
    srv = Server(path, "--fronts", "1")
    kids = _children(srv.proc.pid)
    assert len(kids) == 2                                   # the front and the zygote
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)

    def running(pid: int) -> bool:
        try:
            return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False

    deadline = time.time() + 20
    while any(running(p) for p in kids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(running(p) for p in kids)


def test_a_second_server_cannot_join_a_port_in_use():
    held = listen("127.0.0.1", 0, 2, fronts=True)            # a running server's fronts
    port = held[0].getsockname()[1]
    try:
        for fronts in (True, False):
            with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
                listen("127.0.0.1", port, 2 if fronts else 1, fronts=fronts)
        # What the plain bind first prevents: with SO_REUSEPORT alone, another server joined the
        # port and the kernel gave it a share of the first one's connections.
        socket.create_server(("127.0.0.1", port), reuse_port=True).close()
    finally:
        for s in held:
            s.close()


def test_plait_ingest_sends_files_to_a_running_server(world, tmp_path):
    """The CLI cannot open a served workspace; ``plait ingest --server`` streams the file to the
    writer through a front, and the answer is the import's report."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from plait.cli.main import app

    path, _, analyst, admin = world
    pq.write_table(pa.table({"receipt": [f"r{i}" for i in range(1000)], "card": [f"c{i % 90}" for i in range(1000)],
                             "ts": ["2025-03-01 12:00:00"] * 1000, "total": [12.5] * 1000}), tmp_path / "pos.parquet")
    args = ["ingest", str(tmp_path / "pos.parquet"), "--map", "order_id=receipt", "--map", "anonymous_id=card",
            "--map", "timestamp=ts", "--map", "amount=total", "--set", "event=Order Completed", "--set", "currency=USD"]
    runner = CliRunner()
    srv = Server(path, "--fronts", "1")
    try:
        r = runner.invoke(app, [*args, "--server", srv.url, "--key", analyst])
        assert r.exit_code != 0 and "403" in str(r.exception)
        r = runner.invoke(app, [*args, "--server", srv.url, "--key", admin])
        assert r.exit_code == 0 and "1,000 new events" in " ".join(r.output.split()), (r.output, r.exception)
        r = runner.invoke(app, [*args, "--server", srv.url, "--key", admin])
        assert r.exit_code == 0 and "already imported" in " ".join(r.output.split()), r.output
        assert httpx.get(srv.url + "/health").json()["events"] == 6 + 12 + 1000    # identifies, consents, orders
        # `plait stats` and `plait events` read the served workspace through the server too.
        r = runner.invoke(app, ["stats", "--json", "--server", srv.url, "--key", analyst])
        assert r.exit_code == 0 and json.loads(r.output)["events"] == 1018, (r.output, r.exception)
        r = runner.invoke(app, ["events", "--server", srv.url, "--key", analyst, "--event", "Order Completed", "-n", "3"])
        assert r.exit_code == 0 and r.output.count("12.50") == 3, (r.output, r.exception)       # three orders
        r = runner.invoke(app, ["events", "--json", "--server", srv.url, "--key", analyst])
        assert r.exit_code != 0 and "403" in str(r.exception)                      # personal fields: admins only
        # The nightly resolve, while collecting: the 90 loyalty cards become customers.
        r = runner.invoke(app, ["resolve", "--server", srv.url, "--key", admin])
        assert r.exit_code == 0 and "became 96 customers" in " ".join(r.output.split()), (r.output, r.exception)
        r = runner.invoke(app, ["profiles", "show", "anonymous_id:c1", "--server", srv.url, "--key", analyst])
        assert r.exit_code == 0 and "prof_" in r.output and "orders=12" in r.output, (r.output, r.exception)
        r = runner.invoke(app, ["profiles", "timeline", "anonymous_id:c1", "-n", "5", "--server", srv.url, "--key", analyst])
        assert r.exit_code == 0 and r.output.count("12.50 USD") == 5, (r.output, r.exception)
        r = runner.invoke(app, ["profiles", "show", "anonymous_id:nobody", "--server", srv.url, "--key", analyst])
        assert r.exit_code != 0 and "404" in str(r.exception)
    finally:
        assert srv.stop() == 0
    r = runner.invoke(app, [*args, "--server", srv.url, "--key", admin])
    assert r.exit_code != 0 and "cannot reach" in str(r.exception)
    with plait.connect(path) as ws:
        assert ws.backend.scalar("SELECT count(*) FROM events WHERE event = 'Order Completed'") == 1000


def test_keys_created_and_revoked_over_http_reach_every_front(world):
    path, _, _, admin = world
    auth = lambda k: {"Authorization": "Basic " + __import__("base64").b64encode(f"{k}:".encode()).decode()}  # noqa: E731
    event = {"userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p1"}}

    def statuses(key: str) -> set[int]:
        # New connections each time, so both fronts answer (the kernel spreads them).
        return {httpx.post(srv.url + "/v1/track", json=event, headers=auth(key)).status_code for _ in range(12)}

    def within(seconds: float, key: str, want: set[int]) -> bool:
        deadline = time.time() + seconds
        while time.time() < deadline:
            if statuses(key) == want:
                return True
            time.sleep(0.2)
        return False

    srv = Server(path, "--fronts", "2")
    try:
        r = httpx.post(srv.url + "/v1/keys", json={"name": "new-app", "source": "app"}, headers=auth(admin))
        assert r.status_code == 201, r.text
        fresh = r.json()["key"]
        assert within(5, fresh, {200})                                  # onboarded without a restart
        assert httpx.delete(srv.url + "/v1/keys/new-app", headers=auth(admin)).json()["revoked"] == 1
        assert within(5, fresh, {401})                                  # and revoked everywhere
        # The same from the CLI: the new key alone on the last line, as without --server.
        from typer.testing import CliRunner

        from plait.cli.main import app

        runner = CliRunner()
        r = runner.invoke(app, ["keys", "create", "--name", "pos", "--server", srv.url, "--key", admin])
        assert r.exit_code == 0, (r.output, r.exception)
        pos = r.stdout.strip().splitlines()[-1]
        assert pos.startswith("wk_") and within(5, pos, {200})
        r = runner.invoke(app, ["keys", "list", "--server", srv.url, "--key", admin])
        assert r.exit_code == 0 and "new-app" in r.output and "pos" in r.output
        r = runner.invoke(app, ["keys", "revoke", "--name", "pos", "--server", srv.url, "--key", admin])
        assert r.exit_code == 0 and within(5, pos, {401})
    finally:
        assert srv.stop() == 0
