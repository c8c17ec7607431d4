"""Destinations: where an action goes — a webhook, a stream topic, or (in tests) memory.

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

from plait.errors import DeliveryError


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


__all__ = ["Memory", "Webhook"]
