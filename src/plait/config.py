"""Typed settings, read once at the edge and passed down.

A workspace keeps its settings in ``settings.json``; unknown keys are refused
(``extra="forbid"``) so a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plait.errors import ConfigError

SETTINGS_FILE = "settings.json"

DEFAULT_PII_FIELDS = (
    "email",
    "phone",
    "firstName",
    "lastName",
    "first_name",
    "last_name",
    "name",
    "username",
    "address",
    "birthday",
    "ip",
    "caller_number",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineSettings(_Strict):
    """Which engine runs the SQL. DuckDB is embedded; Spark comes with its extra."""

    type: Literal["duckdb"] = "duckdb"
    path: str = "plait.duckdb"
    threads: int | None = Field(default=None, ge=1)
    memory_limit: str | None = None
    # DuckDB rewrites the table's open row group at every checkpoint; at its 16 MB default a
    # busy server checkpoints every few seconds and small appends cost 2–5× more CPU (measured
    # on decision records: 33–85 µs per row at 16 MB, 17 µs at 1 GB). A crash replays the WAL.
    checkpoint_threshold: str = "256MB"
    # A bulk append of at least this many rows is written as an immutable Parquet part file
    # beside the database, not compressed into it (2 M rows: 1.27 s against 1.9–2.2 s, half
    # the bytes); smaller ones, and the collector's, go into the table. 0: never.
    part_rows: int = Field(default=100_000, ge=0)


class CollectorSettings(_Strict):
    """Limits and behaviour of the HTTP collector (Segment's limits by default)."""

    max_request_bytes: int = Field(default=512 * 1024, ge=1024)
    max_event_bytes: int = Field(default=32 * 1024, ge=256)
    max_batch_events: int = Field(default=2500, ge=1)
    require_write_key: bool = True
    flush_interval_ms: float = Field(default=2.0, ge=0)
    max_flush_rows: int = Field(default=20_000, ge=1)
    # With front processes (server.fronts), each front acknowledges from its own journal and the
    # writer loads the log from them at most this far apart (plait.log.journal); false: every
    # 200 waits for DuckDB.
    journal: bool = True
    journal_load_ms: float = Field(default=200.0, ge=1, le=60_000)


class PiiSettings(_Strict):
    """Personal fields, kept apart from the rest of the event and encrypted per subject.

    A field listed here is removed from ``traits``, ``context.traits``, ``properties``
    and ``context`` wherever it appears at the top level of those objects and stored
    encrypted with the subject's key (see :mod:`plait.log.vault`).
    """

    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_PII_FIELDS))
    encrypt: bool = True


class IdentifierTypeSettings(_Strict):
    """One kind of identifier: how it is read, compared and limited.

    ``normalise`` names the rule applied to values (``email``, ``phone``, ``text``,
    ``lower``); ``limit`` is the most distinct values one profile may hold (a merge
    that would exceed it is refused and recorded); ``priority`` orders identifiers
    when an event's identifiers cannot all be joined (lower wins); ``blocked`` lists
    values (shell patterns, matched after normalisation) that never link anything.
    ``store_as`` files the values under another type (a caller number is a phone).
    """

    normalise: Literal["email", "phone", "text", "lower"] = "text"
    limit: int | None = Field(default=None, ge=1)
    priority: int = Field(default=50, ge=0)
    blocked: list[str] = Field(default_factory=list)
    store_as: str | None = None


def _default_identifier_types() -> dict[str, IdentifierTypeSettings]:
    t = IdentifierTypeSettings
    junk = ["null", "undefined", "none", "nil", "0", "-1", "unknown", "anonymous", "guest", "test", "n/a", ""]
    return {
        "user_id": t(limit=1, priority=0, blocked=junk),
        "loyalty_card": t(limit=3, priority=10, blocked=junk),
        "pos_customer_id": t(limit=3, priority=15, blocked=junk),
        "email": t(normalise="email", limit=5, priority=20, blocked=[
            "test@*", "*@example.com", "*@example.org", "*@test.com", "noreply@*", "no-reply@*", "none@*",
            "noemail@*", "nomail@*", "na@*", "null@*", "a@a.*", "x@x.*"]),
        "phone": t(normalise="phone", limit=5, priority=25, blocked=[
            "+1000*", "+0*", "*0000000", "*1111111", "*1234567", "*9999999"]),
        "caller_number": t(normalise="phone", store_as="phone", priority=25),
        "device_id": t(limit=20, priority=30, blocked=junk + ["kiosk*", "shared-*", "00000000-0000-0000-0000-000000000000"]),
        "anonymous_id": t(priority=40, blocked=junk + ["00000000-0000-0000-0000-000000000000"]),
    }


class MatchSettings(_Strict):
    """Probabilistic matching of records that share no identifier (Fellegi–Sunter, EM-trained).

    ``threshold`` is the match probability a pair needs to be linked; ``min_fields`` the
    number of compared fields both records must hold; ``extra_traits`` adds exact-or-fuzzy
    comparisons on further traits.
    """

    enabled: bool = True
    threshold: float = Field(default=0.85, gt=0, lt=1)
    min_fields: int = Field(default=2, ge=1)
    extra_traits: list[str] = Field(default_factory=list)
    max_iterations: int = Field(default=50, ge=1)


class IdentitySettings(_Strict):
    """How identifiers are read, stitched and matched into customers (see :mod:`plait.identity`).

    ``types`` may add user-defined identifier types (read from ``context.externalIds``
    entries with that ``type``). ``hash_values`` stores identifier values as salted
    HMAC-SHA256 instead of clear text. A value seen with more distinct values of a
    higher-priority type than a customer may hold (a family computer's cookie with two
    logins), or with more than ``supernode_threshold`` values of any type, is taken for a
    shared value and stops linking; it is reported (see :class:`plait.identity.graph.SuperNodes`).
    ``realtime`` has the server assign each collected event to its customer as it is appended.
    """

    types: dict[str, IdentifierTypeSettings] = Field(default_factory=_default_identifier_types)
    default_region: str = Field(default="US", min_length=2, max_length=2)
    hash_values: bool = False
    supernode_threshold: int = Field(default=200, ge=2)
    match: MatchSettings = Field(default_factory=MatchSettings)
    keep_versions: int = Field(default=5, ge=1)
    realtime: bool = True


class ProfileSettings(_Strict):
    """How the golden record picks each trait's value among what the systems say.

    Rules: ``most_trusted`` (declared by the customer over observed over inferred, then
    the source earliest in ``source_trust``, then the newest), ``most_recent``,
    ``most_frequent``. ``rules`` sets a rule per trait; others use ``default_rule``.
    """

    default_rule: Literal["most_trusted", "most_recent", "most_frequent"] = "most_trusted"
    rules: dict[str, Literal["most_trusted", "most_recent", "most_frequent"]] = Field(
        default_factory=lambda: {"address": "most_recent", "phone": "most_recent", "email": "most_recent"})
    source_trust: list[str] = Field(default_factory=lambda: ["web", "app", "pos", "store", "call_center", "esp"])
    timeline_limit: int = Field(default=100, ge=1)


class PrivacySettings(_Strict):
    """Consent purposes and what holds before a customer has said anything.

    ``defaults`` maps each purpose to whether it is allowed without a recorded choice
    (analytics under legitimate interest; marketing, personalisation and partner sharing
    need an opt-in). Purposes not listed are refused until granted. ``min_group_size`` is
    the k of k-anonymity: no shared overlap or exported group smaller than it is revealed.
    """

    defaults: dict[str, bool] = Field(default_factory=lambda: {
        "analytics": True, "personalisation": False, "marketing": False, "partner_sharing": False})
    min_group_size: int = Field(default=10, ge=1)


class Cap(_Strict):
    max: int = Field(ge=0)
    per_hours: float = Field(gt=0)


class QuietHours(_Strict):
    """No outbound messages between ``start`` and ``end`` (hours, local time; may wrap midnight)
    on ``channels``; a customer's ``timezone`` trait overrides ``timezone``."""

    start: float = Field(default=21, ge=0, lt=24)
    end: float = Field(default=8, ge=0, lt=24)
    timezone: str = "UTC"
    channels: list[str] = Field(default_factory=lambda: ["push", "sms"])


class ContextSettings(_Strict):
    """Files the context providers read (paths relative to the workspace): ``stores`` (store_id,
    lat, lon, optional radius_m and region), ``weather`` (store_id or region, day, rain, temp_c …),
    ``calendar`` (JSON: holidays {date: name}, paydays [15, "last_working_day"], events
    [{store_id, day, name}])."""

    stores: str | None = None
    weather: str | None = None
    calendar: str | None = None
    geofence_radius_m: float = Field(default=150, gt=0)
    weather_ttl_s: float = Field(default=900, ge=0)


class DestinationSettings(_Strict):
    """Where triggered actions go: ``type`` "webhook" (POST JSON to ``url``) or "nats" (publish on
    the JetStream ``subject`` at ``url``, e.g. nats://127.0.0.1:4222, creating ``stream`` if named)."""

    type: Literal["webhook", "nats"] = "webhook"
    url: str
    subject: str | None = None
    stream: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=5.0, gt=0)


class DecideSettings(_Strict):
    """Real-time decisions: where rules live and the contact policy every decision obeys.

    ``caps`` maps a channel (``*`` for all) to limits such as one push a day; ``global_control``
    is the share of customers who never get marketing (the baseline for measuring it all);
    ``salt`` keys the stable random groups (control, rollout, holdouts)."""

    rules: str = "rules"
    caps: dict[str, list[Cap]] = Field(default_factory=lambda: {
        "push": [Cap(max=1, per_hours=24)], "sms": [Cap(max=1, per_hours=72)], "email": [Cap(max=3, per_hours=168)],
        "*": [Cap(max=4, per_hours=24)]})
    quiet_hours: QuietHours = Field(default_factory=QuietHours)
    complaint_suppression_days: float = Field(default=14, ge=0)
    global_control: float = Field(default=0.05, ge=0, le=0.5)
    salt: str = "plait"
    max_actions: int = Field(default=3, ge=1, le=50)
    context: ContextSettings = Field(default_factory=ContextSettings)
    destinations: dict[str, DestinationSettings] = Field(default_factory=dict)
    # Where customers' snapshots live for decisions: "memory" (in process) or a redis:// URL
    # (shared by every process of a deployment; pip install "plait[redis]").
    online_store: str = Field(default="memory", pattern=r"^(memory|rediss?://.+)$")
    max_delivery_attempts: int = Field(default=8, ge=1)
    # Decisions are written to the log in batches at most this far apart (the answer never
    # waits for the write; a crash loses at most this much of the decision record). Each DuckDB
    # insert has a fixed cost of milliseconds: measured 17 µs of insert CPU per decision in
    # 300-row batches (0.1 s at 3,000/s), 9 µs in 1,000-row ones.
    record_interval_s: float = Field(default=0.5, gt=0, le=10)
    # Processes that decide (forked by `plait serve`, each owning a share of the customers; see
    # plait.decide.workers). 0: the server process decides itself. At most 31: each process of a
    # server takes one of 32 letters in its decision ids.
    workers: int = Field(default=0, ge=0, le=31)


class ServerSettings(_Strict):
    """How ``plait serve`` runs (see :mod:`plait.server.fronts`)."""

    # Front processes answering HTTP (forked; they parse collected events and route decisions,
    # and pass every other request to the writer process that owns the workspace). 0: one
    # process does everything.
    fronts: int = Field(default=0, ge=0, le=16)


class Settings(_Strict):
    """Everything configurable about a workspace."""

    base_currency: str = Field(default="USD", min_length=3, max_length=3)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    collector: CollectorSettings = Field(default_factory=CollectorSettings)
    pii: PiiSettings = Field(default_factory=PiiSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    profiles: ProfileSettings = Field(default_factory=ProfileSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    decide: DecideSettings = Field(default_factory=DecideSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @classmethod
    def load(cls, workspace: Path) -> "Settings":
        path = Path(workspace) / SETTINGS_FILE
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{path}: not valid JSON ({e.msg} at line {e.lineno})",
                hint="fix the file or delete it to return to the defaults",
            ) from e
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(
                f"{path}: setting `{where}`: {first['msg']}",
                hint="see `plait init --help` for the settings and their defaults",
            ) from e

    def save(self, workspace: Path) -> Path:
        path = Path(workspace) / SETTINGS_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path
