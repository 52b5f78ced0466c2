"""What Locust is told of each call: the harness's listener (harness.run.locust_requests) on the
adapter's `call_finished` hook fires Locust's `request` event from the record, once per call,
never for an interrupted one. The adapter itself knows nothing of Locust (tests/test_layers.py).
No server: records built by hand, or calls that never reach one."""

from __future__ import annotations

import uuid

import gevent
import gevent.event
import pytest
from locust.event import EventHook

from db.durations import NO_TIME
from db.errors import Failure, VersionConflict
from db.tool import Tool
from harness.run.load import Load
from harness.run.locust_requests import CallFailed, call_failed
from tests.support import QUICK_RETRIES, settings_from
from transport.call_record import CallRecord, Outcome
from transport.in_process import ToolAdapter


class _Told:
    """The Load's hooks, as a run wires them, with Locust's `request` event recorded."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        request = EventHook()
        request.add_listener(lambda **kw: self.requests.append(kw))
        self.load = Load(settings_from(), request, 0)
        self.records: list[CallRecord] = []
        self.load.call_finished.add_listener(lambda record: self.records.append(record))


def _cut_off(record: CallRecord) -> CallRecord:
    record.cut_off = True
    return record


def _record(outcome: Outcome, failures=(), attempts: int = 1, exception: BaseException | None = None) -> CallRecord:
    return CallRecord("deduct_credits", "pg", uuid.uuid4(), outcome=outcome, attempts=attempts,
                      failures=list(failures), duration_s=0.25, exception=exception)


def test_a_succeeded_call_is_one_request_without_exception():
    told = _Told()
    record = _record(Outcome.SUCCEEDED)
    told.load.call_finished.fire(record=record)
    assert told.requests == [{"request_type": "pg", "name": "deduct_credits", "response_time": 250.0,
                              "response_length": 0, "exception": None, "context": {"op_id": str(record.op_id)}}]
    assert told.load.metrics.tools["deduct_credits"].succeeded == 1 and told.records == [record]


@pytest.mark.parametrize(("record", "text"), [
    (_record(Outcome.FAILED, [Failure.VERSION_CONFLICT] * 4, attempts=4, exception=VersionConflict("x")),
     "version_conflicts: gave up after 4 attempts"),
    (_record(Outcome.FAILED, [Failure.REFUSED]), "refusals"),
    (_record(Outcome.FAILED, [Failure.ERROR], exception=ZeroDivisionError()), "error: ZeroDivisionError"),
    (_record(Outcome.FAILED), "error: no attempt finished"),
    (_record(Outcome.INDETERMINATE, [Failure.CONNECTION_LOST]),
     "indeterminate: sent, and no answer says whether it was applied (a connection or reply lost)"),
    (_cut_off(_record(Outcome.INDETERMINATE)),
     "cut off: the run stopped its agent while it was applied; whether it was is unknown"),
])
def test_a_call_that_did_not_succeed_is_one_request_with_its_kind_of_failure(record, text):
    told = _Told()
    told.load.call_finished.fire(record=record)
    [request] = told.requests
    assert (request["request_type"], request["name"], request["response_time"], request["response_length"]) == \
        ("pg", "deduct_credits", 250.0, 0)
    assert request["context"] == {"op_id": str(record.op_id)}
    assert isinstance(request["exception"], CallFailed) and str(request["exception"]) == text
    assert request["exception"].__cause__ is record.exception
    assert told.records == [record]


def test_an_interrupted_call_is_no_request_but_still_a_record():
    told = _Told()
    record = _record(Outcome.INTERRUPTED)
    told.load.call_finished.fire(record=record)
    assert told.requests == [] and told.records == [record]
    assert told.load.metrics.tools["deduct_credits"].interrupted == 1


@pytest.mark.parametrize("outcome", [Outcome.FAILED, Outcome.INDETERMINATE])
def test_locust_is_told_of_every_call_that_did_not_succeed(outcome):
    """Even of one that ended before any attempt was classified: no failure, no exception."""
    told = call_failed(CallRecord("charge", "pg", uuid.uuid4(), outcome=outcome))
    assert isinstance(told, CallFailed) and str(told)


class _NeverLends:
    """A pool whose connection never comes: the agent waits in getconn."""

    def __init__(self) -> None:
        self.asked = gevent.event.Event()

    def getconn(self):
        self.asked.set()
        gevent.sleep(30)

    def putconn(self, conn) -> None:
        raise AssertionError("nothing was lent")


def test_through_the_adapter_an_abandoned_call_is_one_failed_request_and_an_interrupted_one_none():
    """The adapter on the Load's hooks: a call abandoned while in flight is told to Locust once,
    as no success, and not again when it ends; an agent stopped before COMMIT tells Locust nothing."""
    told = _Told()
    pool = _NeverLends()
    adapter = ToolAdapter(pool, None, QUICK_RETRIES, NO_TIME, told.load.call_finished, told.load.call_started)
    release = gevent.event.Event()
    slow = Tool("slow_write", lambda tx: release.wait(), backend="redis")  # no Redis reached: it only waits
    call = gevent.spawn(adapter.call, slow, "agent-1", 7)
    gevent.sleep(0.05)
    [abandoned] = adapter.abandon_calls_in_flight()
    assert [request["context"] for request in told.requests] == [{"op_id": str(abandoned.op_id)}]
    assert isinstance(told.requests[0]["exception"], CallFailed)
    release.set()
    assert call.get(timeout=5) is abandoned and len(told.requests) == 1 and told.records == [abandoned]

    waiting = gevent.spawn(adapter.call, Tool("bump", lambda tx: None), "agent-2", 8)
    assert pool.asked.wait(5)
    waiting.kill(timeout=5)
    [_, interrupted] = told.records
    assert interrupted.outcome is Outcome.INTERRUPTED and len(told.requests) == 1
