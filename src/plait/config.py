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


class CollectorSettings(_Strict):
    """Limits and behaviour of the HTTP collector (Segment's limits by default)."""

    max_request_bytes: int = Field(default=512 * 1024, ge=1024)
    max_event_bytes: int = Field(default=32 * 1024, ge=256)
    max_batch_events: int = Field(default=2500, ge=1)
    require_write_key: bool = True
    flush_interval_ms: float = Field(default=2.0, ge=0)
    max_flush_rows: int = Field(default=20_000, ge=1)


class PiiSettings(_Strict):
    """Personal fields, kept apart from the rest of the event and encrypted per subject.

    A field listed here is removed from ``traits``, ``context.traits``, ``properties``
    and ``context`` wherever it appears at the top level of those objects and stored
    encrypted with the subject's key (see :mod:`plait.log.vault`).
    """

    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_PII_FIELDS))
    encrypt: bool = True


class Settings(_Strict):
    """Everything configurable about a workspace."""

    base_currency: str = Field(default="USD", min_length=3, max_length=3)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    collector: CollectorSettings = Field(default_factory=CollectorSettings)
    pii: PiiSettings = Field(default_factory=PiiSettings)

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
