"""--capacity against the real servers, through the real `locust` command: short probes (1 s of
warm-up, 3 s measured), small agent counts, one search each. Full searches are benches
(bench/capacity_search.py). The search's plan, the USL fit and a probe's judgement without
servers: tests/test_capacity.py."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import psycopg
from psycopg import sql

from harness.report_shape import CapacityFile
from tests.report_conformance import nonconforming
from tests.support import free_port, own_master_port, read_report, wait_until

SHORT_PROBES = ("--capacity-warmup", "1", "--capacity-hold", "3", "--capacity-repeats", "1")
# One connection, a tool that holds it HOLD_MS working in its transaction, agents that never think:
# the connection is always busy, so each call waits for the N - 1 others' holds (Little's law: N
# agents = throughput × (wait + hold), the throughput one call per hold), and the rule on the
# pool's wait breaks past N = 1 + threshold / hold, between 5 and 6 agents here.
HOLD_MS = 100
WAIT_THRESHOLD_MS = 460
POOL_RULE = f"""
[[rule]]
name = "pool wait p50 < {WAIT_THRESHOLD_MS} ms"
metric = "pool_wait_p50_ms"
op = "<"
threshold = {WAIT_THRESHOLD_MS}

[[rule]]
metric = "success_rate"
op = ">"
threshold = 0.95
"""


def test_a_short_probe_search_finds_the_pool_limit_littles_law_gives(servers, schema, tmp_path, locust):
    sla_file = tmp_path / "pool.toml"
    sla_file.write_text(POOL_RULE, encoding="utf-8")
    report_path, junit_path = tmp_path / "capacity.json", tmp_path / "capacity.xml"
    # With --metrics-port, each probe serves /metrics while it runs and, unscraped, does not wait a
    # minute for a scrape after its verdict (the budget would cut the search short).
    done = locust.run(*servers.args(schema), "--capacity", "--users", "4", "--run-time", "100s", *SHORT_PROBES,
                      "--metrics-port", str(free_port()),
                      "--capacity-precision", "1", "--expect-capacity", "8", "--scenario", "pool_exhaustion",
                      "--pool-size", "1", "--hold-time", str(HOLD_MS), "--sla", str(sla_file),
                      "--report-json", str(report_path), "--junit-xml", str(junit_path), timeout=150)
    file: CapacityFile = read_report(report_path)
    assert nonconforming(file, CapacityFile) == []
    capacity = file["capacity"]
    probes = capacity["probes"]
    # The hold each call really kept the connection (one connection, always busy): at least the
    # tool's own, and what the limit follows from (no figure of this machine is asserted).
    hold_ms = 1000 / (sum(p["throughput_per_s"] for p in probes) / len(probes))
    assert hold_ms >= HOLD_MS, probes
    limit = 1 + WAIT_THRESHOLD_MS / hold_ms  # Little's law: the agents at which the rule breaks
    assert capacity["capacity"] <= limit < capacity["failing"] == capacity["capacity"] + 1, capacity["answer"]
    assert capacity["confirmed"] and not capacity["cut_short"]
    agents = [p["agents"] for p in probes]
    assert agents[:2] == [4, 8] and all(4 < n < 8 for n in agents[2:]), agents  # doubled from 4, then bisected
    for probe in probes:
        assert probe["audit_ok"] and probe["warmup_calls"] > 0  # audited whole, warm-up left out of the figures
        wait = next(r for r in probe["sla"] if r["metric"] == "pool_wait_p50_ms")["observed"]
        assert (wait < WAIT_THRESHOLD_MS) == probe["passed"] == (probe["agents"] <= capacity["capacity"]), probe
        if probe["passed"]:  # it measured its 3 s and the 20 calls the one tool needs
            assert probe["stopped"] == "evidence" and probe["duration_s"] >= 3 and probe["calls"] >= 20, probe
        else:
            assert probe["limiting"] == "pool wait", probe
    assert probes[1]["stopped"] == "window", probes[1]  # 8 agents wait 7 holds: the first window breaks
    # Below the 8 expected: exit code 1, and the JUnit case fails with the answer.
    assert done.returncode == file["exit_code"] == 1, done.stderr[-2000:]
    found = capacity["capacity"]
    assert (f"toolclash capacity: {found} agents, exactly: fails at {found + 1} (1 of 1 probes at each side);"
            f" at {found + 1}: pool wait") in done.stdout
    assert "expected at least 8: FAIL" in done.stdout
    [case] = ET.parse(junit_path).getroot().iter("testcase")
    assert case.get("name") == "capacity >= 8 agents" and case.find("failure") is not None


def test_a_probe_whose_audit_fails_fails_though_its_latencies_and_rates_hold(servers, schema, tmp_path, locust):
    """The careless tool server (docs/mcp.md's Careless mode) overwrites deductions on 2 hot
    accounts: fast replies, every call succeeded, and wrong data. The budget leaves room for about
    one probe: the first, at 8 agents, is the one judged here. On two load processes: the search's
    own forked workers leave, and each probe's run starts its own, on a port of its own."""
    sla_file = tmp_path / "fast.toml"
    sla_file.write_text('[[rule]]\nmetric = "tool_p95_ms"\nop = "<"\nthreshold = 2000\n\n'
                        '[[rule]]\nmetric = "success_rate"\nop = ">"\nthreshold = 0.95\n', encoding="utf-8")
    report_path = tmp_path / "capacity.json"
    done = locust.run(*servers.args(schema), "--capacity", "--users", "8", "--run-time", "12s", *SHORT_PROBES,
                      "--processes", "2", "--mcp-server", "careless", "--scenario", "optimistic_locking",
                      "--accounts", "2",
                      "--sla", str(sla_file), "--report-json", str(report_path), timeout=90)
    file = read_report(report_path)
    probe = file["capacity"]["probes"][0]
    assert probe["agents"] == 8 and not probe["passed"] and probe["limiting"] == "audit", probe
    assert all(rule["ok"] for rule in probe["sla"]) and probe["stopped"] == "evidence"
    assert "credits_conserved" in probe["failed_checks"] and not probe["audit_ok"]
    assert file["capacity"]["failing"] is not None and file["capacity"]["capacity"] < 8
    assert done.returncode == file["exit_code"], done.stderr[-2000:]
    assert probe["load_processes"] == 2 and "toolclash: error" not in done.stderr


def test_a_probe_that_gives_no_verdict_ends_the_search_in_one_line_exit_2(servers, locust):
    done = locust.run("--pg-dsn", "postgresql://postgres@127.0.0.1:1/test", "--redis-url", servers.redis_url,
                      "--capacity", "--users", "2", *SHORT_PROBES, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.startswith("toolclash: error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    [line] = lines
    assert "the probe at 2 agents gave no verdict" in line and "127.0.0.1:1/test" in line, line


def test_the_web_ui_shows_a_search_and_starts_no_test(servers, schema, tmp_path, locust):
    """Without --headless the search runs behind the web UI, whose address shows it as it goes,
    then its answer; a start is refused in one line. A budget of one probe or two."""
    sla_file = tmp_path / "pool.toml"
    sla_file.write_text(POOL_RULE, encoding="utf-8")
    run = locust.start(*servers.args(schema), "--capacity", "--users", "2", "--run-time", "12s", *SHORT_PROBES,
                       "--scenario", "pool_exhaustion", "--pool-size", "1", "--hold-time", str(HOLD_MS),
                       "--sla", str(sla_file), headless=False, web=True)
    run.wait_for_web_ui(30)
    under_way = _get(run.port, "/toolclash")
    assert "http-equiv='refresh'" in under_way and "under way" in under_way
    # The web UI's address shows the search, where Locust's page would show a start form (and no
    # tab until a test starts, which none does).
    assert "toolclash capacity" in _get(run.port, "/") and "under way" in _get(run.port, "/")
    body = urllib.parse.urlencode({"user_count": 3, "spawn_rate": 3}).encode()
    with urllib.request.urlopen(f"{run.url}/swarm", data=body, timeout=10) as answer:
        refused = json.loads(answer.read())
    assert not refused["success"] and refused["message"].startswith("toolclash: error: a --capacity search runs")
    done = wait_until(lambda: _answered(_get(run.port, "/toolclash")), "the search's answer", timeout=60,
                      every=0.5)
    assert "<h2>toolclash capacity: 2 agents</h2>" in done or "<h2>toolclash capacity: 4 agents</h2>" in done
    assert "data-chart='capacity_throughput'" in done and "http-equiv='refresh'" not in done
    assert run.terminate(30) == 0, run.stderr()[-2000:]
    assert "toolclash capacity verdict: PASS (exit code 0)" in run.stdout()
    assert "Ramping to" not in run.stdout(), "the web UI's own runner never ran an agent"


def _answered(page: str) -> str | None:
    return None if "under way" in page else page


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return answer.read().decode()



def test_on_kept_data_each_probe_is_judged_by_its_own_calls_identities(servers, schema, tmp_path, locust):
    """--capacity-data kept on a --tools-module's table (examples/seat_tools.py's bookings): the
    first probe seeds it, the later ones run on the rows it and they left, which none counts as
    invented or lost. Another session rewrites the seats of the third probe's bookings while it
    runs: its scoped check finds them, and it fails, its latencies and rates fine."""
    corrupted: list[int] = []
    corruptor = threading.Thread(target=_corrupt_the_third_run, args=(servers.pg_dsn, schema, corrupted), daemon=True)
    corruptor.start()
    report_path = tmp_path / "capacity.json"
    # Shorter probes yet (no warm-up, 2 s measured): three of them, the least that shows both.
    done = locust.run(*servers.args(schema), "--capacity", "--users", "2", "--run-time", "60s", "--capacity-warmup",
                      "0", "--capacity-hold", "2", "--capacity-repeats", "1", "--capacity-precision", "4",
                      "--capacity-data", "kept", "--tools-module",
                      "examples/seat_tools.py", "--sla", "sla/without_latency.toml", "--report-json", str(report_path),
                      timeout=90)
    corruptor.join(timeout=10)
    file: CapacityFile = read_report(report_path)
    assert nonconforming(file, CapacityFile) == [], done.stderr[-2000:]
    first, second, third = file["capacity"]["probes"]
    scoped = ["seat_tools.bookings_as_written", "seat_tools.bookings_not_of_failed_calls",
              "seat_tools.bookings_written"]
    not_judged = ["seat_tools.bookings_within_acknowledged", "seat_tools.seats_held_by_their_bookings"]
    assert first["data"] == "fresh" and first["passed"] and first["scoped_checks"] == first["not_judged"] == []
    # The first probe's bookings are there, in no call of the second's: neither invented nor lost.
    assert second["data"] == "kept" and second["passed"], second
    assert sorted(second["scoped_checks"]) == scoped and sorted(second["not_judged"]) == not_judged
    assert corrupted and corrupted[0] > 0, "the other session rewrote some of the third probe's bookings"
    assert third["data"] == "kept" and not third["passed"] and third["limiting"] == "audit", third
    assert third["failed_checks"] == ["seat_tools.bookings_as_written"] and third["stopped"] == "evidence"
    assert all(rule["ok"] for rule in third["sla"])
    assert file["capacity"]["capacity"] == 4 and file["capacity"]["failing"] == 8
    assert file["capacity"]["not_judged"] == not_judged and file["capacity"]["data"].startswith("kept")
    assert "not judged on kept data: seat_tools.bookings_within_acknowledged" in done.stdout


def _corrupt_the_third_run(pg_dsn: str, schema: str, corrupted: list[int]) -> None:
    """From a session of its own: once the search's third probe has written a few bookings, move
    each of them to another seat (its call said it wrote that seat); `corrupted`: how many."""
    runs: list[str] = []
    deadline = time.monotonic() + 80
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline and len(runs) < 3:
            try:
                row = conn.execute(sql.SQL("SELECT run_id FROM {} WHERE status = 'running'").format(
                    sql.Identifier(schema, "run_state"))).fetchone()
            except psycopg.errors.UndefinedTable:
                row = None
            if row and row[0] not in runs:
                runs.append(row[0])
            time.sleep(0.02)
        before = [op_id for (op_id,) in conn.execute(
            sql.SQL("SELECT op_id FROM {}").format(sql.Identifier(schema, "bookings")))]
        while time.monotonic() < deadline:
            updated = conn.execute(sql.SQL("UPDATE {} SET seat = seat + 1000 WHERE NOT (op_id = ANY(%s))").format(
                sql.Identifier(schema, "bookings")), (before,)).rowcount
            if updated >= 5:
                corrupted.append(updated)
                return
            time.sleep(0.1)


def test_on_a_master_each_probe_is_a_test_of_it_on_the_same_two_workers(servers, schema, tmp_path, locust):
    # One connection per worker, held HOLD_MS a call: an agent alone on its worker never waits for
    # the pool, two on a worker wait about a hold each call. Two agents (one a worker) pass, four
    # (two a worker) break the rule on the pool's wait: two probes, the answer 2. After a test, each
    # worker is ready for the next after --stop-timeout (Locust's): 1 s here, not locust.conf's 10.
    sla_file = tmp_path / "pool.toml"
    sla_file.write_text(POOL_RULE.replace(str(WAIT_THRESHOLD_MS), str(HOLD_MS // 2)), encoding="utf-8")
    report_path = tmp_path / "capacity.json"
    port = own_master_port()  # --master-bind-port P --master-port P
    master = locust.start("--master", *port[:2], "--expect-workers", "2", *servers.args(schema), "--capacity",
                          "--users", "2", "--run-time", "60s", *SHORT_PROBES, "--capacity-precision", "2",
                          "--stop-timeout", "1", "--scenario", "pool_exhaustion", "--pool-size", "1",
                          "--hold-time", str(HOLD_MS), "--sla", str(sla_file), "--report-json", str(report_path))
    workers = [locust.start("--worker", "--master-host", "127.0.0.1", *port[2:], *servers.args(schema), headless=False)
               for _ in range(2)]
    wait_until(lambda: "toolclash: capacity: probe 1 " in master.stdout(), "the first probe", timeout=60,
               still=master.running)
    assert all(worker.running() for worker in workers)  # the workers outlive a probe: the master's test ended
    done = master.finish(timeout=90)
    capacity = read_report(report_path)["capacity"]
    probes = capacity["probes"]
    assert [(p["agents"], p["passed"]) for p in probes] == [(2, True), (4, False)], probes
    assert (capacity["capacity"], capacity["failing"], done.returncode) == (2, 4, 0), done.stderr[-2000:]
    assert probes[1]["limiting"] == "pool wait", probes[1]
    # Each probe a test of its own: its own run (its data seeded afresh), on both workers.
    assert len({p["run_id"] for p in probes}) == 2 and all(p["load_processes"] == 2 for p in probes), probes
    assert "toolclash capacity: 2 agents, within 2 agents: fails at 4" in done.stdout
    assert "toolclash verdict:" not in done.stdout  # the search reports itself, not each test
    # The same two worker processes ran every probe, to the search's end, and quit with their master.
    assert [worker.wait(30) for worker in workers] == [0, 0]
    # Locust's master logs each worker (its id, a uuid per process) ready at the start and after each test.
    ready = re.findall(r"(\S+) \(index \d\) reported as ready", done.stderr)
    assert len(ready) >= 4 and len(set(ready)) == 2, ready
