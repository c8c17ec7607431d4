"""Context providers: what is happening around the customer when a decision is made.

Each provider adds one key to ``context`` (so rules test ``context.weather.rain``,
``context.location.nearest_store``, ``context.calendar.payday``, ``context.traffic.level``);
time of day and weekday are always there (:func:`plait.decide.engine.time_context`). Every
provider takes plain data, so the same class is its own in-memory test double; ``from_file``
loaders read the CSV/Parquet/JSON a retailer already has. A provider that fails is skipped
(counted in :attr:`Context.failures`) — a weather feed outage never stops a decision.

- :class:`Location`: stores as points with a radius or as polygons; from the event's
  latitude/longitude (``properties`` or ``context.location``) the nearest store and its
  distance, the geofences the customer is inside, and which were *entered* or *exited* since
  the customer's last position. Distances are haversine; polygons use ray casting (written here:
  a few lines, where shapely would be a heavy native dependency for point-in-polygon).
- :class:`Weather`: conditions per store (or region) and day from any source function, cached
  for ``ttl_s``; :meth:`Weather.from_file` reads a table of store_id/region, day, rain, temp_c.
- :class:`Calendar`: public holidays, paydays (days of month, or the last working day), and
  local events near a store.
- :class:`Traffic`: a level per store from any source function, cached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

EARTH_M = 6_371_000.0


def _position(event: Mapping[str, Any] | None, profile: Mapping[str, Any]) -> tuple[float, float] | None:
    if event:
        for src in (event.get("properties") or {}, event.get("location") or {}):
            lat, lon = src.get("latitude", src.get("lat")), src.get("longitude", src.get("lon"))
            if lat is not None and lon is not None:
                return float(lat), float(lon)
    return None


def _store_of(event: Mapping[str, Any] | None, profile: Mapping[str, Any], ctx: Mapping[str, Any]) -> str | None:
    """The store a decision is about: the event's, the nearest one, or the customer's usual one."""
    if event and event.get("store_id"):
        return str(event["store_id"])
    loc = ctx.get("location") or {}
    if loc.get("nearest_store"):
        return loc["nearest_store"]
    home = ((profile.get("traits") or {}).get("home_store") or {}).get("value") or \
        (profile.get("features") or {}).get("home_store")
    return str(home) if home else None


def _in_polygon(lat: float, lon: float, poly: list[tuple[float, float]]) -> bool:
    inside = False
    j = len(poly) - 1
    for i in range(len(poly)):
        (yi, xi), (yj, xj) = poly[i], poly[j]
        if (yi > lat) != (yj > lat) and lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


class Location:
    """Nearest store, geofences inside, entered and exited (see the module docstring)."""

    name = "location"

    def __init__(self, stores: Iterable[Mapping[str, Any]], *, default_radius_m: float = 150.0) -> None:
        self.stores = [dict(s) for s in stores]
        self.ids = [str(s["store_id"]) for s in self.stores]
        self.lat = np.radians([float(s["lat"]) for s in self.stores])
        self.lon = np.radians([float(s["lon"]) for s in self.stores])
        self.radius = np.array([float(s.get("radius_m") or default_radius_m) for s in self.stores])
        self.polygons = {str(s["store_id"]): [tuple(p) for p in s["polygon"]] for s in self.stores if s.get("polygon")}
        self.last_inside: dict[str, frozenset[str]] = {}

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> "Location":
        return cls(_table(path), **kw)

    def distances(self, lat: float, lon: float) -> np.ndarray:
        la, lo = math.radians(lat), math.radians(lon)
        a = np.sin((self.lat - la) / 2) ** 2 + math.cos(la) * np.cos(self.lat) * np.sin((self.lon - lo) / 2) ** 2
        return 2 * EARTH_M * np.arcsin(np.sqrt(a))

    def enrich(self, profile: Mapping[str, Any], event: Mapping[str, Any] | None, now: float,
               ctx: Mapping[str, Any]) -> dict[str, Any] | None:
        pos = _position(event, profile)
        if pos is None or not self.ids:
            return None
        d = self.distances(*pos)
        i = int(d.argmin())
        inside = frozenset(
            s for k, s in enumerate(self.ids)
            if (_in_polygon(pos[0], pos[1], self.polygons[s]) if s in self.polygons else d[k] <= self.radius[k]))
        pid = profile.get("profile_id")
        before = self.last_inside.get(pid, frozenset()) if pid else frozenset()
        if pid:
            self.last_inside[pid] = inside
        return {"latitude": pos[0], "longitude": pos[1], "nearest_store": self.ids[i], "distance_m": float(d[i]),
                "inside": sorted(inside), "entered": sorted(inside - before), "exited": sorted(before - inside)}


class _Cached:
    def __init__(self, source: Callable[..., Any], ttl_s: float) -> None:
        self.source, self.ttl_s = source, ttl_s
        self.cache: dict[Any, tuple[float, Any]] = {}

    def get(self, *key: Any) -> Any:
        hit = self.cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        value = self.source(*key)
        self.cache[key] = (now + self.ttl_s, value)
        return value


class Weather:
    """Weather at the decision's store on the decision's day; ``source(store_id, day)`` returns
    a dict such as ``{"rain": True, "temp_c": 11.5}`` or None."""

    name = "weather"

    def __init__(self, source: Callable[[str, date], Mapping[str, Any] | None], *, ttl_s: float = 900) -> None:
        self.cached = _Cached(source, ttl_s)

    @classmethod
    def from_file(cls, path: str | Path, *, stores: str | Path | None = None, **kw: Any) -> "Weather":
        """A table of ``store_id`` (or ``region`` with a stores table mapping store_id → region),
        ``day``, and conditions (``rain``, ``temp_c``, …)."""
        rows = _table(path)
        region_of = {str(s["store_id"]): s["region"] for s in _table(stores)} if stores else {}
        by_key = {}
        for r in rows:
            key = str(r["store_id"]) if "store_id" in r else r["region"]
            by_key[(key, str(r["day"])[:10])] = {k: v for k, v in r.items() if k not in ("store_id", "region", "day")}

        def source(store: str, day: date) -> Mapping[str, Any] | None:
            return by_key.get((region_of.get(store, store), day.isoformat()))

        return cls(source, **kw)

    def enrich(self, profile: Mapping[str, Any], event: Mapping[str, Any] | None, now: float,
               ctx: Mapping[str, Any]) -> dict[str, Any] | None:
        store = _store_of(event, profile, ctx)
        if store is None:
            return None
        return self.cached.get(store, datetime.fromtimestamp(now, timezone.utc).date())


class Calendar:
    """Holidays (date → name), paydays (days of the month, or ``"last_working_day"``) and local
    events (``{"store_id", "day", "name"}``)."""

    name = "calendar"

    def __init__(self, holidays: Mapping[str, str] | None = None, paydays: Iterable[int | str] = ("last_working_day",),
                 events: Iterable[Mapping[str, Any]] = ()) -> None:
        self.holidays = {str(k)[:10]: v for k, v in (holidays or {}).items()}
        self.paydays = list(paydays)
        self.events: dict[tuple[str, str], str] = {(str(e["store_id"]), str(e["day"])[:10]): str(e.get("name", "event"))
                                                   for e in events}
        self._cache: dict[date, tuple[int | None]] = {}

    def _days_to_payday(self, d: date) -> int | None:
        hit = self._cache.get(d)
        if hit is None:
            hit = self._cache[d] = (next((k for k in range(0, 32) if self._is_payday(d + timedelta(days=k))), None),)
        return hit[0]

    def _is_payday(self, d: date) -> bool:
        for p in self.paydays:
            if p == "last_working_day":
                last = (d.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
                while last.weekday() >= 5 or last.isoformat() in self.holidays:
                    last -= timedelta(days=1)
                if d == last:
                    return True
            elif isinstance(p, int) and d.day == p:
                return True
        return False

    def enrich(self, profile: Mapping[str, Any], event: Mapping[str, Any] | None, now: float,
               ctx: Mapping[str, Any]) -> dict[str, Any]:
        d = datetime.fromtimestamp(now, timezone.utc).date()
        days = self._days_to_payday(d)
        store = _store_of(event, profile, ctx)
        iso = d.isoformat()
        return {"holiday": self.holidays.get(iso), "payday": days == 0, "days_to_payday": days,
                "local_event": self.events.get((store, iso)) if store else None}


class Traffic:
    """Footfall or road traffic near the store: ``source(store_id)`` → ``"low"|"normal"|"high"``
    (or a number), cached for ``ttl_s``."""

    name = "traffic"

    def __init__(self, source: Callable[[str], Any], *, ttl_s: float = 300) -> None:
        self.cached = _Cached(source, ttl_s)

    def enrich(self, profile: Mapping[str, Any], event: Mapping[str, Any] | None, now: float,
               ctx: Mapping[str, Any]) -> dict[str, Any] | None:
        store = _store_of(event, profile, ctx)
        return None if store is None else {"level": self.cached.get(store), "store_id": store}


class Context:
    """The providers a decider consults, in order (location first: others use its store)."""

    def __init__(self, providers: Iterable[Any]) -> None:
        self.providers = list(providers)
        self.failures: dict[str, int] = {}

    def enrich(self, profile: Mapping[str, Any], event: Mapping[str, Any] | None, now: float) -> dict[str, Any]:
        ctx: dict[str, Any] = {}
        for p in self.providers:
            try:
                v = p.enrich(profile, event, now, ctx)
            except Exception:  # noqa: BLE001 - an outside feed failing never stops a decision
                self.failures[p.name] = self.failures.get(p.name, 0) + 1
                continue
            if v is not None:
                ctx[p.name] = v
        return ctx


def from_settings(base: Path, settings: Any) -> Context | None:
    """The providers a workspace's ``decide.context`` settings name (None when it names none)."""
    import json

    s = settings
    providers: list[Any] = []
    stores = base / s.stores if s.stores else None
    if stores is not None:
        providers.append(Location.from_file(stores, default_radius_m=s.geofence_radius_m))
    if s.weather:
        has_region = stores is not None and "region" in (_table(stores)[:1] or [{}])[0]
        providers.append(Weather.from_file(base / s.weather, stores=stores if has_region else None, ttl_s=s.weather_ttl_s))
    if s.calendar:
        c = json.loads((base / s.calendar).read_text())
        providers.append(Calendar(c.get("holidays"), c.get("paydays", ["last_working_day"]), c.get("events", ())))
    return Context(providers) if providers else None


def _table(path: str | Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    p = Path(path)
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()
    if p.suffix == ".json":
        import json

        return list(json.loads(p.read_text()))
    import csv

    with p.open(newline="") as fh:
        return [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def _num(v: str) -> Any:
    if v in ("true", "True"):
        return True
    if v in ("false", "False"):
        return False
    try:
        return float(v) if any(c in v for c in ".eE") else int(v)
    except ValueError:
        return v


__all__ = ["Calendar", "Context", "Location", "Traffic", "Weather", "from_settings"]
