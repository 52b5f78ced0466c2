"""Histograms merge exactly: percentiles of the merge are those of all the values together."""

from __future__ import annotations

import random

from harness.watch.histogram import Histogram
from harness.watch.metrics import Metrics


def _nearest_rank(values_ms: list[float], percent: float) -> float:
    ordered = sorted(values_ms)
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


def test_two_known_histograms_merge_to_the_percentiles_of_all_values():
    first, second = Histogram(), Histogram()
    for ms in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10):  # one worker: fast
        first.record(ms / 1000)
    for ms in (100, 200, 300, 400, 500):  # another: slow
        second.record(ms / 1000)
    first.merge(second)
    assert first.count == 15
    assert first.percentile_ms(50) == 8.0  # rank 8 of 15
    assert first.percentile_ms(95) == 500.0  # rank 15
    assert first.percentile_ms(66) == 10.0  # rank 10
    assert first.percentile_ms(70) == 100.0  # rank 11
    # Averaging the two workers' p50 (5.0 and 300.0) would have said 152.5.


def test_merged_percentiles_equal_those_of_the_concatenated_values_within_bucket_precision():
    rng = random.Random(3)
    parts = [[rng.lognormvariate(2, 1.2) for _ in range(2000)] for _ in range(3)]
    merged = Histogram()
    for part in parts:
        h = Histogram()
        for ms in part:
            h.record(ms / 1000)
        merged.merge(Histogram.from_dict(h.to_dict()))  # through the wire form, as from a worker
    everything = [ms for part in parts for ms in part]
    for percent in (50, 95, 99, 100):
        exact = _nearest_rank(everything, percent)
        assert abs(merged.percentile_ms(percent) - exact) <= max(0.001, exact * 0.005)


def test_metrics_survive_the_wire_form_and_add_up():
    import uuid

    from db.errors import Failure
    from transport.call_record import CallRecord, Outcome

    a, b = Metrics(), Metrics()
    succeeded = CallRecord("deduct_credits", "pg", uuid.uuid4(), Outcome.SUCCEEDED, 2, [Failure.VERSION_CONFLICT],
                           [0.001, 0.002], 0.010)
    failed = CallRecord("deduct_credits", "pg", uuid.uuid4(), Outcome.FAILED, 1, [Failure.DEADLOCK], [0.003], 1.2,
                        [1.0])
    a.record(succeeded)
    b.record(failed)
    total = Metrics.from_dict(a.to_dict())
    total.merge(Metrics.from_dict(b.to_dict()))
    stats = total.tools["deduct_credits"]
    assert (stats.calls, stats.succeeded, stats.failed, stats.retries, stats.attempts) == (2, 1, 1, 1, 3)
    assert total.conflicts["version_conflicts"] == 1 and total.conflicts["deadlocks"] == 1
    assert total.distributions["pool_wait"].count == 3
    acknowledged = total.acknowledged({"deduct_credits"})
    assert list(acknowledged.succeeded) == [succeeded.op_id] and list(acknowledged.failed) == [failed.op_id]
    assert not acknowledged.indeterminate and not acknowledged.rejected


def test_values_are_kept_with_their_ids_through_a_merge_of_other_shapes_and_the_wire():
    """A dict's keys are kept once per shape; ids from processes that met the shapes in another
    order, and values of every kind, come back as they were given, in JSON text for the audits."""
    import json
    import uuid

    from db.op_ids import OpIds

    given = [{"debit": 3, "amount": 7, "credit": None}, None, {"job": str(uuid.uuid4())}, 5, "text",
             {"job": None}, {"note": "a, \"quoted\" one", "n": [1, {"x": True}]}, {"debit": 1, "amount": 2.5}]
    here, there = OpIds(), OpIds()
    ids = [uuid.uuid4() for _ in given]
    for op_id, value in zip(ids[:4], given[:4]):
        here.add(op_id, value)
    for op_id, value in zip(ids[4:], given[4:]):  # the job's shape is this one's first
        there.add(op_id, value)
    here.extend(OpIds.from_wire(there.to_wire()))
    shipped = OpIds.from_wire(here.to_wire())
    assert list(shipped) == ids
    assert list(shipped.values()) == given
    assert [json.loads(text) for _, text in shipped.raw_with_values()] == given
    assert [raw for raw, _ in shipped.raw_with_values()] == [op_id.bytes for op_id in ids]


def test_the_mcp_layers_counts_survive_the_wire_form_and_add_up_like_the_others():
    """Over MCP, the server's own attempts and failures per tool, the re-issues, the isError
    replies, and each process's client counts (sessions, replies) merge as the calls do; the
    client's waits for an HTTP connection are not the pool's."""
    import uuid

    from db.errors import Failure
    from transport.call_record import CallRecord, Outcome

    workers = []
    for process in range(2):
        metrics = Metrics()
        ok = CallRecord("deduct_credits", "pg", uuid.uuid4(), Outcome.SUCCEEDED, 2, [Failure.CONNECTION_LOST],
                        [0.0, 0.0], server_attempts=3, server_failures=[Failure.DEADLOCK, Failure.VERSION_CONFLICT],
                        reissues=1)
        refused = CallRecord("deduct_credits", "pg", uuid.uuid4(), Outcome.FAILED, 1, [Failure.REFUSED], [0.0],
                             server_attempts=1, server_failures=[Failure.REFUSED], is_error_replies=1)
        for record in (ok, refused):
            metrics.record(record, "mcp_connection_wait")
        metrics.count_transport({"sessions_opened": 5, "sessions_closed": 5, "json_replies": 3 + process})
        workers.append(Metrics.from_dict(metrics.to_dict()))
    total = Metrics()
    for metrics in workers:
        total.merge(metrics)
    stats = total.tools["deduct_credits"]
    assert (stats.attempts, stats.server_attempts) == (6, 8)
    assert stats.server_failures == {"deadlocks": 2, "version_conflicts": 2, "refusals": 2}
    assert {k: v for k, v in total.transport.items() if v} == {
        "reissues": 2, "is_error_replies": 2, "calls_server_reported": 4, "sessions_opened": 10, "sessions_closed": 10,
        "json_replies": 7}
    assert total.distributions["mcp_connection_wait"].count == 6 and total.distributions["pool_wait"].count == 0
    assert total.conflicts["connection_errors"] == 2 and total.conflicts["deadlocks"] == 0, "what the agents saw"
