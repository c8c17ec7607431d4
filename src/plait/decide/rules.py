"""Rules and offers as data: YAML or JSON files a CRM team edits, validated, versioned, reloaded.

A **rule** says when to act and with what (Apache Unomi's shape: metadata, condition, actions,
priority)::

    rules:
      - id: store-welcome
        name: Welcome coupon when a customer walks into a store
        priority: 80
        events: [Store Visit, Geofence Entered]     # fires on these events (empty: on any request)
        placements: [push, app_screen]              # where its actions may show (empty: anywhere)
        condition: {all: [{field: features.orders, op: ">=", value: 1},
                          {field: context.hour, op: between, value: [8, 20]}]}
        actions: [{offer: dairy-10}, {offer: bakery-5}]
        trigger: {destination: crm-webhook}         # optional: deliver the decision when it fires

An **offer** is what can be given::

    offers:
      - id: dairy-10
        name: 10% off dairy
        channels: [push, app, email, store]
        eligibility: {field: traits.favourite_category.value, ...}   # optional condition
        value: 4.5                   # expected margin to the retailer when accepted
        propensity: {model: "category:Dairy", default: 0.05}        # scores.<model>, else default
        budget: 1000                 # acceptances (redemptions) it may still pay for
        valid_from: 2025-06-01
        valid_to: 2025-06-30
        coupon_prefix: DAIRY10-      # or coupon_codes: [...]
        lever: 1.0                   # business weight in arbitration
        rollout: 1.0                 # share of customers it may be shown to (staged rollout)
        holdout: 0.1                 # random share held out to measure incrementality
        context_weights: [{when: {field: context.weather.rain, op: "==", value: true}, weight: 1.3}]

Conditions use :mod:`plait.conditions` over the customer's snapshot plus ``event.*``,
``context.*`` and ``placement``. Errors name the file, the rule and the field. A
:class:`RuleBook` holds the loaded set with a version (a hash of the files' content) and reloads
when the files change (:meth:`RuleBook.refresh`), keeping the last good set if an edit is broken.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from plait.conditions import Condition, parse
from plait.errors import ConfigError, RuleError

PLACEMENTS = {  # where an action shows → the channel it uses, and the consent it needs
    "web_banner": ("web", "personalisation"),
    "app_screen": ("app", "personalisation"),
    "push": ("push", "marketing"),
    "email": ("email", "marketing"),
    "sms": ("sms", "marketing"),
    "store_screen": ("store", "personalisation"),
    "agent_desktop": ("call_center", "personalisation"),
    "response": (None, "personalisation"),
}


class _Def(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContextWeight(_Def):
    when: dict[str, Any]
    weight: float = Field(gt=0)


class PropensitySource(_Def):
    model: str | None = None             # scores.<model> in the customer's snapshot
    default: float = Field(default=0.05, ge=0, le=1)


class Offer(_Def):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    name: str = ""
    channels: list[str] = Field(default_factory=list)        # empty: any channel
    eligibility: dict[str, Any] | None = None
    value: float = Field(default=1.0, ge=0)
    discount: float | None = Field(default=None, ge=0, le=1)   # share off the price (the fairness report reads it)
    propensity: PropensitySource = Field(default_factory=PropensitySource)
    budget: int | None = Field(default=None, ge=0)
    valid_from: date | None = None
    valid_to: date | None = None
    coupon_codes: list[str] = Field(default_factory=list)
    coupon_prefix: str | None = None
    lever: float = Field(default=1.0, ge=0)
    rollout: float = Field(default=1.0, ge=0, le=1)
    holdout: float = Field(default=0.0, ge=0, lt=1)
    max_per_customer: int | None = Field(default=None, ge=1)
    purpose: str | None = None           # consent purpose; the placement's by default
    service: bool = False                # a service message (order ready, apology): no marketing policies
    context_weights: list[ContextWeight] = Field(default_factory=list)


class Action(_Def):
    offer: str | None = None
    message: dict[str, Any] | None = None    # a non-offer action (template, text) passed through


class Trigger(_Def):
    destination: str = Field(min_length=1)       # a configured destination (webhook, stream …)


class Rule(_Def):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    name: str = ""
    description: str = ""
    priority: int = Field(default=50, ge=0, le=1000)
    enabled: bool = True
    events: list[str] = Field(default_factory=list)
    placements: list[str] = Field(default_factory=list)
    condition: dict[str, Any] | None = None
    actions: list[Action] = Field(min_length=1)
    trigger: Trigger | None = None       # deliver this rule's decision to a destination when it fires on an event

    @field_validator("placements")
    @classmethod
    def _known_placements(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in PLACEMENTS]
        if bad:
            raise ValueError(f"unknown placement(s) {', '.join(bad)}; use {', '.join(PLACEMENTS)}")
        return v


class Compiled:
    """A rule or offer with its conditions parsed once (and an offer's keys for stable groups)."""

    __slots__ = ("defn", "condition", "test", "weights", "max_weight", "holdout_key", "rollout_key", "bound", "model",
                 "bandit", "default", "origin", "service")

    def __init__(self, defn: Any, condition: Condition | None, weights: list[tuple[Condition, float]]) -> None:
        from plait.decide.policies import key_hash

        self.defn, self.condition = defn, condition
        # Compiled to Python functions once, and shared: the same condition anywhere in the rule
        # book is one (slot, function), so a decision evaluates it once (see Decider).
        self.test = _shared(condition) if condition is not None else None
        self.weights = [(_shared(c), w) for c, w in weights]
        self.max_weight = 1.0                # the most the context can multiply the score by
        for _, w in weights:
            self.max_weight *= max(w, 1.0)
        self.holdout_key = key_hash(defn.id, "holdout")
        self.rollout_key = key_hash(defn.id, "rollout")
        # An offer's constant parts of its score, read once per candidate on the decision path.
        src = getattr(defn, "propensity", None)
        self.bound = defn.value * self.max_weight * defn.lever if src is not None else 0.0
        self.model = src.model if src is not None and src.model and not src.model.startswith("bandit:") else None
        self.bandit = src.model[7:] if src is not None and src.model and src.model.startswith("bandit:") else None
        self.default = src.default if src is not None else 0.0
        self.origin = (f" from {src.model}" if self.bandit else f" from scores.{self.model}") if src is not None else ""
        self.service = bool(getattr(defn, "service", False))


# Distinct conditions compiled in this process, each with a slot number never given twice (a
# decision memoises by slot, so rule books loaded before and after a clear-out cannot collide).
# Cleared when large: hot reloads of edited rules would otherwise keep every old condition.
_SHARED: dict[str, tuple[int, Any]] = {}
_SLOTS = itertools.count()
_MAX_SHARED = 20_000


def _shared(c: Condition) -> tuple[int, Any]:
    key = repr(c)
    hit = _SHARED.get(key)
    if hit is None:
        if len(_SHARED) >= _MAX_SHARED:
            _SHARED.clear()
        hit = _SHARED[key] = (next(_SLOTS), c.compile())
    return hit


def _read(path: Path) -> Any:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise RuleError(f"not valid YAML{at}: {getattr(e, 'problem', e)}", source=str(path)) from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RuleError(f"not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}", source=str(path)) from e


def _validated(cls: type[_Def], item: Any, source: str, i: int) -> _Def:
    label = item.get("id") if isinstance(item, dict) and item.get("id") else f"#{i + 1}"
    try:
        return cls.model_validate(item)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise RuleError(err["msg"], source=source, rule=str(label), field=field,
                        hint="see the rule and offer format in plait.decide.rules") from e


def _condition(data: dict[str, Any] | None, source: str, rule: str, field: str) -> Condition | None:
    if data is None:
        return None
    try:
        return parse(data, where=field)
    except ConfigError as e:
        raise RuleError(str(e).split("\n")[0], source=source, rule=rule, field=field, hint=e.hint) from e


def compile_definitions(data: Any, source: str = "<rules>") -> tuple[dict[str, Compiled], dict[str, Compiled]]:
    """Validate ``{"rules": [...], "offers": [...]}`` and parse every condition."""
    if not isinstance(data, dict) or not set(data) <= {"rules", "offers"}:
        raise RuleError("expected a mapping with `rules` and/or `offers` lists", source=source)
    rules: dict[str, Compiled] = {}
    offers: dict[str, Compiled] = {}
    for key, cls, out in (("offers", Offer, offers), ("rules", Rule, rules)):
        items = data.get(key) or []
        if not isinstance(items, list):
            raise RuleError(f"`{key}` must be a list", source=source)
        for i, item in enumerate(items):
            d = _validated(cls, item, source, i)
            if d.id in out:
                raise RuleError(f"{key[:-1]} id {d.id!r} is defined twice", source=source, rule=d.id)
            if isinstance(d, Offer):
                if d.valid_from and d.valid_to and d.valid_to < d.valid_from:
                    raise RuleError("valid_to is before valid_from", source=source, rule=d.id, field="valid_to")
                cond = _condition(d.eligibility, source, d.id, "eligibility")
                weights = [(_condition(w.when, source, d.id, f"context_weights.{j}.when"), w.weight)
                           for j, w in enumerate(d.context_weights)]
                out[d.id] = Compiled(d, cond, weights)  # type: ignore[arg-type]
            else:
                out[d.id] = Compiled(d, _condition(d.condition, source, d.id, "condition"), [])
    return rules, offers


class RuleBook:
    """The rules and offers of one or more files (or a dict), with a content version."""

    def __init__(self, paths: list[Path] | None = None, *, data: dict[str, Any] | None = None) -> None:
        self.paths = [Path(p) for p in (paths or [])]
        self._data = data
        self._stamp: tuple = ()
        self.rules: dict[str, Compiled] = {}
        self.offers: dict[str, Compiled] = {}
        self.version = ""
        self.loaded_at = 0.0
        self.last_error: RuleError | None = None
        self._load()

    @classmethod
    def from_path(cls, path: str | Path) -> "RuleBook":
        """A file, or every ``*.yaml``/``*.yml``/``*.json`` file of a directory (sorted)."""
        p = Path(path)
        if not p.exists():
            raise RuleError(f"{p} does not exist", hint="create a rules file (YAML or JSON)")
        files = sorted(x for x in p.iterdir() if x.suffix in (".yaml", ".yml", ".json")) if p.is_dir() else [p]
        return cls(files)

    def _files_stamp(self) -> tuple:
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in self.paths if p.exists())

    def _load(self) -> None:
        rules: dict[str, Compiled] = {}
        offers: dict[str, Compiled] = {}
        digest = hashlib.sha256()
        sources = [("<dict>", self._data)] if self._data is not None else [(str(p), _read(p)) for p in self.paths]
        for source, data in sources:
            r, o = compile_definitions(data, source)
            for k in r.keys() & rules.keys():
                raise RuleError(f"rule id {k!r} is defined in more than one file", source=source, rule=k)
            for k in o.keys() & offers.keys():
                raise RuleError(f"offer id {k!r} is defined in more than one file", source=source, rule=k)
            rules.update(r)
            offers.update(o)
            digest.update(json.dumps(data, sort_keys=True, default=str).encode())
        for rid, c in rules.items():
            for a in c.defn.actions:
                if a.offer is not None and a.offer not in offers:
                    raise RuleError(f"action names offer {a.offer!r}, which no file defines", rule=rid, field="actions",
                                    hint=f"define it under `offers` (known: {', '.join(sorted(offers)) or 'none'})")
        self.rules, self.offers = rules, offers
        self.version = digest.hexdigest()[:12]
        self.loaded_at = datetime.now(timezone.utc).timestamp()
        self._stamp = self._files_stamp()

    def refresh(self) -> bool:
        """Reload if a file changed; True when a new version is in force. A broken edit keeps the
        last good version in force and is kept in ``last_error``."""
        if not self.paths or self._files_stamp() == self._stamp:
            return False
        old = self.version
        try:
            self._load()
            self.last_error = None
        except RuleError as e:
            self.last_error = e
            self._stamp = self._files_stamp()
            return False
        return self.version != old


__all__ = ["PLACEMENTS", "Action", "Compiled", "ContextWeight", "Offer", "PropensitySource", "Rule", "RuleBook",
           "Trigger", "compile_definitions"]
