"""Decide workers: decisions computed in forked processes, each owning a share of the customers.

One Python process runs one decision at a time (the GIL) and, in ``plait serve``, also answers
HTTP, writes the log and delivers triggers. On a machine with more than one core the decisions
go faster in their own processes. :class:`Workers` forks ``n`` of them from the server process
once the decider is built (so they share its loaded customers, rules, models and contact history
copy-on-write) and routes every request to the worker that owns its customer: the customer's
profile id (else the identifier the request names) hashed to ``0..n-1``.

Ownership is what keeps every policy exact: everything a decision changes about a customer —
contacts counted against caps, events observed (an order, a complaint), geofence state — lives
in exactly one process, as it does with one decider. Offer-level state is split, never shared:
a finite coupon code list is dealt out (worker ``k`` issues codes ``k, k+n, k+2n…``), so no code
is issued twice. Workers never touch the engine (DuckDB allows one writing process): each sends
its decisions back, laid out as the log's Arrow rows, every ``record_interval_s``, and the
server process appends them. A worker that exits is replaced by the server process deciding for
its customers itself, with the contact history rebuilt from the log.

With front processes (:mod:`plait.server.fronts`) each worker also has a socket pair to every
front, which routes the decisions it receives the same way; frames are :mod:`plait.frames`.
"""

from __future__ import annotations

import asyncio
import io
import os
import pickle
import select
import signal
import socket
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec

from plait.collect.http import error_body
from plait.decide.http import answer
from plait.errors import DecisionError
from plait.frames import (
    ANSWER,
    DECIDE,
    OBSERVE,
    RECORD,
    RELOAD,
    STATUS,
    STOP,
    Channel,
    Lost,
    frame,
    frames,
    pair,
)

if TYPE_CHECKING:
    from plait.decide.engine import Decider

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


def shard(key: str, n: int) -> int:
    """The worker (``0..n-1``) that owns a customer key."""
    return zlib.crc32(key.encode()) % n if n > 1 else 0


def route_key(decider: "Decider", request: Mapping[str, Any]) -> str:
    """The key a request is routed by: its customer's profile id when the decider knows the
    customer, else the first identifier it names (the same key the decision's groups use). A
    malformed request goes to worker 0, which answers the 400."""
    try:
        profile, refs = decider.customer(request)
    except DecisionError:
        return ""
    return str((profile or {}).get("profile_id") or next(iter(refs), ""))


class Answer:
    """A worker's decision as the server process sees it: the JSON answer's fields."""

    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body
        self.actions = body.get("actions", [])
        self.rules = body.get("rules", [])
        self.profile_id = body.get("profile_id")

    def as_dict(self) -> dict[str, Any]:
        return self._body


# -- the worker side ----------------------------------------------------------------------------
def _worker(socks: list[socket.socket], decider: "Decider", k: int, n: int, interval_s: float) -> None:
    """A worker's life: answer DECIDE frames (from the server, ``socks[0]``, and from each front),
    ship recorded decisions to the server, reload, stop."""
    import pyarrow.ipc as ipc

    from plait.decide import engine
    from plait.decide.engine import DecisionRows

    # Ctrl-C or a service manager's SIGTERM reaches the whole process group: a worker stops when
    # the server tells it (taking its last decisions to the log) or when the server is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    engine.reseed(k)                      # decision ids and coupons unique per process
    decider._lock = threading.Lock()      # a lock another thread held at fork time stays held
    decider.coupon_share = (k, n)
    pending = DecisionRows()
    decider.record = pending.add
    server = socks[0]
    bufs = {s: bytearray() for s in socks}
    for s in socks:
        s.setblocking(True)
    # Decisions leave every 50 ms at most (each is laid out as a row when made); the server
    # process appends what arrives to the log every ``interval_s``.
    interval_s = min(interval_s, 0.05)
    due = time.monotonic() + interval_s

    def ship() -> None:
        nonlocal due
        due = time.monotonic() + interval_s
        if not len(pending):
            return
        table = pending.take()
        sink = io.BytesIO()
        with ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        server.sendall(frame(0, RECORD, sink.getvalue()))

    while True:
        ready, _, _ = select.select(list(bufs), [], [], max(0.0, due - time.monotonic()))
        # The server's frames first: an event it observed was sent before the 200 that lets a
        # client ask for its next decision.
        ready.sort(key=lambda x: x is not server)
        for sock in ready:
            data = sock.recv(1 << 18)
            if not data:
                if sock is server:        # the server process is gone
                    return
                del bufs[sock]            # a front is gone
                sock.close()
                continue
            buf = bufs[sock]
            buf += data
            got, used = frames(buf)
            del buf[:used]
            out = []
            for rid, kind, payload in got:
                if kind == DECIDE:
                    out.append(frame(rid, ANSWER, _answer(decider, payload)))
                elif kind == OBSERVE:
                    decider.observe_event(_dec.decode(payload))
                elif kind == RELOAD:
                    decider.store = load_store(payload.decode())
                    out.append(frame(rid, ANSWER, STATUS.pack(200) + _enc.encode({"customers": len(decider.store)})))
                elif kind == STOP:
                    if out:
                        sock.sendall(b"".join(out))
                    ship()
                    return
            if out:
                sock.sendall(b"".join(out))
        if len(pending) >= 5000 or time.monotonic() >= due:
            ship()


def _answer(decider: "Decider", payload: bytes) -> bytes:
    """The status and JSON body for one request (decoded and checked by the server process)."""
    try:
        status, body = answer(decider, _dec.decode(payload))
    except Exception as e:  # noqa: BLE001 - a worker answers every request, whatever happens
        status, body = 500, error_body("decision_failed", f"{type(e).__name__}: {e}")
    return STATUS.pack(status) + body


def _save_store(store: Any, path: str) -> None:
    with open(path, "wb") as fh:
        pickle.dump((store.profiles, store.ids, store._subjects), fh, protocol=5)


def load_store(path: str) -> Any:
    from plait.profiles.online import MemoryStore

    store = MemoryStore()
    with open(path, "rb") as fh:
        store.profiles, store.ids, store._subjects = pickle.load(fh)
    return store


# -- the routing side ---------------------------------------------------------------------------
class Router:
    """Sends each decision to the worker owning its customer, over one channel per worker.

    The server process routes through :class:`Workers`; a front process through a router on its
    own socket pairs. When a worker is gone, :meth:`fallback` answers for its customers."""

    def __init__(self, decider: "Decider", socks: list[socket.socket], *,
                 on_frame: Callable[[int, int, bytes], None] | None = None) -> None:
        self.decider = decider
        self.book = decider.book
        self.n = len(socks)
        self.peers = [Channel(s, on_frame=on_frame, on_lost=partial(self._lost, k)) for k, s in enumerate(socks)]
        self.loop: asyncio.AbstractEventLoop | None = None
        self.answered = 0
        self.failed_over = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start answering on ``loop`` (the server's event loop)."""
        self.loop = loop
        for p in self.peers:
            p.attach(loop)

    async def ask(self, request: Mapping[str, Any], raw: bytes) -> tuple[int, bytes]:
        """``(status, JSON body)`` for one decision request (``raw``: its JSON)."""
        k = shard(route_key(self.decider, request), self.n)
        peer = self.peers[k]
        if not peer.alive or peer.loop is None:
            return await self.fallback(request, raw)
        try:
            payload = await peer.request(DECIDE, raw)
        except Lost:
            # It exited holding this request: the client asks again (decisions are idempotent to
            # ask for) and the next one is answered by :meth:`fallback`.
            return 503, error_body("worker_lost", f"decide worker {k} exited; ask again")
        self.answered += 1
        return STATUS.unpack_from(payload)[0], payload[STATUS.size:]

    async def fallback(self, request: Mapping[str, Any], raw: bytes) -> tuple[int, bytes]:
        """The answer when the owning worker is gone (here: decided in this process)."""
        return answer(self.decider, request)

    def _lost(self, k: int) -> None:
        self.failed_over += 1


class Workers(Router):
    """``n`` forked decide workers behind one router (see the module docstring).

    ``record`` receives the Arrow tables of decisions the workers made (the server's
    :class:`~plait.decide.engine.Recorder`); ``rebuild_contacts`` returns a fresh contact history
    when the server process has to take over a worker's customers. ``fronts`` front processes
    get socket pairs of their own to every worker (:attr:`front_socks`)."""

    def __init__(self, decider: "Decider", n: int, *, record: Callable[[Any], None] | None = None,
                 interval_s: float = 0.5, rebuild_contacts: Callable[[], Any] | None = None, fronts: int = 0) -> None:
        if not 1 <= n <= 31:
            raise DecisionError(f"decide.workers must be 1–31 (0 decides in the server process), not {n}")
        if not hasattr(os, "fork"):
            raise DecisionError("decide workers need os.fork (Linux or macOS); set decide.workers to 0")
        self.record = record
        self.rebuild_contacts = rebuild_contacts
        self.pids: list[int] = []
        self.on_reload: list[Callable[[str], int]] = []
        self.front_socks: list[list[socket.socket]] = [[] for _ in range(fronts)]
        from plait.decide import engine

        engine.reseed(n)                   # the server process's own slot (it decides when a worker is lost)
        mine: list[socket.socket] = []
        for k in range(n):
            parent, child = pair()
            fpairs = [pair() for _ in range(fronts)]
            pid = os.fork()
            if pid == 0:                   # the worker: never returns into the server's code
                code = 0
                try:
                    for s in [parent, *mine, *(a for a, _ in fpairs), *(s for f in self.front_socks for s in f)]:
                        s.close()
                    _worker([child, *(b for _, b in fpairs)], decider, k, n, interval_s)
                except BaseException:  # noqa: BLE001
                    code = 1
                finally:
                    os._exit(code)         # no atexit, no finalisers: the engine belongs to the server
            child.close()
            for f, (a, b) in enumerate(fpairs):
                b.close()
                self.front_socks[f].append(a)
            mine.append(parent)
            self.pids.append(pid)
        super().__init__(decider, mine, on_frame=self._frame)

    def _frame(self, rid: int, kind: int, payload: bytes) -> None:
        if kind == RECORD and self.record is not None:
            import pyarrow.ipc as ipc

            self.record(ipc.open_stream(payload).read_all())

    def _lost(self, k: int) -> None:
        """A worker exited: the server process decides for its customers from now on."""
        super()._lost(k)
        if self.rebuild_contacts is not None:
            self.decider.contacts = self.rebuild_contacts()

    def observe_event(self, event: Mapping[str, Any]) -> bool:
        """A collected event for the snapshot of its customer, from any thread (the log's
        follower): the owning worker and this process's own copy take it."""
        self.decider.observe_event(event)
        k = shard(route_key(self.decider, {"event": event}), self.n)
        if self.loop is None or not self.peers[k].alive:
            return False
        self.loop.call_soon_threadsafe(self.peers[k].send, frame(0, OBSERVE, _enc.encode(event)))
        return True

    def decide(self, request: Mapping[str, Any]) -> Any:
        """A decision from any thread (triggers): routed like HTTP requests, waited for."""
        if self.loop is None or not self.loop.is_running():
            return self.decider.decide(request)
        status, body = asyncio.run_coroutine_threadsafe(self.ask(request, _enc.encode(request)),
                                                        self.loop).result(timeout=30)
        obj = _dec.decode(body)
        if status == 400:
            raise DecisionError(obj.get("message", "bad request"), field=obj.get("field"))
        if status != 200:
            raise DecisionError(obj.get("message", "decision failed"))
        return Answer(obj)

    def close_fronts(self) -> None:
        """Close the front ends of the socket pairs (in the server, once the fronts are forked)."""
        for socks in self.front_socks:
            for s in socks:
                s.close()
        self.front_socks = []

    # -- control --------------------------------------------------------------------------------
    def reload(self, store: Any, folder: str) -> int:
        """Give every worker — and every front process that routes to them (``on_reload``) — a
        fresh customer store (after profiles were rebuilt); how many processes took it."""
        path = os.path.join(folder, f".decide-store-{os.getpid()}.pickle")
        _save_store(store, path)
        n = 0
        try:
            for p in self.peers:
                if p.alive and p.exchange(RELOAD, path.encode()) is not None:
                    n += 1
            for fn in self.on_reload:
                n += fn(path)
        finally:
            os.remove(path)            # the file holds customer profiles: it never outlives the reload
        return n

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop every worker, taking in the decisions each has not yet sent."""
        for p in self.peers:
            if not p.alive:
                continue
            try:
                p.exchange(STOP, b"", answered=False, timeout_s=timeout_s)
            except OSError:
                pass
            p.close()
        for pid in self.pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


__all__ = ["Answer", "Router", "Workers", "load_store", "route_key", "shard"]
