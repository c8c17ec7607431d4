"""Minimum group sizes: aggregates and segment summaries that cannot single anyone out.

Every aggregate Plait exports (counts, revenue by a trait, a segment's size and averages) goes
through :func:`suppress`. A group with fewer distinct customers than the workspace's
``privacy.min_group_size`` (k) keeps its labels but loses its figures — primary suppression.
Because totals are published elsewhere, one suppressed cell could be recovered by
subtraction; so when a margin (the rows sharing every grouping column but the last) has
exactly one suppressed cell, the smallest published cell beside it is suppressed too —
secondary suppression, the standard disclosure-control rule for tables.

:func:`aggregate` is the ready-made report: customers, orders and revenue grouped by
feature columns or golden traits, over the customers whose consent allows the purpose
(the one consent check), suppressed as above.

>>> import pyarrow as pa
>>> t = pa.table({"city": ["A", "B", "C"], "customers": [50, 3, 40], "revenue": [9.0, 1.0, 8.0]})
>>> suppress(t, by=["city"], k=10).to_pylist()[1:]
[{'city': 'B', 'customers': None, 'revenue': None, 'suppressed': True}, {'city': 'C', 'customers': None, 'revenue': None, 'suppressed': True}]
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from plait.engine.dialects import money_sum
from plait.errors import ConfigError
from plait.profiles.features import FEATURE_COLUMNS

if TYPE_CHECKING:
    import pyarrow as pa

    from plait.workspace import Workspace

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GROUPABLE = tuple(c for c in FEATURE_COLUMNS if c != "channels")


def suppress(table: "pa.Table", *, by: Sequence[str], k: int, count: str = "customers") -> "pa.Table":
    """``table`` with every figure of a group under ``k`` customers (and its complement) nulled,
    plus a ``suppressed`` column. ``by`` are the label columns; all others are figures."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if count not in table.column_names:
        raise ConfigError(f"an aggregate needs its distinct-customer count in column {count!r}",
                          hint="count customers per group, e.g. count(DISTINCT profile_id) AS customers")
    rows = table.to_pylist()
    hidden = {i for i, r in enumerate(rows) if r[count] is not None and r[count] < k}
    margins: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        margins[tuple(r[c] for c in by[:-1])].append(i)
    for members in margins.values():
        shown = [i for i in members if i not in hidden]
        if len(members) - len(shown) == 1 and shown:
            hidden.add(min(shown, key=lambda i: rows[i][count]))
    figures = [c for c in table.column_names if c not in by]
    cols = {c: table.column(c) for c in by}
    mask = pa.array([i in hidden for i in range(len(rows))], pa.bool_())
    for c in figures:
        cols[c] = pc.if_else(mask, pa.scalar(None, table.schema.field(c).type), table.column(c))
    cols["suppressed"] = mask
    return pa.table(cols)


def aggregate(ws: "Workspace", by: Sequence[str], *, purpose: str = "analytics") -> "pa.Table":
    """Customers, orders and revenue per group of ``by`` (feature columns or golden trait names),
    over customers allowing ``purpose``, with the minimum group size enforced."""
    if not by:
        raise ConfigError("an aggregate needs at least one column to group by",
                          hint=f"group by a feature ({', '.join(_GROUPABLE[:6])}, …) or a trait (e.g. city)")
    b = ws.backend
    if not b.has_table("profile_features"):
        raise ConfigError("profiles have not been built yet", hint="run `plait resolve`")
    select, joins = [], []
    for j, name in enumerate(by):
        trait, _, part = name.partition(".")          # a trait's part: address.city
        if not _NAME.match(trait) or (part and not _NAME.match(part)):
            raise ConfigError(f"{name!r} is not a column or trait name",
                              hint="use letters, digits and underscores (a trait's part after a dot: address.city)")
        if name in _GROUPABLE:
            select.append(f"f.{name} AS {name}")
            continue
        if not b.scalar("SELECT count(*) FROM profile_traits WHERE trait = ?", [trait]):
            # (else every customer falls in one group of nothing: a typo would publish that)
            traits = [r["trait"] for r in b.rows("SELECT DISTINCT trait FROM profile_traits ORDER BY 1")]
            raise ConfigError(f"no customer has a feature or trait {trait!r}",
                              hint=f"features: {', '.join(_GROUPABLE)}; traits: {', '.join(traits) or 'none yet'}")
        joins.append(f"LEFT JOIN profile_traits t{j} ON t{j}.profile_id = f.profile_id AND t{j}.trait = '{trait}'")
        select.append(f"json_extract_string(t{j}.value, '$.{part}') AS \"{name}\"" if part else
                      f"json_extract_string(t{j}.value, '$') AS \"{name}\"")
    allowed = ws.consent.allowed_profiles_sql(purpose)
    groups = ", ".join(str(i + 1) for i in range(len(by)))
    table = b.query(f"""
        SELECT {", ".join(select)}, count(DISTINCT f.profile_id) AS customers,
               sum(f.orders) AS orders_sum, {money_sum('f.revenue')} AS revenue_sum,
               round({money_sum('f.revenue')} / count(DISTINCT f.profile_id), 2) AS revenue_per_customer
        FROM profile_features f {" ".join(joins)}
        WHERE f.profile_id IN (SELECT profile_id FROM ({allowed}) WHERE allowed)
        GROUP BY {groups} ORDER BY {groups}""")
    return suppress(table, by=list(by), k=ws.settings.privacy.min_group_size)


def published(table: "pa.Table") -> list[dict[str, Any]]:
    """The rows of a suppressed table that carry figures."""
    return [r for r in table.to_pylist() if not r["suppressed"]]


__all__ = ["aggregate", "published", "suppress"]
