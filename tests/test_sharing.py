"""Clean-room sharing: consent-gated keyed-hash matching, k-anonymity, ledger, loyalty points."""

from __future__ import annotations

import csv
import io
import json

from typer.testing import CliRunner

import plait
from plait.cli.main import app
from plait.privacy.sharing import hash_identifier
from plait.privacy.ledger import read_entries, LOG_FILE
from tests.test_identity import send

KEY = bytes(range(32))


def _world(ws, n: int = 30) -> None:
    for i in range(n):
        send(ws, {"type": "identify", "userId": f"u{i}", "traits": {"email": f"person{i}@example.net"}})
    ws.resolve()
    for i in range(n):
        if i % 3 != 0:                      # two thirds consent to partner sharing
            ws.consent.set(f"user_id:u{i}", "partner_sharing", True)
    ws.resolve()


def _partner(indices) -> list[str]:
    # The partner normalises and hashes its own customer list with the agreed key.
    return [hash_identifier(KEY, f"email:person{i}@example.net") for i in indices] + \
        [hash_identifier(KEY, "email:stranger@example.net")]


def test_only_consenting_customers_are_matched_and_rewarded(ws):
    _world(ws)
    r = ws.sharing.match("acme", KEY, _partner(range(0, 30, 2)))
    consenting = {i for i in range(0, 30, 2) if i % 3 != 0}
    assert r.overlap == len(consenting) == 10 and r.revealed
    assert set(r.matched) == {hash_identifier(KEY, f"email:person{i}@example.net") for i in consenting}
    assert r.points_awarded == 10
    earned = {row["user_id"] for row in ws.backend.rows(
        "SELECT user_id FROM events WHERE event = 'Loyalty Points Earned' AND source = 'partner-sharing'")}
    assert earned == {f"u{i}" for i in consenting}
    # Matching again rewards nobody twice; the ledger holds both matches, without identifiers.
    assert ws.sharing.match("acme", KEY, _partner(range(0, 30, 2))).points_awarded == 0
    entries = [json.loads(e) for _, e in read_entries(ws.path / LOG_FILE)]
    shares = [e for e in entries if e["kind"] == "sharing"]
    assert len(shares) == 2 and shares[0]["data"]["overlap"] == 10
    assert b"person" not in (ws.path / LOG_FILE).read_bytes()
    assert ws.ledger.verify() == []


def test_small_overlaps_are_not_revealed(ws):
    _world(ws)
    r = ws.sharing.match("tiny", KEY, _partner([1, 2, 4]))
    assert r.overlap == 3 and not r.revealed and r.matched == [] and r.points_awarded == 0


def test_withdrawing_consent_removes_a_customer_from_matching(ws):
    _world(ws)
    before = ws.sharing.audience(KEY)
    ws.consent.set("user_id:u1", "partner_sharing", False)
    ws.resolve()
    after = ws.sharing.audience(KEY)
    gone = hash_identifier(KEY, "email:person1@example.net")
    assert gone in before and gone not in after and len(after) == len(before) - 1


def test_share_cli_and_pseudonymised_export(tmp_path):
    w = tmp_path / "w"
    with plait.connect(w) as ws:
        _world(ws)
    runner = CliRunner()
    theirs = tmp_path / "acme.txt"
    theirs.write_text("\n".join(_partner(range(30))))
    overlap = tmp_path / "overlap.txt"
    r = runner.invoke(app, ["-w", str(w), "share", "match", "--partner", "acme", "--hashes", str(theirs),
                            "--key", KEY.hex(), "-o", str(overlap)])
    assert r.exit_code == 0, r.output
    assert len(overlap.read_text().split()) == 20
    ours = tmp_path / "ours.txt"
    assert runner.invoke(app, ["-w", str(w), "share", "audience", "--key", KEY.hex(), "-o", str(ours)]).exit_code == 0
    assert len(ours.read_text().split()) == 20
    r = runner.invoke(app, ["-w", str(w), "export", "identities", "--pseudonymise"])
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert rows and not any("person" in x["identifier_value"] or x["identifier_value"].startswith("u") for x in rows)
    assert len({x["identifier_value"] for x in rows}) == len(rows)
    assert runner.invoke(app, ["-w", str(w), "ledger", "verify"]).exit_code == 0
