"""What a stateless-era (2026-07-28) request mirrors of its body into HTTP headers, so that
intermediaries can route it without reading the body: `Mcp-Name` (the tool's name) and one
`Mcp-Param-{Name}` per argument its tool's `inputSchema` marks with `x-mcp-header`; each value
as is when it is plain visible ASCII, else in the specification's `=?base64?…?=` form.

A tool whose `x-mcp-header` marks break the specification's constraints is invalid, and the
client must not use it (`InvalidToolSchema`, raised when its tools are listed).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["InvalidToolSchema", "ParamHeader", "header_value", "param_headers"]

_SENTINEL_START, _SENTINEL_END = "=?base64?", "?="
_PRINTABLE_ASCII = re.compile("[ -~]*")  # space to tilde: a value a header carries as it is
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110's field name, 1*tchar
_PRIMITIVES = ("string", "integer", "boolean")


class InvalidToolSchema(ValueError):
    pass


@dataclass(frozen=True)
class ParamHeader:
    """An argument mirrored into the header `Mcp-Param-{name}`: the one at `path` (the chain of
    `properties` keys from the schema's root to it)."""

    path: tuple[str, ...]
    name: str

    @property
    def header(self) -> str:
        return f"Mcp-Param-{self.name}"

    def value_in(self, arguments: Mapping[str, Any]) -> str | None:
        """The header's value for these arguments; None when it is to be left out (no value at
        the path, or a null one)."""
        value: Any = arguments
        for key in self.path:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, str)):
            return header_value(str(value))
        return None


def header_value(value: str) -> str:
    """`value` as a header carries it (the specification's Value Encoding)."""
    plain = (_PRINTABLE_ASCII.fullmatch(value) is not None and value == value.strip()
             and not (value.startswith(_SENTINEL_START) and value.endswith(_SENTINEL_END)))
    if plain:
        return value
    return _SENTINEL_START + base64.b64encode(value.encode("utf-8")).decode("ascii") + _SENTINEL_END


def param_headers(input_schema: Mapping[str, Any]) -> list[ParamHeader]:
    """Every `x-mcp-header` mark of a tool's input schema; InvalidToolSchema naming the first
    that breaks a constraint: a name that is no HTTP token or is used twice (in any case), a
    parameter of no primitive type (string, integer, boolean), or a mark not reached from the
    root through `properties` keys alone."""
    found: list[ParamHeader] = []

    def visit(node: Any, path: tuple[str, ...], reachable: bool) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item, path, False)
            return
        if not isinstance(node, Mapping):
            return
        if "x-mcp-header" in node:
            found.append(_checked(node, path, reachable, found))
        for key, child in node.items():
            if key == "properties" and reachable and isinstance(child, Mapping):
                for name, schema in child.items():
                    visit(schema, (*path, name), True)
            elif key != "x-mcp-header":
                visit(child, path, False)

    visit(input_schema, (), True)
    return found


def _checked(node: Mapping[str, Any], path: tuple[str, ...], reachable: bool,
             found: list[ParamHeader]) -> ParamHeader:
    name = node["x-mcp-header"]
    where = ".".join(path) or "the schema's root"
    if not reachable or not path:
        raise InvalidToolSchema(f"x-mcp-header on {where}: not reached through `properties` alone")
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise InvalidToolSchema(f"x-mcp-header {name!r} on {where}: not an HTTP field name")
    if any(other.name.lower() == name.lower() for other in found):
        raise InvalidToolSchema(f"x-mcp-header {name!r} on {where}: used twice")
    if node.get("type") not in _PRIMITIVES:
        raise InvalidToolSchema(f"x-mcp-header {name!r} on {where}: its type is {node.get('type')!r},"
                                f" not one of {', '.join(_PRIMITIVES)}")
    return ParamHeader(path, name)
