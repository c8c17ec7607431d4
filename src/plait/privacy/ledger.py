"""A tamper-evident ledger of consent changes, erasures and data sharing (RFC 9162 style).

Entries are appended to a Merkle tree built as Certificate Transparency builds it
(RFC 9162 §2.1): leaf hash ``SHA-256(0x00 || entry)``, node hash
``SHA-256(0x01 || left || right)``, the tree over ``n`` leaves split at the largest power of
two below ``n``. The ledger signs *tree heads* (size, time, root) with Ed25519, and proves

- **inclusion**: this entry is leaf ``i`` of the tree a signed head commits to;
- **consistency**: the tree of size ``m`` is a prefix of the tree of size ``n`` — nothing
  earlier was changed or removed.

A partner verifies both with the public key and the proof alone (:func:`verify_inclusion`,
:func:`verify_consistency`). Storage is two files beside the workspace: ``ledger.log``
(length-prefixed canonical-JSON entries, append-only, fsynced) and ``ledger.heads``
(every signed head, one JSON line each). :meth:`Ledger.verify` recomputes the tree from the
stored entries and checks every head's signature, root and mutual consistency, so changing
any byte of either file is detected. The signing key is a workspace secret in the key vault.

Written by hand: the hashing and proof algorithms are a few dozen lines of the RFC, and no
maintained Python library offers CT-style proofs over our own storage; the cryptography
(SHA-256, Ed25519) is the ``cryptography`` package's.

>>> import tempfile
>>> from pathlib import Path
>>> led = Ledger(Path(tempfile.mkdtemp()), seed=bytes(32))
>>> r = led.append("consent", {"subject": "email:a@b.co", "purpose": "marketing", "granted": True})
>>> head = led.head()
>>> verify_inclusion(led.public_key_hex, head, led.entry(r.index), led.prove(r.index, head.size))
True
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from plait.errors import LedgerError

LOG_FILE = "ledger.log"
HEADS_FILE = "ledger.heads"
_LEN = struct.Struct(">I")
_HEAD_PREFIX = b"plait-tree-head-v1"
_enc = msgspec.json.Encoder(order="sorted")


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n`` ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """Leaf hashes with every complete aligned subtree cached: append O(1) amortised,
    any subtree hash in O(log n)."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def push(self, h: bytes) -> None:
        levels = self.levels
        levels[0].append(h)
        k = 0
        while len(levels[k]) % 2 == 0:
            if len(levels) == k + 1:
                levels.append([])
            levels[k + 1].append(node_hash(levels[k][-2], levels[k][-1]))
            k += 1

    def mth(self, lo: int, hi: int) -> bytes:
        """Merkle tree hash of leaves ``[lo, hi)``."""
        n = hi - lo
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n & (n - 1) == 0 and lo % n == 0:
            return self.levels[n.bit_length() - 1][lo // n]
        k = _split(n)
        return node_hash(self.mth(lo, lo + k), self.mth(lo + k, hi))


def read_entries(path: Path) -> list[tuple[int, bytes]]:
    """``(offset, entry)`` of every framed entry in a ledger log; :class:`LedgerError` if torn."""
    if not path.exists():
        return []
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise LedgerError(f"{path}: truncated length at byte {pos}")
        (n,) = _LEN.unpack_from(data, pos)
        if pos + 4 + n > len(data):
            raise LedgerError(f"{path}: entry at byte {pos} runs past the end of the file")
        out.append((pos, data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out


@dataclass(frozen=True)
class TreeHead:
    """A signed commitment to the first ``size`` entries."""

    size: int
    timestamp_ms: int
    root: str          # hex
    signature: str     # hex, Ed25519 over signed_bytes()

    def signed_bytes(self) -> bytes:
        return _HEAD_PREFIX + struct.pack(">QQ", self.size, self.timestamp_ms) + bytes.fromhex(self.root)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Receipt:
    index: int
    leaf_hash: str


class Ledger:
    """Append-only Merkle-tree ledger in a directory, signed with an Ed25519 key."""

    def __init__(self, directory: Path, *, seed: bytes) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key_hex = public_key_of(seed)
        self._lock = threading.Lock()
        self.tree = MerkleTree()
        self._offsets: list[int] = []
        self._end = 0
        for pos, entry in read_entries(self.dir / LOG_FILE):
            self.tree.push(leaf_hash(entry))
            self._offsets.append(pos)
            self._end = pos + 4 + len(entry)
        self._log = open(self.dir / LOG_FILE, "ab")  # noqa: SIM115 - held open for appends

    # -- appending ------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.tree.size

    def append(self, kind: str, data: dict[str, Any], *, at_ms: int | None = None) -> Receipt:
        """Append one entry durably; its index and leaf hash."""
        return self.append_many([(kind, data)], at_ms=at_ms)[0]

    def append_many(self, items: Sequence[tuple[str, dict[str, Any]]], *, at_ms: int | None = None) -> list[Receipt]:
        """Append entries with one write and one fsync."""
        now = at_ms if at_ms is not None else time.time_ns() // 1_000_000
        with self._lock:
            start = self.size
            blobs = [_enc.encode({"seq": start + i, "at_ms": now, "kind": kind, "data": data})
                     for i, (kind, data) in enumerate(items)]
            frame = b"".join(_LEN.pack(len(b)) + b for b in blobs)
            self._log.write(frame)
            self._log.flush()
            os.fsync(self._log.fileno())
            out = []
            for b in blobs:
                h = leaf_hash(b)
                self.tree.push(h)
                self._offsets.append(self._end)
                self._end += 4 + len(b)
                out.append(Receipt(self.size - 1, h.hex()))
            return out

    def entry(self, index: int) -> bytes:
        """The stored bytes of entry ``index`` (what its leaf hash covers)."""
        if not 0 <= index < self.size:
            raise LedgerError(f"no entry {index}: the ledger holds {self.size}")
        with open(self.dir / LOG_FILE, "rb") as f:
            f.seek(self._offsets[index])
            (n,) = _LEN.unpack(f.read(4))
            return f.read(n)

    # -- tree -----------------------------------------------------------------------------
    def root(self, size: int | None = None) -> bytes:
        return self.tree.mth(0, self.size if size is None else self._check_size(size))

    def _check_size(self, size: int) -> int:
        if not 0 <= size <= self.size:
            raise LedgerError(f"tree size {size} is beyond the ledger's {self.size} entries")
        return size

    def head(self) -> TreeHead:
        """Sign the current tree head and keep it (every head is kept for consistency checks)."""
        with self._lock:
            size = self.size
            root = self.tree.mth(0, size).hex()
            ts = time.time_ns() // 1_000_000
            unsigned = TreeHead(size, ts, root, "")
            signed = TreeHead(size, ts, root, self._key.sign(unsigned.signed_bytes()).hex())
            with open(self.dir / HEADS_FILE, "ab") as f:
                f.write(msgspec.json.encode(signed.as_dict()) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            return signed

    def heads(self) -> list[TreeHead]:
        return read_heads(self.dir)

    def prove(self, index: int, size: int | None = None) -> list[str]:
        """Inclusion proof (RFC 9162 §2.1.3.1) of entry ``index`` in the tree of ``size``."""
        n = self.size if size is None else self._check_size(size)
        if not 0 <= index < n:
            raise LedgerError(f"entry {index} is not in a tree of size {n}")
        path: list[bytes] = []
        lo, hi, m = 0, n, index
        while hi - lo > 1:
            k = _split(hi - lo)
            if m < k:
                path.append(self.tree.mth(lo + k, hi))
                hi = lo + k
            else:
                path.append(self.tree.mth(lo, lo + k))
                lo, m = lo + k, m - k
        return [h.hex() for h in reversed(path)]

    def consistency(self, first: int, second: int | None = None) -> list[str]:
        """Consistency proof (RFC 9162 §2.1.4.1) between tree sizes ``first`` ≤ ``second``."""
        n = self.size if second is None else self._check_size(second)
        if not 0 < first <= n:
            raise LedgerError(f"no consistency proof from size {first} to {n}")
        out: list[bytes] = []

        def sub(m: int, lo: int, hi: int, b: bool) -> None:
            n_ = hi - lo
            if m == n_:
                if not b:
                    out.append(self.tree.mth(lo, hi))
                return
            k = _split(n_)
            if m <= k:
                sub(m, lo, lo + k, b)
                out.append(self.tree.mth(lo + k, hi))
            else:
                sub(m - k, lo + k, hi, False)
                out.append(self.tree.mth(lo, lo + k))

        sub(first, 0, n, True)
        return [h.hex() for h in out]

    # -- whole-ledger check ---------------------------------------------------------------
    def verify(self) -> list[str]:
        """Everything wrong with the stored ledger (empty when it verifies); see :func:`audit`."""
        return audit(self.dir, self.public_key_hex)

    def close(self) -> None:
        self._log.close()


def public_key_of(seed: bytes) -> str:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def read_heads(directory: Path) -> list[TreeHead]:
    path = Path(directory) / HEADS_FILE
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_bytes().splitlines()):
        try:
            out.append(TreeHead(**msgspec.json.decode(line)))
        except (msgspec.DecodeError, TypeError) as e:
            raise LedgerError(f"{path}: line {i + 1} is not a tree head ({e})") from e
    return out


def audit(directory: Path, public_key_hex: str) -> list[str]:
    """Recompute the stored ledger in ``directory`` and check every signed head against it.

    Returns the problems found (empty when everything verifies): a torn or reordered log,
    a head with a bad signature, a root the stored entries do not produce, entries no head
    commits to. Works on a ledger too damaged to open for appending.
    """
    directory = Path(directory)
    problems: list[str] = []
    fresh = MerkleTree()
    try:
        for i, (_, entry) in enumerate(read_entries(directory / LOG_FILE)):
            seq = msgspec.json.decode(entry).get("seq")
            if seq != i:
                problems.append(f"entry {i} carries sequence number {seq}")
            fresh.push(leaf_hash(entry))
        heads = read_heads(directory)
    except (LedgerError, msgspec.DecodeError, OSError, ValueError, AttributeError) as e:
        return [str(e)]
    if fresh.size and not heads:
        problems.append("entries exist but no signed tree head commits to them")
    pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
    for h in heads:
        try:
            pub.verify(bytes.fromhex(h.signature), h.signed_bytes())
        except (InvalidSignature, ValueError):
            problems.append(f"tree head of size {h.size} has an invalid signature")
            continue
        if h.size > fresh.size:
            problems.append(f"tree head of size {h.size} commits to entries that are missing")
        elif fresh.mth(0, h.size).hex() != h.root:
            problems.append(f"stored entries do not hash to the root signed at size {h.size}")
    if heads and heads[-1].size != fresh.size:
        problems.append(f"{fresh.size - heads[-1].size} entries after the last signed head")
    return problems


# -- verification by a partner: public key and proof only ------------------------------------
def _check_head(public_key_hex: str, head: TreeHead | dict[str, Any]) -> TreeHead:
    h = head if isinstance(head, TreeHead) else TreeHead(**head)
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex)).verify(bytes.fromhex(h.signature), h.signed_bytes())
    return h


def verify_inclusion(public_key_hex: str, head: TreeHead | dict[str, Any], entry: bytes, proof: Sequence[str],
                     index: int | None = None) -> bool:
    """Does ``entry`` sit in the tree ``head`` signs? (RFC 9162 §2.1.3.2)"""
    try:
        h = _check_head(public_key_hex, head)
        i = msgspec.json.decode(entry)["seq"] if index is None else index
        if not 0 <= i < h.size:
            return False
        fn, sn = i, h.size - 1
        r = leaf_hash(entry)
        for p in (bytes.fromhex(x) for x in proof):
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                r = node_hash(p, r)
                while not fn & 1 and fn:
                    fn >>= 1
                    sn >>= 1
            else:
                r = node_hash(r, p)
            fn >>= 1
            sn >>= 1
        return sn == 0 and r.hex() == h.root
    except (InvalidSignature, ValueError, KeyError, TypeError, msgspec.DecodeError):
        return False


def verify_consistency(public_key_hex: str, old: TreeHead | dict[str, Any], new: TreeHead | dict[str, Any],
                       proof: Sequence[str]) -> bool:
    """Is the tree ``old`` signs a prefix of the tree ``new`` signs? (RFC 9162 §2.1.4.2)"""
    try:
        a, b = _check_head(public_key_hex, old), _check_head(public_key_hex, new)
        m, n = a.size, b.size
        path = [bytes.fromhex(x) for x in proof]
        if m > n or m == 0:
            return False
        if m == n:
            return not path and a.root == b.root
        if m & (m - 1) == 0:
            path = [bytes.fromhex(a.root)] + path
        if not path:
            return False
        fn, sn = m - 1, n - 1
        while fn & 1:
            fn >>= 1
            sn >>= 1
        fr = sr = path[0]
        for c in path[1:]:
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                fr = node_hash(c, fr)
                sr = node_hash(c, sr)
                while not fn & 1 and fn:
                    fn >>= 1
                    sn >>= 1
            else:
                sr = node_hash(sr, c)
            fn >>= 1
            sn >>= 1
        return sn == 0 and fr.hex() == a.root and sr.hex() == b.root
    except (InvalidSignature, ValueError, TypeError):
        return False


__all__ = ["Ledger", "MerkleTree", "Receipt", "TreeHead", "audit", "public_key_of", "read_entries", "read_heads", "leaf_hash", "node_hash", "verify_consistency", "verify_inclusion"]
