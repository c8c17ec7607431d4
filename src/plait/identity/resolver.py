"""Batch identity resolution: the log in, a new version of the identity view out.

Steps (each inspectable in the tables it writes):

1. **extract** — the engine groups events by the identifiers they carry (most events
   repeat a handful of id combinations); events with personal data are opened one by one
   through the vault for their email/phone identifiers, their person record and traits;
2. **guard** — super-nodes (values seen with too many distinct values of a limited type)
   are found and quarantined;
3. **stitch** — the guarded union-find joins identifiers event by event in time order;
4. **match** — person records of different customers are compared probabilistically
   (:mod:`plait.identity.matching`) and linked above the threshold, through the same guards;
5. **write** — ``identity_map``, ``identity_links``, ``identity_conflicts`` and
   ``trait_observations`` for a new version; older versions beyond ``keep_versions`` go.

The log is only read. Splits recorded in ``identity_splits`` are honoured on every run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import pyarrow as pa

from plait.identity import tables
from plait.identity.graph import Stitcher, SuperNodes
from plait.identity.identifiers import Registry
from plait.identity.matching import RECORD_FIELDS, Matcher, MatchModel, default_comparisons
from plait.identity.names import canonical_first, clean_date, clean_postcode, clean_text

if TYPE_CHECKING:
    from plait.workspace import Workspace

_dec = msgspec.json.Decoder()
_enc = msgspec.json.Encoder()

# Events that may carry traits or personal data are read one by one; the rest in groups.
_PLAIN = "pii IS NULL AND traits IS NULL AND (context IS NULL OR NOT contains(context, '\"traits\"'))"
PERSON_TRAITS = ("firstName", "lastName", "name", "address", "birthday", "email", "phone")


@dataclass
class ResolveReport:
    version: int
    events: int
    identifiers: int
    profiles: int
    event_links: int
    match_links: int
    conflicts: int
    supernodes: int
    records: int
    candidate_pairs: int
    seconds: float
    stages: dict[str, float]
    inputs: str = ""   # digest of what it was derived from (:func:`inputs`)

    def summary(self) -> str:
        return (f"identity v{self.version}: {self.identifiers:,} identifiers from {self.events:,} events became "
                f"{self.profiles:,} customers ({self.event_links:,} links from shared identifiers, "
                f"{self.match_links:,} probabilistic matches, {self.conflicts:,} merges refused by guards, "
                f"{self.supernodes:,} super-nodes quarantined) in {self.seconds:.1f} s")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Observation:
    """One event's identifiers (in priority order), time and personal data."""

    at: int
    message_id: str
    keys: list[str]
    subject: str | None = None
    source: str | None = None
    traits: list[tuple[str, Any, str]] | None = None   # (trait, value, confidence)


def observations(ws: "Workspace", registry: Registry) -> Iterator[Observation]:
    """Every event's identifiers, grouped where events repeat the same ones."""
    b = ws.backend
    grouped = (
        "SELECT user_id, anonymous_id, json_extract(context, '$.externalIds') AS ext, "
        "json_extract_string(context, '$.device.id') AS dev, epoch_us(min(event_time)) AS t, "
        "arg_min(message_id, (event_time, message_id)) AS mid FROM events WHERE " + _PLAIN + " GROUP BY ALL"
    )
    for batch in b.stream(grouped):
        cols = [batch.column(c).to_pylist() for c in ("user_id", "anonymous_id", "ext", "dev", "t", "mid")]
        for uid, anon, ext, dev, t, mid in zip(*cols):
            ctx = None
            if ext is not None or dev is not None:
                ctx = {"externalIds": _dec.decode(ext) if ext else None, "device": {"id": dev} if dev else None}
            yield Observation(t, mid, registry.extract(uid, anon, ctx, ()),
                              f"user_id:{uid}" if uid is not None else f"anonymous_id:{anon}")
    detailed = ("SELECT message_id, subject, user_id, anonymous_id, type, source, context, traits, pii, "
                "epoch_us(event_time) AS t FROM events WHERE NOT (" + _PLAIN + ")")
    vault = ws.vault
    for batch in b.stream(detailed, batch_size=20_000):
        rows = batch.to_pylist()
        vault.preload(r["subject"] for r in rows if r["pii"])
        for row in rows:
            ctx = _dec.decode(row["context"]) if row["context"] else {}
            traits = _dec.decode(row["traits"]) if row["traits"] else {}
            ctraits = ctx.get("traits") if isinstance(ctx.get("traits"), dict) else {}
            opened = vault.open(row["subject"], row["message_id"], row["pii"]) if row["pii"] else None
            for path, value in (opened or {}).items():
                if path.startswith("traits."):
                    traits[path[7:]] = value
                elif path.startswith("context.traits."):
                    ctraits = {**ctraits, path[15:]: value}
            # An identify call's traits are what the customer declared; traits riding along
            # on other events were observed by the system (an agent, a till).
            conf = "declared" if row["type"] == "identify" else "observed"
            pairs = [(k, v, conf) for k, v in traits.items()] + [(k, v, "observed") for k, v in ctraits.items()]
            keys = registry.extract(row["user_id"], row["anonymous_id"], ctx, ((k, v) for k, v, _ in pairs))
            yield Observation(row["t"], row["message_id"], keys, row["subject"], row["source"], pairs)


def person_record(traits: list[tuple[str, Any, str]], registry: Registry, extra: list[str]) -> dict[str, Any] | None:
    """The comparable person fields of one event's traits, or ``None`` if it has none."""
    t = {k: v for k, v, _ in traits}
    if not any(k in t for k in PERSON_TRAITS) and not any(k in t for k in extra):
        return None
    first, last = t.get("firstName"), t.get("lastName")
    if (first is None or last is None) and isinstance(t.get("name"), str):
        parts = t["name"].split()
        if len(parts) >= 2:
            first, last = first or parts[0], last or parts[-1]
    addr = t.get("address") if isinstance(t.get("address"), dict) else {}
    rec: dict[str, Any] = {
        "first": clean_text(first), "first_canon": canonical_first(first), "last": clean_text(last),
        "street": clean_text(addr.get("street")), "postcode": clean_postcode(addr.get("postalCode") or t.get("postalCode")),
        "city": clean_text(addr.get("city")),
        "region": "/".join(x for x in (clean_text(addr.get("state")), clean_text(addr.get("country"))) if x) or None,
        "birthday": clean_date(t.get("birthday")),
        "email": None, "email_local": None, "email_domain": None, "email_letters": None, "email_digits": None,
        "phone": None,
    }
    if t.get("email") not in (None, ""):
        _, e, ok = registry.normalise("email", t["email"])
        if ok and not registry.blocked("email", e):
            rec["email"] = e
            rec["email_local"], rec["email_domain"] = e.split("@", 1)
            rec["email_letters"] = "".join(c for c in rec["email_local"] if c.isalpha())
            rec["email_digits"] = "".join(c for c in rec["email_local"] if c.isdigit())
    if t.get("phone") not in (None, ""):
        _, p, ok = registry.normalise("phone", t["phone"])
        if ok and not registry.blocked("phone", p):
            rec["phone"] = p
    for x in extra:
        rec[f"x_{x}"] = clean_text(t.get(x))
    if sum(rec[k] is not None for k in ("first", "last", "street", "postcode", "city", "birthday", "email", "phone")) < 2:
        return None
    return rec


def inputs(ws: "Workspace") -> str:
    """A digest of everything a version is derived from: the log (append-only and idempotent,
    so its row count says which events it holds), the recorded splits, the identity settings
    and how many personal-field keys exist (destroyed keys hide traits from matching). Two
    resolves over equal inputs give the same customers, so a version whose digest equals the
    present one is current. Taken before the log is read: events arriving during a resolve
    make the next digest differ, never the reverse."""
    b = ws.backend
    tables.create(b)
    h = hashlib.sha256()
    h.update(b"events=%d;keys=%d;" % (int(b.scalar("SELECT count(*) FROM events")), ws.vault.count()))
    for split_id, side_a, side_b in tables.separations(b):
        h.update(msgspec.json.encode([split_id, side_a, side_b]))
    h.update(ws.settings.identity.model_dump_json().encode())
    return h.hexdigest()


def resolve(ws: "Workspace") -> ResolveReport:
    """Derive a new identity version from the whole log."""
    started = time.perf_counter()
    digest = inputs(ws)
    settings = ws.settings.identity
    registry = ws.identity.registry
    b = ws.backend
    stages: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        stages[name] = round(now - mark, 3)
        mark = now

    obs = sorted((o for o in observations(ws, registry) if o.keys), key=lambda o: (o.at, o.message_id))
    lap("extract")
    n_events = int(b.scalar("SELECT count(*) FROM events"))
    # Guard: values that would glue together more people than plausible.
    hubs = SuperNodes(registry, settings.supernode_threshold)
    for o in obs:
        hubs.see(o.keys)
    stitcher = Stitcher(registry, separations=tables.separations(b), quarantined=hubs.found)
    for o in obs:
        stitcher.observe(o.keys, o.at, o.message_id)
    event_links = len(stitcher.merges)
    lap("stitch")
    # Probabilistic matching between customers that share no identifier.
    extra = list(settings.match.extra_traits)
    recs: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    trait_rows: list[tuple] = []
    for o in obs:
        if not o.traits:
            continue
        anchor = next((k for k in o.keys if k not in hubs.found), None)
        if anchor is None:
            continue
        for name, value, conf in o.traits:
            trait_rows.append((anchor, name, _enc.encode(value).decode(), o.source, o.at, conf, o.message_id))
        rec = person_record(o.traits, registry, extra)
        if rec is None:
            continue
        sig = (anchor, *rec.values())
        if sig in seen:
            continue
        seen.add(sig)
        rec.update(anchor=anchor, at=o.at)
        recs.append(rec)
    lap("records")
    pairs = 0
    match_links = 0
    model = None
    if settings.match.enabled and len(recs) >= 2:
        for r in recs:
            r["comp"] = stitcher.root_of(r["anchor"])
        cols = list(RECORD_FIELDS) + [f"x_{x}" for x in extra]
        table = pa.table({"rid": np.arange(len(recs), dtype=np.int64),
                          "comp": np.array([r["comp"] for r in recs], dtype=np.int64),
                          "anchor": pa.array([r["anchor"] for r in recs], pa.string()),
                          **{c: pa.array([r[c] for r in recs], pa.string()) for c in cols}})
        ms = settings.match
        model = MatchModel(default_comparisons(extra), threshold=ms.threshold, min_fields=ms.min_fields,
                           max_iterations=ms.max_iterations)
        links = Matcher(b, model).run(table)
        pairs = model.pairs_
        labels = [c.labels() for c in model.comparisons]
        weights = model.weights()
        for row in links.to_pylist():
            a, z = recs[row["rid_l"]], recs[row["rid_r"]]
            evidence: dict[str, Any] = {}
            top, top_w = None, -1e9
            for i, c in enumerate(model.comparisons):
                g = row[f"g{i}"]
                if g < 0:
                    continue
                evidence[c.name] = labels[i][g]
                if weights[i][g] > top_w:
                    top, top_w = c.name, float(weights[i][g])
            evidence["match_weight"] = round(row["weight"], 3)
            if stitcher.link(a["anchor"], z["anchor"], max(a["at"], z["at"]),
                             reason=f"probabilistic match ({top}: {evidence.get(top)})",
                             probability=float(row["probability"]), evidence=evidence):
                match_links += 1
    lap("match")
    # Each event's subject (the id its personal fields are sealed under, and how the rest of
    # Plait finds an event's customer) belongs to the customer of the event's first identifier.
    subjects: dict[str, int] = {}
    for o in obs:
        if o.subject is not None and o.subject not in subjects:
            subjects[o.subject] = stitcher.index[o.keys[0]]
    version = tables.write(b, stitcher, hubs.found, trait_rows, settings.keep_versions, subjects,
                           model=None if model is None else {"lambda": model.lambda_, "prior": model.prior_, "iterations": model.iterations_,
                                                             "pairs": model.pairs_, "levels": model.explain()},
                           events=n_events)
    report = ResolveReport(
        version=version, events=n_events, identifiers=len(stitcher.keys),
        profiles=len({stitcher.find(i) for i in range(len(stitcher.keys))}), event_links=event_links,
        match_links=match_links, conflicts=len(stitcher.conflicts), supernodes=len(hubs.found), records=len(recs),
        candidate_pairs=pairs, seconds=time.perf_counter() - started, stages=stages, inputs=digest)
    lap("write")
    tables.finish(b, version, report.as_dict())
    return report


__all__ = ["Observation", "ResolveReport", "inputs", "observations", "person_record", "resolve"]
