"""From request bytes to records and rejections, independent of the web framework.

:class:`Intake` applies Segment's HTTP rules: the write key (HTTP Basic user name or
``writeKey`` in the body), gzip bodies, size and count limits, ``sentAt`` clock-skew
correction and batch-level defaults. A bad event becomes a :class:`Rejection`
with its index, field and reason; the good events of a batch go on.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass, field

import msgspec

from plait.collect.keys import KeyStore
from plait.config import CollectorSettings
from plait.errors import AuthError, EventError, LimitError
from plait.events.contract import Parser, Record
from plait.log.store import Rejection



@dataclass
class Parsed:
    records: list[Record] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    errors: list[EventError] = field(default_factory=list)
    source: str = ""


def basic_user(header: str | None) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header (Segment's write key)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate a gzip body, refusing to grow past ``limit`` bytes (zip bombs)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise EventError(f"body says Content-Encoding gzip but is not valid gzip ({e})") from e
    if len(out) > limit or d.unconsumed_tail:
        raise LimitError(f"decompressed body is larger than the {limit}-byte limit")
    return out


class _Key(msgspec.Struct, rename="camel"):
    write_key: str | None = None


_key_decoder = msgspec.json.Decoder(_Key)


class Intake:
    """Turns request bodies into records for the log."""

    def __init__(self, parser: Parser, keys: KeyStore, settings: CollectorSettings) -> None:
        self.parser = parser
        self.keys = keys
        self.settings = settings

    def _source(self, auth: str | None, body_key: str | None) -> str:
        key = basic_user(auth) or body_key
        if not self.settings.require_write_key and not key:
            return "http"
        return self.keys.source_for(key)

    def body(self, raw: bytes, encoding: str | None) -> bytes:
        limit = self.settings.max_request_bytes
        if len(raw) > limit:
            raise LimitError(f"request body is {len(raw)} bytes; the limit is {limit}")
        if encoding and encoding.lower() == "gzip":
            return gunzip(raw, limit)
        return raw

    def parse(self, kind: str, raw: bytes, *, auth: str | None, encoding: str | None, received_at: int) -> Parsed:
        """Parse one request to ``/v1/{kind}`` (``kind`` is a call type or ``batch``).

        Raises :class:`AuthError`, :class:`LimitError` or, when the body as a whole is
        unusable, :class:`EventError`; per-event problems are returned as rejections.
        """
        data = self.body(raw, encoding)
        if kind == "batch":
            return self._batch(data, auth, received_at)
        if len(data) > self.settings.max_event_bytes:
            raise LimitError(f"event is {len(data)} bytes; the limit is {self.settings.max_event_bytes}")
        call = self.parser.decode(data)
        out = Parsed(source=self._source(auth, call.write_key))
        try:
            out.records.append(self.parser.normalise(call, received_at=received_at, source=out.source, kind=kind))
        except EventError as e:
            out.errors.append(e)
            out.rejections.append(_rejection(e, f"http:/v1/{kind}", data, out.source))
        return out

    def _batch(self, data: bytes, auth: str | None, received_at: int) -> Parsed:
        header = auth
        body_key = None
        if basic_user(header) is None:
            try:
                body_key = _key_decoder.decode(data).write_key
            except msgspec.MsgspecError:
                body_key = None
        source = self._source(header, body_key)
        batch = self.parser.decode_batch(data)
        n = len(batch.batch)
        if n > self.settings.max_batch_events:
            raise LimitError(f"batch has {n} events; the limit is {self.settings.max_batch_events}")
        out = Parsed(source=source)
        limit = self.settings.max_event_bytes
        for i, raw in enumerate(batch.batch):
            piece = bytes(raw)
            try:
                if len(piece) > limit:
                    raise EventError(f"event is {len(piece)} bytes; the limit is {limit}", index=i)
                call = self.parser.decode(piece, index=i)
                out.records.append(self.parser.normalise(call, received_at=received_at, source=source, index=i, defaults=batch))
            except EventError as e:
                out.errors.append(e)
                out.rejections.append(_rejection(e, "http:/v1/batch", piece, source))
        return out


def _rejection(e: EventError, origin: str, payload: bytes, source: str) -> Rejection:
    return Rejection(
        reason=e.reason, field=e.field, origin=origin, position=e.index,
        payload=payload.decode("utf-8", "replace"), source=source,
    )


__all__ = ["AuthError", "Intake", "Parsed", "basic_user", "gunzip"]
