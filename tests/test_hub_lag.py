"""The report's `hub` section: the harness says when its own event loop fell behind (a tool
that holds the hub, too many agents on one process), warns, and keeps the verdict the data's."""

from __future__ import annotations

import textwrap

from harness.watch.hub_lag import FELL_BEHIND_S, HubLag, hub_note, hub_section
from tests.support import read_report

# Holds the hub of its process for STALL_S once, as CPU work that never yields would: nothing
# else in that process runs meanwhile, the heartbeats and the other agents' calls included.
STALL_S = 1.5
STALL = textwrap.dedent(f"""
    import time

    stalled = False


    def stall_the_hub(tx):
        global stalled
        tx.execute("SELECT 1")
        if not stalled:
            stalled = True
            deadline = time.monotonic() + {STALL_S}
            while time.monotonic() < deadline:
                pass
""")


def _run(locust, servers, schema, tmp_path, *extra: str) -> tuple[dict, str]:
    tools = tmp_path / "stall.py"
    tools.write_text(STALL)
    path = tmp_path / "report.json"
    done = locust.run("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
                      "--users", "4", "--spawn-rate", "4", "--run-time", "5s", "--tools-module", str(tools),
                      "--report-json", str(path), *extra, timeout=120)
    report = read_report(path)
    assert done.returncode == report["exit_code"], done.stderr[-3000:]
    return report, done.stdout


def _fell_behind_and_warned(report: dict, stdout: str, process: str) -> None:
    hub = report["hub"]
    assert hub["fell_behind"] and hub["threshold_s"] == FELL_BEHIND_S
    assert hub["worst_in"] == process and hub["worst_lag_s"] > FELL_BEHIND_S
    assert hub["processes"][process]["max_s"] > FELL_BEHIND_S
    [note] = report["evidence"]["notes"]
    assert note["kind"] == "hub_fell_behind" and "use --processes" in note["detail"]
    # A warning, not a failure: the run is evidence, the audit holds, the verdict is the data's.
    assert report["evidence"]["ok"] and report["audit"]["ok"] and report["verdict"] == "pass"
    assert "hub: FELL BEHIND" in stdout
    assert "[WARN] hub_fell_behind: the " in stdout and "fell behind by" in stdout


def test_a_tool_holding_the_hub_makes_the_run_fall_behind_and_warn(servers, schema, tmp_path, locust):
    report, stdout = _run(locust, servers, schema, tmp_path)
    _fell_behind_and_warned(report, stdout, "local runner")
    # The sampler shares the local runner's hub: one of its samples started late too, or it
    # was not due while the hub was held (a 1.5 s hold spans at least one sample's due time).
    assert report["hub"]["sampler"]["late_samples"] >= 1


def test_workers_holding_their_hubs_are_seen_by_the_master(servers, schema, tmp_path, locust):
    """The workers' probes ship to the master; a held worker's heartbeats come late."""
    report, stdout = _run(locust, servers, schema, tmp_path, "--processes", "2")
    workers = [f"worker {worker}" for worker in report["workers"]["shipped"]]
    assert set(report["hub"]["processes"]) == {"master", *workers}
    _fell_behind_and_warned(report, stdout, report["hub"]["worst_in"])
    gaps = report["hub"]["heartbeats"]["workers"]
    for worker in workers:  # each process runs the tool's module, and holds its hub once
        assert report["hub"]["processes"][worker]["max_s"] > FELL_BEHIND_S
        assert gaps[worker.removeprefix("worker ")]["longest_gap_s"] >= STALL_S


def _lag(*lags_s: float) -> HubLag:
    lag = HubLag()
    for at, lag_s in enumerate(lags_s):
        lag.record(lag_s, float(at))
    return lag


def test_lags_merge_exactly_across_shipments():
    shipped = HubLag.from_dict(_lag(0.001, 0.002).to_dict())
    shipped.merge(HubLag.from_dict(_lag(0.0005, 0.3).to_dict()))
    summary = shipped.summary()
    assert summary["wakeups"] == 4 and summary["max_s"] == 0.3 and summary["max_at_s"] == 1.0
    assert summary["p50_s"] == 0.001


def test_a_late_sampler_alone_is_falling_behind():
    rows = [{"t_s": 1.0, "sampler_late_s": 0.0}, {"t_s": 3.4, "sampler_late_s": 1.4},
            {"t_s": 4.4, "sampler_late_s": 0.0}]
    hub = hub_section({"local runner": _lag(0.001)}, rows, 1.0, None)
    assert hub["fell_behind"] and hub["worst_in"] == "server sampler" and hub["worst_at_s"] == 3.4
    assert hub["sampler"]["late_samples"] == 1 and hub["sampler"]["actual_interval_max_s"] == 2.4
    assert "server sampler's event loop fell behind by 1.4 s" in hub_note(hub)["detail"]
    kept_up = hub_section({"local runner": _lag(0.001)}, rows[:1], 1.0, None)
    assert not kept_up["fell_behind"] and hub_note(kept_up) is None
