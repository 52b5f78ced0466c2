"""History files: Elle's EDN (one op map a line, or one vector of them), JSON (the same two
shapes), and toolclash's --history JSON lines (its list_append calls); and the EDN that Elle
reads, written from the ops checked here."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from history_check.edn import EdnError, Keyword, dumps, loads_all
from history_check.history import BadHistory, Op, build
from history_check.toolclash import history_file_events

__all__ = ["FORMATS", "detect", "parse", "to_edn"]

FORMATS = ("auto", "edn", "json", "toolclash")


def detect(text: str) -> str:
    """The format of a history's text: toolclash's when its JSON lines name a tool or a run,
    JSON when it parses as JSON (whole or by its first line), else EDN."""
    stripped = text.lstrip()
    first = stripped.split("\n", 1)[0]
    for candidate in (stripped, first):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict) and ("tool" in value or value.get("type") == "run"):
            return "toolclash"
        return "json"
    return "edn"


def _events(values: list[Any], what: str) -> list[dict[str, Any]]:
    """One vector of op maps, or op maps one after another."""
    if len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    for i, value in enumerate(values):
        if not isinstance(value, dict):
            raise BadHistory(f"{what}: op {i} is not a map: {str(value)[:80]}")
    return values


def parse(text: str, fmt: str = "auto") -> list[Op]:
    """The ops of a history's text. BadHistory (a ValueError) when it cannot be read."""
    fmt = detect(text) if fmt == "auto" else fmt
    if fmt == "edn":
        try:
            values = loads_all(text)
        except EdnError as exc:
            raise BadHistory(f"EDN: {exc}") from None
        return build(_events(values, "EDN"))
    lines = _json_values(text)
    if fmt == "toolclash":
        return build(history_file_events(_events(lines, "toolclash history")))
    if fmt == "json":
        return build(_events(lines, "JSON"))
    raise BadHistory(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def _json_values(text: str) -> list[Any]:
    try:
        return [json.loads(text)]
    except ValueError:
        pass
    values = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                values.append(json.loads(line))
            except ValueError as exc:
                raise BadHistory(f"JSON line {number}: {exc}") from None
    return values


def _edn_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_edn_value(v) for v in value]
    return value


def to_edn(ops: Iterable[Op]) -> str:
    """The ops as Elle's EDN history, one map a line: each op an invocation (reads nil) and its
    completion, indexed; an op never completed only invoked. Processes are numbered 0, 1, ... in
    the order they first appear; `id` keeps the op's own name."""
    lines = []
    index = 0
    for op in sorted(ops, key=lambda o: o.invoked_at):
        lines.append((op.invoked_at, 0, op))
        if op.completed_at is not None:
            lines.append((op.completed_at, 1, op))
    lines.sort(key=lambda line: (line[0], line[1]))
    out = []
    processes: dict[Any, int] = {}  # Jepsen's processes are integers: each of ours gets one, in order
    for _, completion, op in lines:
        value = [[Keyword(f), _edn_value(k), None if f == "r" and not completion else _edn_value(v)]
                 for f, k, v in op.mops]
        process = processes.setdefault(op.process, len(processes))
        out.append(dumps({"index": index, "type": Keyword(op.type if completion else "invoke"), "process": process,
                          "f": Keyword("txn"), "value": value, "id": op.id}))
        index += 1
    return "\n".join(out) + ("\n" if out else "")
