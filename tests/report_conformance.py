"""Whether a report has exactly the shape harness.report_shape declares: every key a TypedDict
requires is there, no key it does not declare is, and each value is of its declared type, all the
way down. Used on real reports (tests/test_report_shape.py, and the runs that write one), so that
the types and docs/report.md cannot drift from what a run writes."""

from __future__ import annotations

import types
from typing import Any, Literal, Union

from typing_extensions import NotRequired, ReadOnly, Required, get_args, get_origin, get_type_hints, is_typeddict

_WRAPPERS = (NotRequired, Required, ReadOnly)


def nonconforming(value: object, expected: Any, where: str = "report") -> list[str]:
    """Where `value` departs from the type `expected`, one line each: empty when it conforms."""
    origin = get_origin(expected)
    if expected is Any:
        return []
    if origin in _WRAPPERS:
        return nonconforming(value, get_args(expected)[0], where)
    if is_typeddict(expected):
        return _typeddict(value, expected, where)
    if origin in (Union, types.UnionType):
        if any(not nonconforming(value, alternative, where) for alternative in get_args(expected)):
            return []
        return [f"{where}: {value!r:.80} is none of {expected}"]
    if origin is Literal:
        return [] if value in get_args(expected) else [f"{where}: {value!r} is not one of {get_args(expected)}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not a list"]
        return [line for index, item in enumerate(value)
                for line in nonconforming(item, get_args(expected)[0], f"{where}[{index}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not a mapping"]
        key_type, value_type = get_args(expected)
        return [line for key, item in value.items()
                for line in [*nonconforming(key, key_type, f"{where} key {key!r}"),
                             *nonconforming(item, value_type, f"{where}.{key}")]]
    return _plain(value, expected, where)


def _typeddict(value: object, expected: Any, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: {type(value).__name__}, not a {expected.__name__}"]
    declared = get_type_hints(expected, include_extras=True)
    lines = [f"{where}.{key}: missing ({expected.__name__} requires it)"
             for key in sorted(expected.__required_keys__ - value.keys())]
    lines += [f"{where}.{key}: not declared in {expected.__name__}" for key in sorted(value.keys() - declared.keys())]
    for key in value.keys() & declared.keys():
        lines += nonconforming(value[key], declared[key], f"{where}.{key}")
    return lines


def _plain(value: object, expected: Any, where: str) -> list[str]:
    if expected is type(None):
        fits = value is None
    elif expected is float:  # an int is a float's value too (PEP 484), a bool is neither
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif expected is int:
        fits = isinstance(value, int) and not isinstance(value, bool)
    elif expected in (str, bool):
        fits = isinstance(value, expected)
    else:
        raise TypeError(f"{where}: the check knows no type {expected!r}: teach it, here")
    return [] if fits else [f"{where}: {value!r:.80} is not of type {expected.__name__}"]
