"""Identifier types, normalisation and extraction from events.

An identifier is a ``(type, value)`` pair such as ``("email", "ann@x.com")``. The
:class:`Registry` holds the configured types (see
:class:`plait.config.IdentitySettings`): how a value is normalised, how many one
profile may hold, which wins when an event's identifiers cannot all be joined, and
which values are junk that must never link two people.

Normalisation is deliberately conservative: a value that cannot be parsed (an
email without a domain, a phone number ``phonenumbers`` rejects) is kept as its
trimmed raw text, flagged invalid, so nothing is dropped and nothing crashes.

>>> r = Registry.default()
>>> r.normalise("email", "  John.Smith+promo@GoogleMail.com ")
('email', 'johnsmith@gmail.com', True)
>>> r.normalise("phone", "(020) 7946-0018", region="GB")
('phone', '+442079460018', True)
>>> r.normalise("email", "not-an-email")
('email', 'not-an-email', False)
>>> r.blocked("email", "test@test.com")
True
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fnmatch import translate
from functools import lru_cache
from typing import Any

import phonenumbers

from plait.config import IdentitySettings

# Providers that ignore dots in the local part, and providers that deliver ``user+tag``
# to ``user``. Aliased domains are folded into one.
_DOTLESS = frozenset({"gmail.com"})
_PLUS_TAGS = frozenset({"gmail.com", "outlook.com", "hotmail.com", "live.com", "icloud.com", "me.com",
                        "proton.me", "protonmail.com", "fastmail.com", "yahoo.com"})
_DOMAIN_ALIAS = {"googlemail.com": "gmail.com", "protonmail.ch": "proton.me", "pm.me": "proton.me"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")

# Where Segment events carry identifiers beyond userId / anonymousId.
TRAIT_TYPES = {"email": "email", "phone": "phone", "caller_number": "caller_number"}
CONTEXT_TYPES = {"device.id": "device_id"}


def normalise_email(raw: str) -> tuple[str, bool]:
    """Lower-case, trimmed, provider aliases folded, plus-tags and (Gmail) dots removed."""
    v = raw.strip().lower()
    if not _EMAIL.match(v):
        return v, False
    local, domain = v.rsplit("@", 1)
    domain = _DOMAIN_ALIAS.get(domain, domain)
    if domain in _PLUS_TAGS:
        local = local.split("+", 1)[0] or local
    if domain in _DOTLESS:
        local = local.replace(".", "") or local
    return f"{local}@{domain}", True


@lru_cache(maxsize=65_536)
def normalise_phone(raw: str, region: str) -> tuple[str, bool]:
    """E.164 (``+447700900123``) when ``phonenumbers`` accepts it, else the trimmed text."""
    text = raw.strip()
    try:
        num = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return text, False
    if not phonenumbers.is_possible_number(num):
        return text, False
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164), True


@dataclass(frozen=True)
class IdentifierType:
    name: str
    normalise: str
    limit: int | None
    priority: int
    blocked: tuple[str, ...]
    store_as: str | None


class Registry:
    """The configured identifier types of a workspace."""

    def __init__(self, settings: IdentitySettings, *, salt: bytes | None = None) -> None:
        self.settings = settings
        self.region = settings.default_region.upper()
        self.types: dict[str, IdentifierType] = {
            name: IdentifierType(name, t.normalise, t.limit, t.priority, tuple(b.lower() for b in t.blocked), t.store_as)
            for name, t in settings.types.items()
        }
        self.salt = salt if settings.hash_values else None
        self._blocked_exact = {n: frozenset(b for b in t.blocked if not any(c in b for c in "*?[")) for n, t in self.types.items()}
        self._blocked_glob = {n: _globs(t.blocked) for n, t in self.types.items()}
        self._types_of: dict[str, tuple[int, int | None]] = {}
        # Identifier keys of raw values seen lately (returning visitors send the same ids all day).
        self._memo: dict[tuple[str, str], str] = {}

    @classmethod
    def default(cls) -> "Registry":
        return cls(IdentitySettings())

    def type(self, name: str) -> IdentifierType:
        t = self.types.get(name)
        if t is None:
            # A user-defined type seen in context.externalIds: no limit, low priority.
            t = IdentifierType(name, "text", None, 35, (), None)
            self.types[name] = t
            self._blocked_exact[name] = frozenset()
            self._blocked_glob[name] = None
        return t

    def normalise(self, type_name: str, raw: Any, *, region: str | None = None) -> tuple[str, str, bool]:
        """``(stored type, value, valid)`` for one raw value."""
        t = self.type(type_name)
        text = raw if isinstance(raw, str) else str(raw)
        if t.normalise == "email":
            value, ok = normalise_email(text)
        elif t.normalise == "phone":
            value, ok = normalise_phone(text, (region or self.region).upper())
        elif t.normalise == "lower":
            value, ok = text.strip().lower(), True
        else:
            value, ok = text.strip(), True
        return t.store_as or t.name, value, ok

    def blocked(self, type_name: str, value: str) -> bool:
        v = value.lower()
        if v in self._blocked_exact.get(type_name, ()):
            return True
        g = self._blocked_glob.get(type_name)
        return g is not None and g.match(v) is not None

    def key(self, type_name: str, value: str) -> str:
        """The stored form ``type:value`` (the value HMAC-hashed when the workspace hashes identifiers)."""
        if self.salt is not None:
            value = hmac.new(self.salt, f"{type_name}:{value}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"{type_name}:{value}"

    def priority(self, key: str) -> int:
        return self.type(key[:key.index(":")]).priority

    def limit(self, type_name: str) -> int | None:
        return self.type(type_name).limit

    def parse_key(self, text: str) -> str:
        """A user's ``TYPE:VALUE`` (``email:Ann@X.com``) as a stored key, normalised like events'."""
        if ":" not in text:
            raise ValueError(f"identifier {text!r} is not TYPE:VALUE (for example email:ann@example.com)")
        t, v = text.split(":", 1)
        stored, value, _ = self.normalise(t.strip(), v)
        return self.key(stored, value)

    def extract(self, user_id: str | None, anonymous_id: str | None, context: Mapping[str, Any] | None,
                traits: Iterable[tuple[str, Any]]) -> list[str]:
        """The identifier keys an event carries, blocked values left out, in priority order.

        ``traits`` are ``(name, value)`` pairs from ``traits``, ``context.traits`` and the
        sealed personal fields; email, phone and caller_number are identifiers.
        """
        found: dict[str, None] = {}
        memo = self._memo
        for tname, raw in self._raw(user_id, anonymous_id, context, traits):
            if raw is None or raw == "" or isinstance(raw, (dict, list, bool)):
                continue
            k = memo.get((tname, raw)) if isinstance(raw, str) else None
            if k is None:
                stored, value, _ = self.normalise(tname, raw)
                k = "" if not value or self.blocked(stored, value) else self.key(stored, value)
                if isinstance(raw, str):
                    if len(memo) >= _MEMO:
                        memo.clear()
                    memo[(tname, raw)] = k
            if k:
                found[k] = None
        return sorted(found, key=self.priority) if len(found) > 1 else list(found)

    def _raw(self, user_id: str | None, anonymous_id: str | None, context: Mapping[str, Any] | None,
             traits: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        if user_id:
            yield "user_id", user_id
        if anonymous_id:
            yield "anonymous_id", anonymous_id
        if context:
            for entry in context.get("externalIds") or ():
                if isinstance(entry, dict) and entry.get("id") not in (None, "") and entry.get("type"):
                    yield str(entry["type"]), entry["id"]
            device = context.get("device")
            if isinstance(device, dict) and device.get("id"):
                yield "device_id", device["id"]
        for name, value in traits:
            tname = TRAIT_TYPES.get(name)
            if tname is not None:
                yield tname, value


_MEMO = 200_000


def _globs(patterns: list[str]) -> "re.Pattern[str] | None":
    globs = [translate(b.lower()) for b in patterns if any(c in b for c in "*?[")]
    return re.compile("|".join(globs)) if globs else None


__all__ = ["IdentifierType", "Registry", "normalise_email", "normalise_phone"]
