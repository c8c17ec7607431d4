"""Deterministic stitching: a guarded union-find over identifiers.

Each event's identifiers are joined into one customer unless a guard says no:

- **limits**: a customer holds at most ``limit`` values of a type (one user id,
  five emails ...). When an event would break a limit, its identifiers are joined
  in priority order and the ones that cannot join are left out of the merge (the
  event still belongs to the customer of its highest-priority identifier) — so a
  family computer's cookie seen with two logins never glues the two people together;
- **separations**: a split recorded by a person (``plait profiles split``) keeps its
  two sides apart in every later derivation;
- **quarantine**: values found to be super-nodes (seen with more distinct values of
  a limited type than ``supernode_threshold``) and never allowed to link.

The same :class:`Stitcher` serves the batch resolution (events in time order) and
the real-time path (one event as it is collected), so the two agree by construction.
Written by hand because the guards need the merge order; a plain connected-components
routine (scipy, the engine) cannot refuse an edge depending on what was merged before.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from plait.identity.identifiers import Registry


@lru_cache(maxsize=1 << 16)
def profile_id(canonical_key: str) -> str:
    """The stable id of the customer whose first identifier is ``canonical_key`` (the recently
    active are remembered: real-time assignment asks on every event, and the hash cost ~1.7 µs
    an event in the writer; bounded, so a large customer base costs no more memory)."""
    return "prof_" + hashlib.md5(canonical_key.encode()).hexdigest()[:16]


@dataclass(slots=True)
class Merge:
    """One link that joined two customers: why, when and on what evidence."""

    a: str
    b: str
    at: int                       # event time, microseconds since the epoch
    message_id: str | None
    kind: str                     # "event" (shared identifiers) or "match" (probabilistic)
    reason: str
    probability: float | None = None
    evidence: dict[str, Any] | None = None


@dataclass(slots=True)
class Conflict:
    """A link refused by a guard, kept so it can be explained."""

    a: str
    b: str
    at: int
    message_id: str | None
    reason: str


@dataclass
class SuperNodes:
    """Finds shared values: identifiers seen with more people than one customer could be.

    A value is *shared* when it appears with more distinct values of a higher-priority
    limited type than a customer may hold (a family computer's cookie with two logins, a
    store's phone number with four loyalty cards), and a *super-node* when it appears
    with more than ``threshold`` distinct values of any limited type. Either way it stops
    linking and is reported; the higher-priority values keep their own customers.
    """

    registry: Registry
    threshold: int
    partners: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    found: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._limits: dict[str, int | None] = {name: t.limit for name, t in self.registry.types.items()}

    def see(self, keys: Sequence[str]) -> list[str]:
        """Count one event's identifiers; the keys that just became shared or super-nodes."""
        new: list[str] = []
        if len(keys) < 2:
            return new
        limits = self._limits
        partners = self.partners
        found = self.found
        for k in keys:
            if k in found:
                continue
            for o in keys:
                if o is k:
                    continue
                t = o[:o.index(":")]
                limit = limits.get(t, 0)
                if limit is None or limit == 0 and self.registry.limit(t) is None:
                    continue        # unlimited partners (cookies) glue nothing by themselves
                if limit == 0:
                    limit = limits[t] = self.registry.limit(t)
                s = partners.get((k, t))
                if s is None:
                    partners[(k, t)] = {o}
                    continue
                if o in s:
                    continue
                s.add(o)
                n = len(s)
                if n <= limit and n <= self.threshold:
                    continue
                reg = self.registry
                if n > limit and reg.type(t).priority < reg.priority(k):
                    found[k] = f"shared: seen with {n} distinct {t} values (a customer holds at most {limit})"
                elif n > self.threshold:
                    found[k] = f"super-node: seen with {n} distinct {t} values (threshold {self.threshold})"
                else:
                    continue
                new.append(k)
                break
        return new


_SHARED = "shared identifiers in one event"


class Stitcher:
    """Guarded, incremental union-find over identifier keys."""

    def __init__(self, registry: Registry, *, separations: Iterable[tuple[int, Sequence[str], Sequence[str]]] = (),
                 quarantined: Iterable[str] = ()) -> None:
        self.registry = registry
        self.index: dict[str, int] = {}
        self.keys: list[str] = []
        self.parent: list[int] = []
        self.canon: list[int] = []                      # smallest member index, per root
        self.counts: list[dict[str, int] | None] = []   # limited-type counts, per root
        self.tags: list[frozenset | None] = []          # separation sides, per root
        self.members: list[list[int] | None] = []       # member indexes, per root
        self.first_seen: list[int] = []
        self.merges: list[Merge] = []
        self.conflicts: list[Conflict] = []
        self.quarantined: set[str] = set(quarantined)
        self._limits: dict[str, int | None] = {name: t.limit for name, t in registry.types.items()}
        self._sep: dict[str, set[tuple[int, int]]] = defaultdict(set)
        for sid, side_a, side_b in separations:
            for k in side_a:
                self._sep[k].add((sid, 0))
            for k in side_b:
                self._sep[k].add((sid, 1))

    # -- union-find -------------------------------------------------------------------------
    def _add(self, key: str, at: int) -> int:
        i = len(self.keys)
        self.index[key] = i
        self.keys.append(key)
        self.parent.append(i)
        self.canon.append(i)
        t = key[:key.index(":")]
        limit = self._limits.get(t, 0)
        if limit == 0:
            limit = self._limits[t] = self.registry.limit(t)
        self.counts.append({t: 1} if limit is not None else None)
        tags = self._sep.get(key)
        self.tags.append(frozenset(tags) if tags else None)
        self.first_seen.append(at)
        self.members.append([i])
        return i

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def _why_not(self, ra: int, rb: int) -> str | None:
        ca, cb = self.counts[ra], self.counts[rb]
        if ca and cb:
            for t, n in cb.items():
                m = ca.get(t, 0)
                if m and m + n > self._limits[t]:  # type: ignore[operator]
                    return f"limit: at most {self._limits[t]} {t} per customer"
        ta, tb = self.tags[ra], self.tags[rb]
        if ta and tb:
            for sid, side in ta:
                if (sid, 1 - side) in tb:
                    return f"split #{sid}"
        return None

    def _union(self, ra: int, rb: int) -> int:
        # Keep the older root on top so canonical members, and profile ids, stay put.
        if self.canon[rb] < self.canon[ra]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        ca, cb = self.counts[ra], self.counts[rb]
        if cb:
            if ca is None:
                self.counts[ra] = dict(cb)
            else:
                for t, n in cb.items():
                    ca[t] = ca.get(t, 0) + n
        tb = self.tags[rb]
        if tb:
            ta = self.tags[ra]
            self.tags[ra] = tb if ta is None else ta | tb
        ma, mb = self.members[ra], self.members[rb]
        if len(ma) < len(mb):  # type: ignore[arg-type]
            mb.extend(ma)  # type: ignore[union-attr, arg-type]
            self.members[ra] = mb
        else:
            ma.extend(mb)  # type: ignore[union-attr, arg-type]
        self.counts[rb] = self.tags[rb] = self.members[rb] = None
        return ra

    # -- linking ----------------------------------------------------------------------------
    def observe(self, keys: Sequence[str], at: int, message_id: str | None = None) -> int | None:
        """Join one event's identifiers (``keys`` in priority order); the event's root."""
        index = self.index
        if self.quarantined:
            # Shared values stay known (as customers of their own) but never link.
            q = [k for k in keys if k in self.quarantined]
            if q:
                for k in q:
                    if k not in index:
                        self._add(k, at)
                keys = [k for k in keys if k not in self.quarantined]
                if not keys:
                    return self.find(index[q[0]])
        if not keys:                     # nothing to know them by (junk values such as "0" are dropped)
            return None
        anchor = keys[0]
        ia = index.get(anchor)
        if ia is None:
            ia = self._add(anchor, at)
        base = self.find(ia)
        for k in keys[1:]:
            i = index.get(k)
            if i is None:
                i = self._add(k, at)
            r = self.find(i)
            if r == base:
                continue
            why = self._why_not(base, r)
            if why is None:
                base = self._union(base, r)
                self.merges.append(Merge(anchor, k, at, message_id, "event", _SHARED))
            else:
                self.conflicts.append(Conflict(anchor, k, at, message_id, why))
        return base

    def link(self, a: str, b: str, at: int, *, reason: str, probability: float | None = None,
             evidence: dict[str, Any] | None = None, message_id: str | None = None) -> bool:
        """Join the customers of two known identifiers on outside evidence (a probabilistic match)."""
        ra, rb = self.find(self.index[a]), self.find(self.index[b])
        if ra == rb:
            return False
        why = self._why_not(ra, rb)
        if why is not None:
            self.conflicts.append(Conflict(a, b, at, message_id, why))
            return False
        self._union(ra, rb)
        self.merges.append(Merge(a, b, at, message_id, "match", reason, probability, evidence))
        return True

    def root_of(self, key: str) -> int | None:
        i = self.index.get(key)
        return None if i is None else self.find(i)

    def profile_of(self, key: str) -> str | None:
        r = self.root_of(key)
        return None if r is None else profile_id(self.keys[self.canon[r]])

    def members_of(self, key: str) -> list[str]:
        """Every identifier of the customer holding ``key``, in the order they were first seen."""
        r = self.root_of(key)
        return [] if r is None else [self.keys[i] for i in sorted(self.members[r])]  # type: ignore[arg-type]

    def profile_of_root(self, root: int) -> str:
        return profile_id(self.keys[self.canon[root]])

    def assignments(self) -> tuple[list[str], list[str]]:
        """Every identifier key with its profile id."""
        names: dict[int, str] = {}
        out = []
        for i in range(len(self.keys)):
            r = self.find(i)
            p = names.get(r)
            if p is None:
                p = names[r] = profile_id(self.keys[self.canon[r]])
            out.append(p)
        return self.keys, out


__all__ = ["Conflict", "Merge", "Stitcher", "SuperNodes", "profile_id"]
