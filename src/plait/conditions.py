"""The condition language shared by segments and decision rules.

A condition is data (JSON or YAML), so marketers can write it and tools can store it:

- a test: ``{"field": "features.orders", "op": ">=", "value": 3}``; operators ``== != < <= > >=``,
  ``in`` / ``not_in`` (a list), ``between`` (``[low, high]``, inclusive), ``contains`` (a list field
  holds the value), ``exists`` / ``missing``; a trait test may require a minimum confidence:
  ``{"field": "traits.city", "op": "==", "value": "Leeds", "min_confidence": "observed"}``
  (declared > observed > inferred), so personalisation never rests on a guess where a fact is needed;
- ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": {...}}``.

Every condition can :meth:`~Condition.evaluate` one profile (a nested dict: ``features``,
``traits`` as ``{name: {"value", "confidence"}}``, ``clv``, ``segment``, an ``event``…) in
microseconds, and compile :meth:`~Condition.to_sql` over a table with one row per profile whose
columns are the dotted field names (``"features.orders"``; a trait's confidence is
``"traits.city.confidence"``). A missing value fails every test but ``missing`` in both, so
the two always agree (a property test holds them to it).

>>> c = parse({"all": [{"field": "features.orders", "op": ">=", "value": 3},
...                    {"not": {"field": "traits.city", "op": "in", "value": ["York"]}}]})
>>> c.evaluate({"features": {"orders": 4}, "traits": {"city": {"value": "Leeds", "confidence": "declared"}}})
True
>>> c.to_sql()
'(coalesce("features.orders" >= 3, false) AND NOT (coalesce("traits.city" IN (\\'York\\'), false)))'
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plait.engine.dialects import quote_literal
from plait.errors import ConfigError

CONFIDENCE = {"inferred": 1, "observed": 2, "declared": 3}
_CMP = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
OPS = (*_CMP, "in", "not_in", "between", "contains", "exists", "missing")


class Condition:
    def evaluate(self, profile: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def to_sql(self) -> str:
        raise NotImplementedError

    def fields(self) -> set[str]:
        raise NotImplementedError

    def _py(self, consts: list[Any]) -> str:
        raise NotImplementedError

    def compile(self) -> Callable[[Mapping[str, Any]], bool]:
        """The condition as one Python function — the same answers as :meth:`evaluate` several
        times faster (no method dispatch per test), for the real-time path. Anything unusual
        (a value of an unexpected type) falls back to :meth:`evaluate`."""
        consts: list[Any] = []
        body = self._py(consts)
        env = {"_E": _EMPTY, "_C": CONFIDENCE, "_seq": (list, tuple, set), **{f"_k{i}": c for i, c in enumerate(consts)}}
        fn = eval(f"lambda v: {body}", env)  # noqa: S307 - source built here from parsed, quoted parts
        slow = self.evaluate

        def run(profile: Mapping[str, Any]) -> bool:
            try:
                return bool(fn(profile))
            except Exception:  # noqa: BLE001 - the careful path decides
                return slow(profile)

        return run


def _lookup(profile: Mapping[str, Any], field: str, parts: tuple[str, ...] | None = None) -> tuple[Any, str | None]:
    """The value at a dotted path, and for a trait its confidence."""
    node: Any = profile
    for part in parts or field.split("."):
        if type(node) is dict:       # the common case, without the cost of an ABC check
            node = node.get(part)
            if node is None:
                return None, None
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return None, None
    if field.startswith("traits.") and isinstance(node, Mapping):
        return node.get("value"), node.get("confidence")
    return node, None


_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_EMPTY: dict[str, Any] = {}


def _const(consts: list[Any], value: Any) -> str:
    consts.append(value)
    return f"_k{len(consts) - 1}"



def _lit(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return quote_literal(str(v))


def _col(field: str) -> str:
    return '"' + field.replace('"', '""') + '"'


@dataclass(frozen=True)
class Compare(Condition):
    field: str
    op: str
    value: Any = None
    min_confidence: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parts", tuple(self.field.split(".")))

    def evaluate(self, profile: Mapping[str, Any]) -> bool:
        v, conf = _lookup(profile, self.field, self._parts)  # type: ignore[attr-defined]
        if self.min_confidence and v is not None and CONFIDENCE.get(conf or "", 0) < CONFIDENCE[self.min_confidence]:
            v = None
        op = self.op
        if op == "missing":
            return v is None
        if v is None:
            return False
        if op == "exists":
            return True
        try:
            if op in ("==", "!="):
                return (v == self.value) if op == "==" else (v != self.value)
            if op in _ORDER:
                return _ORDER[op](v, self.value)
            if op == "in":
                return v in self.value
            if op == "not_in":
                return v not in self.value
            if op == "between":
                return self.value[0] <= v <= self.value[1]
            if op == "contains":
                return isinstance(v, (list, tuple, set)) and self.value in v
        except TypeError:
            return False
        return False

    def _py(self, consts: list[Any]) -> str:
        parts = self.field.split(".")
        # Nested .get with an empty dict for missing levels; a non-dict level raises and the
        # compiled function falls back to evaluate().
        expr = "v"
        for p in parts:
            expr = f"({expr} or _E).get({_const(consts, p)})"
        if parts[0] == "traits":
            node = expr
            expr = f"(_t.get('value') if type(_t := {node}) is dict else _t)"
            if self.min_confidence:
                need = CONFIDENCE[self.min_confidence]
                expr = (f"((_t.get('value') if _C.get(_t.get('confidence') or '', 0) >= {need} else None) "
                        f"if type(_t := {node}) is dict else _t)")
        x = f"(_x := {expr})"
        op = self.op
        if op == "missing":
            return f"({x} is None)"
        if op == "exists":
            return f"({x} is not None)"
        k = _const(consts, self.value)
        test = {"==": f"_x == {k}", "!=": f"_x != {k}", "<": f"_x < {k}", "<=": f"_x <= {k}", ">": f"_x > {k}",
                ">=": f"_x >= {k}", "in": f"_x in {k}", "not_in": f"_x not in {k}",
                "between": f"{k}[0] <= _x <= {k}[1]", "contains": f"isinstance(_x, _seq) and {k} in _x"}[op]
        return f"({x} is not None and ({test}))"

    def to_sql(self) -> str:
        col = _col(self.field)
        if self.min_confidence:
            need = CONFIDENCE[self.min_confidence]
            conf = _col(self.field + ".confidence")
            ranks = " ".join(f"WHEN {quote_literal(k)} THEN {n}" for k, n in CONFIDENCE.items())
            col = f"(CASE WHEN (CASE {conf} {ranks} ELSE 0 END) >= {need} THEN {col} END)"
        op = self.op
        if op == "missing":
            return f"({col} IS NULL)"
        if op == "exists":
            return f"({col} IS NOT NULL)"
        if op in _CMP:
            expr = f"{col} {_CMP[op]} {_lit(self.value)}"
        elif op in ("in", "not_in"):
            items = ", ".join(_lit(x) for x in self.value) or "NULL"
            expr = f"{col} {'IN' if op == 'in' else 'NOT IN'} ({items})"
        elif op == "between":
            expr = f"{col} BETWEEN {_lit(self.value[0])} AND {_lit(self.value[1])}"
        else:  # contains
            expr = f"list_contains({col}, {_lit(self.value)})"
        return f"coalesce({expr}, false)"

    def fields(self) -> set[str]:
        return {self.field} | ({self.field + ".confidence"} if self.min_confidence else set())


@dataclass(frozen=True)
class Junction(Condition):
    """``all`` (every part holds) or ``any`` (some part holds) of its parts."""

    kind: str                      # "all" or "any"
    parts: tuple[Condition, ...]

    def evaluate(self, profile: Mapping[str, Any]) -> bool:
        if self.kind == "all":
            for p in self.parts:
                if not p.evaluate(profile):
                    return False
            return True
        for p in self.parts:
            if p.evaluate(profile):
                return True
        return False

    def _py(self, consts: list[Any]) -> str:
        if not self.parts:
            return "True" if self.kind == "all" else "False"
        return "(" + f" {'and' if self.kind == 'all' else 'or'} ".join(p._py(consts) for p in self.parts) + ")"

    def to_sql(self) -> str:
        if not self.parts:
            return "true" if self.kind == "all" else "false"
        return "(" + f" {'AND' if self.kind == 'all' else 'OR'} ".join(p.to_sql() for p in self.parts) + ")"

    def fields(self) -> set[str]:
        return set().union(*(p.fields() for p in self.parts))


@dataclass(frozen=True)
class Not(Condition):
    part: Condition

    def evaluate(self, profile: Mapping[str, Any]) -> bool:
        return not self.part.evaluate(profile)

    def _py(self, consts: list[Any]) -> str:
        return f"(not {self.part._py(consts)})"

    def to_sql(self) -> str:
        return f"NOT ({self.part.to_sql()})"

    def fields(self) -> set[str]:
        return self.part.fields()


def parse(data: Mapping[str, Any] | Condition, where: str = "condition") -> Condition:
    """A :class:`Condition` from its JSON/YAML form; errors name the path of the bad part."""
    if isinstance(data, Condition):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be an object, got {type(data).__name__}",
                          hint='write {"field": ..., "op": ..., "value": ...} or {"all": [...]}')
    keys = set(data)
    for combinator in ("all", "any"):
        if combinator in keys:
            if keys != {combinator} or not isinstance(data[combinator], Sequence) or isinstance(data[combinator], str):
                raise ConfigError(f"{where}: '{combinator}' takes a list of conditions and nothing beside it")
            return Junction(combinator, tuple(parse(c, f"{where}.{combinator}[{i}]") for i, c in enumerate(data[combinator])))
    if "not" in keys:
        if keys != {"not"}:
            raise ConfigError(f"{where}: 'not' takes one condition and nothing beside it")
        return Not(parse(data["not"], f"{where}.not"))
    unknown = keys - {"field", "op", "value", "min_confidence"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}",
                          hint="a test has field, op, value and optionally min_confidence")
    field, op = data.get("field"), data.get("op", "==")
    if not isinstance(field, str) or not field or any(not p for p in field.split(".")):
        raise ConfigError(f"{where}: 'field' must be a dotted name like features.orders, got {field!r}")
    if op not in OPS:
        raise ConfigError(f"{where}: unknown op {op!r}", hint=f"use one of {', '.join(OPS)}")
    value = data.get("value")
    if op in ("in", "not_in") and (not isinstance(value, Sequence) or isinstance(value, str)):
        raise ConfigError(f"{where}: '{op}' needs a list value, got {value!r}")
    if op == "between" and (not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2):
        raise ConfigError(f"{where}: 'between' needs [low, high], got {value!r}")
    if op not in ("exists", "missing", "in", "not_in", "between") and "value" not in data:
        raise ConfigError(f"{where}: '{op}' needs a value")
    mc = data.get("min_confidence")
    if mc is not None and (mc not in CONFIDENCE or not field.startswith("traits.")):
        raise ConfigError(f"{where}: min_confidence applies to traits.* and is one of {', '.join(CONFIDENCE)}")
    return Compare(field, op, tuple(value) if op in ("in", "not_in", "between") else value, mc)


__all__ = ["CONFIDENCE", "Compare", "Condition", "Junction", "Not", "OPS", "parse"]
