"""What Locust is told of each tool call: its `request` event, fired once per call that was made
(so the call shows in Locust's stats, CSV and HTML report). The adapter (db/) knows nothing of
Locust: the Load listens to the adapter's `call_finished` hook and fires the event from the
record (`told_to`)."""

from __future__ import annotations

from collections.abc import Callable

from locust.event import EventHook

from db.errors import Failure
from transport.call_record import CallRecord, Outcome

__all__ = ["CallFailed", "call_failed", "told_to"]


class CallFailed(Exception):
    """What Locust is told when a call did not succeed. Its text names the kind of failure only
    (Locust groups its error report by text: one line per kind, not one per account and version);
    the original exception is the cause."""


def told_to(request_event: EventHook) -> Callable[[CallRecord], None]:
    """A `call_finished` listener that fires `request_event` (Locust's `request`) for the call:
    once for each call, abandoned (indeterminate) ones included; never for one whose agent was
    stopped before COMMIT was sent (INTERRUPTED: rolled back, and no call in the counts)."""

    def tell(record: CallRecord) -> None:
        if record.outcome is Outcome.INTERRUPTED:
            return
        request_event.fire(
            request_type=record.backend,
            name=record.tool,
            response_time=record.duration_s * 1000.0,
            response_length=0,
            exception=None if record.outcome is Outcome.SUCCEEDED else call_failed(record),
            context={"op_id": str(record.op_id)},
        )

    return tell


def call_failed(record: CallRecord) -> CallFailed:
    """What Locust is told of any call that did not succeed, whatever its record holds."""
    last = record.failures[-1] if record.failures else None
    if record.cut_off:
        what = "cut off: the run stopped its agent while it was applied; whether it was is unknown"
    elif record.outcome is Outcome.INDETERMINATE:
        what = "indeterminate: sent, and no answer says whether it was applied (a connection or reply lost)"
    elif last is None:  # ended by something other than a classified failure
        what = "error: no attempt finished"
    elif last is Failure.ERROR:
        what = f"error: {type(record.exception).__name__}"
    elif last.retryable:
        what = f"{last.value}: gave up after {record.attempts} attempts"
    else:
        what = last.value
    failed = CallFailed(what)
    failed.__cause__ = record.exception
    return failed
