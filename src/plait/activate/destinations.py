"""Destinations: where an action goes — a webhook, a NATS JetStream subject, or (in tests) memory.

A destination's ``send(payload)`` returns when the receiver has accepted the payload and raises
:class:`~plait.errors.DeliveryError` when it has not (the outbox retries, then dead-letters).
:class:`Webhook` POSTs JSON with the standard library's HTTP client (no extra dependency for one
request); :class:`Memory` keeps what it was sent and can be told to fail, the test double.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from plait.errors import DeliveryError, MissingExtraError, require


class Webhook:
    """POST the payload as JSON to ``url``; any 2xx answer is a delivery."""

    def __init__(self, name: str, url: str, *, headers: Mapping[str, str] | None = None, timeout_s: float = 5.0) -> None:
        self.name, self.url, self.timeout_s = name, url, timeout_s
        self.headers = {"content-type": "application/json", "user-agent": "plait-activate", **(headers or {})}

    def send(self, payload: Mapping[str, Any]) -> None:
        req = urllib.request.Request(self.url, data=json.dumps(payload, default=str).encode(), headers=self.headers,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - a configured URL
                if not 200 <= resp.status < 300:
                    raise DeliveryError(f"{self.url} answered {resp.status}", destination=self.name)
        except urllib.error.HTTPError as e:
            raise DeliveryError(f"{self.url} answered {e.code}", destination=self.name) from e
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise DeliveryError(f"{self.url} unreachable: {getattr(e, 'reason', e)}", destination=self.name) from e


class Stream:
    """Publish the payload as JSON on a NATS JetStream subject; the server's acknowledgement is
    the delivery (``pip install "plait[nats]"``). One connection is kept per destination, on a
    private event loop, so the outbox's worker thread can call :meth:`send` synchronously."""

    def __init__(self, name: str, subject: str, *, servers: str = "nats://127.0.0.1:4222", stream: str | None = None,
                 timeout_s: float = 5.0) -> None:
        self.name, self.subject, self.servers, self.stream, self.timeout_s = name, subject, servers, stream, timeout_s
        self._loop: Any = None
        self._nc: Any = None
        self._js: Any = None

    def _connect(self) -> None:
        import asyncio

        nats = require("nats", "nats")
        self._loop = asyncio.new_event_loop()

        async def go() -> None:
            self._nc = await nats.connect(self.servers, connect_timeout=self.timeout_s, max_reconnect_attempts=1)
            self._js = self._nc.jetstream()
            if self.stream:
                try:
                    await self._js.add_stream(name=self.stream, subjects=[self.subject])
                except Exception:  # noqa: BLE001 - it exists already (with these subjects or more)
                    pass

        self._loop.run_until_complete(go())

    def send(self, payload: Mapping[str, Any]) -> None:
        try:
            if self._js is None:
                self._connect()
            data = json.dumps(payload, default=str).encode()
            self._loop.run_until_complete(self._js.publish(self.subject, data, timeout=self.timeout_s))
        except MissingExtraError:
            raise
        except Exception as e:  # noqa: BLE001 - the outbox retries any failure
            self._js = None
            raise DeliveryError(f"publish to {self.subject} failed: {e}", destination=self.name) from e

    def close(self) -> None:
        if self._nc is not None:
            self._loop.run_until_complete(self._nc.close())
            self._loop.close()
            self._nc = self._js = None


class Memory:
    """Keeps every payload; ``fail_next`` deliveries raise first (a flaky receiver)."""

    def __init__(self, name: str = "memory", *, fail_next: int = 0) -> None:
        self.name = name
        self.fail_next = fail_next
        self.sent: list[dict[str, Any]] = []
        self.attempts = 0

    def send(self, payload: Mapping[str, Any]) -> None:
        self.attempts += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise DeliveryError("refused (test double)", destination=self.name)
        self.sent.append(dict(payload))


__all__ = ["Memory", "Stream", "Webhook"]
