"""The web UI as a user sees it, in a real browser (headless Chromium): ramps started from Locust's
form, toolclash's tab with numbers that move, the verdict, the SLA table and the audit after each
stop, and the agents' turns and the workflows' stale writes live and after, checked against the JSON
report; and Ctrl-C in the middle of a ramp.

Screenshots of what the browser showed are written to tests/screenshots/ (not kept by git; the
README and docs/observing.md show one of them, copied to docs/)."""

from __future__ import annotations

import html
import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from db.connect import redact
from harness.web.panel import load_series
from tests.support import ROOT, own_master_port, read_report, rows_in, wait_until

SCREENSHOTS = ROOT / "tests" / "screenshots"
HOT = ("--scenario", "optimistic_locking,deadlock", "--accounts", "6", "--deadlock-timeout", "50")



def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except Exception:  # the page is being re-rendered: ask again
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _http(port: int, path: str, post: bool = False, **form: object):
    body = urllib.parse.urlencode(form).encode() if form or post else None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=body, timeout=60) as answer:
        return json.loads(answer.read() or b"null") if answer.headers.get_content_type() == "application/json" else None


class Toolclash:
    """A `locust` process, with the web UI unless told --headless, on a web port of its own (a
    headless run still must not take another run's port), started through the `locust` fixture
    (a process group of its own, for Ctrl-C; its output in files)."""

    def __init__(self, locust, tmp_path: Path, *args: str) -> None:
        self.report_path = tmp_path / "report.json"
        self._run = locust.start("--report-json", str(self.report_path), *args, headless=False, web=True)
        self.port = self._run.port
        if "--headless" not in args:
            self._run.wait_for_web_ui(60)

    @property
    def url(self) -> str:
        return f"{self._run.url}/"

    def data(self) -> dict:
        return _http(self.port, "/toolclash/data")

    def ctrl_c(self, timeout_s: float = 90) -> int:
        """SIGINT to the whole process group, as a terminal's Ctrl-C sends it."""
        return self._run.ctrl_c(timeout_s)

    def stdout(self) -> str:
        return self._run.stdout()

    def stderr(self) -> str:
        return self._run.stderr()

    def close(self) -> None:
        self._run.close()


@pytest.fixture
def servers_args(servers, schema):
    return ["--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema]


# -- driving the page ---------------------------------------------------------------------------

def _type(browser, name: str, value: int) -> None:
    field = browser.find_element(By.NAME, name)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value))
    assert field.get_attribute("value") == str(value)


def _start_ramp(browser, agents: int) -> None:
    """Locust's start form: on the first page, or in the dialog its NEW button opens."""
    browser.switch_to.default_content()
    if not browser.find_elements(By.NAME, "userCount"):
        _button(browser, "NEW").click()
        _wait_for(lambda: browser.find_elements(By.NAME, "userCount"), 10, "the start form")
    _type(browser, "userCount", agents)
    _type(browser, "spawnRate", agents)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


def _button(browser, text: str):
    return _wait_for(lambda: next(b for b in browser.find_elements(By.TAG_NAME, "button")
                                  if b.text.strip().upper() == text and b.is_enabled()), 30, f"the {text} button")


def _open_tab(browser, title: str) -> None:
    browser.switch_to.default_content()
    _wait_for(lambda: next(t for t in browser.find_elements(By.CSS_SELECTOR, "[role=tab]")
                           if t.text.strip().lower() == title), 30, f"the {title} tab").click()


def _into_panel(browser) -> None:
    browser.switch_to.default_content()
    frame = _wait_for(lambda: browser.find_element(By.ID, "toolclash-panel"), 10, "toolclash's panel in the tab")
    browser.switch_to.frame(frame)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _rows(browser, table: str, key: str) -> list[tuple[str, dict[str, str]]]:
    """A table's rows as shown, read at once (the panel redraws it as the figures change):
    (the row's key, {the cell's column or position: its text})."""
    return [(key_, cells) for key_, cells in browser.execute_script("""
        return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr')).map((row) => [
            row.getAttribute(arguments[1]),
            Object.fromEntries(Array.from(row.cells).map(
                (cell, i) => [cell.dataset.column || String(i), cell.innerText]))]);
        """, table, key)]


def _figures(browser) -> dict[str, dict[str, int]]:
    """The figures table as shown: {tool: {column: number}}."""
    return {tool: {column: int(_number(text)) for column, text in cells.items() if column != "0"}
            for tool, cells in _rows(browser, "#tc-figures", "data-tool")}


def _status(browser) -> str:
    return browser.find_element(By.ID, "tc-status").get_attribute("data-status")


def _screenshot(browser, name: str) -> None:
    """The whole page: the window is made as tall as the panel first (its content's height: the
    frame itself is fitted to it only every 0.5 s, and just after a reload is not yet)."""
    browser.switch_to.default_content()
    height = browser.execute_script(
        "const f = document.getElementById('toolclash-panel');"
        "const panel = f && f.contentDocument ? f.contentDocument.documentElement.scrollHeight : 0;"
        "return Math.max(document.body.scrollHeight, f ? f.getBoundingClientRect().top + panel + 40 : 0);")
    browser.set_window_size(1400, max(1000, int(height) + 120))
    time.sleep(0.8)  # the panel re-fits its frame every 0.5 s
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / name))
    browser.set_window_size(1400, 1000)


def _check_verdict_against(browser, report: dict) -> None:
    """The verdict, the SLA table, the audit and the final figures on the page are the report's."""
    verdict = browser.find_element(By.ID, "tc-verdict")
    assert verdict.text == report["verdict"].upper()
    colour = verdict.value_of_css_property("color")
    assert colour == ("rgba(26, 127, 55, 1)" if report["verdict"] == "pass" else "rgba(207, 34, 46, 1)"), colour
    assert report["run"]["run_id"] in browser.find_element(By.ID, "tc-status-text").text
    shown_rules = _rows(browser, "#tc-sla", "data-rule")
    assert [name for name, _ in shown_rules] == [rule["name"] for rule in report["sla"]]
    for (_, cells), rule in zip(shown_rules, report["sla"]):
        assert cells["3"] == ("ok" if rule["ok"] else "FAIL"), (rule, cells)
        assert cells["2"] == f"{rule['op']} {rule['threshold']:,g}", (rule, cells)
        if rule["observed"] is None:
            assert cells["1"] == "–"
        else:
            assert _number(cells["1"]) == pytest.approx(rule["observed"], rel=1e-3), (rule, cells)
    shown_checks = _rows(browser, "#tc-audit", "data-check")
    assert [name for name, _ in shown_checks] == [c["name"] for c in report["audit"]["checks"]]
    for (_, cells), check in zip(shown_checks, report["audit"]["checks"]):
        assert cells["3"] == ("ok" if check["ok"] else "FAIL"), (check, cells)
    cards = dict(browser.execute_script("return Array.from(document.querySelectorAll('[data-figure]'))"
                                        ".map((card) => [card.dataset.figure, card.querySelector('b').innerText]);"))
    assert _number(cards["pool_wait_p95_ms"]) == pytest.approx(report["latency_ms"]["pool_wait"]["p95"], rel=1e-3)
    for key in ("deadlocks", "longest_blocking_chain"):
        assert _number(cards[key]) == report["server_counters"][key], key
    assert _number(cards["lock_waiters"]) == report["server_counters"]["peak_lock_waiters"]
    figures = _figures(browser)
    for name, tool in report["tools"].items():
        for column in ("calls", "succeeded", "failed", "indeterminate", "cut_off", "retries"):
            assert figures[name][column] == tool[column], (name, column)
        for kind, count in tool["failures"].items():
            if kind != "errors":
                assert figures[name][kind] == count, (name, kind)
    for kind, count in report["conflicts"].items():
        assert figures["all tools"][kind] == count, kind
    assert figures["all tools"]["calls"] == sum(t["calls"] for t in report["tools"].values())


def _turns(browser) -> dict[str, str]:
    """The turns table's one row as shown: {column: text}."""
    ((_, cells),) = _rows(browser, "#tc-turns", "data-turns")
    return cells


def _check_turns_against(browser, turns: dict) -> None:
    """The turns table on the page is the report's `turns`, figure by figure."""
    shown = _turns(browser)
    assert shown["calls_per_turn"] == ", ".join(f"{calls}: {n:,}" for calls, n in turns["calls_per_turn"].items())
    assert set(turns["calls_per_turn"]) == {"1", "2"} and turns["same_key_pairs"] > 0
    for column in ("turns", "calls", "same_key_pairs", "overlapping_same_key_pairs", "collisions"):
        assert _number(shown[column]) == turns[column], column
    assert _number(shown["with_conflicts"].split(" (")[0]) == turns["with_conflicts"]
    for statistic in ("p50", "p95", "p99", "max"):
        assert _number(shown[statistic]) == pytest.approx(turns["latency_ms"][statistic], rel=1e-3), statistic


def _check_workflows_against(browser, workflows: dict) -> None:
    """The workflows table on the page is the report's `workflows`: a row per write tool, then all
    of them; versions behind n/a where the tool's data has none (the queue's), never 0."""
    shown = dict(_rows(browser, "#tc-workflows", "data-tool"))
    expected = {**workflows["tools"], "all write tools": workflows}
    assert list(shown) == list(expected)
    for tool, figures in expected.items():
        cells = shown[tool]
        assert _number(cells["writes"]) == figures["writes"], tool
        assert _number(cells["stale_writes"].split(" (")[0]) == figures["stale_writes"], tool
        for statistic in ("p50", "p95", "max"):
            behind = figures["behind_versions"]
            if behind is None:
                assert cells[f"behind_{statistic}"] == "n/a", tool
            else:
                assert _number(cells[f"behind_{statistic}"]) == behind[statistic], (tool, statistic)
            assert _number(cells[f"ms_{statistic}"]) == pytest.approx(figures["stale_ms"][statistic], rel=1e-3)


def _wait_for_report(path: Path, other_than: str | None) -> dict:
    def fresh():
        if not path.exists():
            return None
        report = read_report(path)
        return report if report["run"]["run_id"] != other_than else None
    return _wait_for(fresh, 60, "the JSON report")


# -- the tests ----------------------------------------------------------------------------------

def test_two_ramps_in_the_browser_show_the_figures_the_verdict_and_the_audit(browser, servers, servers_args, tmp_path,
                                                                            locust):
    # Turns of one or two calls, the second taking the first's key half the time: the turns
    # table has every figure to show.
    run = Toolclash(locust, tmp_path, *servers_args, *HOT, "--calls-per-turn", "1:1,2:1", "--same-key", "0.5")
    try:
        browser.set_window_size(1400, 1000)
        browser.get(run.url)
        # The agents' host is the servers, not "None"; and no password is shown.
        header = _wait_for(lambda: browser.find_element(By.TAG_NAME, "header").text, 10, "Locust's header")
        assert redact(servers.pg_dsn) in header and redact(servers.redis_url) in header and "None" not in header

        verdicts, run_id = [], None
        for ramp, agents in ((1, 4), (2, 8)):
            _start_ramp(browser, agents)
            _open_tab(browser, "toolclash")
            _into_panel(browser)
            _wait_for(lambda: _status(browser) == "running" and browser.find_element(By.TAG_NAME, "body")
                      .get_attribute("data-ramp") == str(ramp), 30, f"ramp {ramp} running")
            # The previous ramp's verdict is gone with the new ramp.
            assert browser.find_element(By.ID, "tc-outcome").get_attribute("hidden") is not None
            assert browser.find_element(By.ID, "tc-verdict").text == ""
            first = _wait_for(lambda: _figures(browser)["all tools"]["calls"], 30, "the first calls")
            moved = _wait_for(lambda: (lambda n: n if n > first else None)(_figures(browser)["all tools"]["calls"]),
                              30, "the calls to move")
            assert moved > first
            # The tool rows add up to the total row, and the conflicts happen: 6 accounts are hot.
            figures = _figures(browser)
            total = figures.pop("all tools")
            assert sum(row["calls"] for row in figures.values()) == total["calls"]
            _wait_for(lambda: (lambda all_tools: all_tools["version_conflicts"] + all_tools["deadlocks"])(
                _figures(browser)["all tools"]), 30, "conflicts")
            _wait_for(lambda: int(browser.find_element(By.CSS_SELECTOR, "svg[data-chart=calls_per_s]")
                                  .get_attribute("data-points")) >= 2, 30, "the charts to draw")
            for figure in ("pool_wait_p95_ms", "lock_waiters", "longest_blocking_chain", "deadlocks"):
                assert browser.find_element(By.CSS_SELECTOR, f"[data-figure={figure}] b").text != ""
            # The turns move live, with turns of one call and of two.
            _wait_for(lambda: (lambda turns: _number(turns["turns"]) > 0 and re.fullmatch(r"1: [\d,]+, 2: [\d,]+",
                                                                                 turns["calls_per_turn"]))(
                _turns(browser)), 30, "live turns of one and of two calls")
            _screenshot(browser, f"ramp{ramp}-running.png")

            browser.switch_to.default_content()
            _button(browser, "STOP").click()
            # When the verdict is in, the page reloads once (Locust's own page would stay at
            # STOPPING): then Locust's header says STOPPED and offers a NEW test.
            _wait_for(lambda: browser.execute_script("return document.documentElement.dataset.toolclashVerdict")
                      == f"{ramp}:done", 90, f"ramp {ramp}'s verdict")
            # The page reloads once the runner is stopped (tab.js): reloaded while it cleaned up, it
            # stayed at CLEANUP (Locust's page asks for the state only while a test runs). The
            # failure names what the header said.
            header = []  # what Locust's header said last: the failure names it

            def stopped() -> bool:
                header[:] = [browser.find_element(By.TAG_NAME, "header").text]
                return "STOPPED" in header[0]
            try:
                _wait_for(stopped, 30, f"Locust's STOPPED (ramp {ramp})")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; its header said {header}") from None
            _button(browser, "NEW")
            _into_panel(browser)
            _wait_for(lambda: _status(browser) in ("pass", "fail"), 10, f"ramp {ramp}'s verdict in the panel")
            report = _wait_for_report(run.report_path, run_id)
            run_id = report["run"]["run_id"]
            assert report["run"]["agents"] == agents
            _check_verdict_against(browser, report)
            _check_turns_against(browser, report["turns"])
            verdicts.append(report)
            _screenshot(browser, f"ramp{ramp}-verdict.png")

            # The summary went through logging: Locust's Logs tab shows it.
            _open_tab(browser, "logs")
            logs = _wait_for(lambda: (lambda text: text if f"toolclash run {run_id}" in text else None)(
                browser.find_element(By.TAG_NAME, "main").text), 20, "the summary in the Logs tab")
            assert f"verdict: {report['verdict'].upper()}" in logs.split(f"toolclash run {run_id}")[1]

        assert verdicts[0]["run"]["run_id"] != verdicts[1]["run"]["run_id"]
        code = run.ctrl_c()
    finally:
        run.close()
    assert code == max(report["exit_code"] for report in verdicts), run.stderr()[-3000:]
    assert "Traceback" not in run.stderr()


def test_a_distributed_run_over_mcp_shows_the_masters_exact_sum_and_the_mcp_layer(browser, servers_args, tmp_path,
                                                                                   locust):
    """The master's figures are the workers' shipments added up: live they grow as shipments come
    in; after the stop they are the report's, which are the sums of each worker's totals. The
    agents call the builtin MCP server: the panel, in the browser, says so with the MCP layer's
    figures, as the report has them."""
    run = Toolclash(locust, tmp_path, *servers_args, *HOT, "--processes", "2", "--mcp-server", "builtin",
                    *own_master_port())
    try:
        _wait_for(lambda: run.data() and _http(run.port, "/stats/requests")["worker_count"] == 2, 60, "2 workers")
        _http(run.port, "/swarm", user_count=6, spawn_rate=6)
        live = _wait_for(lambda: (lambda d: d if d["figures"]["rows"][-1]["calls"] > 0 else None)(run.data()),
                         30, "shipped calls")
        assert live["status"] == "running"
        _wait_for(lambda: run.data()["series"]["load"], 30, "the charts' series")
        _http(run.port, "/stop", post=True)
        data = _wait_for(lambda: (lambda d: d if d["status"] in ("done", "audit_error") else None)(run.data()),
                         90, "the verdict")
        report = read_report(run.report_path)
        assert data["status"] == "done" and data["verdict"]["run"]["run_id"] == report["run"]["run_id"]
        total = data["figures"]["rows"][-1]
        assert total["calls"] == sum(t["calls"] for t in report["tools"].values()) > 0
        for kind, count in report["conflicts"].items():
            assert total[kind] == count, kind
        shipped = report["workers"]["shipped"]
        assert len(shipped) == 2
        assert total["calls"] == sum(worker["calls"] for worker in shipped.values())
        assert total["retries"] == sum(worker["retries"] for worker in shipped.values())
        assert {point["agents"] for point in data["series"]["load"]} & {6}, "both workers' agents are summed"
        mcp = report["transport"]["mcp"]
        browser.get(run.url)
        _open_tab(browser, "toolclash")
        _into_panel(browser)
        transport = _wait_for(lambda: browser.find_element(By.ID, "tc-transport").text, 10, "the MCP layer's line")
        era = f"{mcp['era']} era {mcp['protocol_version']}"
        assert transport.startswith(f"over MCP: {mcp['url']} (builtin server), {era};")
        assert (f"sessions opened {mcp['sessions']['opened']}, closed {mcp['sessions']['closed']};"
                f" isError {mcp['is_error_replies']}, re-issued {mcp['reissues']}; attempts: client"
                f" {mcp['attempts']['client']}, server {mcp['attempts']['server']};") in transport
        # And the HTML report the web UI downloads.
        with urllib.request.urlopen(f"http://127.0.0.1:{run.port}/stats/report", timeout=60) as answer:
            page = html.unescape(answer.read().decode())
        assert f"MCP at {mcp['url']} (builtin server toolclash-toolserver" in page and era in page
        assert (f"{mcp['is_error_replies']:,} isError, {mcp['reissues']:,} re-issued; attempts: client"
                f" {mcp['attempts']['client']:,}, server {mcp['attempts']['server']:,}") in page
        code = run.ctrl_c()
    finally:
        run.close()
    assert code == report["exit_code"], run.stderr()[-3000:]


def test_blind_workflows_show_their_stale_writes_live_and_the_reports_after_the_audit(browser, servers_args, tmp_path,
                                                                                    locust):
    """Agents that write blind what they read a turn before: the panel's workflows table shows
    writes from stale reads while the ramp runs, then the report's figures, write tool by write
    tool, beside the audit that names the lost updates; the downloaded HTML report has the table."""
    run = Toolclash(locust, tmp_path, *servers_args, "--scenario", "workflows", "--writes", "blind")
    try:
        # The panel's page alone (the two ramps above read it in Locust's tab): it is the same page.
        browser.set_window_size(1400, 1000)
        _http(run.port, "/swarm", user_count=20, spawn_rate=20)
        browser.get(f"{run.url}toolclash")
        _wait_for(lambda: _status(browser) == "running" and _number(dict(_rows(browser, "#tc-workflows", "data-tool"))[
            "all write tools"]["stale_writes"].split(" (")[0]) > 0, 30, "live writes from stale reads")
        assert browser.find_element(By.ID, "tc-workflows-note").text == "live"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / "workflows-running.png"))
        _http(run.port, "/stop", post=True)
        _wait_for(lambda: _status(browser) == "fail", 60, "the verdict in the panel")
        report = _wait_for_report(run.report_path, None)
        assert report["workflows"]["stale_writes"] > 0 and report["anomalies"]["lost_updates"] > 0
        _check_verdict_against(browser, report)
        _check_workflows_against(browser, report["workflows"])
        with urllib.request.urlopen(f"http://127.0.0.1:{run.port}/stats/report", timeout=60) as answer:
            page = answer.read().decode()
        assert "data-table='workflows'" in page and "all write tools" in page
    finally:
        run.close()


@pytest.mark.parametrize("ui", ["headless", "web UI"])
def test_ctrl_c_in_the_middle_of_a_ramp_ends_with_the_audit_and_no_traceback(admin, schema, servers_args, tmp_path,
                                                                            ui, locust):
    """SIGINT to the process group, as a terminal sends it, while 20 agents are in their calls."""
    headless = ("--headless", "--users", "20", "--spawn-rate", "20", "--run-time", "60s") if ui == "headless" else ()
    run = Toolclash(locust, tmp_path, *servers_args, *HOT, *headless)
    try:
        if headless:
            _wait_for(lambda: "All users spawned" in run.stderr(), 60, "the agents")
            # As the web UI's ramp below: more than 50 calls made (here, committed to the ledger).
            wait_until(lambda: rows_in(admin, schema, "ledger") > 50, "calls", timeout=30)
        else:
            _http(run.port, "/swarm", user_count=20, spawn_rate=20)
            _wait_for(lambda: run.data()["figures"]["rows"][-1]["calls"] > 50, 30, "calls")
        code = run.ctrl_c()
    finally:
        run.close()
    report = read_report(run.report_path)
    assert code == report["exit_code"], run.stderr()[-3000:]
    assert report["run"]["agents"] == 20 and sum(t["calls"] for t in report["tools"].values()) > 0
    assert report["audit"]["ok"], [c for c in report["audit"]["checks"] if not c["ok"]]
    assert "verdict:" in run.stdout() and "toolclash verdict:" in run.stdout()
    stderr = run.stderr()
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]


def test_the_charts_add_up_the_processes_second_by_second():
    """Each process's running totals, sampled each second on its own clock, become one series of
    rates, only as far as every process has reported (a worker's shipment may lag)."""
    def sample(process, t, calls, attempts, conflicts, agents, waiting=0):
        return {"process": process, "t": t, "calls": calls, "attempts": attempts, "conflicts": conflicts,
                "agents": agents, "pool_waiting": waiting}
    samples = [
        sample(0, 0.0, 0, 0, 0, 0), sample(0, 1.01, 10, 12, 2, 3), sample(0, 2.02, 30, 40, 10, 5, 1),
        sample(0, 3.03, 60, 80, 30, 5, 2),
        sample(1, 0.0, 0, 0, 0, 0), sample(1, 1.02, 20, 20, 0, 2), sample(1, 2.01, 40, 50, 10, 5, 3),
    ]
    assert load_series(samples) == [
        {"t": 1, "agents": 5, "calls_per_s": 30.0, "conflict_rate": round(2 / 32, 4), "pool_waiting": 0},
        {"t": 2, "agents": 10, "calls_per_s": 40.0, "conflict_rate": round(18 / 58, 4), "pool_waiting": 4},
    ]
    assert load_series([]) == []
