"""Per-subject encryption keys for personal fields (crypto-shredding ready).

Personal fields of an event are sealed with AES-256-GCM under the key of the
event's *subject*: the identifier that sent it (``user_id:…`` or
``anonymous_id:…``). Keys belong to identifiers, not to profiles, so identity merges
and splits never re-encrypt the log; erasing a person destroys the keys of all
their identifiers and leaves only unreadable ciphertext behind.

Keys live in their own SQLite file (``keys.sqlite``), apart from the log, with
``secure_delete`` on so a destroyed key is overwritten on disk, not just unlinked.
The sealed format is ``version byte || nonce (12) || ciphertext+tag`` with the
message id as associated data, so a blob cannot be moved to another event.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED = 1
PLAIN = 0
_SEALED_BYTE = bytes([SEALED])
_PLAIN_BYTE = bytes([PLAIN])
_json = msgspec.json.Encoder()
_jdec = msgspec.json.Decoder()


def plain(payload: dict | None) -> bytes | None:
    """Personal fields in the clear, in the ``pii`` column's format (a workspace that does not
    encrypt stores them so; the collector's journal carries them so until the writer seals them)."""
    return None if payload is None else bytes([PLAIN]) + _json.encode(payload)


def is_plain(blob: bytes | None) -> bool:
    return blob is not None and blob[0] == PLAIN


def read_plain(blob: bytes | None) -> dict | None:
    """The fields of a :func:`plain` blob."""
    return None if blob is None else _jdec.decode(blob[1:])


class Vault:
    """Key store and sealer for personal fields."""

    def __init__(self, path: str | Path | None, *, encrypt: bool = True) -> None:
        self.encrypt = encrypt
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False)
        self._db.execute("PRAGMA secure_delete = ON")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS subject_keys (subject TEXT PRIMARY KEY, key BLOB NOT NULL, created_at REAL NOT NULL)"
        )
        self._db.commit()
        self._cache: dict[str, AESGCM] = {}
        self._enc = msgspec.json.Encoder()
        self._dec = msgspec.json.Decoder()

    def _load(self, subjects: Iterable[str]) -> None:
        missing = [s for s in set(subjects) if s not in self._cache]
        if not missing:
            return
        with self._lock:
            found: dict[str, bytes] = {}
            for i in range(0, len(missing), 500):
                chunk = missing[i : i + 500]
                q = f"SELECT subject, key FROM subject_keys WHERE subject IN ({','.join('?' * len(chunk))})"
                found.update(self._db.execute(q, chunk).fetchall())
            fresh = [s for s in missing if s not in found]
            material, now = os.urandom(32 * len(fresh)), time.time()   # one call for all the new keys
            new = [(s, material[32 * i: 32 * i + 32], now) for i, s in enumerate(fresh)]
            if new:
                self._db.executemany("INSERT INTO subject_keys VALUES (?, ?, ?)", new)
                self._db.commit()
                found.update((s, k) for s, k, _ in new)
            for s, k in found.items():
                self._cache[s] = AESGCM(k)

    def seal_many(self, subjects: list[str], message_ids: list[str], payloads: list[dict | None]) -> list[bytes | None]:
        """Seal each payload under its subject's key (keys created durably first)."""
        encode = self._enc.encode
        return self.seal_json(subjects, message_ids, [None if p is None else encode(p) for p in payloads])

    def seal_json(self, subjects: list[str], message_ids: list[str], payloads: list[bytes | None]) -> list[bytes | None]:
        """:meth:`seal_many` for payloads already encoded as JSON objects (the engine's bulk
        path writes them so, and no decoding and re-encoding in Python is needed)."""
        if not self.encrypt:
            return [None if p is None else _PLAIN_BYTE + p for p in payloads]
        self._load(s for s, p in zip(subjects, payloads) if p is not None)
        keys = self._cache
        # Random 96-bit nonces, drawn from the OS in one call rather than one call per field set.
        nonces = os.urandom(12 * len(payloads))
        out: list[bytes | None] = []
        add = out.append
        for i, (subject, mid, payload) in enumerate(zip(subjects, message_ids, payloads)):
            if payload is None:
                add(None)
                continue
            nonce = nonces[12 * i: 12 * i + 12]
            add(_SEALED_BYTE + nonce + keys[subject].encrypt(nonce, payload, mid.encode()))
        return out

    def open(self, subject: str, message_id: str, blob: bytes | None) -> dict | None:
        """The personal fields of one event, or ``None`` if none or its key is gone."""
        if blob is None:
            return None
        if blob[0] == PLAIN:
            return read_plain(blob)
        self._load_existing(subject)
        aes = self._cache.get(subject)
        if aes is None:
            return None
        return self._dec.decode(aes.decrypt(blob[1:13], blob[13:], message_id.encode()))

    def preload(self, subjects: Iterable[str]) -> None:
        """Fetch the existing keys of many subjects at once (bulk reads of sealed events)."""
        missing = [s for s in set(subjects) if s not in self._cache]
        with self._lock:
            for i in range(0, len(missing), 500):
                chunk = missing[i : i + 500]
                q = f"SELECT subject, key FROM subject_keys WHERE subject IN ({','.join('?' * len(chunk))})"
                for s, k in self._db.execute(q, chunk).fetchall():
                    self._cache[s] = AESGCM(k)

    def _load_existing(self, subject: str) -> None:
        if subject in self._cache:
            return
        with self._lock:
            row = self._db.execute("SELECT key FROM subject_keys WHERE subject = ?", (subject,)).fetchone()
        if row is not None:
            self._cache[subject] = AESGCM(row[0])

    def secret(self, name: str) -> bytes:
        """A named 32-byte workspace secret (the identifier-hashing salt), made on first use."""
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
            row = self._db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
            if row is None:
                row = (os.urandom(32),)
                self._db.execute("INSERT INTO secrets VALUES (?, ?)", (name, row[0]))
                self._db.commit()
            return row[0]

    def destroy(self, subjects: Iterable[str]) -> int:
        """Destroy the keys of ``subjects`` for good (crypto-shredding); how many existed.

        ``secure_delete`` overwrites the freed pages, and the file is vacuumed so no copy of a
        key survives in free space.
        """
        subjects = list(set(subjects))
        with self._lock:
            n = 0
            for i in range(0, len(subjects), 500):
                chunk = subjects[i : i + 500]
                n += self._db.execute(f"DELETE FROM subject_keys WHERE subject IN ({','.join('?' * len(chunk))})",
                                      chunk).rowcount
            self._db.commit()
            self._db.execute("VACUUM")
            for s in subjects:
                self._cache.pop(s, None)
        return n

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM subject_keys").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
