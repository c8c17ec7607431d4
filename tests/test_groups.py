"""Minimum group sizes on aggregates: primary and secondary suppression, consent, CLI."""

from __future__ import annotations

import csv
import io

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from plait.cli.main import app
from plait.errors import ConfigError
from plait.privacy.groups import aggregate, published, suppress
from tests.test_identity import send


def test_small_groups_and_their_complement_are_suppressed():
    t = pa.table({"region": ["N", "N", "N", "S", "S"], "city": ["a", "b", "c", "d", "e"],
                  "customers": [40, 4, 25, 30, 12], "revenue": [1.0, 2.0, 3.0, 4.0, 5.0]})
    rows = suppress(t, by=["region", "city"], k=10).to_pylist()
    # b is under k; c is the smallest published cell in its margin, hidden so b cannot be subtracted out.
    assert [r["suppressed"] for r in rows] == [False, True, True, False, False]
    assert rows[1]["customers"] is None and rows[1]["revenue"] is None and rows[1]["city"] == "b"
    assert rows[0]["revenue"] == 1.0
    # Two small cells in one margin already protect each other: nothing more is hidden.
    t2 = pa.table({"city": ["a", "b", "c"], "customers": [3, 4, 50]})
    assert [r["suppressed"] for r in suppress(t2, by=["city"], k=5).to_pylist()] == [True, True, False]


def test_aggregate_enforces_the_workspace_minimum(ws):
    cities = ["Leeds"] * 13 + ["York"] * 11 + ["Ely"] * 3
    for i, city in enumerate(cities):
        send(ws, {"type": "identify", "userId": f"g{i}", "traits": {"city": city}})
        send(ws, {"event": "Order Completed", "userId": f"g{i}",
                  "properties": {"order_id": f"o{i}", "total": 10, "currency": "USD"}}, day=1)
    ws.resolve()
    assert ws.settings.privacy.min_group_size == 10
    rows = {r["city"]: r for r in aggregate(ws, ["city"]).to_pylist()}
    assert (rows["Leeds"]["customers"], rows["Leeds"]["orders_sum"], rows["Leeds"]["revenue_sum"]) == (13, 13, 130.0)
    assert rows["Ely"]["suppressed"] and rows["Ely"]["revenue_sum"] is None          # 3 < k
    assert rows["York"]["suppressed"] and rows["York"]["customers"] is None      # its complement
    # Withdrawing analytics takes a customer out of every aggregate.
    ws.consent.set("user_id:g0", "analytics", False)
    assert [(r["city"], r["customers"]) for r in published(aggregate(ws, ["city"]))] == [("Leeds", 12)]
    r = CliRunner().invoke(app, ["--workspace", str(ws.path), "export", "aggregate", "--by", "city"])
    assert r.exit_code == 0, r.output
    out = {row["city"]: row for row in csv.DictReader(io.StringIO(r.output))}
    assert out["Leeds"]["customers"] == "12" and out["Ely"]["customers"] == "" and out["Ely"]["suppressed"] == "true"
    r = CliRunner().invoke(app, ["--workspace", str(ws.path), "export", "aggregate", "--by", "ci ty"])
    assert r.exit_code == 1 and "not a column or trait name" in str(r.exception)   # main() prints it
    # A trait no customer has is refused (it once published everyone as one group of nothing).
    with pytest.raises(ConfigError, match="no customer has a feature or trait 'ctiy'"):
        aggregate(ws, ["ctiy"])


def test_aggregate_by_a_part_of_a_trait(ws):
    for i in range(12):
        send(ws, {"type": "identify", "userId": f"a{i}", "traits": {"address": {"city": "Leeds", "street": f"{i} Rd"}}})
    ws.resolve()
    rows = {r["address.city"]: r["customers"] for r in aggregate(ws, ["address.city"]).to_pylist()}
    assert rows == {"Leeds": 12}
