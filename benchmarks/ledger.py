"""Ledger benchmark: appends, signed heads, proofs and a full audit at 1 M entries.

    python benchmarks/ledger.py [--quick]

Appends are durable (one fsync per call): measured one entry per call and 1,000 per call.
Proof figures are medians over random indices / size pairs at the full size. Prints one
JSON line. (``--quick``: 100,000 entries.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from plait.privacy.ledger import Ledger, TreeHead, audit, verify_consistency, verify_inclusion

SEED = bytes(range(32))


def _median_us(fn, args_list) -> float:  # noqa: ANN001
    out = []
    for args in args_list:
        t = time.perf_counter_ns()
        fn(*args)
        out.append(time.perf_counter_ns() - t)
    return round(statistics.median(out) / 1000, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    n = 100_000 if a.quick else 1_000_000
    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(1)
    try:
        led = Ledger(tmp, seed=SEED)
        singles = 2_000
        t = time.perf_counter()
        for i in range(singles):
            led.append("consent", {"subject": f"email:p{i}@example.com", "purpose": "marketing", "granted": True})
        single_rate = singles / (time.perf_counter() - t)
        t = time.perf_counter()
        batch = 1_000
        for start in range(singles, n, batch):
            led.append_many([("sharing", {"partner": "acme", "subject": f"id-{j}", "records": j % 97})
                             for j in range(start, min(n, start + batch))])
        batch_rate = (n - singles) / (time.perf_counter() - t)
        t = time.perf_counter()
        head = led.head()
        sign_ms = (time.perf_counter() - t) * 1000
        led.close()
        t = time.perf_counter()
        led = Ledger(tmp, seed=SEED)
        reopen_s = time.perf_counter() - t
        key = led.public_key_hex
        idx = [(int(i), n) for i in rng.integers(0, n, 1000)]
        prove_us = _median_us(led.prove, idx)
        proofs = [(key, head, led.entry(i), led.prove(i, n), i) for i, _ in idx[:500]]
        verify_us = _median_us(verify_inclusion, proofs)
        assert all(verify_inclusion(*p) for p in proofs[:50])
        # Consistency: from earlier tree heads (signed here as the ledger would have) to the current one.
        sizes = sorted({int(m) for m in rng.integers(1, n, 200)})
        old_heads = {}
        for m in sizes:
            root = led.root(m).hex()
            unsigned = TreeHead(m, 0, root, "")
            old_heads[m] = TreeHead(m, 0, root, led._key.sign(unsigned.signed_bytes()).hex())
        cons_us = _median_us(led.consistency, [(m, n) for m in sizes])
        cons = [(key, old_heads[m], head, led.consistency(m, n)) for m in sizes]
        cons_verify_us = _median_us(verify_consistency, cons)
        assert all(verify_consistency(*c) for c in cons[:20])
        t = time.perf_counter()
        problems = audit(tmp, key)
        audit_s = time.perf_counter() - t
        size_mb = sum(p.stat().st_size for p in tmp.iterdir()) / 1e6
        led.close()
        print(json.dumps({
            "benchmark": "ledger", "entries": n, "file_mb": round(size_mb, 1),
            "append_single_per_s": round(single_rate), "append_batch1000_per_s": round(batch_rate),
            "sign_head_ms": round(sign_ms, 2), "reopen_s": round(reopen_s, 2),
            "inclusion_prove_us_median": prove_us, "inclusion_verify_us_median": verify_us,
            "inclusion_proof_hashes": len(led.prove(0, n)),
            "consistency_prove_us_median": cons_us, "consistency_verify_us_median": cons_verify_us,
            "audit_s": round(audit_s, 2), "audit_problems": len(problems),
        }))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
