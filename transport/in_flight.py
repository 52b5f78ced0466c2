"""The calls an adapter has started and not yet reported, by record (an op id a tool server is
given may come twice at once).

Each call is reported once through the `call_finished` hook: at its own end, or, when the load
gives up waiting for it, as indeterminate at once (it may yet commit: its agent was not seen to
end it); its own end, if it ever comes, is then ignored.
"""

from __future__ import annotations

from time import monotonic_ns

from transport.call_record import CallRecord, Outcome
from transport.hooks import CallHook

__all__ = ["CallsInFlight"]


class CallsInFlight:
    def __init__(self, call_finished: CallHook) -> None:
        self._call_finished = call_finished
        self._calls: dict[int, CallRecord] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def started(self, record: CallRecord) -> None:
        self._calls[id(record)] = record

    def finished(self, record: CallRecord) -> None:
        """Report the call, unless it was abandoned (reported already)."""
        if self._calls.pop(id(record), None) is not None:
            self._call_finished.fire(record=record)

    def abandon(self) -> list[CallRecord]:
        """Report every call still in flight as indeterminate, now."""
        abandoned = list(self._calls.values())
        self._calls.clear()
        for record in abandoned:
            record.outcome = Outcome.INDETERMINATE
            record.duration_s = (monotonic_ns() - record.started_ns) / 1e9
            self._call_finished.fire(record=record)
        return abandoned
