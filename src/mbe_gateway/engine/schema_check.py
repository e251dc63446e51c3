"""A JSON schema compiled into a plain Python predicate: the quick check of a tool call's arguments.

jsonschema words the clear error a bad call gets, but walking a schema with it costs the
engine 40–60 µs per call, as much as a whole `mbe_route`. Nearly every call is valid, so
each input schema is also compiled into closures for the few keywords the contract uses:
when the predicate accepts, the arguments are valid and jsonschema is not consulted; when
it refuses, jsonschema decides and says why.

The predicate means exactly what Draft 2020-12 means, as jsonschema implements it (an
"integer" may be 3.0; "number" is no bool; lengths count code points; "pattern" searches;
`properties`, `required` and the bounds apply only to their own types), and
tests/test_engine_hot_paths.py holds the two equal on generated schemas and values. A
schema using any other keyword is not compiled (`compile_check` gives None), so a new
keyword in the contract can never be skipped, only checked the slower way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

Check = Callable[[Any], bool]

ANNOTATIONS: Final = frozenset({"title", "description", "default", "examples", "$comment", "deprecated"})
"""Keywords that describe and never constrain."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )


_TYPES: Final[Mapping[str, Check]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": _is_integer,
}


def compile_check(schema: Mapping[str, Any]) -> Check | None:
    """A predicate true exactly for the values `schema` accepts, or None when `schema` uses
    a keyword (or a keyword's form) this module does not cover."""
    checks: list[Check] = []
    for keyword, value in schema.items():
        if keyword in ANNOTATIONS:
            continue
        build = _KEYWORDS.get(keyword)
        check = build(value) if build is not None else None
        if check is None:
            return None
        checks.append(check)
    if len(checks) == 1:
        return checks[0]
    return lambda instance: all(check(instance) for check in checks)


def _type(names: Any) -> Check | None:
    wanted = [names] if isinstance(names, str) else names
    if not isinstance(wanted, list) or not wanted or not all(name in _TYPES for name in wanted):
        return None
    tests = [_TYPES[name] for name in wanted]
    if len(tests) == 1:
        return tests[0]
    return lambda v: any(test(v) for test in tests)


def _properties(properties: Any) -> Check | None:
    if not isinstance(properties, dict):
        return None
    checks: dict[str, Check] = {}
    for name, subschema in properties.items():
        check = compile_check(subschema) if isinstance(subschema, dict) else None
        if check is None:
            return None
        checks[name] = check
    items = tuple(checks.items())
    return lambda v: not isinstance(v, dict) or all(check(v[name]) for name, check in items if name in v)


def _required(names: Any) -> Check | None:
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None
    wanted = tuple(names)
    return lambda v: not isinstance(v, dict) or all(name in v for name in wanted)


def _bound(compare: Callable[[Any, Any], bool]) -> Callable[[Any], Check | None]:
    def build(limit: Any) -> Check | None:
        if not _is_number(limit):
            return None
        return lambda v: not _is_number(v) or compare(v, limit)

    return build


def _length(compare: Callable[[int, int], bool]) -> Callable[[Any], Check | None]:
    def build(limit: Any) -> Check | None:
        if not isinstance(limit, int) or isinstance(limit, bool):
            return None
        return lambda v: not isinstance(v, str) or compare(len(v), limit)

    return build


def _pattern(pattern: Any) -> Check | None:
    if not isinstance(pattern, str):
        return None
    search = re.compile(pattern).search
    return lambda v: not isinstance(v, str) or search(v) is not None


_KEYWORDS: Final[Mapping[str, Callable[[Any], Check | None]]] = {
    "type": _type,
    "properties": _properties,
    "required": _required,
    "minimum": _bound(lambda v, limit: not v < limit),
    "maximum": _bound(lambda v, limit: not v > limit),
    "minLength": _length(lambda n, limit: n >= limit),
    "maxLength": _length(lambda n, limit: n <= limit),
    "pattern": _pattern,
}
