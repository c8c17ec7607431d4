"""The contract, compiled to SQL for bulk paths: "surely valid" checks and typed fields.

:class:`~plait.events.contract.Parser` is the authority on what an event means and
why one is rejected. Bulk imports are too large for Python per event, so the same
catalogue is compiled here into SQL expressions over a JSON ``properties`` column:

- :func:`surely_valid` is true only when msgspec would certainly accept the
  properties (exact JSON types, required fields present). It is deliberately
  conservative — anything unusual is left to the parser, so rejections and their
  reasons always come from one place;
- :func:`amount`, :func:`explicit_channel` and :func:`catalogue_channel` give the typed
  columns exactly as the parser does.

A property test (``tests/test_fastpath.py``) checks that rows taken by the SQL path
equal what the parser makes of them.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable

import msgspec

from plait.engine.dialects import quote_literal
from plait.events.catalogue import CATALOGUE, EventSpec
from plait.events.channels import CUSTOM_CHANNEL, SEGMENT_RUNTIME
from plait.events.contract import EARLIEST_US, LATEST_US

NUM = ("DOUBLE", "BIGINT", "UBIGINT")
INT = ("BIGINT", "UBIGINT")


def _allowed(tp: object) -> tuple[tuple[str, ...], object | None]:
    """JSON types surely accepted for an annotation, and the item type of a list."""
    args = typing.get_args(tp) if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union else (tp,)
    out: set[str] = set()
    item = None
    for a in args:
        if a is type(None):
            out.add("NULL")
        elif a is str:
            out.add("VARCHAR")
        elif a is bool:
            out.add("BOOLEAN")
        elif a is int:
            out.update(INT)
        elif a is float:
            out.update(NUM)
        elif typing.get_origin(a) is list:
            out.add("ARRAY")
            item = typing.get_args(a)[0]
        else:
            raise TypeError(f"no SQL check for {a!r}")
    return tuple(sorted(out)), item


def _in(expr: str, allowed: tuple[str, ...]) -> str:
    return f"{expr} IN ({', '.join(quote_literal(t) for t in allowed)})"


def _list_ok(types_list: str, allowed: tuple[str, ...]) -> str:
    """Every element type of a ``json_type(..., '$.x[*]')`` list is allowed."""
    return f"len(list_filter({types_list}, lambda t: NOT ({_in('t', allowed)}))) = 0"


def spec_paths(spec: EventSpec) -> list[str]:
    """The JSON paths of the spec's properties, in the order :func:`surely_valid` reads their
    types (``types``)."""
    return [f"$.{f.encode_name}" for f in msgspec.structs.fields(spec.schema)]


def _struct_checks(col: str, prefix: str, schema: type[msgspec.Struct], types: Callable[[int], str] | None = None) -> list[str]:
    fields = msgspec.structs.fields(schema)
    # One parse of the object for every field's type: `__ty[i]` is the type at field i's path
    # (or `types(i)`, where the caller has read them in a parse of its own).
    paths = [f"{prefix}.{f.encode_name}" for f in fields]
    flat = []
    for i, f in enumerate(fields, start=1):
        allowed, _ = _allowed(f.type)
        jt = types(i) if types else f"__ty[{i}]"
        if f.required:
            flat.append(f"coalesce({_in(jt, tuple(a for a in allowed if a != 'NULL'))}, false)")
        else:
            flat.append(f"({jt} IS NULL OR {_in(jt, allowed)})")
    if types:
        checks = [" AND ".join(flat)] if flat else []
    else:
        checks = [f"list_transform([json_type({col}, [{', '.join(quote_literal(p) for p in paths)}])], "
                  f"lambda __ty: {' AND '.join(flat)})[1]"]
    for f, path in zip(fields, paths):
        allowed, item = _allowed(f.type)
        if item is None:
            continue
        jt = f"json_type({col}, {quote_literal(path)})"
        elems = f"json_type({col}, {quote_literal(path + '[*]')})"
        if isinstance(item, type) and issubclass(item, msgspec.Struct):
            checks.append(f"({jt} IS DISTINCT FROM 'ARRAY' OR ({_list_ok(elems, ('OBJECT',))} AND "
                          + " AND ".join(_item_checks(col, path, item)) + "))")
        else:
            ia, _ = _allowed(item)
            checks.append(f"({jt} IS DISTINCT FROM 'ARRAY' OR {_list_ok(elems, tuple(a for a in ia if a != 'NULL'))})")
    return checks


def _item_checks(col: str, path: str, schema: type[msgspec.Struct]) -> list[str]:
    out = []
    for f in msgspec.structs.fields(schema):
        allowed, item = _allowed(f.type)
        if item is not None or f.required:
            raise TypeError("nested lists and required item fields are not compiled")
        out.append(_list_ok(f"json_type({col}, {quote_literal(f'{path}[*].{f.encode_name}')})", allowed))
    return out


def surely_valid(spec: EventSpec, col: str = "properties", types: Callable[[int], str] | None = None) -> str:
    """True only where ``spec.validate`` would accept the JSON object in ``col``. ``types(i)``
    gives the JSON type at the i-th of :func:`spec_paths`, where the caller has read them."""
    return "(" + (" AND ".join(_struct_checks(col, "$", spec.schema, types)) or "true") + ")"


def number(col: str, path: str) -> str:
    jt = f"json_type({col}, {quote_literal(path)})"
    return f"CASE WHEN {_in(jt, NUM)} THEN CAST(json_extract({col}, {quote_literal(path)}) AS DOUBLE) END"


MONEY = ("total", "revenue", "value", "subtotal", "price")   # every name an amount is read from


def amount(spec: EventSpec | None, col: str = "properties", num: Callable[[str], str] | None = None) -> str:
    """The event's amount as :func:`plait.events.contract._money` computes it. ``num`` gives
    the number at a top-level property (one of :data:`MONEY`) where the caller has read
    them already; by default each is read from ``col``."""
    num = num or (lambda n: number(col, f"$.{n}"))
    if spec is None:
        return f"coalesce({', '.join(num(n) for n in ('total', 'revenue', 'value'))})"
    declared = set(spec.schema.__struct_fields__)
    parts = [num(n) for n in spec.monetary if n in declared]
    if any(f.name == "products" for f in msgspec.structs.fields(spec.schema)):
        lines = (f"list_sum(list_transform(json_extract({col}, '$.products[*]'), lambda x: "
                 f"CASE WHEN json_type(x, '$.price') IN ('DOUBLE', 'BIGINT', 'UBIGINT') "
                 f"THEN CAST(json_extract(x, '$.price') AS DOUBLE) * coalesce({number('x', '$.quantity')}, 1.0) "
                 "ELSE 0.0 END))")
        parts.append(f"CASE WHEN json_array_length({col}, '$.products') > 0 THEN coalesce({lines}, 0.0) END")
    return f"coalesce({', '.join(parts)})" if parts else "CAST(NULL AS DOUBLE)"


def explicit_channel(expr: str) -> str:
    """:func:`plait.events.channels.explicit_channel` for a text expression (callers pass only
    text without surrounding whitespace, which both trim alike)."""
    v = f"lower(replace(replace(trim({expr}), '-', '_'), ' ', '_'))"
    runtime = " ".join(f"WHEN {quote_literal(k)} THEN {quote_literal(c.value)}" for k, c in SEGMENT_RUNTIME.items())
    return (f"CASE {v} {runtime} WHEN 'server' THEN NULL ELSE "
            f"CASE WHEN regexp_full_match({v}, {quote_literal(CUSTOM_CHANNEL.pattern)}) THEN {v} END END")


def catalogue_channel(event_expr: str) -> str:
    """The channel a catalogued event implies (``EventSpec.channel``), else NULL."""
    whens = " ".join(f"WHEN {quote_literal(n)} THEN {quote_literal(s.channel)}" for n, s in CATALOGUE.items() if s.channel)
    return f"CASE {event_expr} {whens} END"


def in_years(micros: str) -> str:
    """``micros`` lies in the log's years (:data:`plait.events.contract.EARLIEST_US` up to
    :data:`~plait.events.contract.LATEST_US`); NULL stays NULL."""
    return f"({micros} >= {EARLIEST_US} AND {micros} < {LATEST_US})"


def utc_time(micros: str) -> str:
    """TIMESTAMPTZ from microseconds since the epoch (a cast from TIMESTAMP goes through
    the ICU calendar: 35 ns a row against 1)."""
    return f"make_timestamptz({micros})"


def utc_day(micros: str) -> str:
    """The UTC calendar day of microseconds since the epoch, as ``records_to_arrow`` has it
    (floor division); casting a TIMESTAMPTZ to DATE costs 60 ns a row through ICU."""
    return f"(DATE '1970-01-01' + CAST(floor(({micros}) / 86400000000.0) AS INTEGER))"
