"""The subset of EDN that Jepsen and Elle write their histories in: maps, vectors, lists, sets,
keywords (read as their names without the colon), strings, integers, floats, ratios not,
characters not; nil, true, false; symbols (as strings); tagged elements (#jepsen.history.Op{...}:
the tag is dropped) and discarded ones (#_). Written by hand rather than taken from a package:
the subset is small, and the one maintained EDN package (edn_format) pulls in ply and a parser
generator for it. EdnError on anything else.

`dumps` writes a history back as Elle reads it: maps with keyword keys, `:type :ok`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

__all__ = ["EdnError", "Keyword", "dumps", "loads_all"]


class EdnError(ValueError):
    pass


class Keyword(str):
    """A keyword written back with its colon (`dumps`); read ones are plain strings."""


_TOKEN = re.compile(r"""
    (?P<ws>[\s,]+|;[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<open>\#\{|[\[({])
  | (?P<close>[\])}])
  | (?P<discard>\#_)
  | (?P<tag>\#[A-Za-z][\w.*+!\-?$%&=<>/:]*)
  | (?P<atom>[^\s,;"\[\](){}]+)
""", re.VERBOSE)
_INT = re.compile(r"[+-]?\d+N?")
_FLOAT = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?M?")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
_CLOSE = {"[": "]", "(": ")", "{": "}", "#{": "}"}


def _tokens(text: str) -> Iterator[tuple[str, str, int]]:
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise EdnError(f"unreadable EDN at character {pos}: {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            yield kind, m.group(), pos
        pos = m.end()


def _atom(text: str, pos: int) -> Any:
    if text == "nil":
        return None
    if text in ("true", "false"):
        return text == "true"
    if text.startswith(":"):
        return text[1:]
    if _INT.fullmatch(text):
        return int(text.rstrip("N"))
    if _FLOAT.fullmatch(text):
        return float(text.rstrip("M"))
    if text.startswith("\\"):
        raise EdnError(f"EDN characters are not read (character {pos}: {text!r})")
    return text  # a symbol


def _string(token: str) -> str:
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)",
                  lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "u" else _ESCAPES.get(m.group(1),
                                                                                                   m.group(1)),
                  token[1:-1])


def loads_all(text: str) -> list[Any]:
    """Every top-level EDN value in `text`, in order, without recursion (a deep history reads)."""
    results: list[Any] = []
    # Each open collection: its opening token, its items, how many tags and discards wait on items.
    stack: list[tuple[str, list[Any], int]] = []
    discards = 0

    def emit(value: Any) -> None:
        nonlocal discards
        if discards:
            discards -= 1
            return
        (stack[-1][1] if stack else results).append(value)

    for kind, token, pos in _tokens(text):
        if kind == "open":
            stack.append((token, [], discards))
            discards = 0
        elif kind == "close":
            if not stack or _CLOSE[stack[-1][0]] != token:
                raise EdnError(f"unmatched {token!r} at character {pos}")
            opener, items, discards = stack.pop()
            if opener == "{":
                if len(items) % 2:
                    raise EdnError(f"a map with an odd number of forms, closed at character {pos}")
                emit({_key(items[i]): items[i + 1] for i in range(0, len(items), 2)})
            elif opener == "#{":
                emit(frozenset(_key(i) for i in items))
            else:
                emit(items)
        elif kind == "discard":
            discards += 1
        elif kind == "tag":
            continue  # the tagged element is read as itself
        elif kind == "string":
            emit(_string(token))
        else:
            emit(_atom(token, pos))
    if stack:
        raise EdnError(f"EDN ends inside an unclosed {stack[-1][0]!r}")
    return results


def _key(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_key(v) for v in value)
    if isinstance(value, dict):
        raise EdnError("a map used as a map key or set element is not read")
    return value


def dumps(value: Any) -> str:
    """One value as EDN: dict keys and Keyword values as keywords, other strings as strings."""
    if value is None:
        return "nil"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, Keyword):
        return ":" + value
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f":{k} {dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(dumps(v) for v in value) + "]"
    raise EdnError(f"cannot write {type(value).__name__} as EDN")
