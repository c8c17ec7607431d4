"""API keys: which source is sending and what a caller may do, stored only as SHA-256 hashes.

A key identifies a *source* (the web shop, the POS estate, the app, a partner feed),
the way Segment's write keys do; every event it sends is stamped with that source. Each
key has a role: ``collector`` (send events), ``analyst`` (read profiles, consent and the
ledger; send nothing) or ``admin`` (everything, including splits and consent changes).
Keys are shown once, at creation, and kept hashed.

A served workspace manages its keys through the server (``/v1/keys``, admin): a new source is
onboarded, and a leaked key revoked, without stopping collection. The front processes of
``plait serve --fronts N`` cannot read the engine, so the writer publishes the active keys'
hashes to a file (:meth:`KeyStore.publish`) and each front re-reads it when it changes, checked
at most once a second (:meth:`KeyStore.follow`): a key created or revoked is in force in every
front within about a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from plait.engine.backend import Backend
from plait.errors import AuthError, ConfigError

DDL = """
CREATE TABLE IF NOT EXISTS write_keys (
    key_hash   VARCHAR PRIMARY KEY,
    name       VARCHAR NOT NULL,
    source     VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
ALTER TABLE write_keys ADD COLUMN IF NOT EXISTS role VARCHAR DEFAULT 'collector';
"""
ROLES = ("collector", "analyst", "admin")
SENDERS = ("collector", "admin")


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    name: str
    source: str
    created_at: datetime
    revoked_at: datetime | None
    key_hash: str
    role: str = "collector"


class KeyStore:
    """Create, list, revoke and check write keys."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        backend.execute(DDL)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, str]] | None = None
        self._publish_to: Path | None = None       # the writer's: where the fronts read keys from
        self._follow: Path | None = None           # a front's: the file it reads keys from
        self._seen: tuple[int, int, int] | None = None  # that file's (inode, mtime_ns, size) when last read
        self._checked = 0.0

    def create(self, name: str, *, source: str | None = None, role: str = "collector") -> str:
        """Make a key for ``source`` (default: ``name``) with ``role`` and return it; it is not stored in clear."""
        name = name.strip()
        if not name:
            raise ConfigError("a write key needs a non-empty name")
        if role not in ROLES:
            raise ConfigError(f"unknown role `{role}`", hint=f"use one of: {', '.join(ROLES)}")
        key = "wk_" + secrets.token_urlsafe(24)
        now = datetime.now().astimezone()
        self.backend.append("write_keys", pa.table({
            "key_hash": [_hash(key)], "name": [name], "source": [source or name],
            "created_at": pa.array([now], pa.timestamp("us", tz="UTC")),
            "revoked_at": pa.array([None], pa.timestamp("us", tz="UTC")), "role": [role],
        }))
        self._changed()
        return key

    def revoke(self, name: str) -> int:
        n = int(self.backend.scalar("SELECT count(*) FROM write_keys WHERE name = ? AND revoked_at IS NULL", [name]))
        if n == 0:
            raise ConfigError(f"no active write key named `{name}`", hint="see `plait keys list`")
        self.backend.execute("UPDATE write_keys SET revoked_at = now() WHERE name = ? AND revoked_at IS NULL", [name])
        self._changed()
        return n

    def _changed(self) -> None:
        self._cache = None
        if self._publish_to is not None:
            self.publish(self._publish_to)

    def publish(self, path: Path) -> None:
        """Write the active keys' hashes, sources and roles to ``path`` (atomically), and again
        on every later create or revoke: the fronts check keys from it."""
        cache = self.load()
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._publish_to = path

    def follow(self, path: Path) -> None:
        """Check keys from a file :meth:`publish` writes (a front process, which never reads the engine)."""
        self._follow = Path(path)
        self._refresh(force=True)

    def _refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < 1.0:
            return
        self._checked = now
        assert self._follow is not None
        try:
            st = self._follow.stat()
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)      # each publish is a new file (os.replace)
            if seen != self._seen:
                cache = {h: (s, r) for h, (s, r) in json.loads(self._follow.read_text()).items()}
                self._cache, self._seen = cache, seen
        except (OSError, ValueError):
            pass          # mid-replace or gone: keep checking with the keys last read

    def list(self) -> list[KeyInfo]:
        return [KeyInfo(**r) for r in self.backend.rows(
            "SELECT name, source, created_at, revoked_at, key_hash, role FROM write_keys ORDER BY created_at")]

    def load(self) -> dict[str, tuple[str, str]]:
        """Read the active keys into memory (checks then never query the engine until a key
        is created or revoked here)."""
        with self._lock:
            rows = self.backend.rows(
                "SELECT key_hash, source, coalesce(role, 'collector') AS role FROM write_keys WHERE revoked_at IS NULL")
            self._cache = {r["key_hash"]: (r["source"], r["role"]) for r in rows}
            return self._cache

    def _lookup(self, key: str | None) -> tuple[str, str]:
        if not key:
            raise AuthError("no write key: send it as the HTTP Basic user name, a Bearer token or `writeKey` in the body")
        if self._follow is not None:
            self._refresh()
        found = (self._cache if self._cache is not None else self.load()).get(_hash(key))
        if found is None:
            raise AuthError("unknown or revoked write key", hint="create one with `plait keys create --name NAME`")
        return found

    def source_for(self, key: str | None) -> str:
        """The source a key sends as; :class:`AuthError` if it is missing, unknown or may not send."""
        source, role = self._lookup(key)
        if role not in SENDERS:
            raise AuthError(f"a `{role}` key cannot send events", hint="use a collector key for sources")
        return source

    def role_for(self, key: str | None) -> str:
        """The role of a key; :class:`AuthError` if it is missing or unknown."""
        return self._lookup(key)[1]
