"""Channels: where an interaction happened, and how to tell when the sender did not say.

Every event in the log carries a ``channel``. Senders may name it (top-level
``channel``, ``context.channel`` or ``properties.channel``); otherwise it is inferred
from the catalogue, the presence of a ``store_id``, the client library or the call type.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache


class Channel(StrEnum):
    WEB = "web"
    APP = "app"
    STORE = "store"
    CALL_CENTER = "call_center"
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    SOCIAL = "social"
    PARTNER = "partner"
    SEARCH = "search"
    DISPLAY = "display"
    KIOSK = "kiosk"
    OTHER = "other"


# Segment's own top-level `channel` values describe the sending runtime.
SEGMENT_RUNTIME = {"browser": Channel.WEB, "mobile": Channel.APP, "client": Channel.WEB}
CUSTOM_CHANNEL = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

_LIBRARY_HINTS = (
    ("analytics.js", Channel.WEB),
    ("analytics-next", Channel.WEB),
    ("analytics-ios", Channel.APP),
    ("analytics-swift", Channel.APP),
    ("analytics-android", Channel.APP),
    ("analytics-kotlin", Channel.APP),
    ("analytics-react-native", Channel.APP),
    ("analytics_flutter", Channel.APP),
    ("analytics-flutter", Channel.APP),
)


@lru_cache(maxsize=4096)
def _explicit(value: str) -> str | None:
    v = value.strip().lower().replace("-", "_").replace(" ", "_")
    if v in SEGMENT_RUNTIME:
        return SEGMENT_RUNTIME[v].value
    if v == "server":
        return None
    return v if CUSTOM_CHANNEL.match(v) else None


def explicit_channel(value: object) -> str | None:
    """Return the channel a sender named, or ``None`` when it names none we can use.

    >>> explicit_channel("Store"), explicit_channel("browser"), explicit_channel("server")
    ('store', 'web', None)
    """
    if not isinstance(value, str) or not value:
        return None
    return _explicit(value)


def library_channel(library_name: object) -> str | None:
    if not isinstance(library_name, str):
        return None
    return _library(library_name)


@lru_cache(maxsize=1024)
def _library(library_name: str) -> str | None:
    name = library_name.lower()
    for hint, channel in _LIBRARY_HINTS:
        if name.startswith(hint):
            return channel.value
    return None
