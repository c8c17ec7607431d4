from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

import plait
from plait.cli.main import app

runner = CliRunner()


def run(*args, env=None):
    r = runner.invoke(app, list(args), env=env, catch_exceptions=False)
    return r


def test_keys_create_prints_key_last(tmp_path):
    r = run("--workspace", str(tmp_path), "keys", "create", "--name", "web")
    assert r.exit_code == 0
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("wk_") and len(key) > 20


def test_ingest_and_stats_json_with_env_workspace(tmp_path):
    f = tmp_path / "e.jsonl"
    f.write_text('{"type":"track","event":"x","userId":"u","messageId":"1"}\n{"type":"track"}\n')
    env = {"PLAIT_WORKSPACE": str(tmp_path / "ws")}
    r = run("ingest", str(f), env=env)
    assert r.exit_code == 0 and "1 rejected" in r.stdout.replace("\n", " ")
    r = run("ingest", str(f), env=env)                    # the same file again: nothing to do, and said so
    assert r.exit_code == 0 and "already imported (2 rows" in " ".join(r.stdout.split())
    r = run("stats", "--json", env=env)
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["events"] == 1 and s["rejected"] == 1


def test_simulate_events_and_export(tmp_path):
    w = str(tmp_path / "ws")
    assert run("--workspace", w, "simulate", "--people", "200", "--days", "20", "--seed", "3").exit_code == 0
    r = run("--workspace", w, "events", "--event", "Order Completed", "-n", "3", "--json")
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["event"] == "Order Completed" for x in lines)
    assert run("--workspace", w, "log", "export", str(tmp_path / "out")).exit_code == 0
    assert any((tmp_path / "out").iterdir())


def test_errors_are_clear_not_tracebacks(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "settings.json").write_text('{"base_currency": "EURO"}')
    p = subprocess.run([sys.executable, "-m", "plait.cli.main", "--workspace", str(tmp_path / "ws"), "stats"],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert "base_currency" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "plait.cli.main", "--workspace", str(tmp_path / "w2"), "ingest",
                        str(tmp_path / "w2x.xml")], capture_output=True, text=True)
    assert p.returncode != 0 and "Traceback" not in p.stderr


def test_out_of_range_options_are_errors_not_tracebacks(tmp_path):
    w = str(tmp_path / "ws")
    for args, said in [
        (["simulate", "--people", "-5"], "people of at least 1, not -5"),
        (["simulate", "--days", "0"], "days of at least 1, not 0"),
        (["simulate", "--seed", "-1"], "seed of at least 0, not -1"),
        (["simulate", "--start", "2025-13-01"], "'2025-13-01' is not a date"),
        (["events", "--limit", "-3"], "limit must be 0 or more"),
        (["events", "--since", "yesterday"], "since 'yesterday' is not a date or time"),
        (["log", "rejected", "--limit", "-5"], "limit must be 0 or more"),
    ]:
        p = subprocess.run([sys.executable, "-m", "plait.cli.main", "--workspace", w, *args],
                           capture_output=True, text=True)
        assert p.returncode == 1 and said in " ".join(p.stderr.split()) and "Traceback" not in p.stderr, (args, p.stderr)


def test_event_filters_read_iso_dates_and_times_in_utc(tmp_path):
    with plait.connect(tmp_path / "ws") as ws:
        for i, t in enumerate(["2025-03-01T23:30:00Z", "2025-03-02T00:30:00Z", "2025-03-02T12:00:00+02:00"]):
            ws.log.append([ws.parser.parse({"type": "track", "event": "e", "userId": "u", "messageId": str(i),
                                            "timestamp": t}, received_at=0, source="t", correct_skew=False)])
        ids = lambda **kw: sorted(ws.log.events(**kw).column("message_id").to_pylist())
        assert ids(since="2025-03-02") == ["1", "2"]                    # a date is midnight UTC
        assert ids(until="2025-03-02") == ["0"]
        assert ids(since="2025-03-02T01:00:00+01:00") == ["1", "2"]     # 00:00 UTC
        assert ids(since="2025-03-02T10:00:00Z", until="2025-03-02T10:00:01Z") == ["2"]   # 12:00+02:00 is 10:00Z
        assert ids(limit=0) == []


def test_demo_runs(tmp_path):
    r = run("--workspace", str(tmp_path / "d"), "demo", "--people", "300", "--days", "30")
    assert r.exit_code == 0
    assert "idempotent" in r.stdout and "orders by channel" in r.stdout
    assert "replayed: +0 — the same log" in " ".join(r.stdout.split())
    assert "erased 2 people in one pass" in " ".join(r.stdout.split())
    assert "0 workspace files hold any trace" in " ".join(r.stdout.split())


def test_init_sets_base_currency(tmp_path):
    r = run("--workspace", str(tmp_path / "w"), "init", "--base-currency", "eur")
    assert r.exit_code == 0
    assert json.loads((tmp_path / "w" / "settings.json").read_text())["base_currency"] == "EUR"


def test_serve_accepts_events_over_http(tmp_path):
    import base64
    import socket
    import time
    import urllib.request

    w = str(tmp_path / "w")
    key = run("--workspace", w, "keys", "create", "--name", "web").stdout.strip().splitlines()[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "plait.cli.main", "--workspace", w, "serve", "--host", "127.0.0.1",
                          "--port", str(port)], stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/track", method="POST",
            data=b'{"userId":"u1","event":"Store Visit","properties":{"store_id":"s1"},"messageId":"x1"}',
            headers={"Content-Type": "application/json",
                     "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200 and json.loads(resp.read()) == {"success": True}
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())
        assert health["events"] == 1
        docs = urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=5).read()
        assert b"swagger" in docs.lower()
    finally:
        p.kill()  # a crash, not a clean shutdown
        p.wait(20)
    # The acknowledged event survived the crash (it was in DuckDB's WAL before the 200).
    r = run("--workspace", w, "stats", "--json")
    assert json.loads(r.stdout.strip().splitlines()[-1])["events"] == 1


def test_demo_in_a_fresh_interpreter(tmp_path):
    """The front door, as a user runs it: a new process importing only what plait imports."""
    p = subprocess.run([sys.executable, "-m", "plait.cli.main", "--workspace", str(tmp_path / "d"), "demo",
                        "--people", "300", "--days", "20"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "orders by channel" in p.stdout
