"""A small HTTP/1.1 server for the front processes: httptools parses, this runs an ASGI app.

The fronts of ``plait serve --fronts N`` answer the collector's small requests, thousands a
second on a two-core machine, and there the server's own cost per request decides the rate.
Measured on this machine (one process, ``wrk`` with 50 connections, a trivial ASGI app answering
POSTs): uvicorn with httptools and uvloop spends ~80 µs of CPU per request, Granian's embedded
server ~105 µs, and a plain asyncio protocol over httptools ~19 µs (``docs/benchmarks.md``). So
the fronts use this: the parsing is httptools' (the parser uvicorn uses), and what is written
here is the little around it that an HTTP/1.1 server must do —

- keep-alive, with an idle timeout, and ``Connection: close`` / HTTP/1.0 closing after the answer;
- pipelined requests answered in the order they came (one request per connection runs at a time;
  reading pauses while too many wait);
- request bodies streamed to the app's ``receive()`` (chunked or sized), with a limit past which
  the answer is 413 and the connection closes, and ``Expect: 100-continue``;
- the response written in one ``write`` when the app sends it whole (sized, or chunked when it
  streams without a length), ``HEAD`` without a body, a ``date`` header;
- a malformed request answered 400, an app that fails before answering 500, then closed;
- a graceful stop: no new connections, requests in flight finish, idle connections close.

It serves one app on sockets made elsewhere (the fronts share the writer's listening socket); it
has no lifespan, TLS, HTTP/2 or websockets — put a proxy in front for those, as for uvicorn.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_PAUSE_AT = 16                 # pipelined requests waiting on one connection before reading pauses


class _Date:
    """The ``date`` header, formatted once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second, self.value = now, formatdate(now, usegmt=True).encode()
        return self.value


_date = _Date()


class _Request:
    __slots__ = ("chunks", "complete", "expect_continue", "keep_alive", "scope", "size", "waiter")

    def __init__(self, scope: dict[str, Any], keep_alive: bool, expect_continue: bool) -> None:
        self.scope = scope
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.waiter: asyncio.Future | None = None
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.reading: _Request | None = None          # the request whose bytes are arriving
        self.running: _Request | None = None          # the request the app is answering
        self.waiting: deque[_Request] = deque()
        self.response: _Response | None = None       # the running request's answer
        self.paused = False
        self.closed = False
        self.idle: asyncio.TimerHandle | None = None
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.local = (str(local[0]), int(local[1])) if isinstance(local, tuple) else None
        self.server.connections.add(self)
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.idle is not None:
            self.idle.cancel()
        for req in (self.running, self.reading, *self.waiting):
            if req is not None:
                req.wake()

    def data_received(self, data: bytes) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, b"upgrades (websockets, h2c) are not served here")
        except httptools.HttpParserError as e:
            self._refuse(400, f"malformed HTTP request: {e}".encode())

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        p = self.parser
        url = httptools.parse_url(self.url)
        raw_path = url.path
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": p.get_http_version(), "method": p.get_method().decode("ascii"), "scheme": "http",
            "path": unquote(raw_path.decode("ascii", "replace")), "raw_path": raw_path,
            "query_string": url.query or b"", "root_path": "", "headers": self.headers,
            "client": self.client, "server": self.local,
        }
        expect = any(k == b"expect" and v.lower() == b"100-continue" for k, v in self.headers)
        req = _Request(scope, p.should_keep_alive(), expect)
        self.reading = req
        if self.running is None:
            self._start(req)
        else:
            self.waiting.append(req)
            if len(self.waiting) >= _PAUSE_AT and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        req = self.reading
        if req is None:
            return
        req.size += len(body)
        if req.size > self.server.max_body:
            self._refuse(413, f"request body is larger than the {self.server.max_body}-byte limit".encode())
            return
        req.chunks.append(body)
        req.wake()

    def on_message_complete(self) -> None:
        req = self.reading
        if req is not None:
            req.complete = True
            req.wake()
        self.reading = None

    # -- answering ----------------------------------------------------------------------------
    def _start(self, req: _Request) -> None:
        self.running = req
        task = self.loop.create_task(self._run(req))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def _run(self, req: _Request) -> None:
        out = self.response = _Response(self, req)
        try:
            await self.server.app(req.scope, out.receive, out.send)
        except Exception as e:  # noqa: BLE001 - the client gets an answer, the connection its end
            if not out.head_sent and not out.finished:
                body = b'{"success":false,"code":"internal_error","message":"' + type(e).__name__.encode() + b'"}'
                out.write_whole(500, [(b"content-type", b"application/json")], body)
            self._close()
            return
        if not out.finished:
            if not out.head_sent:
                out.write_whole(500, [(b"content-type", b"application/json")],
                                b'{"success":false,"code":"internal_error","message":"no response"}')
            self._close()
            return
        self._next(req)

    def _next(self, done: _Request) -> None:
        self.running = self.response = None
        if self.closed:
            return
        if not done.keep_alive or self.server.stopping or not done.complete:
            # An unread body cannot be skipped safely on a kept connection: close it.
            self._close()
            return
        if self.waiting:
            self._start(self.waiting.popleft())
            if self.paused and len(self.waiting) < _PAUSE_AT // 2 and self.transport is not None:
                self.paused = False
                self.transport.resume_reading()
        elif self.reading is None:
            self._idle()

    def _idle(self) -> None:
        if self.server.stopping:
            self._close()
        else:
            self.idle = self.loop.call_later(self.server.keep_alive_s, self._close)

    def _refuse(self, status: int, message: bytes) -> None:
        """Answer a request that cannot go (on) to the app, then close. When an earlier pipelined
        request is still being answered, the connection just closes (answers keep their order)."""
        out = self.response
        if not self.closed and self.transport is not None and self.running in (None, self.reading) \
                and (out is None or not (out.head_sent or out.finished)):
            if out is not None:
                out.head_sent = out.finished = True     # whatever the app still sends is dropped
            code = b"payload_too_large" if status == 413 else b"bad_request"
            body = b'{"success":false,"code":"%b","message":"%b"}' % (code, message.replace(b'"', b"'"))
            _write(self.transport, status, [(b"content-type", b"application/json")], body, head=False, close=True)
        self._close()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()


class _Response:
    """One request's ``receive`` and ``send``."""

    __slots__ = (
        "chunked",
        "conn",
        "finished",
        "head",
        "head_sent",
        "headers",
        "req",
        "sent_continue",
        "started",
        "status",
    )

    def __init__(self, conn: _Connection, req: _Request) -> None:
        self.conn = conn
        self.req = req
        self.started = False
        self.finished = False
        self.status = 200
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_sent = False
        self.chunked = False
        self.head = req.scope["method"] == "HEAD"
        self.sent_continue = False

    async def receive(self) -> dict[str, Any]:
        req, conn = self.req, self.conn
        while not req.chunks and not req.complete and not conn.closed:
            if req.expect_continue and not self.sent_continue and conn.transport is not None:
                self.sent_continue = True
                conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            req.waiter = conn.loop.create_future()
            await req.waiter
            req.waiter = None
        if conn.closed and not req.chunks:
            return {"type": "http.disconnect"}
        body = b"".join(req.chunks) if len(req.chunks) != 1 else req.chunks[0]
        req.chunks = []
        return {"type": "http.request", "body": body, "more_body": not req.complete}

    async def send(self, msg: dict[str, Any]) -> None:
        conn = self.conn
        kind = msg["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("the response has already started")
            self.started = True
            self.status = msg["status"]
            self.headers = [(bytes(k).lower(), bytes(v)) for k, v in msg.get("headers", ())]
            return
        if kind != "http.response.body":
            return
        if not self.started:
            raise RuntimeError("response body sent before its start")
        if self.finished:
            return                                   # refused meanwhile, or a body after the end
        body, more = msg.get("body", b""), msg.get("more_body", False)
        if conn.closed or conn.transport is None:
            self.finished = not more
            return
        if not self.head_sent and not more:          # the usual case: the whole answer in one write
            self.write_whole(self.status, self.headers, body)
            return
        if not self.head_sent:                       # a streamed response: its head first
            self.head_sent = True
            sized = any(k == b"content-length" for k, _ in self.headers)
            self.chunked = not sized and not self.head
            extra = [] if sized or self.head else [(b"transfer-encoding", b"chunked")]
            conn.transport.write(_head(self.status, self.headers + extra, self.keep_alive()))
        if not self.head and body:
            conn.transport.write(b"%x\r\n%b\r\n" % (len(body), body) if self.chunked else body)
        if not more:
            self.finished = True
            if self.chunked:
                conn.transport.write(b"0\r\n\r\n")

    def write_whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.started = self.head_sent = self.finished = True
        if self.conn.transport is not None and not self.conn.closed:
            _write(self.conn.transport, status, headers, body, head=self.head, close=not self.keep_alive())

    def keep_alive(self) -> bool:
        return self.req.keep_alive and not self.conn.server.stopping


def _head(status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    lines = [b"HTTP/1.1 %d %b\r\ndate: %b\r\n" % (status, _REASONS.get(status, b""), _date())]
    lines += [k + b": " + v + b"\r\n" for k, v in headers]
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def _write(transport: asyncio.Transport, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *,
           head: bool, close: bool) -> None:
    if not any(k == b"content-length" for k, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    transport.write(_head(status, headers, not close) + (b"" if head else body))


class Server:
    """Serve ``app`` on already-listening sockets until :meth:`stop`."""

    def __init__(self, app: Any, *, max_body: int, keep_alive_s: float = 5.0) -> None:
        self.app = app
        self.max_body = max_body
        self.keep_alive_s = keep_alive_s
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.stopping = False
        self._stop = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def stop(self) -> None:
        self.stopping = True
        self._stop.set()

    async def serve(self, sockets: list[Any], *, grace_s: float = 10.0) -> None:
        servers = [await self.loop.create_server(lambda: _Connection(self), sock=s, backlog=2048) for s in sockets]
        await self._stop.wait()
        for s in servers:
            s.close()
        for c in list(self.connections):           # idle ones go now; busy ones after their answer
            if c.running is None:
                c._close()
        deadline = self.loop.time() + grace_s
        while (self.connections or self.tasks) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for c in list(self.connections):
            c._close()


__all__ = ["Server"]
