"""toolclash's list_append calls as list-append transactions. A call's value (what its tool
returns, tasks/list_append.py) is

    {"lane": "<agent>/<slot>", "started_ns": <monotonic ns of its last attempt>,
     "attempt": <its last attempt, from 1>, "txn": [[f, key, value], ...],
     "tried": [[<attempt>, [[f, key, value], ...]], ...]}

where `attempt` is its last attempt that ran its tool to its end or raised (its tries spent, or a
failure not retried), `txn` what that attempt did (reads with the lists they returned) or, when it
raised, set out to do (db.tool.Transaction.attempted: its appends' elements; reads None), and
`tried` what each earlier attempt set out to do before it was rolled back. Every attempt is one
transaction of the history: the earlier ones `fail`, the last one of the call's outcome (ok, fail,
or info: COMMIT in flight when the connection was lost). A failed call has all its attempts there,
`fail`. A lane's calls follow one another: it is the history's process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["TOOL", "call_events", "history_file_events"]

TOOL = "list_append"
_TYPES = {"succeeded": "ok", "failed": "fail", "indeterminate": "info", "ok": "ok", "fail": "fail", "info": "info"}


def call_events(op_id: str, outcome: str, value: Any, lane: str | None = None) -> Iterator[dict[str, Any]]:
    """The completions (Jepsen events without invocations) of one call's attempts: `outcome` the
    call's (succeeded/failed/indeterminate, or ok/fail/info). A failed call's are all `fail`. A
    call without a value (none of its attempts got as far as saying what it set out to do) has
    none."""
    if not isinstance(value, Mapping) or "txn" not in value:
        return
    lane = lane or str(value.get("lane", op_id))
    for attempt, mops in value.get("tried", ()):
        yield {"type": "fail", "process": f"{lane}~{op_id}~{attempt}", "id": f"{op_id}#{attempt}",
               "value": [[f, k, None if f == "r" else v] for f, k, v in mops]}
    kind = _TYPES[outcome]
    mops = value["txn"]
    if kind == "info":
        mops = [[f, k, None if f == "r" else v] for f, k, v in mops]
    yield {"type": kind, "process": lane if kind == "ok" else f"{lane}~{op_id}", "id": f"{op_id}#{value['attempt']}",
           "value": mops}


def history_file_events(lines: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """The list_append calls of a --history file's lines (one process's file, or the joined
    lines of a distributed run), in the file's order, as Jepsen events: an invocation per call
    (so that real-time order is the file's order) and the completions of its attempts."""
    for line in lines:
        if line.get("tool") != TOOL or line.get("type") not in ("invoke", "ok", "fail", "info"):
            continue
        lane = str(line.get("lane") or line.get("agent"))
        if line["type"] == "invoke":
            yield {"type": "invoke", "process": lane, "id": line["op"], "value": None}
            continue
        completions = list(call_events(line["op"], line["type"], line.get("value"), lane))
        if not completions:  # nothing of it ran to its end: it ends its invocation as a failure
            yield {"type": "fail", "process": lane, "id": line["op"], "value": []}
            continue
        *earlier, last = completions
        yield from earlier
        last["process"] = lane  # it completes the lane's invocation
        yield last
