"""One exception tree for Plait.

Every error a user can meet derives from :class:`PlaitError` and carries the
context needed to act on it (the event index, the field, the file, the SQL)::

    PlaitError
    ├── ConfigError            settings file or option is wrong
    ├── WorkspaceError         workspace missing, locked by another process, or damaged
    ├── EventError             one event breaks the contract (index, field, reason)
    ├── AuthError              unknown or revoked write key
    ├── LimitError             request or batch larger than allowed
    ├── ImportFormatError      a bulk file cannot be read or mapped (path, line, column)
    ├── EngineError            SQL failed inside the engine (sql kept as attribute)
    ├── IdentityError          an identifier, profile or split request that cannot be honoured
    ├── LedgerError            the ledger is torn or a proof is asked for outside it
    ├── ModelError             a model cannot be fitted or used on the data given
    ├── RuleError              a rule or offer definition is invalid (file, rule, field)
    ├── DecisionError          a decision request cannot be answered (which field, why)
    ├── DeliveryError          a destination did not accept an action (which destination, why)
    └── MissingExtraError      an optional dependency is not installed (ImportError too)
"""

from __future__ import annotations


class PlaitError(Exception):
    """Base of every error Plait raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class ConfigError(PlaitError):
    """Settings are invalid or contradictory."""


class WorkspaceError(PlaitError):
    """The workspace cannot be opened or is in an unexpected state."""


class EventError(PlaitError):
    """An event does not satisfy the contract.

    ``index`` is the position in the request or file (``None`` for a single event),
    ``field`` the dotted path of the offending field and ``reason`` the human sentence.
    """

    def __init__(self, reason: str, *, field: str = "", index: int | None = None) -> None:
        self.reason = reason
        self.field = field
        self.index = index
        where = f"event {index}" if index is not None else "event"
        at = f", field `{field}`" if field else ""
        super().__init__(f"{where}{at}: {reason}")

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


class AuthError(PlaitError):
    """The write key is missing, unknown or revoked."""


class LimitError(PlaitError):
    """A request exceeds a configured size or count limit."""


class ImportFormatError(PlaitError):
    """A bulk import file cannot be read or mapped."""

    def __init__(self, message: str, *, path: str = "", line: int | None = None, hint: str = "") -> None:
        self.path = path
        self.line = line
        where = f"{path}" + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {message}" if where else message, hint=hint)


class EngineError(PlaitError):
    """The engine failed to run a statement; ``sql`` holds it."""

    def __init__(self, message: str, *, sql: str = "", hint: str = "") -> None:
        self.sql = sql
        super().__init__(message, hint=hint)


class IdentityError(PlaitError):
    """An identifier cannot be read, a profile is unknown, or a split is impossible."""


class LedgerError(PlaitError):
    """The ledger's files cannot be read as a ledger, or an index/size is outside it."""


class ModelError(PlaitError):
    """A model cannot be fitted or used on the data given (which customer, what is wrong)."""


class RuleError(ConfigError):
    """A decision rule or offer is invalid: ``source`` (file), ``rule`` (its id or position) and
    ``field`` say where."""

    def __init__(self, message: str, *, source: str = "", rule: str = "", field: str = "", hint: str = "") -> None:
        self.source, self.rule, self.field = source, rule, field
        where = ", ".join(x for x in (source, f"rule {rule}" if rule else "", f"field `{field}`" if field else "") if x)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)


class DecisionError(PlaitError):
    """A decision request cannot be answered: ``field`` names the offending part."""

    def __init__(self, message: str, *, field: str = "", hint: str = "") -> None:
        self.field = field
        super().__init__(f"`{field}`: {message}" if field else message, hint=hint)


class DeliveryError(PlaitError):
    """A destination did not accept a payload; ``destination`` names it (the outbox retries)."""

    def __init__(self, message: str, *, destination: str = "", hint: str = "") -> None:
        self.destination = destination
        super().__init__(f"{destination}: {message}" if destination else message, hint=hint)


class MissingExtraError(PlaitError, ImportError):
    """An optional dependency is missing; the message names the pip line."""

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{package} is not installed",
            hint=f'pip install "plait[{extra}]"',
        )


def require(module: str, extra: str):  # noqa: ANN201 - returns a module
    """Import an optional dependency or raise :class:`MissingExtraError`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(module, extra) from e
