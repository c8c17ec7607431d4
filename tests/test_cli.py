from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

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


def test_demo_runs(tmp_path):
    r = run("--workspace", str(tmp_path / "d"), "demo", "--people", "300", "--days", "30")
    assert r.exit_code == 0
    assert "idempotent" in r.stdout and "orders by channel" in r.stdout
