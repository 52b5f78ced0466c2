"""The list_append scenario's audit: the run's calls, every attempt of each with its outcome,
and the lists PostgreSQL holds at the end (one last read of every key), checked as Elle would
against the consistency model the run's level promises (history_check). An anomaly that model
forbids fails the audit: the database broke its promise. One it allows (write skew under
snapshot isolation) is noted with its cycle, not failed. And every element a succeeded call
appended must be in its key's list, once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from db.audits import AuditContext, Check, listing
from history_check import Answer, build, check
from history_check.check import cycle_text
from history_check.toolclash import TOOL, call_events

__all__ = ["HISTORY_CHECK", "MODEL_OF_LEVEL", "audit_list_append", "model_for"]

# The check whose observed carries the checker's answer, which the report lifts into its own
# section (harness/verdict/report.py).
HISTORY_CHECK = "list_append_history"

# The model each of PostgreSQL's levels promises: its repeatable read is snapshot isolation.
MODEL_OF_LEVEL = {"read_committed": "read-committed", "repeatable_read": "snapshot-isolation",
                  "serializable": "serializable"}
# The checker's cases kept in the report, per anomaly type.
CASES_IN_REPORT = 3


def model_for(isolation: str, named: str = "") -> str:
    return named or MODEL_OF_LEVEL[isolation]


def _events(ctx: AuditContext, final: list[tuple[str, list[str]]]) -> Iterator[dict[str, Any]]:
    acknowledged = ctx.acknowledged_of([TOOL])
    calls: list[tuple[int, list[dict[str, Any]]]] = []
    not_ok: dict[str, tuple[str, str]] = {}  # element prefix -> (op id, the call's outcome as an op's type)
    for outcome, kind, op_ids in (("succeeded", "ok", acknowledged.succeeded), ("failed", "fail", acknowledged.failed),
                                  ("indeterminate", "info", acknowledged.indeterminate)):
        for op_id, value in zip(op_ids, op_ids.values()):
            events = list(call_events(str(op_id), outcome, value))
            if events:
                calls.append((value["started_ns"], events))
            if kind != "ok":
                not_ok[op_id.hex[:12]] = (str(op_id), kind)
    # A lane's calls one after another (each process's clock orders its own lanes).
    told = set()
    for _, events in sorted(calls, key=lambda call: call[0]):
        for event in events:
            told.update((k, v) for f, k, v in event["value"] if f == "append")
            yield event
    # A call that failed, or whose end is unknown, told what each of its attempts did or set out to
    # do, when it got so far (list_append says before its first statement): an element of it in the
    # lists that no attempt told is an attempt's append, rolled back (a failed call's: an aborted
    # read, G1a) or maybe committed (an indeterminate one's).
    for key, elements in final:
        for element in elements:
            call = not_ok.get(element.split(".")[0])
            if call is not None and (key, element) not in told:
                op, kind = call
                yield {"type": kind, "process": f"{op}~untold", "id": f"{op}#{element.split('.')[1]}",
                       "value": [["append", key, element]]}
    yield {"type": "ok", "process": "audit", "id": "final-read", "value": [["r", k, list(v)] for k, v in final]}


def audit_list_append(ctx: AuditContext, *, isolation: str, model: str) -> list[Check]:
    model = model_for(isolation, model)
    with ctx.in_schema(one_snapshot=True):
        final = [(key, list(elements)) for key, elements in
                 ctx.conn.execute("SELECT key, elements FROM append_lists ORDER BY key").fetchall()]
    began = time.perf_counter()
    ops = build(_events(ctx, final))
    # Real time is not inferred: the calls' values carry one process's clock each, not the run's.
    answer = check(ops, model, realtime=False)
    ctx.observe("history_check", time.perf_counter() - began)
    allowed = [t for t in answer.anomaly_types if t not in answer.forbidden]
    if allowed:
        ctx.note("list_append_allowed_anomalies",
                 f"{model} allows what the history shows: " + "; ".join(_described(answer, t) for t in allowed))
    return [_verdict(answer, model, isolation), _appends_kept(ops, final)]


def _described(answer: Answer, kind: str) -> str:
    text = f"{kind} ×{answer.counts[kind]}"
    cycle = cycle_text(answer.cases[kind][0])
    return text + (f" (e.g. {cycle})" if cycle else "")


def _verdict(answer: Answer, model: str, isolation: str) -> Check:
    summary = answer.as_dict()
    summary["anomalies"] = {t: cases[:CASES_IN_REPORT] for t, cases in answer.cases.items()}
    if answer.forbidden:
        detail = (f"{model} (what {isolation} promises) forbids what the history shows: "
                  + "; ".join(_described(answer, t) for t in answer.forbidden))
    elif answer.valid == "unknown":
        detail = (f"not measurable: the cycle search ran out of its budget in {answer.timed_out} of"
                  f" {answer.components} components; no forbidden anomaly found elsewhere")
    else:
        detail = (f"{answer.transactions} transactions, none showing an anomaly {model} forbids"
                  + (f" (allowed: {', '.join(t for t in answer.anomaly_types)})" if answer.anomaly_types else ""))
    return Check(HISTORY_CHECK, answer.valid is True, f"no anomaly {model} forbids",
                 {"forbidden": {t: answer.counts[t] for t in answer.forbidden}, "answer": summary}, detail)


def _appends_kept(ops: list[Any], final: list[tuple[str, list[str]]]) -> Check:
    """Every element a committed transaction appended is in its key's list exactly once."""
    held = Counter((key, element) for key, elements in final for element in elements)
    appended = [(op.id, k, v) for op in ops if op.type == "ok" for f, k, v in op.mops if f == "append"]
    wrong = [(op_id, k, v, held[(k, v)]) for op_id, k, v in appended if held[(k, v)] != 1]
    return Check("list_append_appends_kept", not wrong, len(appended), len(appended) - len(wrong),
                 ("elements appended by succeeded calls not held once: "
                  + listing("{0} appended {2} to {1}, held {3} times", wrong) + f" ({len(wrong)} in all)") if wrong
                 else f"each of the {len(appended)} elements succeeded calls appended is in its key's list, once"
                      f" ({len(final)} keys)")

