"""The collector's journal: acknowledge in a tenth of a millisecond, load the log in bulk.

A 200 from the collector means the events are durable. Committing each small group to DuckDB
costs ~3 ms whatever its size (binding the Arrow scan, the 24-column insert, the commit; measured
in ``docs/benchmarks.md``), which caps single-event collection at a few thousand requests a
second. With a journal, the writer appends each request's encoded records to a segment file and
``fdatasync``\\ s it — one sync for everything queued meanwhile, ~0.1 ms here — before it
acknowledges; a :class:`~plait.collect.collector.GroupCommitter` then loads the log from memory
in large batches, where a row costs microseconds, and a segment is deleted once everything in it
is in the log. Opening a workspace replays the segments left behind by a crash
(:func:`replay`); appends are idempotent by message id, so a replay never adds an event twice.

The writer of ``plait serve --fronts N`` (:mod:`plait.server.fronts`) uses it: there, queries see
an acknowledged event up to ``collector.journal_load_ms`` later. Events that change what a
decision may do — consent choices, complaints, orders — do not go through it (the front marks
them), so a withdrawal is in force when its 200 is sent.

Hand-written because it is a few dozen lines over ``os.write`` and ``os.fdatasync``; a
library WAL (SQLite, LMDB) would add a second store with its own recovery to reason about.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from plait.events.contract import Record
from plait.log.store import Rejection

if TYPE_CHECKING:
    from plait.collect.collector import GroupCommitter
    from plait.log.store import EventLog

_LEN = struct.Struct("!I")
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(tuple[list[Record], list[Rejection]])
_STOP = object()
SUFFIX = ".journal"


def encode(records: Sequence[Record], rejections: Sequence[Rejection] = ()) -> bytes:
    """One request's records and rejections, as the journal (and the fronts' frames) carry them."""
    return _enc.encode((list(records), list(rejections)))


def decode(payload: bytes) -> tuple[list[Record], list[Rejection]]:
    return _dec.decode(payload)


class _Segment:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.opened = time.monotonic()
        self.size = 0
        self.pending = 0
        self.closed = False
        self.failed = False


class Journal:
    """Durable group commit to segment files, then bulk loading through ``loader``.

    ``on_durable(tokens, error)`` is called from the journal's thread once per group with the
    tokens given to :meth:`submit` (``error`` is ``None`` when they are on disk)."""

    def __init__(self, folder: Path, loader: "GroupCommitter", on_durable: Callable[[list[Any], BaseException | None], None],
                 *, segment_bytes: int = 64 << 20, segment_s: float = 1.0, max_pending_rows: int = 500_000) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.loader = loader
        self.on_durable = on_durable
        self.segment_bytes = segment_bytes
        self.segment_s = segment_s
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Back-pressure: past this many rows journaled but not yet in the log, acknowledgements
        # wait for the loader (memory stays bounded; clients see latency, not errors).
        self.max_pending_rows = max_pending_rows
        self.pending_rows = 0
        self._drained = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._n = max((int(p.stem) for p in self.folder.glob(f"*{SUFFIX}") if p.stem.isdigit()), default=0)
        self.synced = 0

    def start(self) -> "Journal":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="plait-journal", daemon=True)
            self._thread.start()
        return self

    def submit(self, payload: bytes, token: Any) -> None:
        """Queue one request's encoded records (:func:`encode`); ``token`` comes back in ``on_durable``."""
        self._q.put((payload, token))

    def stop(self) -> None:
        """Write what is queued, then stop (the loader still holds what it has not loaded)."""
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join()
            self._thread = None

    def _segment(self) -> _Segment:
        self._n += 1
        return _Segment(self.folder / f"{self._n:012d}{SUFFIX}")

    def _run(self) -> None:
        seg = self._segment()
        stop = False
        while not stop:
            try:
                first = self._q.get(timeout=self.segment_s)
            except queue.Empty:
                first = None
            group = []
            if first is _STOP:
                stop = True
            elif first is not None:
                group.append(first)
            while not stop:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                else:
                    group.append(item)
            if group:
                with self._drained:
                    self._drained.wait_for(lambda: self.pending_rows < self.max_pending_rows, timeout=30)
                seg = self._write(seg, group)
            if seg.size and (stop or seg.size >= self.segment_bytes or time.monotonic() - seg.opened >= self.segment_s):
                self._close(seg)
                if not stop:
                    seg = self._segment()
        if not seg.closed:
            self._close(seg)

    def _write(self, seg: _Segment, group: list[tuple[bytes, Any]]) -> _Segment:
        data = b"".join(_LEN.pack(len(p)) + p for p, _ in group)
        try:
            os.write(seg.fd, data)
            os.fdatasync(seg.fd)
        except OSError as e:
            self.on_durable([t for _, t in group], e)
            # A segment that failed a write may hold a torn frame: start a fresh one.
            self._close(seg)
            return self._segment()
        seg.size += len(data)
        self.synced += len(group)
        self.on_durable([t for _, t in group], None)
        for payload, _ in group:
            records, rejections = decode(payload)
            n = len(records)
            with self._lock:
                seg.pending += 1
                self.pending_rows += n
            self.loader.put(records, rejections, lambda error, seg=seg, n=n: self._loaded(seg, error, n))
        return seg

    def _close(self, seg: _Segment) -> None:
        os.close(seg.fd)
        with self._lock:
            seg.closed = True
            done = seg.pending == 0 and not seg.failed
        if done:
            seg.path.unlink(missing_ok=True)

    def _loaded(self, seg: _Segment, error: BaseException | None, rows: int) -> None:
        """Called by the loader's thread: once a closed segment is all in the log, it goes."""
        with self._lock:
            seg.pending -= 1
            self.pending_rows -= rows
            self._drained.notify_all()
            seg.failed = seg.failed or error is not None
            done = seg.closed and seg.pending == 0 and not seg.failed
        if done:
            seg.path.unlink(missing_ok=True)


def replay(folder: Path, log: "EventLog", *, chunk_rows: int = 50_000) -> int:
    """Append what journal segments in ``folder`` hold (left by a crash) and delete them; events
    appended. A torn last frame — written but never synced, so never acknowledged — is skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    added = 0
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        data = path.read_bytes()
        records: list[Record] = []
        rejections: list[Rejection] = []
        at = 0
        while at + _LEN.size <= len(data):
            (n,) = _LEN.unpack_from(data, at)
            if at + _LEN.size + n > len(data):
                break
            try:
                recs, rejs = decode(data[at + _LEN.size:at + _LEN.size + n])
            except msgspec.DecodeError:
                break
            records += recs
            rejections += rejs
            at += _LEN.size + n
            if len(records) >= chunk_rows:
                added += log.append(records).inserted
                records = []
        log.reject(rejections)
        added += log.append(records).inserted
        path.unlink()
    return added


__all__ = ["Journal", "decode", "encode", "replay"]
