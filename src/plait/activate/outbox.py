"""The outbox: every action bound for a destination is written down before it is sent.

:meth:`Outbox.enqueue` stores the payload durably (the ``activation_outbox`` table) and returns;
a worker thread sends what is due, retries failures with exponential backoff
(``base_delay_s × 2^attempt``, capped at ``max_delay_s``) and, after ``max_attempts``, moves the
item to the dead-letter queue (status ``dead``, with the last error) — nothing is dropped
silently. Items survive a crash: a new outbox on the same workspace resumes what was pending.
:meth:`Outbox.dead_letters` lists the dead; :meth:`Outbox.retry_dead` puts them back in line.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from plait.errors import ConfigError, DeliveryError

if TYPE_CHECKING:
    from plait.workspace import Workspace

DDL = """
CREATE TABLE IF NOT EXISTS activation_outbox (
  id VARCHAR PRIMARY KEY, destination VARCHAR NOT NULL, payload VARCHAR NOT NULL,
  status VARCHAR NOT NULL, attempts INTEGER NOT NULL, next_at DOUBLE NOT NULL, last_error VARCHAR,
  created_at DOUBLE NOT NULL, sent_at DOUBLE
)"""
_ids = itertools.count()
_PREFIX = os.urandom(4).hex()


class Outbox:
    """Durable delivery to named destinations with retries and a dead-letter queue."""

    def __init__(self, ws: "Workspace", destinations: Mapping[str, Any], *, max_attempts: int = 5,
                 base_delay_s: float = 0.5, max_delay_s: float = 300.0, poll_s: float = 10.0) -> None:
        self.ws = ws
        self.destinations = dict(destinations)
        self.max_attempts, self.base_delay_s, self.max_delay_s, self.poll_s = max_attempts, base_delay_s, max_delay_s, poll_s
        ws.backend.execute(DDL)
        # ``poll_s``: the longest the worker sleeps with nothing due (a safety net; enqueues wake it).
        self._wake = threading.Event()
        # The earliest time anything pending is due (None: nothing is): the worker sleeps until
        # then instead of asking the table every few milliseconds while the server is busy.
        self._due_lock = threading.Lock()
        self._next_due: float | None = None
        self._due(ws.backend.scalar("SELECT min(next_at) FROM activation_outbox WHERE status = 'pending'"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.dead = 0

    # -- producing ------------------------------------------------------------------------------
    def enqueue(self, destination: str, payload: Mapping[str, Any]) -> str:
        """Store ``payload`` for ``destination`` durably; it is sent by the worker."""
        if destination not in self.destinations:
            raise ConfigError(f"no destination {destination!r}",
                              hint=f"configure one of: {', '.join(sorted(self.destinations)) or 'none'}")
        item = f"out-{_PREFIX}-{next(_ids)}"
        now = time.time()
        self.ws.backend.execute(
            "INSERT INTO activation_outbox VALUES (?, ?, ?, 'pending', 0, ?, NULL, ?, NULL)",
            [item, destination, json.dumps(payload, default=str), now, now])
        self._due(now)
        self._wake.set()
        return item

    # -- delivering -----------------------------------------------------------------------------
    def start(self) -> "Outbox":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="plait-outbox", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._thread = None

    def _due(self, at: float | None) -> None:
        if at is None:
            return
        with self._due_lock:
            self._next_due = at if self._next_due is None else min(self._next_due, float(at))

    def _run(self) -> None:
        while not self._stop.is_set():
            due, now = self._next_due, time.time()
            if due is not None and due <= now:
                self.deliver_due(now)
                continue
            # Woken by an enqueue, a retry of the dead or stop; else at the next retry's time.
            self._wake.wait(self.poll_s if due is None else min(due - now, self.poll_s))
            self._wake.clear()

    def deliver_due(self, now: float | None = None) -> int:
        """Send every pending item that is due; returns how many were attempted."""
        now = time.time() if now is None else now
        with self._due_lock:
            self._next_due = None        # recomputed below; enqueues meanwhile merge in with min()
        rows = self.ws.backend.query(
            "SELECT id, destination, payload, attempts FROM activation_outbox WHERE status = 'pending' "
            "AND next_at <= ? ORDER BY created_at, id LIMIT 500", [now]).to_pylist()
        for r in rows:
            dest = self.destinations.get(r["destination"])
            try:
                if dest is None:
                    raise DeliveryError("no longer configured", destination=r["destination"])
                dest.send(json.loads(r["payload"]))
            except Exception as e:  # noqa: BLE001 - any failure is retried, then dead-lettered
                attempts = r["attempts"] + 1
                if attempts >= self.max_attempts:
                    self.dead += 1
                    self.ws.backend.execute(
                        "UPDATE activation_outbox SET status = 'dead', attempts = ?, last_error = ? WHERE id = ?",
                        [attempts, str(e), r["id"]])
                else:
                    delay = min(self.base_delay_s * 2 ** (attempts - 1), self.max_delay_s)
                    self.ws.backend.execute(
                        "UPDATE activation_outbox SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?",
                        [attempts, time.time() + delay, str(e), r["id"]])
                continue
            self.sent += 1
            self.ws.backend.execute(
                "UPDATE activation_outbox SET status = 'sent', attempts = attempts + 1, sent_at = ? WHERE id = ?",
                [time.time(), r["id"]])
        self._due(self.ws.backend.scalar("SELECT min(next_at) FROM activation_outbox WHERE status = 'pending'"))
        return len(rows)

    # -- inspecting -----------------------------------------------------------------------------
    def pending(self) -> int:
        return int(self.ws.backend.scalar("SELECT count(*) FROM activation_outbox WHERE status = 'pending'"))

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.ws.backend.query(
            "SELECT id, destination, payload, attempts, last_error, created_at FROM activation_outbox "
            "WHERE status = 'dead' ORDER BY created_at").to_pylist()

    def retry_dead(self, destination: str | None = None) -> int:
        """Put dead-lettered items back in line (after the receiver is fixed)."""
        where = "status = 'dead'" + (" AND destination = ?" if destination else "")
        n = int(self.ws.backend.scalar(f"SELECT count(*) FROM activation_outbox WHERE {where}",
                                       [destination] if destination else None))
        self.ws.backend.execute(f"UPDATE activation_outbox SET status = 'pending', attempts = 0, next_at = 0 WHERE {where}",
                                [destination] if destination else None)
        self._due(0.0)
        self._wake.set()
        return n


__all__ = ["Outbox"]
