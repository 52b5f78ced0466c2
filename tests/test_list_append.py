"""The list_append scenario on the real PostgreSQL, at each isolation level (the isolation
matrix run of tests/test_scenarios.py, shared with the isolation scenario): its history, every
attempt of every call and the lists the server holds at the end, checked against the model each
level promises, shows none of the anomalies that model forbids; the report names what it found
by Elle's names; each level's --history file gives the same answer through
`python -m history_check`, and is written back as Elle's EDN. Whether the allowed anomalies show
in a short run is chance: they are asserted on written histories (tests/test_history_check.py).
The audit catches a corrupted history: an element no call appended, a failed call's append seen,
a succeeded one lost; and a call that failed finally has each of its attempts in the history, one
of whose appends seen is an aborted read naming it. The settings that refuse a model are checked without a run."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from db.durations import NO_TIME
from db.errors import Failure
from db.pool import SessionSettings, open_pool
from db.redis_keys import RedisKeys
from harness.config.option import BadOption
from history_check import parse
from history_check.toolclash import call_events
from tasks.list_append import element_of
from tasks.list_append_audit import audit_list_append
from tasks.scenarios import ScenarioParams, built_in_tools
from tests.support import (
    PREPARED,
    QUICK_RETRIES,
    ROOT,
    Recorder,
    acknowledged_from,
    context_for,
    prepared_schema,
    settings_from,
)
from transport.call_record import Outcome
from transport.in_process import ToolAdapter
from transport.retry import RetryPolicy

MODELS = {"read_committed": "read-committed", "repeatable_read": "snapshot-isolation", "serializable": "serializable"}


def assert_each_level_kept_its_models_promise(matrix: dict[str, Any], history: Path, tmp_path: Path) -> None:
    """An isolation matrix run with list_append and --history `history`
    (tests/test_scenarios.py's, which shares its run with the isolation scenario's)."""
    assert [row["level"] for row in matrix["matrix"]] == list(MODELS)
    for row in matrix["matrix"]:
        level, report = row["level"], row["report"]
        answer = report["history_check"]
        assert answer["consistency_model"] == MODELS[level]
        assert answer["forbidden_anomaly_types"] == [] and answer["valid"] is True, (level, answer)
        assert answer["stats"]["transactions"] > 100
        checks = {c["name"]: c for c in report["audit"]["checks"]}
        assert checks["list_append_history"]["ok"] and checks["list_append_history"]["observed"] == {}
        assert checks["list_append_appends_kept"]["ok"] and checks["list_append_appends_kept"]["expected"] > 0
        # The same history through the command: the run's own file, with real time (one process).
        path = f"{history}.{level}"
        edn = tmp_path / f"{level}.edn"
        cli = subprocess.run([sys.executable, "-m", "history_check", path, "-m", MODELS[level], "--json",
                              "--edn", str(edn)], capture_output=True, text=True, cwd=ROOT)
        from_file = json.loads(cli.stdout)
        assert cli.returncode == 0 and from_file["forbidden_anomaly_types"] == [], cli.stderr
        ops = parse(edn.read_text())
        assert len(ops) == from_file["stats"]["transactions"]
        if level == "serializable":
            assert answer["anomaly_types"] == []
            # Rolled-back attempts are in the history with the elements they tried.
            retried = [op for op in parse(open(path).read()) if op.type == "fail" and op.mops]
            assert report["tools"]["list_append"]["failures"].get("serialization_failures", 0) == 0 or retried


def test_a_model_the_audit_cannot_judge_is_refused():
    assert settings_from("--consistency-model", "strong-session-serializable").params.consistency_model == \
        "strong-session-serializable"
    for model, why in (("serialisable", "unknown consistency model 'serialisable'"),
                       ("strict-serializable", "forbids real-time anomalies")):
        with pytest.raises(BadOption, match=why):
            settings_from("--consistency-model", model)


def _audited(admin, schema, records) -> dict[str, Any]:
    context = context_for(admin, schema, lambda tools: acknowledged_from([r for r in records if r.tool in tools]))
    checks = audit_list_append(context, isolation="serializable", model="")
    return {check.name: check for check in checks}


def test_the_audit_catches_an_element_never_appended_a_failed_append_seen_and_an_append_lost(servers, admin, schema):
    """Calls made in process, audited clean; then the server's lists (or what the harness was told)
    corrupted three ways, each caught, and clean again once undone."""
    prepared_schema(admin, schema)
    recorder = Recorder()
    tool_ = built_in_tools(ScenarioParams(accounts=PREPARED.accounts, keys=RedisKeys(schema)))["list_append"]
    with closing(open_pool(servers.pg_dsn, SessionSettings(schema), size=2, timeout_s=5)) as pool:
        adapter = ToolAdapter(pool, None, QUICK_RETRIES, NO_TIME, recorder.call_finished)
        for seed in range(40):
            assert adapter.call(tool_, f"agent-{seed % 4}", seed).outcome is Outcome.SUCCEEDED
    records = recorder.records
    clean = _audited(admin, schema, records)
    assert all(check.ok for check in clean.values()), clean
    lists = sql.Identifier(schema, "append_lists")
    key, elements = admin.execute(sql.SQL("SELECT key, elements FROM {} WHERE cardinality(elements) > 1 LIMIT 1")
                                  .format(lists)).fetchone()

    def set_list(value: list[str]) -> None:
        admin.execute(sql.SQL("UPDATE {} SET elements = %s WHERE key = %s").format(lists), (value, key))

    set_list([*elements, "0123456789ab.1"])  # an element no call appended
    caught = _audited(admin, schema, records)["list_append_history"]
    assert not caught.ok and caught.observed["forbidden"] == {"garbage-read": 1} and "garbage-read" in caught.detail
    set_list(elements[:-1])  # a succeeded call's append lost
    lost = _audited(admin, schema, records)
    assert not lost["list_append_appends_kept"].ok and elements[-1] in lost["list_append_appends_kept"].detail
    set_list(elements)
    # The call that appended the list's last element told it failed (with what it did, or nothing):
    # its append is seen all the same.
    writer = next(r for r in records if r.op_id.hex[:12] == elements[-1].split(".")[0])
    for value in (writer.value, None):
        told_failed = [dataclasses.replace(r, outcome=Outcome.FAILED, value=value) if r is writer else r
                       for r in records]
        assert "G1a" in _audited(admin, schema, told_failed)["list_append_history"].observed["forbidden"], value
    assert all(check.ok for check in _audited(admin, schema, records).values())


def test_a_call_that_fails_finally_has_every_attempt_in_the_history_and_one_of_its_appends_seen_is_g1a(
        servers, admin, schema):
    """A call whose appends wait past the lock timeout on each of its three tries (another session
    holds the table) fails with no attempt run to its end: each attempt is still in its history,
    `fail`, with the elements it set out to append. An element of its second attempt put in a list
    by another session is an aborted read (G1a) naming that attempt, with all it set out to do."""
    prepared_schema(admin, schema)
    lists = sql.Identifier(schema, "append_lists")
    tool_ = built_in_tools(ScenarioParams(accounts=PREPARED.accounts, keys=RedisKeys(schema)))["list_append"]
    recorder = Recorder()
    op_id = uuid.uuid4()
    with closing(open_pool(servers.pg_dsn, SessionSettings(schema, lock_timeout_ms=50), size=1, timeout_s=5)) as pool, \
            psycopg.connect(servers.pg_dsn) as holder:
        holder.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(lists))  # reads pass, appends wait
        adapter = ToolAdapter(pool, None, RetryPolicy(max_tries=3, base_s=0.001, cap_s=0.01), NO_TIME,
                              recorder.call_finished)
        record = adapter.call_with(tool_, "agent-1", {"txn": [["r", 0], ["append", 1], ["append", 3]]}, op_id)
        holder.rollback()
    assert record.outcome is Outcome.FAILED and record.failures == [Failure.LOCK_TIMEOUT] * 3
    events = list(call_events(str(op_id), "failed", record.value))
    assert [(e["type"], e["id"]) for e in events] == [("fail", f"{op_id}#{n}") for n in (1, 2, 3)]
    for n, event in enumerate(events, 1):
        assert [(f, v) for f, _, v in event["value"]] == [("r", None), ("append", element_of(op_id, n)),
                                                          ("append", element_of(op_id, n))], event
    assert all(check.ok for check in _audited(admin, schema, recorder.records).values())
    _, key, element = events[1]["value"][1]
    admin.execute(sql.SQL("INSERT INTO {} (key, elements) VALUES (%s, ARRAY[%s])").format(lists), (key, element))
    caught = _audited(admin, schema, recorder.records)["list_append_history"]
    assert not caught.ok and caught.observed["forbidden"] == {"G1a": 1}, caught.detail
    (case,) = caught.observed["answer"]["anomalies"]["G1a"]
    assert case["element"] == element and case["writer"]["id"] == f"{op_id}#2", case
    assert case["writer"]["value"] == events[1]["value"], "the attempt as it was told, not only its element found"
