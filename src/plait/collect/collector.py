"""Group commit: many requests, one durable append.

A 200 from the collector means the events are in the log. Writing each request on
its own would cap the collector at a few thousand rows a second (a DuckDB insert
costs milliseconds), so requests hand their records to one writer thread, which
takes everything queued since its last write, appends it in one statement and then
answers every waiting request. Under load batches grow by themselves; at rest a
request waits for one small insert.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from plait.events.contract import Record
from plait.log.store import EventLog, Rejection, now_us



@dataclass
class _Job:
    records: Sequence[Record]
    rejections: Sequence[Rejection]
    loop: asyncio.AbstractEventLoop | None
    fut: asyncio.Future | None
    done: Callable[[BaseException | None], None] | None = None


_STOP = object()


class GroupCommitter:
    """Serialises appends to the log from any number of threads or coroutines."""

    def __init__(self, log: EventLog, *, max_rows: int = 20_000, linger_ms: float = 0.0) -> None:
        self.log = log
        self.max_rows = max_rows
        self.linger = linger_ms / 1000.0
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.flushes = 0
        self.rows_written = 0
        self.duplicates = 0

    def start(self) -> "GroupCommitter":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="plait-group-commit", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> "GroupCommitter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def append(self, records: Sequence[Record], rejections: Sequence[Rejection] = ()) -> None:
        """Append and wait, without blocking the event loop, until durable (replays
        of events already in the log are durable too, and add nothing)."""
        await self.submit(records, rejections)

    def submit(self, records: Sequence[Record], rejections: Sequence[Rejection] = ()) -> asyncio.Future:
        """Queue an append from the running loop; the future is settled once it is durable."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        # Futures are settled in one call per flush and event loop (one wake-up, not one per request).
        if self._thread is None:
            raise RuntimeError("GroupCommitter is not running; call start()")
        self._q.put(_Job(records, rejections, loop, fut))
        return fut

    def put(self, records: Sequence[Record], rejections: Sequence[Rejection],
            done: Callable[[BaseException | None], None]) -> None:
        """Queue an append from any thread; ``done(error)`` is called from the writer thread
        once it is written (``error`` is ``None``) or has failed."""
        if self._thread is None:
            raise RuntimeError("GroupCommitter is not running; call start()")
        self._q.put(_Job(records, rejections, None, None, done))

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is _STOP:
                return
            jobs = [job]
            rows = len(job.records)
            stop = False
            deadline = time.monotonic() + self.linger
            while rows < self.max_rows:
                try:
                    nxt = self._q.get_nowait() if self.linger <= 0 else self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                jobs.append(nxt)
                rows += len(nxt.records)
            self._write(jobs)
            if stop:
                return

    def _write(self, jobs: list[_Job]) -> None:
        records = [r for j in jobs for r in j.records]
        rejections = [r for j in jobs for r in j.rejections]
        try:
            ts = now_us()
            # Dead letters first: an event is never acknowledged before its rejected siblings are kept.
            self.log.reject(rejections, received_at=ts)
            result = self.log.append(records)
        except BaseException as e:  # noqa: BLE001 - every waiter must hear about it
            self._notify(jobs, e)
            return
        self.flushes += 1
        self.rows_written += result.inserted
        self.duplicates += result.duplicates
        self._notify(jobs, None)

    @staticmethod
    def _notify(jobs: list[_Job], error: BaseException | None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
        for j in jobs:
            if j.done is not None:
                j.done(error)
            else:
                by_loop.setdefault(j.loop, []).append(j.fut)  # type: ignore[arg-type]
        for loop, futs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, futs, error)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass


def _settle(futs: list[asyncio.Future], error: BaseException | None) -> None:
    for fut in futs:
        if fut.done():
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(None)
