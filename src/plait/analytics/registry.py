"""The model registry: fitted models with version, training window and metrics.

A fitted estimator is stored as a pickled blob in the workspace's ``models`` table with its
name, a version number per name, the kind, when it was trained, the window of data it saw,
its parameters and metrics (JSON). The decision engine loads the newest version by name.
Pickles are only ever read back from the workspace that wrote them (never from a user's file).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from typing import Any

from plait.engine.backend import Backend
from plait.errors import ModelError

DDL = """CREATE TABLE IF NOT EXISTS models (
  name VARCHAR, version INTEGER, kind VARCHAR, trained_at TIMESTAMPTZ, window_start VARCHAR, window_end VARCHAR,
  params VARCHAR, metrics VARCHAR, blob BLOB, PRIMARY KEY (name, version))"""


@dataclass
class ModelRecord:
    name: str
    version: int
    kind: str
    trained_at: str
    window_start: str | None
    window_end: str | None
    params: dict[str, Any]
    metrics: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Registry:
    """``ws.models``: save, load and list fitted models."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        backend.execute(DDL)

    def save(self, name: str, model: Any, *, kind: str, params: dict[str, Any] | None = None,
             metrics: dict[str, Any] | None = None, window: tuple[Any, Any] = (None, None)) -> ModelRecord:
        b = self.backend
        version = int(b.scalar("SELECT coalesce(max(version), 0) + 1 FROM models WHERE name = ?", [name]))
        b.execute("INSERT INTO models VALUES (?, ?, ?, now(), ?, ?, ?, ?, ?)",
                  [name, version, kind, _s(window[0]), _s(window[1]), json.dumps(params or {}, default=str),
                   json.dumps(metrics or {}, default=str), pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)])
        return self.get(name, version)

    def get(self, name: str, version: int | None = None) -> ModelRecord:
        rows = self.backend.rows(
            "SELECT name, version, kind, CAST(trained_at AS VARCHAR) AS trained_at, window_start, window_end, params, "
            "metrics FROM models WHERE name = ? " + ("AND version = ?" if version else "ORDER BY version DESC LIMIT 1"),
            [name, version] if version else [name])
        if not rows:
            raise ModelError(f"no model named {name!r}" + (f" at version {version}" if version else ""),
                             hint="list models with `plait models` or fit one with `plait analyze …`")
        r = rows[0]
        return ModelRecord(r["name"], r["version"], r["kind"], r["trained_at"], r["window_start"], r["window_end"],
                           json.loads(r["params"]), json.loads(r["metrics"]))

    def load(self, name: str, version: int | None = None) -> Any:
        rec = self.get(name, version)
        blob = self.backend.scalar("SELECT blob FROM models WHERE name = ? AND version = ?", [rec.name, rec.version])
        return pickle.loads(blob)  # noqa: S301 - written by this workspace's own save()

    def list(self) -> list[ModelRecord]:
        return [self.get(r["name"], r["version"]) for r in self.backend.rows(
            "SELECT name, max(version) AS version FROM models GROUP BY name ORDER BY name")]


def _s(v: Any) -> str | None:
    return None if v is None else str(v)


__all__ = ["ModelRecord", "Registry"]
