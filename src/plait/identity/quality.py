"""Accuracy of a resolution against ground truth: pairwise precision, recall, F1, purity.

Pairs are counted over identifiers present in both the resolution and the truth:
a predicted pair is two identifiers in one profile, a true pair two identifiers of one
person. Counting goes through cluster-size contingency (no pair is materialised).

>>> import pyarrow as pa
>>> pred = pa.table({"identifier": ["a", "b", "c", "d"], "profile_id": ["p", "p", "q", "q"]})
>>> truth = pa.table({"identifier": ["a", "b", "c", "d"], "person_id": [1, 1, 1, 2]})
>>> s = pairwise_scores(pred, truth)
>>> (s["true_positive_pairs"], s["predicted_pairs"], s["true_pairs"])
(1, 2, 3)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from plait.workspace import Workspace


def _pairs(counts: np.ndarray) -> int:
    c = counts.astype(np.int64)
    return int((c * (c - 1) // 2).sum())


def pairwise_scores(pred: pa.Table, truth: pa.Table) -> dict[str, Any]:
    """``pred``: identifier, profile_id; ``truth``: identifier, person_id.

    An identifier the truth gives to several people (a family computer's cookie) has no
    single right answer and is left out of the count.
    """
    ids, counts = np.unique(truth.column("identifier").to_numpy(zero_copy_only=False), return_counts=True)
    shared = ids[counts > 1]
    if shared.size:
        truth = truth.filter(pc.invert(pc.is_in(truth.column("identifier"), pa.array(shared))))
    joined = pred.join(truth, "identifier", join_type="inner")
    prof = np.unique(joined.column("profile_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
    pers = np.unique(joined.column("person_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
    cell = prof.astype(np.int64) * (int(pers.max(initial=0)) + 1) + pers
    _, cell_counts = np.unique(cell, return_counts=True)
    tp = _pairs(cell_counts)
    predicted = _pairs(np.bincount(prof))
    true = _pairs(np.bincount(pers))
    precision = tp / predicted if predicted else 1.0
    recall = tp / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    # Purity: share of identifiers whose profile's majority person is their person.
    majority = 0
    if joined.num_rows:
        cells, counts = np.unique(cell, return_counts=True)
        prof_of_cell = cells // (int(pers.max(initial=0)) + 1)
        best = np.zeros(int(prof.max()) + 1, dtype=np.int64)
        np.maximum.at(best, prof_of_cell, counts)
        majority = int(best.sum())
    return {
        "identifiers": joined.num_rows, "profiles": int(len(np.unique(prof))), "people": int(len(np.unique(pers))),
        "true_positive_pairs": tp, "predicted_pairs": predicted, "true_pairs": true,
        "precision": precision, "recall": recall, "f1": f1,
        "purity": majority / joined.num_rows if joined.num_rows else 1.0,
    }


COMPARED = ("last", "street", "postcode", "birthday", "email", "phone")


def truth_keys(ws: "Workspace") -> pa.Table:
    """The simulator's truth (``identifier, person_id``) in the workspace's stored identifier form."""
    t = pq.read_table(ws.truth_dir / "identifiers.parquet")
    reg = ws.identity.registry
    as_type = {"cookie": "anonymous_id", "esp_id": "anonymous_id"}
    keys = [reg.key(*reg.normalise(as_type.get(a, a), v)[:2])
            for a, v in zip(t.column("identifier_type").to_pylist(), t.column("identifier_value").to_pylist())]
    return pa.table({"identifier": keys, "person_id": t.column("person_id")})


def evidenced_truth(ws: "Workspace", truth: pa.Table) -> pa.Table:
    """The truth narrowed to what the log can show: one person's identifiers count as one
    only where events connect them (identifiers carried together) or where they carry
    personal data a matcher could compare (two records holding at least two of the same
    fields: name, street, postcode, birthday, email, phone). Identifiers nothing ties together (an
    unregistered visitor's second browser) become separate "people".
    """
    from plait.identity.resolver import observations, person_record

    reg = ws.identity.registry
    ids = truth.column("identifier").to_pylist()
    owner: dict[str, int] = {}
    for k, p in zip(ids, truth.column("person_id").to_pylist()):
        owner[k] = -1 if k in owner and owner[k] != p else p
    parent = {k: k for k in owner}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    records: dict[int, list[tuple[str, set[str]]]] = {}
    for o in observations(ws, reg):
        ks = [k for k in o.keys if owner.get(k, -1) >= 0]
        for k in ks[1:]:
            if owner[k] == owner[ks[0]]:
                union(ks[0], k)
        rec = person_record(o.traits, reg, []) if ks and o.traits else None
        if rec is not None:
            held = {f for f in COMPARED if rec.get(f) is not None}
            mine = records.setdefault(owner[ks[0]], [])
            # Two records can be matched only if both hold at least two of the compared fields.
            for other, fields in mine:
                if len(held & fields) >= 2:
                    union(other, ks[0])
            mine.append((ks[0], held))
    comp = [find(k) if owner.get(k, -1) >= 0 else k for k in ids]
    return pa.table({"identifier": ids, "person_id": comp})


__all__ = ["evidenced_truth", "pairwise_scores", "truth_keys"]
