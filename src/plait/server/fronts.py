"""``plait serve`` as several processes: fronts answer HTTP, one writer owns the workspace.

DuckDB allows one writing process, and in one process the HTTP server, the parsers, the group
commit, the decision record and the triggers share one interpreter lock. With
``server.fronts = F`` the server process becomes the *writer*: it builds the app as usual (the
decider, its decide workers), then forks ``F`` front processes that accept on the public socket
(each runs uvicorn on its own socket bound to the port with ``SO_REUSEPORT``, so the kernel
spreads connections evenly) and talk to the writer over
:mod:`plait.frames` channels:

- ``POST /v1/{call}``: the front checks the key, parses and validates (the CPU-heavy part) and
  appends the records to its own journal (:mod:`plait.log.journal`), answering once they are
  synced; the writer loads the fronts' journals into the log in batches. Events that change a
  decision (consent, orders, complaints), and every event when ``collector.journal`` is off, are
  sent to the writer instead, which group-commits them and answers once they are in the log.
- ``POST /v1/decide``: the front routes it to the decide worker owning the customer over its own
  socket pair (a worker that is gone: the writer answers, as it does with one process).
- Everything else (profiles, analytics, privacy, docs, health) is passed to the writer whole and
  answered by the same FastAPI app, in process — no second HTTP hop, so no proxy library.

Fronts are forked before the writer starts a thread (nothing they inherit is locked) and never
touch the engine; they check keys from a file the writer publishes and rewrites when a key is
created or revoked over HTTP (:mod:`plait.collect.keys`). A front that dies is replaced: the writer
cannot fork once its threads run, so a *zygote* — a copy of the server forked before any thread
starts, idle — forks the replacement, which opens its own socket on the port (at most one
replacement a second; the writer answers its requests meanwhile through the other fronts).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from plait.collect.http import MAX_UPLOAD_BYTES, Collect, FastCollect, error_body, read_body, respond
from plait.collect.intake import Intake
from plait.decide.http import Decide, FastDecide, answer
from plait.decide.lifecycle import OBSERVED
from plait.decide.workers import Router, load_store
from plait.errors import ConfigError, EngineError, LimitError
from plait.events.contract import Record
from plait.frames import APPEND, ASGI, DECIDE, RELOAD, STATUS, Channel, Lost, pair
from plait.log.journal import Journal, Loader, decode, encode
from plait.log.store import Rejection
from plait.workspace import JOURNAL_DIR

if TYPE_CHECKING:
    from fastapi import FastAPI

    from plait.workspace import Workspace

_log = logging.getLogger("plait.server")
KEYS_FILE = "keys.published.json"       # the active keys' hashes, for the fronts (see plait.collect.keys)
MAX_PASSED_BODY = MAX_UPLOAD_BYTES       # bodies of requests passed to the writer (imports, uploads)


class _Request(msgspec.Struct, array_like=True):
    method: str
    path: str
    raw_path: bytes
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    scheme: str = "http"
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None


class _Response(msgspec.Struct, array_like=True):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


_mp = msgspec.msgpack.Encoder()
_request = msgspec.msgpack.Decoder(_Request)
_response = msgspec.msgpack.Decoder(_Response)
_json = msgspec.json.Decoder()


# -- the writer side ----------------------------------------------------------------------------
class Hub:
    """The writer's end of every front's channel: appends, passed requests, fallback decisions."""

    def __init__(self, app: "FastAPI", socks: list[socket.socket], *, zygote: socket.socket | None = None,
                 pids: list[int] | None = None) -> None:
        self.app = app
        self.committer = app.state.committer
        self.fronts = [self._channel(i, s) for i, s in enumerate(socks)]
        self.zygote = zygote
        self.pids = list(pids) if pids is not None else [0] * len(socks)   # by front index
        self.stopping = False
        self.replaced = 0
        self._last_replacement = 0.0
        self.gone = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()
        if app.state.workers is not None:
            app.state.workers.on_reload.append(self.reload)
        ws = app.state.workspace
        s = ws.settings.collector
        # The fronts acknowledge from their own journals; this loads them into the log.
        self.loader = Loader(ws.path / JOURNAL_DIR, ws.log, interval_s=s.journal_load_ms / 1000,
                             max_rows=max(s.max_flush_rows, 50_000)) if s.journal else None
        app.state.journal_loader = self.loader
        app.state.fronts = self

    def status(self) -> dict[str, Any]:
        """The live fronts' process ids and how many fronts were replaced (for ``/health``)."""
        return {"pids": [pid for ch, pid in zip(self.fronts, self.pids) if ch.alive], "replaced": self.replaced}

    def reload(self, path: str) -> int:
        """Have every front route by a fresh customer store (the decide workers just took it):
        routing stays the same in every process, so each customer keeps one owner."""
        return sum(ch.exchange(RELOAD, path.encode()) is not None for ch in self.fronts if ch.alive)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        if self.loader is not None:
            self.loader.start()
        for ch in self.fronts:
            ch.attach(loop)

    def close(self) -> None:
        """Once the fronts have stopped: load everything they journaled into the log."""
        if self.loader is not None:
            self.loader.stop()

    def _channel(self, index: int, sock: socket.socket) -> Channel:
        ch = Channel(sock, on_lost=lambda: self._lost(index))
        ch.on_frame = lambda rid, kind, payload: self._frame(ch, rid, kind, payload)
        return ch

    def _lost(self, index: int) -> None:
        if not self.stopping and self.zygote is not None and self.loop is not None:
            # At most one replacement a second (a front that dies at start-up must not spin), and
            # not at once: when Ctrl-C reaches every process, the writer is about to stop anyway.
            wait = max(0.2, self._last_replacement + 1.0 - self.loop.time())
            self.loop.call_later(wait, self._replace, index)
            return
        if not any(ch.alive for ch in self.fronts):
            self.gone.set()

    def _replace(self, index: int) -> None:
        """Have the zygote fork a new front ``index`` on a fresh channel."""
        if self.stopping or self.zygote is None or self.loop is None:
            return
        self._last_replacement = self.loop.time()
        mine, theirs = pair()
        try:
            socket.send_fds(self.zygote, [index.to_bytes(4, "big")], [theirs.fileno()])
            reply = self.zygote.recv(4)
            if len(reply) != 4:
                raise ConnectionResetError("no answer")
        except OSError as e:
            _log.error("front %d died and cannot be replaced (the zygote is gone: %s)", index, e)
            self.zygote = None
            mine.close()
            self._lost(index)
            return
        finally:
            theirs.close()
        ch = self._channel(index, mine)
        self.fronts[index] = ch
        self.pids[index] = int.from_bytes(reply, "big")
        ch.attach(self.loop)
        self.replaced += 1
        _log.warning("front %d died; replaced by process %d", index, self.pids[index])

    def _frame(self, ch: Channel, rid: int, kind: int, payload: bytes) -> None:
        if kind == APPEND:
            records, rejections = decode(payload)
            try:
                fut = self.committer.submit(records, rejections)
            except Exception as e:  # noqa: BLE001 - the front answers 503
                ch.answer(rid, STATUS.pack(503) + str(e).encode())
                return
            fut.add_done_callback(lambda f: ch.answer(rid, _written(f.exception(), "the log could not be written")))
        elif kind in (ASGI, DECIDE):
            task = asyncio.ensure_future(self._asgi(payload) if kind == ASGI else self._decide(payload))
            self._tasks.add(task)
            task.add_done_callback(lambda t: (self._tasks.discard(t), ch.answer(rid, t.result())))

    async def _decide(self, raw: bytes) -> bytes:
        """A decision a front could not route (its worker is gone); the key was checked there."""
        workers, decider = self.app.state.workers, self.app.state.decider
        try:
            req = _json.decode(raw)
            status, body = await workers.ask(req, raw) if workers is not None else answer(decider, req)
        except Exception as e:  # noqa: BLE001 - every request gets an answer
            status, body = 500, error_body("decision_failed", f"{type(e).__name__}: {e}")
        return STATUS.pack(status) + body

    async def _asgi(self, payload: bytes) -> bytes:
        """Run the app on a request passed whole by a front; the whole response back."""
        req = _request.decode(payload)
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": req.method, "scheme": req.scheme, "path": req.path, "raw_path": req.raw_path,
                 "query_string": req.query, "root_path": "", "headers": req.headers,
                 "client": req.client, "server": req.server}
        given = False
        finished = asyncio.Event()
        out = _Response(500, [], b"")
        chunks: list[bytes] = []

        async def receive() -> dict:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": req.body, "more_body": False}
            await finished.wait()                 # nothing more arrives; the exchange ends with the answer
            return {"type": "http.disconnect"}

        async def send(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                out.status = msg["status"]
                out.headers = [(bytes(k), bytes(v)) for k, v in msg.get("headers", [])]
            elif msg["type"] == "http.response.body":
                chunks.append(msg.get("body", b""))
                if not msg.get("more_body", False):
                    finished.set()

        try:
            await self.app(scope, receive, send)
        except Exception as e:  # noqa: BLE001 - the app's own handlers answer errors; this is the last resort
            out = _Response(500, [(b"content-type", b"application/json")],
                            error_body("internal_error", f"{type(e).__name__}: {e}"))
            chunks = []
        finished.set()
        out.body = b"".join(chunks) if chunks else out.body
        return _mp.encode(out)


def _written(error: BaseException | None, what: str) -> bytes:
    """An APPEND answer: 200, or 503 with why (the front turns it into its 503)."""
    return STATUS.pack(200) if error is None else STATUS.pack(503) + f"{what}: {type(error).__name__}: {error}".encode()


# -- the front side -----------------------------------------------------------------------------
class RemoteCommitter:
    """The front's stand-in for the group committer: returns once the records are durable, in the
    front's journal or (without one) in the writer's log."""

    def __init__(self, ch: Channel, journal: Journal | None) -> None:
        self.ch = ch
        self.journal = journal

    async def append(self, records: list[Record], rejections: list[Rejection] = ()) -> None:  # type: ignore[assignment]
        # Events that change what a decision may do (a consent withdrawal, a complaint, an
        # order) skip the journal: they are in force when their 200 goes out.
        if self.journal is not None and not any(r.event in OBSERVED for r in records):
            try:
                await self.journal.append(records, rejections)
            except OSError as e:
                raise EngineError(f"the journal could not be written: {e}") from e
            return
        try:
            payload = await self.ch.request(APPEND, encode(records, rejections))
        except Lost as e:
            raise EngineError("the writer process is gone") from e
        if STATUS.unpack_from(payload)[0] != 200:
            raise EngineError(payload[STATUS.size:].decode("utf-8", "replace"))


class PassOn:
    """ASGI app of a front: passes the request whole to the writer's app and relays the answer."""

    def __init__(self, ch: Channel) -> None:
        self.ch = ch

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            body = await read_body(receive, MAX_PASSED_BODY)
        except LimitError:
            await respond(send, 413, error_body("payload_too_large", f"request body is larger than {MAX_PASSED_BODY} bytes"))
            return
        if body is None:
            return
        req = _Request(scope["method"], scope["path"], scope.get("raw_path") or scope["path"].encode(),
                       scope.get("query_string", b""), list(scope["headers"]), body, scope.get("scheme", "http"),
                       tuple(scope["client"]) if scope.get("client") else None,
                       tuple(scope["server"]) if scope.get("server") else None)
        try:
            res = _response.decode(await self.ch.request(ASGI, _mp.encode(req)))
        except Lost:
            await respond(send, 503, error_body("unavailable", "the writer process is gone; the server is stopping"))
            return
        await send({"type": "http.response.start", "status": res.status, "headers": res.headers})
        await send({"type": "http.response.body", "body": res.body})


class FrontRouter(Router):
    """Routes decisions over the front's own socket pairs; a lost worker's customers go to the writer."""

    def __init__(self, decider: Any, socks: list[socket.socket], writer: Channel) -> None:
        super().__init__(decider, socks)
        self.writer = writer

    async def fallback(self, request: Any, raw: bytes) -> tuple[int, bytes]:
        try:
            payload = await self.writer.request(DECIDE, raw)
        except Lost:
            return 503, error_body("unavailable", "the writer process is gone; the server is stopping")
        return STATUS.unpack_from(payload)[0], payload[STATUS.size:]


def _front(ws: "Workspace", app: "FastAPI", index: int, sock: socket.socket, listener: socket.socket,
           worker_socks: list[socket.socket], log_level: str) -> None:
    """A front's life: uvicorn on its listening socket until told to stop or the writer goes."""
    import uvicorn

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ws.keys.follow(ws.path / KEYS_FILE)               # keys created or revoked meanwhile are in force
    writer = Channel(sock)
    journal = Journal(ws.path / JOURNAL_DIR, f"front{index}") if ws.settings.collector.journal else None
    collect = Collect(Intake(ws.parser, ws.keys, ws.settings.collector), RemoteCommitter(writer, journal))  # type: ignore[arg-type]
    asgi: Any = FastCollect(PassOn(writer), collect)
    router = None
    if worker_socks:
        decider = app.state.decider
        router = FrontRouter(decider, worker_socks, writer)
        asgi = FastDecide(asgi, Decide(decider, ws, router))

        def reload(rid: int, kind: int, payload: bytes) -> None:
            if kind == RELOAD:
                decider.store = load_store(payload.decode())
                writer.answer(rid, STATUS.pack(200))

        writer.on_frame = reload

    server = uvicorn.Server(uvicorn.Config(asgi, lifespan="off", log_level=log_level, access_log=False,
                                           timeout_graceful_shutdown=10))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        writer.on_lost = lambda: setattr(server, "should_exit", True)
        writer.attach(loop)
        if router is not None:
            router.attach(loop)
        await server.serve(sockets=[listener])

    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(main())
    if journal is not None:
        journal.close()


def share_cores(ws: "Workspace", fronts: int) -> None:
    """Leave the fronts their cores: the writer's engine gets the others (at least one), unless
    ``engine.threads`` says otherwise. An engine fanning every small append out over all cores
    slowed both sides (2 cores, 2 fronts, same day: /v1/batch 53–55k -> 62k events/s and
    /v1/track 8.3–9.1k -> 9.7–9.9k req/s with one engine thread)."""
    if ws.settings.engine.threads is None:
        ws.backend.set_threads(max(1, (os.cpu_count() or 1) - fronts))


def listen(host: str, port: int, count: int = 1, *, fronts: bool = False) -> list[socket.socket]:
    """``count`` sockets listening on ``host:port``. Fronts' share the port with ``SO_REUSEPORT``
    (a replacement front binds its own beside them): one per front, and the kernel spreads new connections evenly over them (with one shared
    socket, the front that wakes first takes a burst). A plain bind comes first: it fails where
    any process already listens on the port, ``SO_REUSEPORT`` or not — without it a second
    server (another workspace, say) joined the first on its port and silently took a share of
    its connections."""
    try:
        with socket.create_server((host, port)) as probe:
            port = probe.getsockname()[1]             # (port 0: the one the system chose)
        return [socket.create_server((host, port), backlog=2048, reuse_port=fronts) for _ in range(count)]
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                          hint="choose another --port, or stop the process that holds this one") from e


def serve(ws: "Workspace", *, host: str, port: int, fronts: int, log_level: str = "warning") -> None:
    """Serve ``ws`` on ``host:port`` with ``fronts`` front processes and this process as the writer."""
    from plait.server.app import create_app

    listeners = listen(host, port, fronts, fronts=True)
    port = listeners[0].getsockname()[1]              # (port 0: the one the sockets got)
    share_cores(ws, fronts)
    app = create_app(ws, fronts=fronts)
    workers = app.state.workers
    ws.keys.publish(ws.path / KEYS_FILE)              # the fronts check keys from this file
    zygote, theirs = socket.socketpair()

    def as_zygote() -> None:                          # forks replacement fronts
        zygote.close()
        for listener in listeners:                    # held here, a socket would outlive its front
            listener.close()
        if workers is not None:
            workers.close_fronts()
        _zygote(ws, app, theirs, host, port, log_level)

    zpid = _fork(as_zygote)
    theirs.close()
    ends: list[socket.socket] = []
    pids: list[int] = []
    for f in range(fronts):
        mine, theirs = pair()

        def as_front(f: int = f, mine: socket.socket = mine, theirs: socket.socket = theirs) -> None:
            mine.close()
            zygote.close()                            # the writer's end: it must see the writer go
            for s in ends:
                s.close()
            for g, listener in enumerate(listeners):  # a socket no one accepts on would strand connections
                if g != f:
                    listener.close()
            _front(ws, app, f, theirs, listeners[f], workers.front_socks[f] if workers is not None else [], log_level)

        pid = _fork(as_front)
        theirs.close()
        ends.append(mine)
        pids.append(pid)
    for listener in listeners:
        listener.close()
    if workers is not None:
        workers.close_fronts()
    import uvicorn

    with asyncio.Runner(loop_factory=uvicorn.Config(app).get_loop_factory()) as runner:
        runner.run(_writer(app, ends, pids, zygote))
    for pid in [zpid, *pids]:                          # (replacements are the zygote's children)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _fork(body: Callable[[], None]) -> int:
    """Run ``body`` in a child process, which never returns into the caller's code; its pid."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            body()
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)                            # no finalisers: the engine belongs to the writer
    return pid


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _zygote(ws: "Workspace", app: "FastAPI", ctl: socket.socket, host: str, port: int, log_level: str) -> None:
    """Fork a front for each ``(index, channel socket)`` the writer sends; stop when it is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the writer decides when everything stops
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)     # replacement fronts are reaped by the kernel
    while True:
        msg, fds, _, _ = socket.recv_fds(ctl, 4, 1)
        if not msg or not fds:
            return
        ch = socket.socket(fileno=fds[0])

        def as_front(index: int = int.from_bytes(msg, "big"), ch: socket.socket = ch) -> None:
            ctl.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            listener = socket.create_server((host, port), backlog=2048, reuse_port=True)
            _front(ws, app, index, ch, listener, [], log_level)

        pid = _fork(as_front)
        ch.close()
        ctl.sendall(pid.to_bytes(4, "big"))


async def _writer(app: "FastAPI", ends: list[socket.socket], pids: list[int], zygote: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    async with app.router.lifespan_context(app):
        hub = Hub(app, ends, zygote=zygote, pids=pids)
        hub.attach(loop)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        done = asyncio.ensure_future(hub.gone.wait())
        await asyncio.wait([done, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        hub.stopping = True                            # no more replacements
        zygote.close()
        # Fronts finish the requests they hold (their appends still land here), then close. Only
        # live ones are signalled: a replaced front's id may already belong to another process.
        live = hub.status()["pids"]
        _signal(live, signal.SIGTERM)
        if not any(ch.alive for ch in hub.fronts):
            hub.gone.set()
        try:
            await asyncio.wait_for(hub.gone.wait(), 15)
        except TimeoutError:
            _signal(hub.status()["pids"], signal.SIGKILL)
        hub.close()                                    # everything journaled is now in the log
    # The lifespan's end stopped the decide workers, wrote their last decisions, flushed the log.


__all__ = ["Hub", "PassOn", "RemoteCommitter", "serve"]
