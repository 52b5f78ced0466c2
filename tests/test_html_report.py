"""toolclash's section of Locust's HTML report, looked at in Chromium: the `--html` file and the
web UI's 'Download Report'. Where the section sits, the verdict it shows, figures a reader can
read (rounded, never `None`), and charts with data points.

TOOLCLASH_HTML_SCREENSHOT=docs/html-report.png saves docs/observing.md's screenshots (that file, and
docs/html-report-charts.png)."""

from __future__ import annotations

import os
import re
import time
import urllib.request
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from harness.output.html.section import SECTION_ID
from tests.support import ROOT, read_report, wait_until
from tests.test_web_ui import _post, ramp_running

# The charts the issue asks for; the report draws a few more (lock wait, rollbacks, Redis, what
# the scenarios sample).
CHARTS = {"lock_waiters", "blocking_chain", "deadlocks", "pool_waiting", "agents"}
LONG_FLOAT = re.compile(r"\d\.\d{4,}")
NONE = re.compile(r"\bNone\b")


def _open(browser, url: str):
    """The page at `url`, once Locust has rendered it and toolclash's section has found its place."""
    browser.get(url)
    WebDriverWait(browser, 30).until(
        lambda b: b.execute_script(f"var s = document.getElementById('{SECTION_ID}'); return s && s.dataset.placed"))
    return browser.find_element(By.ID, SECTION_ID)


def _check_page(browser, section, report: dict[str, Any]) -> None:
    """Placed right after Locust's summary and before its statistics, the verdict first, readable
    figures, every chart with data points."""
    before, after = browser.execute_script(
        "var s = arguments[0]; return [s.previousElementSibling.textContent, s.nextElementSibling.innerHTML]", section)
    assert "During:" in before and "Script:" in before, f"not right after Locust's summary: {before[:200]}"
    assert "Request Statistics" in after, "Locust's statistics no longer follow the section"
    first = section.find_element(By.CSS_SELECTOR, "[data-part]")
    assert first.get_attribute("data-part") == "verdict"
    assert first.find_element(By.CSS_SELECTOR, "[data-verdict-word]").text == report["verdict"].upper()
    assert f"toolclash verdict: {report['verdict'].upper()}" in first.text

    # Every piece of text, the charts' tooltips too, each on its own (joined, "0.2" and "5" would read "0.25").
    text = browser.execute_script(
        "var walk = document.createTreeWalker(arguments[0], NodeFilter.SHOW_TEXT), texts = [];"
        "while (walk.nextNode()) if (!/^(style|script)$/i.test(walk.currentNode.parentNode.nodeName))"
        "  texts.push(walk.currentNode.nodeValue);"
        "return texts.join(' | ')", section)
    assert not NONE.search(text), NONE.search(text)
    assert not LONG_FLOAT.findall(text), LONG_FLOAT.findall(text)[:5]

    tools = section.find_elements(By.CSS_SELECTOR, "table[data-table=tools] tbody tr")
    assert [row.find_element(By.TAG_NAME, "td").text for row in tools] == list(report["tools"])
    sla = section.find_elements(By.CSS_SELECTOR, "table[data-table=sla] tbody tr")
    assert [row.find_element(By.TAG_NAME, "td").text for row in sla] == [r["name"] for r in report["sla"]]
    checks = section.find_elements(By.CSS_SELECTOR, "table[data-table=audit] tbody tr")
    assert len(checks) == len(report["audit"]["checks"])
    distributions = section.find_element(By.CSS_SELECTOR, "table[data-table=distributions]").text
    for name in ("deadlock detection", "deadlock resolution", "pool wait", "queue wait", "cross-service window"):
        assert name in distributions
    for part in ("conflicts", "anomalies", "server", "pool", "hub", "timeseries"):
        assert section.find_elements(By.CSS_SELECTOR, f"[data-part={part}]"), part
    hub = section.find_element(By.CSS_SELECTOR, "table[data-table=hub]").text
    assert ("fell behind" if report["hub"]["fell_behind"] else "kept up") in hub
    assert all(f"lag of the {process}" in hub for process in report["hub"]["processes"])

    charts = {figure.get_attribute("data-chart"): figure
              for figure in section.find_elements(By.CSS_SELECTOR, "figure[data-chart]")}
    assert CHARTS <= set(charts), set(charts)
    for name, figure in charts.items():
        points = figure.find_elements(By.CSS_SELECTOR, "circle.tc-point")
        assert int(figure.get_attribute("data-points")) > 0, f"chart {name} has no sample"
        assert len(points) == int(figure.get_attribute("data-drawn")) > 0, f"chart {name} draws no point"
        lines = [line.get_attribute("points").split() for line in figure.find_elements(By.TAG_NAME, "polyline")]
        assert sum(map(len, lines)) == len(points)


def test_the_html_report_tells_the_run_after_locusts_summary(servers, schema, tmp_path, browser, locust):
    report_path, html_path = tmp_path / "r.json", tmp_path / "locust.html"
    done = locust.run(
        "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
        "--users", "12", "--spawn-rate", "12", "--run-time", "4s", "--scenario", "deadlock,queue",
        "--accounts", "6", "--sample-interval", "0.25", "--report-json", str(report_path), "--html", str(html_path),
    )
    report = read_report(report_path)
    assert done.returncode == report["exit_code"], done.stderr[-2000:]
    assert report["conflicts"]["deadlocks"] > 0, "the run needs deadlocks for its charts to climb"

    section = _open(browser, html_path.as_uri())
    _check_page(browser, section, report)
    assert section.get_attribute("data-mode") == "light", "Locust writes --html in its light theme"
    deadlocks = section.find_element(By.CSS_SELECTOR, "figure[data-chart=deadlocks]")
    heights = [float(c.get_attribute("cy")) for c in deadlocks.find_elements(By.CSS_SELECTOR, "circle.tc-point")]
    assert heights[-1] < heights[0], "the deadlocks climb (a lower y is higher up)"
    assert not re.search(r"\b(?:src|href)=", section.get_attribute("outerHTML")), \
        "the section fetches nothing: the page works offline"

    screenshot = os.environ.get("TOOLCLASH_HTML_SCREENSHOT")
    if screenshot:  # docs/observing.md's: the page's top, and the time series
        target = ROOT / screenshot
        browser.set_window_size(1400, 1150)
        browser.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.5)
        browser.save_screenshot(str(target))
        browser.execute_script("arguments[0].scrollIntoView()",
                               section.find_element(By.CSS_SELECTOR, "[data-part=timeseries]"))
        time.sleep(0.5)
        browser.save_screenshot(str(target.with_name(target.stem + "-charts" + target.suffix)))


def test_a_load_shape_report_shows_each_stage_and_why_a_figure_is_missing(servers, schema, tmp_path, browser, locust):
    report_path, html_path = tmp_path / "r.json", tmp_path / "shape.html"
    done = locust.run(
        "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
        "--shape", "steps", "--shape-agents", "2,5", "--shape-hold", "2", "--scenario", "optimistic_locking",
        "--sample-interval", "0.25", "--report-json", str(report_path), "--html", str(html_path),
    )
    report = read_report(report_path)
    assert done.returncode == report["exit_code"], done.stderr[-2000:]

    section = _open(browser, html_path.as_uri())
    _check_page(browser, section, report)
    rows = section.find_elements(By.CSS_SELECTOR, "table[data-table=stages] tbody tr")
    assert [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")][:2] for row in rows] == [
        [str(step["stage"]), str(step["agents"])] for step in report["stages"]]
    # No deadlock in this scenario: the SLA on their resolution has no figure, and says why.
    rule = next(r for r in report["sla"] if r["metric"] == "deadlock_resolution_p95_ms")
    assert rule["observed"] is None
    row = next(row for row in section.find_elements(By.CSS_SELECTOR, "table[data-table=sla] tbody tr")
               if row.text.startswith(rule["name"]))
    assert "\u2014" in row.text and "no call met a deadlock" in row.text


def _get(url: str) -> tuple[str, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode("utf-8"), dict(answer.headers)


def test_the_web_uis_download_report_carries_the_section(servers, schema, tmp_path, browser, locust):
    report_path = tmp_path / "report.json"
    run = locust.start("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
                       "--scenario", "deadlock", "--accounts", "6", "--sample-interval", "0.25",
                       "--report-json", str(report_path), headless=False, web=True)
    base, port = run.url, run.port
    run.wait_for_web_ui(30)
    page, _ = _get(f"{base}/stats/report")
    assert f"id='{SECTION_ID}'" in page and "No test has run yet" in page

    _post(port, "/swarm", user_count=8, spawn_rate=8)
    # Its agents have called, and the server was sampled a few times: the charts have points.
    wait_until(lambda: (data := ramp_running(port, 8, {"transfer_credits"})) and len(data["series"]["server"]) >= 2,
               "the ramp's calls and samples")
    _post(port, "/stop")
    wait_until(lambda: report_path.exists(), "the ramp's report")
    report = read_report(report_path)

    page, headers = _get(f"{base}/stats/report?download=1&theme=dark")
    assert "attachment" in headers.get("Content-Disposition", "")
    assert page.count(f"id='{SECTION_ID}'") == 1
    assert report["run"]["run_id"] in page and f">{report['verdict'].upper()}<" in page

    section = _open(browser, f"{base}/stats/report?theme=dark")
    _check_page(browser, section, report)
    assert section.get_attribute("data-mode") == "dark", "the section follows Locust's dark theme"
    run.terminate(60)
