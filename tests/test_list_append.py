"""The list_append scenario on the real PostgreSQL, at each isolation level (the isolation
matrix run of tests/test_scenarios.py, shared with the isolation scenario): its history, every
attempt of every call and the lists the server holds at the end, checked against the model each
level promises, shows none of the anomalies that model forbids; the report names what it found
by Elle's names; each level's --history file gives the same answer through
`python -m history_check`, and is written back as Elle's EDN. Whether the allowed anomalies show
in a short run is chance: they are asserted on written histories (tests/test_history_check.py).
The audit catches a corrupted history: an element no call appended, a failed call's append seen,
a succeeded one lost. The settings that refuse a model are checked without a run."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from db.durations import NO_TIME
from db.pool import SessionSettings, open_pool
from db.redis_keys import RedisKeys
from harness.config.option import BadOption
from history_check import parse
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
