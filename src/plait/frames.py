"""Framed requests and answers over a socket, between the processes of one Plait server.

``plait serve`` can run as several processes (decide workers, front processes answering HTTP, the
writer that owns the workspace). They talk over socket pairs made before forking, in frames: a
9-byte header (request id, payload length, kind) and the payload. :class:`Channel` is one end
on an asyncio loop: :meth:`Channel.request` sends a frame and returns a future settled by the
``ANSWER`` frame with the same id; frames of other kinds go to ``on_frame`` (the serving side);
:meth:`Channel.exchange` does one blocking round trip when no loop runs (start-up, shut-down).

Hand-written because a broker or ``multiprocessing`` queue adds a copy and a thread hop per
message; a round trip over a socket pair measured 20 µs (p50, paced at 2,000/s) here.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

HEAD = struct.Struct("!IIB")        # request id, payload length, kind
STATUS = struct.Struct("!H")        # an HTTP status at the start of an answer's payload
# Kinds. Requests: DECIDE (JSON request), RECORD (Arrow IPC decisions, no answer), RELOAD (a
# store file), STOP (no answer), APPEND (msgpack records and rejections, answered once in the
# log), ASGI (msgpack HTTP request), OBSERVE
# (a collected event's JSON for the customer's snapshot, no answer). ANSWER carries the result
# for the request with the same id.
DECIDE, ANSWER, RECORD, RELOAD, STOP, APPEND, ASGI, OBSERVE = 1, 2, 3, 4, 5, 6, 7, 9


def frame(rid: int, kind: int, payload: bytes) -> bytes:
    return HEAD.pack(rid, len(payload), kind) + payload


def frames(buf: bytearray) -> tuple[list[tuple[int, int, bytes]], int]:
    """Complete frames at the start of ``buf`` and how many bytes they took."""
    out, at, n = [], 0, len(buf)
    while n - at >= HEAD.size:
        rid, size, kind = HEAD.unpack_from(buf, at)
        end = at + HEAD.size + size
        if end > n:
            break
        out.append((rid, kind, bytes(buf[at + HEAD.size:end])))
        at = end
    return out, at


class Lost(ConnectionError):
    """The process at the other end of a channel is gone."""


class Channel:
    """One end of a socket pair on an asyncio loop (see the module docstring)."""

    def __init__(self, sock: socket.socket, *, on_frame: Callable[[int, int, bytes], None] | None = None,
                 on_lost: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.buf = bytearray()
        self.out = bytearray()
        self.alive = True
        self.loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future] = {}
        self._next = 1

    # -- on a loop ------------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        if self.alive:
            self.sock.setblocking(False)
            loop.add_reader(self.sock.fileno(), self._readable)

    def request(self, kind: int, payload: bytes) -> asyncio.Future:
        """Send a request; the future gets the answer's payload (or :class:`Lost`)."""
        assert self.loop is not None, "attach() the channel to a loop first"
        fut = self.loop.create_future()
        if not self.alive:
            fut.set_exception(Lost("the other process is gone"))
            return fut
        rid = self._next
        self._next = rid + 1 if rid < 0xFFFFFFF0 else 1
        self._waiting[rid] = fut
        self.send(frame(rid, kind, payload))
        return fut

    def answer(self, rid: int, payload: bytes) -> None:
        self.send(frame(rid, ANSWER, payload))

    def send(self, data: bytes) -> None:
        if not self.alive:
            return
        if self.out:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost()
            return
        if sent < len(data):
            self.out += data[sent:]
            assert self.loop is not None
            self.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self._lost()
            return
        del self.out[:sent]
        if not self.out and self.loop is not None:
            self.loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        try:
            data = self.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        self.buf += data
        got, used = frames(self.buf)
        del self.buf[:used]
        for rid, kind, payload in got:
            self._dispatch(rid, kind, payload)

    def _dispatch(self, rid: int, kind: int, payload: bytes) -> None:
        if kind == ANSWER:
            fut = self._waiting.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(payload)
        elif self.on_frame is not None:
            self.on_frame(rid, kind, payload)

    def _lost(self) -> None:
        if not self.alive:
            return
        self.alive = False
        if self.loop is not None:
            self.loop.remove_reader(self.sock.fileno())
            if self.out:
                self.loop.remove_writer(self.sock.fileno())
        self.out.clear()
        self.sock.close()
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(Lost("the other process exited"))
        if self.on_lost is not None:
            self.on_lost()

    # -- without a loop -------------------------------------------------------------------------
    def exchange(self, kind: int, payload: bytes, *, answered: bool = True, timeout_s: float | None = None) -> bytes | None:
        """Send a frame and block, handling other frames as usual, until its answer
        (``answered``) or until the other end closes; the answer's payload or ``None``."""
        fd = self.sock.fileno()
        if self.loop is not None:
            self.loop.remove_reader(fd)
            if self.out:
                self.loop.remove_writer(fd)
        self.sock.settimeout(timeout_s)
        try:
            self.sock.sendall(bytes(self.out) + frame(0, kind, payload))
            self.out.clear()
            while True:
                data = self.sock.recv(1 << 18)
                if not data:
                    return None
                self.buf += data
                got, used = frames(self.buf)
                del self.buf[:used]
                result = None
                for rid, k, p in got:
                    if answered and rid == 0 and k == ANSWER:
                        result = p
                    else:
                        self._dispatch(rid, k, p)
                if result is not None:
                    return result
        finally:
            if self.alive:
                self.sock.setblocking(False)
                if self.loop is not None:
                    self.loop.add_reader(fd, self._readable)

    def close(self) -> None:
        """Close this end without calling ``on_lost``."""
        self.on_lost = None
        self._lost()


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected socket pair with room for a burst of frames in each direction."""
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    return a, b


__all__ = [
    "ANSWER",
    "APPEND",
    "ASGI",
    "DECIDE",
    "HEAD",
    "OBSERVE",
    "RECORD",
    "RELOAD",
    "STATUS",
    "STOP",
    "Channel",
    "Lost",
    "frame",
    "frames",
    "pair",
]

