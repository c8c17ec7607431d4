"""A workspace: one directory holding the log database, the key vault and settings.

>>> import tempfile, plait
>>> ws = plait.connect(tempfile.mkdtemp())
>>> ws.log.count()
0
>>> ws.close()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plait.collect.keys import KeyStore
from plait.config import Settings
from plait.engine.duckdb import DuckDBBackend
from plait.errors import WorkspaceError
from plait.events.contract import Parser
from plait.log.fx import ExchangeRates
from plait.log.journal import replay
from plait.log.products import Catalogue
from plait.log.store import EventLog
from plait.log.vault import Vault

if TYPE_CHECKING:
    from plait.analytics.registry import Registry
    from plait.analytics.runs import Analytics
    from plait.collect.bulk import Importer
    from plait.identity import Identity
    from plait.privacy.consent import Consent
    from plait.privacy.ledger import Ledger
    from plait.privacy.rights import SubjectRights
    from plait.privacy.sharing import Sharing
    from plait.profiles import Profiles

ENV_VAR = "PLAIT_WORKSPACE"
VAULT_FILE = "keys.sqlite"
TRUTH_DIR = "truth"
JOURNAL_DIR = "journal"
PARTS_DIR = "log"


def default_workspace() -> Path:
    return Path(os.environ.get(ENV_VAR) or "plait-workspace")


class Workspace:
    """Everything Plait keeps for one retailer, opened from a directory."""

    def __init__(self, path: str | Path, settings: Settings | None = None, *, create: bool = True) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.exists():
            if not create:
                raise WorkspaceError(f"no workspace at {self.path}", hint="run `plait init` or pass --workspace")
            self.path.mkdir(parents=True)
        elif not self.path.is_dir():
            raise WorkspaceError(f"{self.path} is a file, not a workspace directory")
        self.settings = settings or Settings.load(self.path)
        e = self.settings.engine
        db = e.path if e.path == ":memory:" else str(self.path / e.path)
        self.backend = DuckDBBackend(db, threads=e.threads, memory_limit=e.memory_limit,
                                     checkpoint_threshold=e.checkpoint_threshold)
        self.backend.execute("SET TimeZone = 'UTC'")
        self.vault = Vault(self.path / VAULT_FILE, encrypt=self.settings.pii.encrypt)
        self.parser = Parser(base_currency=self.settings.base_currency, pii_fields=self.settings.pii.fields)
        self.log = EventLog(self.backend, self.vault, parts_dir=None if e.path == ":memory:" else self.path / PARTS_DIR,
                            part_rows=e.part_rows)
        # Events a served collector acknowledged from its journal but had not loaded when it stopped.
        replay(self.path / JOURNAL_DIR, self.log)
        self.fx = ExchangeRates(self.backend, self.settings.base_currency)
        self.keys = KeyStore(self.backend)
        self.catalogue = Catalogue(self.backend)
        self._identity: "Identity | None" = None
        self._profiles: "Profiles | None" = None
        self._ledger: "Ledger | None" = None
        self._consent: "Consent | None" = None

    @property
    def analytics(self) -> "Analytics":
        """CLV, segments, rules, propensities and imputed traits (see :mod:`plait.analytics`)."""
        from plait.analytics.runs import Analytics

        return Analytics(self)

    @property
    def models(self) -> "Registry":
        """Fitted models with version, window and metrics (see :mod:`plait.analytics.registry`)."""
        from plait.analytics.registry import Registry

        return Registry(self.backend)

    @property
    def rights(self) -> "SubjectRights":
        """Access and erasure for the person behind an identifier (see :mod:`plait.privacy.rights`)."""
        from plait.privacy.rights import SubjectRights

        return SubjectRights(self)

    @property
    def sharing(self) -> "Sharing":
        """Clean-room audience matching with partners (see :mod:`plait.privacy.sharing`)."""
        from plait.privacy.sharing import Sharing

        return Sharing(self)

    @property
    def consent(self) -> "Consent":
        """Consent choices, state and the one check every path calls (see :mod:`plait.privacy.consent`)."""
        if self._consent is None:
            from plait.privacy.consent import Consent

            self._consent = Consent(self)
        return self._consent

    @property
    def ledger(self) -> "Ledger":
        """The signed, tamper-evident ledger of consent, erasure and sharing (see :mod:`plait.privacy.ledger`)."""
        if self._ledger is None:
            from plait.privacy.ledger import Ledger

            self._ledger = Ledger(self.path, seed=self.vault.secret("ledger-signing-key"))
        return self._ledger

    @property
    def identity(self) -> "Identity":
        """Who is who: the identity view (see :mod:`plait.identity`)."""
        if self._identity is None:
            from plait.identity import Identity

            self._identity = Identity(self)
        return self._identity

    @property
    def profiles(self) -> "Profiles":
        """Golden records, features and timelines (see :mod:`plait.profiles`)."""
        if self._profiles is None:
            from plait.profiles import Profiles

            self._profiles = Profiles(self)
        return self._profiles

    def resolve(self) -> tuple[Any, Any]:
        """Resolve identity from the whole log, then rebuild profiles: ``(identity report, profile report)``."""
        return self.identity.resolve(), self.profiles.build()

    @property
    def truth_dir(self) -> Path:
        return self.path / TRUTH_DIR

    @property
    def importer(self) -> "Importer":
        from plait.collect.bulk import Importer

        return Importer(self)

    def simulate(self, **kwargs: Any) -> Any:
        """Simulate a retailer into this workspace (see :func:`plait.simulate.simulate`)."""
        from plait.simulate import simulate

        return simulate(self, **kwargs)

    def close(self) -> None:
        if self._identity is not None:
            self._identity.close()
        if self._ledger is not None:
            self._ledger.close()
        self.backend.close()
        self.vault.close()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(path: str | Path | None = None, settings: Settings | None = None) -> Workspace:
    """Open (creating if needed) the workspace at ``path`` or ``$PLAIT_WORKSPACE``."""
    return Workspace(path if path is not None else default_workspace(), settings)
