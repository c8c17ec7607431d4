"""The ledger: RFC 9162 hashing, inclusion and consistency proofs, tamper evidence, CLI."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import plait
from plait.cli.main import app
from plait.errors import LedgerError
from plait.privacy.ledger import (
    HEADS_FILE,
    LOG_FILE,
    Ledger,
    audit,
    leaf_hash,
    node_hash,
    public_key_of,
    verify_consistency,
    verify_inclusion,
)

SEED = bytes(range(32))


def reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, written as the RFC states it (recursive, no caching)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:])).digest()


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path, seed=SEED)
    yield led
    led.close()


def test_hashes_follow_rfc_9162(ledger):
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    entries = []
    for n in range(1, 41):
        ledger.append("test", {"n": n})
        entries.append(ledger.entry(n - 1))
        assert ledger.root() == reference_mth(entries), n
        assert ledger.root(n // 2) == reference_mth(entries[: n // 2])


def test_every_inclusion_and_consistency_proof_verifies(ledger):
    heads = {}
    for n in range(1, 34):
        ledger.append("consent", {"subject": f"email:p{n}@x.com", "granted": n % 2 == 0})
        heads[n] = ledger.head()
    key = ledger.public_key_hex
    for n, h in heads.items():
        for i in range(n):
            assert verify_inclusion(key, h, ledger.entry(i), ledger.prove(i, n))
        for m in range(1, n + 1):
            assert verify_consistency(key, heads[m], h, ledger.consistency(m, n))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 70), st.data())
def test_wrong_proofs_fail(tmp_path_factory, n, data):
    led = Ledger(tmp_path_factory.mktemp("led"), seed=SEED)
    for i in range(n):
        led.append("x", {"i": i})
    head = led.head()
    key = led.public_key_hex
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(0, n - 1).filter(lambda x: x != i))
    proof = led.prove(i, n)
    assert verify_inclusion(key, head, led.entry(i), proof)
    assert not verify_inclusion(key, head, led.entry(j), proof)                   # another entry
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[k] = ("0" if bad[k][0] != "0" else "1") + bad[k][1:]
        assert not verify_inclusion(key, head, led.entry(i), bad)                  # a changed sibling
    assert not verify_inclusion("00" * 32, head, led.entry(i), proof)              # another key
    old = [h for h in led.heads() if h.size == n][0]
    led.append("x", {"late": True})
    newer = led.head()
    proof = led.consistency(n, newer.size)
    assert verify_consistency(key, old, newer, proof)
    assert not verify_consistency(key, newer, old, proof)
    if proof:
        assert not verify_consistency(key, old, newer, proof[:-1])
    led.close()


def _small(tmp_path) -> Ledger:
    led = Ledger(tmp_path, seed=SEED)
    for i in range(7):
        led.append("sharing" if i % 2 else "consent", {"i": i, "partner": "acme"})
        if i in (2, 6):
            led.head()
    return led


def test_every_single_byte_tampering_is_detected(tmp_path):
    led = _small(tmp_path)
    assert led.verify() == []
    led.close()
    key = public_key_of(SEED)
    for name in (LOG_FILE, HEADS_FILE):
        path = tmp_path / name
        original = path.read_bytes()
        for pos in range(len(original)):
            for flip in (0x01, 0x80):
                changed = bytearray(original)
                changed[pos] ^= flip
                path.write_bytes(bytes(changed))
                assert audit(tmp_path, key), f"{name} byte {pos} ^ {flip:#x} went unnoticed"
        path.write_bytes(original)
    # Truncation and a removed head are tampering too.
    log = tmp_path / LOG_FILE
    data = log.read_bytes()
    log.write_bytes(data[:-3])
    assert audit(tmp_path, key)
    log.write_bytes(data)
    heads = (tmp_path / HEADS_FILE).read_bytes().splitlines(keepends=True)
    (tmp_path / HEADS_FILE).write_bytes(b"".join(heads[:1]))
    assert any("after the last signed head" in p for p in audit(tmp_path, key))


def test_reopen_keeps_the_tree_and_refuses_bad_requests(tmp_path):
    led = _small(tmp_path)
    root = led.root()
    led.close()
    again = Ledger(tmp_path, seed=SEED)
    assert again.root() == root and again.size == 7
    again.append("erasure", {"subject": "email:p1@x.com"})
    head = again.head()
    old = again.heads()[0]
    assert verify_consistency(again.public_key_hex, old, head, again.consistency(old.size))
    with pytest.raises(LedgerError, match="no entry 99"):
        again.entry(99)
    with pytest.raises(LedgerError, match="beyond"):
        again.prove(0, 100)
    again.close()


def test_workspace_ledger_and_cli(tmp_path):
    runner = CliRunner()
    w = str(tmp_path / "w")
    r = runner.invoke(app, ["-w", w, "ledger", "append", "--kind", "sharing", "--data", '{"partner": "acme"}'])
    assert r.exit_code == 0, r.output
    runner.invoke(app, ["-w", w, "ledger", "append", "--kind", "consent", "--data", '{"subject": "email:a@b.co"}'])
    proof = tmp_path / "proof.json"
    assert runner.invoke(app, ["-w", w, "ledger", "prove", "0", "-o", str(proof)]).exit_code == 0
    # The partner holds only the document and the public key.
    key = json.loads(proof.read_text())["public_key"]
    assert runner.invoke(app, ["ledger", "verify-proof", str(proof), "--public-key", key]).exit_code == 0
    assert runner.invoke(app, ["ledger", "verify-proof", str(proof), "--public-key", "11" * 32]).exit_code == 1
    cons = tmp_path / "cons.json"
    assert runner.invoke(app, ["-w", w, "ledger", "consistency", "1", "-o", str(cons)]).exit_code == 0
    assert runner.invoke(app, ["ledger", "verify-proof", str(cons)]).exit_code == 0
    assert runner.invoke(app, ["-w", w, "ledger", "verify"]).exit_code == 0
    r = runner.invoke(app, ["-w", w, "ledger", "append", "--kind", "x", "--data", "{nope"])
    assert r.exit_code == 1 and "not JSON" in str(r.exception)     # main() prints it without a traceback
    with plait.connect(w) as ws:
        assert ws.ledger.size == 2 and ws.ledger.public_key_hex == key
    log = tmp_path / "w" / LOG_FILE
    data = bytearray(log.read_bytes())
    data[10] ^= 0x01
    log.write_bytes(bytes(data))
    r = runner.invoke(app, ["-w", w, "ledger", "verify"])
    assert r.exit_code == 1
