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


COMPARED = ("last", "first_canon", "street", "postcode", "birthday", "email", "phone")


def truth_keys(ws: "Workspace") -> pa.Table:
    """The simulator's truth (``identifier, person_id``) in the workspace's stored identifier form."""
    t = pq.read_table(ws.truth_dir / "identifiers.parquet")
    reg = ws.identity.registry
    as_type = {"cookie": "anonymous_id", "esp_id": "anonymous_id"}
    keys = [reg.key(*reg.normalise(as_type.get(a, a), v)[:2])
            for a, v in zip(t.column("identifier_type").to_pylist(), t.column("identifier_value").to_pylist())]
    return pa.table({"identifier": keys, "person_id": t.column("person_id")})


def evidenced_truth(ws: "Workspace", truth: pa.Table) -> pa.Table:
    """The truth narrowed to what the log can identify, for measuring recall.

    One person's identifiers count as one only where events connect them (identifiers
    carried together) or where two of their person records are *identifiable* as one:
    they agree exactly on at least two compared fields (surname, first name or its
    formal form, street, postcode, birthday, email, phone) and no other person's record
    holds those same values. A pair no method could tell apart from someone else (a
    surname and postcode that one in five people in the world share) is not counted;
    neither is an unregistered visitor's second browser that nothing ties to anyone.
    Precision is measured against the full truth, recall against this one.
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

    records: list[tuple[int, str, dict[str, str]]] = []
    for o in observations(ws, reg):
        ks = [k for k in o.keys if owner.get(k, -1) >= 0]
        for k in ks[1:]:
            if owner[k] == owner[ks[0]]:
                union(ks[0], k)
        rec = person_record(o.traits, reg, []) if ks and o.traits else None
        if rec is not None:
            records.append((owner[ks[0]], ks[0], {f: rec[f] for f in COMPARED if rec.get(f) is not None}))
    index: dict[tuple[str, ...], dict[tuple, set[int]]] = {}

    def holders(fields: tuple[str, ...], values: tuple) -> set[int]:
        idx = index.get(fields)
        if idx is None:
            idx = index[fields] = {}
            for person, _, r in records:
                if all(f in r for f in fields):
                    idx.setdefault(tuple(r[f] for f in fields), set()).add(person)
        return idx[values]

    mine: dict[int, list[tuple[str, dict[str, str]]]] = {}
    for person, anchor, r in records:
        for other, o in mine.get(person, ()):
            agree = tuple(f for f in COMPARED if f in r and r[f] == o.get(f))
            if len(agree) >= 2 and holders(agree, tuple(r[f] for f in agree)) == {person}:
                union(other, anchor)
        mine.setdefault(person, []).append((anchor, r))
    comp = [find(k) if owner.get(k, -1) >= 0 else k for k in ids]
    return pa.table({"identifier": ids, "person_id": comp})


def judged_scores(pred: pa.Table, truth: pa.Table, evidenced: pa.Table) -> dict[str, Any]:
    """Precision against the full truth, recall against the evidenced truth, and their F1."""
    full = pairwise_scores(pred, truth)
    ev = pairwise_scores(pred, evidenced)
    p, r = full["precision"], ev["recall"]
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "purity": full["purity"],
            "recall_all_pairs": full["recall"], "identifiers": full["identifiers"]}


def predicted(ws: "Workspace") -> pa.Table:
    """The newest resolution as ``identifier, profile_id``."""
    m = ws.identity.export()
    return pa.table({"identifier": pc.binary_join_element_wise(m["identifier_type"], m["identifier_value"], ":"),
                     "profile_id": m["profile_id"]})


def score(ws: "Workspace") -> dict[str, dict[str, Any]]:
    """The newest resolution against the simulator's truth: ``judged`` and ``full``."""
    pred, truth = predicted(ws), truth_keys(ws)
    return {"judged": judged_scores(pred, truth, evidenced_truth(ws, truth)), "full": pairwise_scores(pred, truth)}


__all__ = ["evidenced_truth", "judged_scores", "pairwise_scores", "predicted", "score", "truth_keys"]
