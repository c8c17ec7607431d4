"""Which message ids the log already holds: idempotent appends without a key index.

A primary-key index made every append pay for an ART insert that grew with the log
(measured with ``benchmarks/ingest.py``: /v1/batch fell from 23.6 k events/s on an
empty log to 16 k over a million-event one). Instead the writer keeps a 64-bit hash of
every message id in memory — 8 bytes per event, loaded once on the first append — in
three tiers: a Python set for the
newest ids, a sorted array for the recent ones and a sorted base array; tiers merge
as they fill, so lookups stay ``O(log n)`` per id and inserts amortised ``O(1)``.

The hash is the first 8 bytes of the id's MD5 (big-endian): computed in Python for
small appends (about a microsecond an id, no engine round trip) and by the engine for
large ones and for loading, with the same result (:meth:`Dialect.id_hash`).

A hash only says *maybe seen*: candidates are confirmed against the log by exact
message id before anything is skipped, so a hash collision can never drop an event.
Only the process that writes the log (DuckDB allows one) holds this index.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from plait.engine.backend import Backend, numbers

_SMALL = 65_536        # newest tier (a set) merges into the sorted middle tier past this
_MEDIUM = 2_000_000    # middle tier merges into the base past this
_PY_HASH_MAX = 4096    # up to this many ids are hashed in Python; more go to the engine


def id_hashes(backend: Backend, ids: pa.Array) -> np.ndarray:
    """64-bit hashes of message ids (see the module docstring)."""
    if len(ids) <= _PY_HASH_MAX:
        md5 = hashlib.md5
        return np.fromiter((int.from_bytes(md5(s.encode()).digest()[:8], "big") for s in ids.to_pylist()),
                           np.uint64, len(ids))
    return backend.id_hashes(ids)


class SeenIds:
    """The in-memory index of the log's message ids (see the module docstring)."""

    def __init__(self, backend: Backend, table: str = "events") -> None:
        self.backend = backend
        self.table = table
        self._base: np.ndarray | None = None
        self._mid = np.empty(0, np.uint64)
        self._new: set[int] = set()
        self._lock = threading.Lock()
        # The last batch new_rows saw and its hashes sorted: add() of that batch, all of it new,
        # need not sort it again (2 M hashes: 0.11 s a sort).
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

    def _load(self) -> None:
        if self._base is None:
            t = self.backend.query(f"SELECT {self.backend.dialect.id_hash('message_id')} AS h FROM {self.table}")
            self._base = np.sort(numbers(t.column(0), np.uint64))

    @staticmethod
    def _isin(sorted_arr: np.ndarray, h: np.ndarray) -> np.ndarray:
        if sorted_arr.size == 0:
            return np.zeros(h.size, bool)
        i = np.searchsorted(sorted_arr, h)
        i[i == sorted_arr.size] = 0
        return sorted_arr[i] == h

    def new_rows(self, ids: pa.Array | Callable[[np.ndarray], list[str]], hashes: np.ndarray, *,
                 ordered: bool = True) -> np.ndarray | None:
        """Indices of the rows whose ids are neither earlier in this batch nor in the log.

        ``ids`` is the batch's message ids, or a function giving the ids at some row
        indices (the engine's bulk path fetches only the few a hash cannot settle).
        Without ``ordered`` (the batch is not in its rows' order, so "earlier" means
        nothing) a hash that repeats within the batch gives None: the caller decides in order.
        """
        id_at = ids if callable(ids) else (lambda idx: ids.take(pa.array(idx)).to_pylist())
        with self._lock:
            self._load()
            n = hashes.size
            keep = np.ones(n, bool)
            # First occurrence within the batch (equal hashes with different ids are collisions: keep both).
            # A plain sort finds whether any hash repeats at half an argsort's cost; most batches have none.
            hs = np.sort(hashes)
            self._sorted = (hashes, hs)
            if n > 1 and (hs[1:] == hs[:-1]).any():
                if not ordered:
                    return None
                order = np.argsort(hashes, kind="stable")
                hs = hashes[order]
                idx = np.flatnonzero(hs[1:] == hs[:-1]) + 1
                ab = id_at(np.concatenate([order[idx], order[idx - 1]]))
                dup_sorted = np.zeros(n, bool)
                dup_sorted[idx] = [a == b for a, b in zip(ab[: idx.size], ab[idx.size:])]
                keep[order[dup_sorted]] = False
            # Looked up in sorted order (5 M-hash tier, 25 k lookups: 2.4 against 13 ms unsorted);
            # the few hits, if any, are mapped back to their rows.
            hit = self._isin(self._base, hs) | self._isin(self._mid, hs)
            maybe = np.isin(hashes, hs[hit]) if hit.any() else np.zeros(n, bool)
            if self._new:
                if n < len(self._new):
                    maybe |= np.fromiter((int(x) in self._new for x in hashes), bool, n)
                else:
                    maybe |= self._isin(np.sort(np.fromiter(self._new, np.uint64, len(self._new))), hashes)
            maybe &= keep
            if maybe.any():
                cidx = np.flatnonzero(maybe)
                cand = id_at(cidx)
                present = set(self._present(pa.array(cand, pa.string())))
                if present:
                    hit = np.fromiter((v in present for v in cand), bool, cidx.size)
                    keep[cidx[hit]] = False
            return np.flatnonzero(keep)

    def _present(self, candidates: pa.Array) -> list[str]:
        b = self.backend
        b.temp_table("__seen_cand", pa.table({"message_id": candidates}))
        rows = b.query(f"SELECT DISTINCT e.message_id FROM {self.table} e SEMI JOIN __seen_cand c USING (message_id)")
        return rows.column(0).to_pylist()

    def add(self, hashes: np.ndarray, keep: np.ndarray | None = None) -> None:
        """Remember newly appended ids (never already present, so tiers stay disjoint): all of
        ``hashes``, or those at the indices ``keep`` (what :meth:`new_rows` returned)."""
        if keep is not None and keep.size < hashes.size:
            hashes = hashes[keep]
        with self._lock:
            memo, self._sorted = self._sorted, None
            if hashes.size > _PY_HASH_MAX:
                # Merged, not re-sorted: a stable sort of two sorted runs is timsort's linear merge
                # (2 M new hashes: 0.03 s, where np.insert took 0.15–0.23 s).
                new = memo[1] if memo is not None and memo[0] is hashes else np.sort(hashes.astype(np.uint64, copy=False))
                self._mid = np.sort(np.concatenate([self._mid, new]), kind="stable") if self._mid.size else new
            else:
                self._new.update(hashes.tolist())
            if len(self._new) > _SMALL:
                self._mid = np.sort(np.concatenate([self._mid, np.fromiter(self._new, np.uint64, len(self._new))]))
                self._new.clear()
            if self._mid.size > _MEDIUM:
                self._base = np.sort(np.concatenate([self._base, self._mid]), kind="stable")   # (two sorted runs)
                self._mid = np.empty(0, np.uint64)
