"""Metadata filters: typed conditions compiled to parameterized SQL over the jsonb column.

User values never become SQL text: they travel as bind parameters (a jsonb document for
containment, a text[] path, jsonpath variables). The only text built here is from a fixed
vocabulary (operators) and JSON-escaped key names inside a jsonpath literal that is itself
passed as a parameter.

Semantics (documented in the contract): `must` = all hold, `should` = at least one holds when
any are given, `must_not` = none holds. `eq`/`in` use jsonb containment, so on an array value
they match when any element matches, and they can use the collection's GIN index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg import sql
from psycopg.types.json import Jsonb

from meshsearch_common.errors import InvalidArgument

Operator = Literal["eq", "in", "range", "exists"]
_RANGE_OPERATORS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_KEY_CHARS = 256


@dataclass(frozen=True)
class FieldCondition:
    key: str
    operator: Operator
    # eq: a JSON scalar; in: a list of scalars; range: {"gt"|"gte"|"lt"|"lte": float}; exists: bool
    value: Any


@dataclass(frozen=True)
class Filter:
    must: tuple[FieldCondition | Filter, ...] = ()
    should: tuple[FieldCondition | Filter, ...] = ()
    must_not: tuple[FieldCondition | Filter, ...] = ()

    def is_empty(self) -> bool:
        return not (self.must or self.should or self.must_not)


@dataclass(frozen=True)
class FilterLimits:
    """Bounds on a filter's size (from SearchSettings; no defaults of its own)."""

    max_depth: int
    max_conditions: int
    max_in_values: int


@dataclass
class _Compiler:
    limits: FilterLimits
    params: list[Any] = field(default_factory=list)
    conditions: int = 0

    def filter(self, node: Filter, depth: int) -> sql.Composable:
        if depth > self.limits.max_depth:
            raise InvalidArgument(
                f"filter is nested deeper than the limit of {self.limits.max_depth} levels", field="filter"
            )
        parts: list[sql.Composable] = [self.condition(c, depth) for c in node.must]
        if node.should:
            parts.append(sql.SQL("({})").format(sql.SQL(" OR ").join(self.condition(c, depth) for c in node.should)))
        if node.must_not:
            parts.append(
                sql.SQL("NOT ({})").format(sql.SQL(" OR ").join(self.condition(c, depth) for c in node.must_not))
            )
        if not parts:
            return sql.SQL("TRUE")
        return sql.SQL("({})").format(sql.SQL(" AND ").join(parts))

    def condition(self, node: FieldCondition | Filter, depth: int) -> sql.Composable:
        if isinstance(node, Filter):
            return self.filter(node, depth + 1)
        self.conditions += 1
        if self.conditions > self.limits.max_conditions:
            raise InvalidArgument(
                f"filter has more than the limit of {self.limits.max_conditions} conditions", field="filter"
            )
        path = _path(node.key)
        if node.operator == "eq":
            return self._contains(path, _scalar(node.key, node.value))
        if node.operator == "in":
            values = list(node.value)
            if not values:
                raise InvalidArgument(f"filter on '{node.key}': 'in' needs at least one value", field="filter")
            if len(values) > self.limits.max_in_values:
                raise InvalidArgument(
                    f"filter on '{node.key}': {len(values)} 'in' values exceed the limit of "
                    f"{self.limits.max_in_values}",
                    field="filter",
                )
            return sql.SQL("({})").format(
                sql.SQL(" OR ").join(self._contains(path, _scalar(node.key, v)) for v in values)
            )
        if node.operator == "range":
            return self._range(node.key, path, node.value)
        if node.operator == "exists":
            self.params.append(path)
            test = "IS NOT NULL" if node.value else "IS NULL"
            return sql.SQL("(metadata #> %s::text[]) " + test)
        raise InvalidArgument(f"unknown filter operator {node.operator!r}", field="filter")

    def _contains(self, path: list[str], value: Any) -> sql.Composable:
        """The value at `path` is `value`, or is an array holding it. Nested jsonb containment
        does not treat a scalar as contained in an array, so both shapes are tested (both can
        use the GIN index)."""
        for shape in (value, [value]):
            document: Any = shape
            for segment in reversed(path):
                document = {segment: document}
            self.params.append(Jsonb(document))
        return sql.SQL("(metadata @> %s OR metadata @> %s)")

    def _range(self, key: str, path: list[str], bounds: dict[str, float]) -> sql.Composable:
        tests = [f"@ {_RANGE_OPERATORS[name]} ${name}" for name in ("gt", "gte", "lt", "lte") if name in bounds]
        if not tests:
            raise InvalidArgument(f"filter on '{key}': a range needs at least one of gt, gte, lt, lte", field="filter")
        accessor = "$" + "".join("." + json.dumps(segment) for segment in path)
        self.params.append(f"{accessor} ? ({' && '.join(tests)})")
        self.params.append(Jsonb({name: float(value) for name, value in bounds.items()}))
        return sql.SQL("jsonb_path_exists(metadata, %s::jsonpath, %s::jsonb)")


def _path(key: str) -> list[str]:
    segments = key.split(".")
    if not key or len(key) > MAX_KEY_CHARS or not all(segments):
        raise InvalidArgument(
            f"invalid filter key {key!r}: use 1-{MAX_KEY_CHARS} characters, dots between names", field="filter"
        )
    return segments


def _scalar(key: str, value: Any) -> Any:
    if isinstance(value, (dict, list)) or value is None:
        raise InvalidArgument(f"filter on '{key}': compare with a string, number or boolean", field="filter")
    if isinstance(value, float) and value.is_integer():
        return int(value)  # JSON numbers from protobuf arrive as floats; 3.0 must match 3
    return value


def compile_filter(node: Filter, limits: FilterLimits) -> tuple[sql.Composable, list[Any]]:
    """SQL boolean expression over the `metadata` column, and its parameters in order."""
    compiler = _Compiler(limits)
    expression = compiler.filter(node, 1)
    return expression, compiler.params
