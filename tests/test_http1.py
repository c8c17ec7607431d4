"""The fronts' HTTP/1.1 server: keep-alive, pipelining, bodies, limits, errors and a graceful stop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from plait.server.http1 import Server


async def echo(scope: dict, receive: Any, send: Any) -> None:
    """Answers with the method, path, query and body it read; ``/slow`` waits first, ``/boom`` fails,
    ``/stream`` streams without a length."""
    body = b""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return
        body += msg["body"]
        if not msg["more_body"]:
            break
    if scope["path"] == "/boom":
        raise ValueError("no")
    if scope["path"] == "/slow":
        await asyncio.sleep(0.2)
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    out = b"%b %b ?%b [%b]" % (scope["method"].encode(), scope["path"].encode(), scope["query_string"], body)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": out})


def _run(test: Callable[[int, Server], Awaitable[None]], *, max_body: int = 1000, keep_alive_s: float = 5.0) -> None:
    async def main() -> None:
        sock = socket.create_server(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = Server(echo, max_body=max_body, keep_alive_s=keep_alive_s)
        serving = asyncio.ensure_future(server.serve([sock], grace_s=2))
        await asyncio.sleep(0.05)
        try:
            await test(port, server)
        finally:
            server.stop()
            await asyncio.wait_for(serving, 5)

    asyncio.run(main())


async def _read_response(r: asyncio.StreamReader, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    raw = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    lines = raw.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v for k, _, v in (ln.partition(": ") for ln in lines[1:] if ln)}
    if head:
        body = b""
    elif "content-length" in headers:
        body = await r.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await r.readline()).strip(), 16)
            chunk = await r.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = b""
    return status, headers, body


def test_keep_alive_answers_several_requests_on_one_connection():
    async def t(port: int, server: Server) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for i in range(3):
            w.write(b"POST /v1/track?x=%d HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" % i)
            status, headers, body = await _read_response(r)
            assert status == 200 and body == b"POST /v1/track ?x=%d [hello]" % i
            assert headers["content-type"] == "text/plain" and "date" in headers and "connection" not in headers
        w.close()

    _run(t)


def test_pipelined_requests_are_answered_in_order():
    async def t(port: int, server: Server) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
                b"GET /fast%20one HTTP/1.1\r\nHost: a\r\n\r\n"
                b"POST /last HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        got = [await _read_response(r) for _ in range(3)]
        assert [b for _, _, b in got] == [b"GET /slow ? []", b"GET /fast one ? []", b"POST /last ? [abcde]"]
        w.close()

    _run(t)


def test_expect_continue_is_answered_before_the_body_is_read():
    async def t(port: int, server: Server) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        w.write(b"data")
        assert (await _read_response(r))[2] == b"POST /up ? [data]"
        w.close()

    _run(t)


def test_a_body_over_the_limit_gets_413_and_the_connection_closes():
    async def t(port: int, server: Server) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000)
        status, headers, body = await _read_response(r)
        assert status == 413 and b"1000-byte limit" in body and headers["connection"] == "close"
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()

    _run(t)


def test_malformed_requests_get_400_and_a_failing_app_500_then_close():
    async def t(port: int, server: Server) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"NOT HTTP AT ALL\r\n\r\n")
        status, _, body = await _read_response(r)
        assert status == 400 and b"malformed HTTP request" in body
        assert await asyncio.wait_for(r.read(), 5) == b""
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n")
        status, _, body = await _read_response(r)
        assert status == 500 and b"ValueError" in body
        assert await asyncio.wait_for(r.read(), 5) == b""

    _run(t)


def test_streamed_responses_are_chunked_head_has_no_body_and_http10_closes():
    async def t(port: int, server: Server) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = await _read_response(r)
        assert status == 200 and headers["transfer-encoding"] == "chunked" and body == b"one,two,three"
        w.write(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, _ = await _read_response(r, head=True)
        assert status == 200 and int(headers["content-length"]) == len(b"HEAD /x ? []")
        _, _, body = await _read_response(r)            # nothing of HEAD's body came in between
        assert body == b"GET /after ? []"
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /old HTTP/1.0\r\n\r\n")
        status, headers, body = await _read_response(r)
        assert body == b"GET /old ? []" and headers["connection"] == "close"
        assert await asyncio.wait_for(r.read(), 5) == b""

    _run(t)


def test_idle_connections_time_out_and_stop_finishes_requests_in_flight():
    async def t(port: int, server: Server) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(r.read(), 5) == b""    # idle past keep_alive_s: closed
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.sleep(0.05)
        server.stop()
        status, headers, body = await _read_response(r)     # answered, then closed
        assert status == 200 and body == b"GET /slow ? []" and headers["connection"] == "close"
        assert await asyncio.wait_for(r.read(), 5) == b""
        await asyncio.sleep(0.1)
        try:
            await asyncio.open_connection("127.0.0.1", port)
            raise AssertionError("a stopped server accepted a connection")
        except OSError:
            pass

    _run(t, keep_alive_s=0.2)
