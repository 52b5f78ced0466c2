"""The list_append scenario on the real PostgreSQL, at each isolation level (one isolation-matrix
run): its history, every attempt of every call and the lists the server holds at the end,
checked against the model each level promises, shows none of the anomalies that model forbids;
the report, the console and the matrix name what it found by Elle's names; each level's
--history file gives the same answer through `python -m history_check`, and is written back as
Elle's EDN. Whether the allowed anomalies show in a short run is chance: they are asserted on
written histories (tests/test_history_check.py). The settings that refuse a model are checked
without a run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.config.option import BadOption
from history_check import parse
from tests.support import ROOT, read_report, settings_from

MODELS = {"read_committed": "read-committed", "repeatable_read": "snapshot-isolation", "serializable": "serializable"}


def test_each_level_keeps_the_promise_of_its_model(servers, schema, tmp_path, locust):
    report_path, history = tmp_path / "matrix.json", tmp_path / "history.jsonl"
    done = locust.run(*servers.args(schema), "--users", "20", "--spawn-rate", "20", "--run-time", "4s",
                      "--isolation-matrix", "--scenario", "list_append", "--deadlock-timeout", "50",
                      "--report-json", str(report_path), "--history", str(history), timeout=240)
    matrix = read_report(report_path)
    assert [row["level"] for row in matrix["matrix"]] == list(MODELS), done.stderr[-2000:]
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
            assert report["conflicts"]["serialization_failures"] == 0 or retried
    assert "isolation level" in done.stdout


def test_a_model_the_audit_cannot_judge_is_refused():
    assert settings_from("--consistency-model", "strong-session-serializable").params.consistency_model == \
        "strong-session-serializable"
    for model, why in (("serialisable", "unknown consistency model 'serialisable'"),
                       ("strict-serializable", "forbids real-time anomalies")):
        with pytest.raises(BadOption, match=why):
            settings_from("--consistency-model", model)
