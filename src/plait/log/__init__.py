"""The append-only event log: write (idempotent), read, Parquet round trip, currency."""

from plait.log.fx import ExchangeRates
from plait.log.store import AppendResult, EventLog, Rejection
from plait.log.vault import Vault

__all__ = [
    "AppendResult",
    "EventLog",
    "ExchangeRates",
    "Rejection",
    "Vault",
]
