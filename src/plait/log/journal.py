"""The collector's journal: each front acknowledges from its own segment files; the writer loads them.

A 200 from the collector means the events are durable. Committing each small group to DuckDB
costs ~3 ms whatever its size (binding the Arrow scan, the 24-column insert, the commit; measured
in ``docs/benchmarks.md``), which caps single-event collection at a few thousand requests a
second; and passing every request to the one writing process costs that process a frame
exchange per request. So each front process of ``plait serve --fronts N``
(:mod:`plait.server.fronts`) keeps its own :class:`Journal`: a request's encoded records are
appended to the front's current segment file and ``fdatasync``\\ ed — one sync for everything
that arrived meanwhile, in a helper thread while the front goes on parsing — and then answered.
The writer's :class:`Loader` reads what the fronts' segments hold every
``collector.journal_load_ms`` and loads the log in large batches, where a row costs
microseconds; a segment is deleted once it is finished (its front has moved to the next one) and
all in the log. Opening a workspace replays the segments a crash left behind (:func:`replay`);
appends are idempotent by message id, so an event loaded twice is in the log once.

Queries see an acknowledged event up to ``journal_load_ms`` later. Events that change what a
decision may do — consent choices, complaints, orders — do not go through it (the front sends
them to the writer), so a withdrawal is in force when its 200 is sent. When the loader falls
behind, a front holds its acknowledgements once it has ``max_segments`` segments not yet loaded
(clients see latency, not errors; the disk holds a bounded backlog).

Segment files are named ``{front}-{sequence}.journal`` and hold frames of a 4-byte length and a
payload: the records of one group as an Arrow IPC stream in the log's own layout (personal
fields still plain; the writer seals them), so the writer appends them without building a
Python object per event — or, for rejected input (and segments older than this format), a
msgpack ``(records, rejections)`` pair. Hand-written because it is a few dozen lines over ``os.write`` and
``os.fdatasync``; a library WAL (SQLite, LMDB) would add a second store with its own recovery
to reason about.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa
import pyarrow.ipc as ipc

from plait.errors import EngineError
from plait.events.contract import Record
from plait.log.schema import EVENT_SCHEMA, records_to_arrow
from plait.log.store import Rejection
from plait.log.vault import plain

if TYPE_CHECKING:
    from plait.log.store import EventLog

_log = logging.getLogger("plait.journal")
_LEN = struct.Struct("!I")
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(tuple[list[Record], list[Rejection]])
SUFFIX = ".journal"


def encode(records: Sequence[Record], rejections: Sequence[Rejection] = ()) -> bytes:
    """One request's records and rejections, as the journal (and the fronts' frames) carry them."""
    return _enc.encode((list(records), list(rejections)))


def decode(payload: bytes) -> tuple[list[Record], list[Rejection]]:
    return _dec.decode(payload)


_IPC = b"\xff\xff\xff\xff"          # how an Arrow IPC stream starts (a msgpack pair starts 0x92)


def arrow_frame(records: Sequence[Record]) -> bytes:
    """Records as a journal frame's payload: an Arrow IPC stream in the log's layout."""
    table = records_to_arrow(records, [plain(r.pii) for r in records])
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, EVENT_SCHEMA) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def read_frame(payload: bytes) -> tuple[pa.Table | None, list[Record], list[Rejection]]:
    """A frame's rows (Arrow), or its records and rejections (msgpack)."""
    if payload[:4] == _IPC:
        return ipc.open_stream(payload).read_all(), [], []
    recs, rejs = decode(payload)
    return None, recs, rejs


def _frames(data: bytes) -> tuple[list[bytes], int]:
    """The whole frames at the start of ``data`` and the bytes they take (a torn or unfinished
    last frame is left out)."""
    out, at, n = [], 0, len(data)
    while at + _LEN.size <= n:
        (size,) = _LEN.unpack_from(data, at)
        end = at + _LEN.size + size
        if end > n:
            break
        out.append(data[at + _LEN.size:end])
        at = end
    return out, at


def _sequence(path: Path) -> tuple[str, int]:
    """``(front, sequence)`` of a segment's name (older workspaces named segments by number alone)."""
    front, _, seq = path.stem.rpartition("-")
    return front, int(seq) if seq.isdigit() else 0


class Journal:
    """A front's segment files: :meth:`append` returns once the payload is synced to disk.

    Runs on the front's event loop; at most one write-and-sync is in flight, in a helper thread,
    and everything appended meanwhile goes into the next one (group commit)."""

    def __init__(self, folder: Path, name: str, *, segment_bytes: int = 64 << 20, segment_s: float = 1.0,
                 max_segments: int = 16, arrow_min_rows: int = 32) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.segment_bytes = segment_bytes
        self.segment_s = segment_s
        self.max_segments = max_segments
        self.arrow_min_rows = arrow_min_rows
        self._seq = max((_sequence(p)[1] for p in self.folder.glob(f"{name}-*{SUFFIX}")), default=0)
        self._fd = -1
        self._opened = 0.0
        self._size = 0
        self._records: list[Record] = []
        self._rejections: list[Rejection] = []
        self._waiting: list[asyncio.Future] = []
        self._busy = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"plait-journal-{name}")
        self.synced = 0          # groups written and synced
        self.held = 0            # times acknowledgements waited for the loader

    def append(self, records: Sequence[Record], rejections: Sequence[Rejection] = ()) -> asyncio.Future:
        """Queue one request's records and rejections; the future settles once they are on disk
        (or with the ``OSError`` that kept them off it)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._records.extend(records)
        if rejections:
            self._rejections.extend(rejections)
        self._waiting.append(fut)
        if not self._busy:
            self._busy = True
            loop.call_soon(self._write, loop)
        return fut

    def _write(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._waiting:
            self._busy = False
            return
        if self._fd < 0 or self._size >= self.segment_bytes or time.monotonic() - self._opened >= self.segment_s:
            if self._behind():
                self.held += 1
                loop.call_later(0.05, self._write, loop)
                return
            self._rotate()
        records, rejections, waiting = self._records, self._rejections, self._waiting
        self._records, self._rejections, self._waiting = [], [], []
        try:
            data = self._group(records, rejections)
        except Exception as e:  # noqa: BLE001 - a group that cannot be written is refused; the journal goes on
            error = EngineError(f"the journal could not encode these events: {type(e).__name__}: {e}")
            _log.warning("%s", error)
            for w in waiting:
                if not w.done():
                    w.set_exception(error)
            self._busy = False
            return
        done = loop.run_in_executor(self._pool, _write_sync, self._fd, data)
        done.add_done_callback(lambda f: self._written(loop, f, waiting, len(data)))

    def _group(self, records: list[Record], rejections: list[Rejection]) -> bytes:
        """One group's frames. Arrow costs per column, not per event: it pays for itself (in the
        writer, which then builds no object per event) only past a few dozen records."""
        if len(records) >= self.arrow_min_rows:
            frames = [encode([], rejections)] if rejections else []
            frames.append(arrow_frame(records))
        else:
            frames = [encode(records, rejections)]
        return b"".join(part for f in frames for part in (_LEN.pack(len(f)), f))

    def _written(self, loop: asyncio.AbstractEventLoop, f: asyncio.Future, waiting: list[asyncio.Future], n: int) -> None:
        error = f.exception()
        if error is None:
            self._size += n
            self.synced += 1
        else:
            # A segment that failed a write may hold a torn frame: the next group starts a fresh one.
            self._close()
        for w in waiting:
            if not w.done():
                w.set_result(None) if error is None else w.set_exception(error)
        self._write(loop)

    def _behind(self) -> bool:
        """Whether this front has ``max_segments`` segments the writer has not finished loading."""
        return sum(1 for p in self.folder.glob(f"{self.name}-*{SUFFIX}")) >= self.max_segments

    def _rotate(self) -> None:
        self._close()
        self._seq += 1
        self._fd = os.open(self.folder / f"{self.name}-{self._seq:012d}{SUFFIX}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._opened = time.monotonic()
        self._size = 0

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Stop (after the last :meth:`append` has settled): the current segment is final."""
        self._pool.shutdown(wait=True)
        self._close()


def _write_sync(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:                          # a short write is continued, never taken for the whole
        view = view[os.write(fd, view):]
    os.fdatasync(fd)


class Loader:
    """The writer's side: every ``interval_s``, append what the fronts' segments hold to the log
    and delete the segments that are finished and loaded."""

    def __init__(self, folder: Path, log: "EventLog", *, interval_s: float = 0.2, max_rows: int = 50_000) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.interval_s = interval_s
        self.max_rows = max_rows
        self._read: dict[Path, int] = {}       # bytes of each segment already in the log
        self._loading = threading.Lock()       # one pass at a time (the timer's, or one asked for)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loaded = 0
        self.last_read = 0                     # events the last pass read (duplicates too)
        self.error: BaseException | None = None

    def start(self) -> "Loader":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="plait-journal-loader", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the timer, then load everything left (the fronts have stopped: every segment is final)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.load(final=True)

    def status(self) -> dict[str, Any]:
        """Segments on disk, bytes in them not yet loaded, events loaded, the last load error."""
        paths = list(self.folder.glob(f"*{SUFFIX}"))
        behind = 0
        for p in paths:
            try:
                behind += max(0, p.stat().st_size - self._read.get(p, 0))
            except FileNotFoundError:           # deleted by the loader meanwhile
                pass
        return {"segments": len(paths), "backlog_bytes": behind, "loaded": self.loaded,
                "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}"}

    def _run(self) -> None:
        wait = self.interval_s
        while not self._stop.wait(wait):
            try:
                # Behind (a pass met a full chunk): go again at once; the fronts may be holding acks.
                self.load()
                wait = 0.0 if self.last_read >= self.max_rows else self.interval_s
                self.error = None
            except Exception as e:  # noqa: BLE001 - the segments stay and are retried next time
                if self.error is None:
                    _log.warning("loading the collector's journal failed (retrying): %s: %s", type(e).__name__, e)
                self.error = e

    def load(self, *, final: bool = False) -> int:
        """Load what is new in every segment; events appended. With ``final``, every segment is
        taken as finished (no front writes any more). Safe to call from any thread (an erasure
        loads what was acknowledged before it starts)."""
        with self._loading:
            return self._load(final)

    def _load(self, final: bool) -> int:
        paths = [(p, *_sequence(p)) for p in sorted(self.folder.glob(f"*{SUFFIX}"))]
        newest: dict[str, int] = {}
        for _, front, seq in paths:
            newest[front] = max(newest.get(front, 0), seq)
        tables: list[pa.Table] = []
        records: list[Record] = []
        rejections: list[Rejection] = []
        settled: list[tuple[Path, int]] = []
        finished: list[Path] = []
        added = read = pending = 0
        for p, front, seq in paths:
            at = self._read.get(p, 0)
            # Finished: its front has opened a later segment (so wrote this one's last byte before
            # this listing), or the fronts are gone.
            done = final or seq < newest[front]
            with open(p, "rb") as f:
                f.seek(at)
                data = f.read()
            payloads, used = _frames(data)
            for i, payload in enumerate(payloads):
                try:
                    table, recs, rejs = read_frame(payload)
                except (msgspec.DecodeError, pa.ArrowInvalid) as e:   # never seen: a dead letter, not lost
                    table, recs, rejs = None, [], [Rejection(f"unreadable journal frame: {e}",
                                                             origin=f"journal:{p.name}", position=i,
                                                             payload=payload[:65536].hex())]
                if table is not None:
                    tables.append(table)
                    pending += table.num_rows
                records += recs
                rejections += rejs
                pending += len(recs)
            settled.append((p, at + used))
            if done:
                finished.append(p)         # a torn last frame was never acknowledged
            if pending >= self.max_rows:
                added += self._append(tables, records, rejections, settled)
                read += pending
                tables, records, rejections, settled, pending = [], [], [], [], 0
        added += self._append(tables, records, rejections, settled)
        read += pending
        for p in finished:
            p.unlink(missing_ok=True)
            self._read.pop(p, None)
        self.last_read = read
        return added

    def _append(self, tables: list[pa.Table], records: list[Record], rejections: list[Rejection],
                settled: list[tuple[Path, int]]) -> int:
        # Dead letters first: an event is never in the log before its rejected siblings are kept.
        self.log.reject(rejections)
        added = self.log.append(records).inserted if records else 0
        if tables:
            added += self.log.append_plain(pa.concat_tables(tables)).inserted
        self._read.update(settled)
        self.loaded += added
        return added


def replay(folder: Path, log: "EventLog", *, chunk_rows: int = 50_000) -> int:
    """Append what journal segments in ``folder`` hold (left by a crash) and delete them; events
    appended. A torn last frame — written but never synced, so never acknowledged — is skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    return Loader(folder, log, max_rows=chunk_rows).load(final=True)


__all__ = ["Journal", "Loader", "decode", "encode", "replay"]
