"""Dated exchange rates: every amount converted to the workspace's base currency.

``fx_rates(day, currency, rate)`` says one unit of ``currency`` was worth ``rate``
units of the base currency on ``day``. The ``events_base`` view gives every event
its ``amount_base`` using the newest rate on or before the event's day (an as-of
join); amounts already in the base currency need no rate. An amount whose currency
has no earlier rate gets ``NULL`` and is counted by :meth:`ExchangeRates.unconverted`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import pyarrow as pa

from plait.engine.backend import Backend
from plait.engine.dialects import quote_literal
from plait.errors import ImportFormatError


class ExchangeRates:
    def __init__(self, backend: Backend, base_currency: str) -> None:
        self.backend = backend
        self.base = base_currency.upper()
        d = backend.dialect
        joined = d.as_of_rate("events", "fx_rates")
        backend.execute(
            "CREATE OR REPLACE VIEW events_base AS SELECT * EXCLUDE (fx_rate), "
            f"CASE WHEN amount IS NULL THEN NULL WHEN currency = {quote_literal(self.base)} THEN amount "
            f"ELSE amount * fx_rate END AS amount_base FROM ({joined})"
        )

    def add(self, rows: Iterable[tuple[date, str, float]]) -> int:
        """Add or replace rates ``(day, currency, rate_to_base)``."""
        rows = list(rows)
        if not rows:
            return 0
        for day, cur, rate in rows:
            if len(cur) != 3 or not cur.isalpha():
                raise ImportFormatError(f"currency `{cur}` is not an ISO 4217 code")
            if not rate > 0:
                raise ImportFormatError(f"rate for {cur} on {day} must be positive, got {rate}")
        t = pa.table({
            "day": pa.array([r[0] for r in rows], pa.date32()),
            "currency": [r[1].upper() for r in rows],
            "rate": pa.array([float(r[2]) for r in rows], pa.float64()),
        })
        # Rates are reference data, not events: a later file may correct a day's rate.
        return self.backend.append("fx_rates", t, on_conflict="replace")

    def load_csv(self, path: str | Path) -> int:
        """Load ``day,currency,rate`` rows (header required)."""
        path = Path(path)
        rows = []
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            need = {"day", "currency", "rate"}
            if not reader.fieldnames or not need <= set(reader.fieldnames):
                raise ImportFormatError("expected the header day,currency,rate", path=str(path), line=1)
            for i, row in enumerate(reader, start=2):
                try:
                    rows.append((date.fromisoformat(row["day"]), row["currency"], float(row["rate"])))
                except ValueError as e:
                    raise ImportFormatError(f"bad rate row: {e}", path=str(path), line=i) from e
        return self.add(rows)

    def convert(self, amount: float, currency: str, day: date) -> float | None:
        """One amount in the base currency, or ``None`` without a rate."""
        if currency.upper() == self.base:
            return amount
        rate = self.backend.scalar(
            "SELECT rate FROM fx_rates WHERE currency = ? AND day <= ? ORDER BY day DESC LIMIT 1",
            [currency.upper(), day],
        )
        return None if rate is None else amount * rate

    def unconverted(self) -> int:
        return int(self.backend.scalar("SELECT count(*) FROM events_base WHERE amount IS NOT NULL AND amount_base IS NULL"))
