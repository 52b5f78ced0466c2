"""toolclash's section of Locust's HTML report, rendered from a report with no run and no browser
(tests/test_html_report.py looks at the real pages in Chromium): well-formed, every block there,
each chart a point per sample (thinned to at most _MOST_POINTS), a failed check shown as FAIL,
the pending section saying why, and the section put into Locust's page.

tests/fixtures/shape_run_report.json is a real run's report, made by

    locust -f locustfile.py --headless --shape steps --shape-agents 3,6 --shape-hold 2 \\
        --sample-interval 0.5 --seed 7 --schema html_fixture --report-json report.json
    python -m json.tool --indent 1 report.json > tests/fixtures/shape_run_report.json

Its figures need not be made again; its keys follow the report's when they change.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from harness.output.html.chart import _MOST_POINTS, _step, _tick
from harness.output.html.locust_report import add_to_html_report, insert_section
from harness.output.html.section import SECTION_ID, pending_section, section
from tests.support import ROOT

REPORT = ROOT / "tests" / "fixtures" / "shape_run_report.json"
HTML_DIR = ROOT / "harness" / "output" / "html"
# In the order a reader meets them; "faults" only after a run with --chaos.
PARTS = ["verdict", "tools", "conflicts", "anomalies", "turns", "distributions", "stages", "sla", "audit", "server",
         "pool", "hub", "timeseries"]
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attributes: dict[str, str | None]
    children: list[Element | str] = field(default_factory=list)

    def text(self) -> str:
        """The element's text, its style and script left out."""
        if self.tag in ("style", "script"):
            return ""
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str | None = None, **attributes: str | None) -> list[Element]:
        """Every element inside this one with `tag` and `attributes` (data_part: data-part; None:
        the attribute is there, whatever its value)."""
        wanted = {name.replace("_", "-"): value for name, value in attributes.items()}
        found = []
        for child in self.children:
            if isinstance(child, str):
                continue
            if (tag is None or child.tag == tag) and all(
                    name in child.attributes and (value is None or child.attributes[name] == value)
                    for name, value in wanted.items()):
                found.append(child)
            found += child.all(tag, **attributes)
        return found

    def one(self, tag: str | None = None, **attributes: str | None) -> Element:
        found = self.all(tag, **attributes)
        assert len(found) == 1, f"{len(found)} <{tag or '*'} {attributes}>"
        return found[0]


class _Tree(HTMLParser):
    """The page as a tree; a closing tag that closes anything but the last one opened fails."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.open[-1].children.append(element)
        if tag not in _VOID:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open[-1].children.append(Element(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert len(self.open) > 1, f"</{tag}> closes nothing, at {self.getpos()}"
        assert self.open[-1].tag == tag, f"</{tag}> closes <{self.open[-1].tag}>, at {self.getpos()}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def parse(html: str) -> Element:
    tree = _Tree()
    tree.feed(html)
    tree.close()
    assert len(tree.open) == 1, f"never closed: {[element.tag for element in tree.open[1:]]}"
    return tree.root


@pytest.fixture
def report() -> dict[str, Any]:
    return json.loads(REPORT.read_text(encoding="utf-8"))


def _rows(page: Element, table: str) -> list[list[str]]:
    body = page.one("table", data_table=table).one("tbody")
    return [[cell.text() for cell in row.all("td")] for row in body.all("tr")]


def test_the_section_is_well_formed_and_tells_each_part_in_order(report):
    page = parse(section(report))
    assert [element.tag for element in page.children] == ["section", "script"]
    root = page.one("section", id=SECTION_ID)
    assert [part.attributes["data-part"] for part in root.all(data_part=None)] == PARTS

    verdict = root.one(data_part="verdict")
    assert verdict.one(data_verdict_word=None).text() == report["verdict"].upper() == "PASS"
    assert "Audit ok:" in verdict.text() and f"SLAs: all {len(report['sla'])} held" in verdict.text()
    assert [row[0] for row in _rows(root, "tools")] == list(report["tools"])
    assert [row[0] for row in _rows(root, "sla")] == [rule["name"] for rule in report["sla"]]
    assert [row[0] for row in _rows(root, "audit")] == [check["name"] for check in report["audit"]["checks"]]
    assert [row[:2] for row in _rows(root, "stages")] == [
        [str(stage["stage"]), str(stage["agents"])] for stage in report["stages"]]
    assert f"lag of the {next(iter(report['hub']['processes']))}" in root.one("table", data_table="hub").text()
    assert not re.search(r"\bNone\b", root.text())
    assert not re.search(r"\b(?:src|href)=", section(report)), "the section fetches nothing: the page works offline"


def test_the_style_and_the_script_are_their_files_inlined(report):
    page = parse(section(report))
    style, script = page.one("style"), page.one("script")
    css = (HTML_DIR / "section.css").read_text(encoding="utf-8")
    js = (HTML_DIR / "section.js").read_text(encoding="utf-8")
    assert "".join(style.children).strip() == css.strip() and f"#{SECTION_ID}{{" in css
    assert "".join(script.children).strip() == js.strip() and f'getElementById("{SECTION_ID}")' in js


def _charts(page: Element) -> dict[str, Element]:
    return {figure.attributes["data-chart"]: figure for figure in page.all("figure", data_chart=None)}


def _points_drawn(figure: Element) -> int:
    """The chart's points, once they agree: its circles, its lines' coordinates and its data-drawn."""
    circles = len(figure.all("circle", **{"class": "tc-point"}))
    coordinates = sum(len(line.attributes["points"].split()) for line in figure.all("polyline"))
    assert circles == coordinates == int(figure.attributes.get("data-drawn") or 0), figure.attributes
    return circles


def test_each_chart_draws_a_point_per_sample(report):
    charts = _charts(parse(section(report)))
    rows = report["timeseries"]
    for name, column in (("agents", "agents"), ("lock_waiters", "pg_lock_waiters"), ("queue_depth", "queue_depth")):
        samples = sum(1 for row in rows if column in row)
        assert samples > 0
        assert int(charts[name].attributes["data-points"]) == _points_drawn(charts[name]) == samples, name
    pool = charts["pool_waiting"]
    assert int(pool.attributes["data-points"]) == _points_drawn(pool) == len(report["pool"]["samples"])
    for figure in charts.values():
        _points_drawn(figure)


def test_a_long_series_is_thinned_keeping_its_peak(report):
    long = copy.deepcopy(report)
    last = long["timeseries"][-1]
    long["timeseries"] = [dict(last, t_s=i * 0.01, pg_lock_waiters=i % 7) for i in range(1234)]
    long["timeseries"][500]["pg_lock_waiters"] = 99
    figure = _charts(parse(section(long)))["lock_waiters"]
    assert int(figure.attributes["data-points"]) == 1234
    assert _MOST_POINTS / 2 < _points_drawn(figure) <= _MOST_POINTS
    assert any(title.text().endswith(": 99") for title in figure.all("title"))


def test_a_run_without_samples_says_so(report):
    report["timeseries"], report["pool"]["samples"] = [], []
    page = parse(section(report))
    assert "No sample of the servers was taken" in page.one(data_part="timeseries").text()
    for name, figure in _charts(page).items():
        assert figure.attributes["data-points"] == "0" and "no sample was taken" in figure.text(), name


def test_a_failed_check_and_a_broken_rule_show_as_fail(report):
    failed = copy.deepcopy(report)
    check, rule = failed["audit"]["checks"][1], failed["sla"][0]
    check.update(ok=False, detail="3 rows <missing>")
    rule["ok"] = False
    failed["audit"]["ok"], failed["verdict"], failed["exit_code"] = False, "fail", 1
    root = parse(section(failed)).one("section")

    verdict = root.one(data_part="verdict")
    assert verdict.attributes["data-verdict"] == "fail" and verdict.one(data_verdict_word=None).text() == "FAIL"
    assert f"Audit failed: {check['name']}" in verdict.text()
    assert f"SLAs: 1 of {len(failed['sla'])} broken:" in verdict.text() and rule["name"] in verdict.text()
    audit = {row[0]: row for row in _rows(root, "audit")}
    assert audit[check["name"]][3:] == ["FAIL", "3 rows <missing>"]
    assert {row[3] for name, row in audit.items() if name != check["name"]} == {"ok"}
    assert "The audit: FAILED" in root.one(data_part="audit").text()
    assert {row[0]: row[3] for row in _rows(root, "sla")}[rule["name"]] == "FAIL"


def test_the_pending_section_says_why_there_is_no_verdict():
    page = parse(pending_section("No test has run yet <on this page>"))
    root = page.one("section", id=SECTION_ID)
    assert [part.attributes["data-part"] for part in root.all(data_part=None)] == ["verdict"]
    verdict = root.one(data_part="verdict")
    assert verdict.attributes["data-verdict"] == "none" and verdict.one(data_verdict_word=None).text() == "none yet"
    assert "No test has run yet <on this page>" in verdict.text()
    assert len(page.all("style")) == len(page.all("script")) == 1


LOCUST_PAGE = ("<!DOCTYPE html><html><head><title>Locust</title></head><body><div id='root'></div>"
               "<script>window.templateArgs = {\"text\": \"</body>\"}</script></body></html>")


def test_the_section_goes_at_the_end_of_locusts_page(tmp_path: Path):
    """Locust's page ends with its body; its script may say "</body>" in a string before that."""
    html = pending_section("no verdict")
    page = insert_section(LOCUST_PAGE, html)
    assert page == LOCUST_PAGE.removesuffix("</body></html>") + html + "</body></html>"
    assert parse(page).one("body").children[-2:] == parse(html).children
    assert insert_section("<p>no body</p>", html) == "<p>no body</p>" + html

    path = tmp_path / "locust.html"
    path.write_text(LOCUST_PAGE, encoding="utf-8")
    add_to_html_report(str(path), html)
    assert path.read_text(encoding="utf-8") == page


def test_a_charts_ticks_never_carry_four_decimals():
    """Before: a sampler late by at most 2 ms drew ticks of 0.0005 s (seen in CI)."""
    for top in (0.0004, 0.002, 0.0033, 0.05, 7.5):
        step = _step(top, whole=False)
        ticks = " ".join(_tick(round(k * step, 9)) for k in range(6))
        assert not re.search(r"\d\.\d{4,}", ticks), (top, ticks)


def test_the_turns_table_and_each_stages_turns_are_the_reports(report):
    """The Turns table says the report's turns figure by figure, and each stage's row the turn
    figures its per-turn SLA rules read; a stage without a finished turn says so."""
    turns = report["turns"]
    turns.update(calls=900, calls_per_turn={"1": 300, "2": 300}, same_key_pairs=120,
                 overlapping_same_key_pairs=80, collisions=7)
    report["stages"][1].update(turns=0, turn_p95_ms=None, turns_with_conflicts=0)
    root = parse(section(report)).one("section")
    body = root.one("table", data_table="turns").one("tbody")
    # Each row: its label (the first text of its first cell, before the note) and its value.
    shown = {row.all("td")[0].children[0]: row.all("td")[1].text() for row in body.all("tr")}
    latency = turns["latency_ms"]
    assert shown == {
        "turns": str(turns["turns"]), "turns by calls": "1: 300, 2: 300",
        **{f"turn latency {k}": f"{latency[k]:g} ms" for k in ("p50", "p95", "p99", "max")},
        "turns with conflicts": str(turns["with_conflicts"]), "same-key pairs": "120",
        "overlapping same-key pairs": "80", "collisions": "7"}

    stages = _rows(root, "stages")
    first = report["stages"][0]
    share = f"{first['turns_with_conflicts'] / first['turns']:.1%}"
    assert stages[0][8:11] == [str(first["turns"]), f"{first['turn_p95_ms']:g} ms",
                               f"{first['turns_with_conflicts']} ({share})"]
    assert stages[1][8:10] == ["0", "\u2014 (no turn)"]


# A real report's `workflows` (`locust ... --headless --scenario workflows --writes blind --users 20
# --run-time 4s`): one write tool's data has no versions (the queue's take_job: n/a, never 0).
WORKFLOWS = {
    "writes": 3226, "stale_writes": 1485,
    "behind_versions": {"p50": 0, "p95": 4, "p99": 7, "max": 15, "count": 2151},
    "stale_ms": {"p50": 16.0, "p95": 64.0, "p99": 130.0, "max": 341.0, "count": 3226},
    "tools": {
        "deduct_from_read": {"writes": 1076, "stale_writes": 47,
                             "behind_versions": {"p50": 0, "p95": 0, "p99": 1, "max": 2, "count": 1076},
                             "stale_ms": {"p50": 17.0, "p95": 49.0, "p99": 91.0, "max": 259.0, "count": 1076}},
        "take_job": {"writes": 1075, "stale_writes": 787, "behind_versions": None,
                     "stale_ms": {"p50": 14.0, "p95": 72.0, "p99": 148.0, "max": 341.0, "count": 1075}},
        "write_plan_step": {"writes": 1075, "stale_writes": 651,
                            "behind_versions": {"p50": 1, "p95": 5, "p99": 8, "max": 15, "count": 1075},
                            "stale_ms": {"p50": 16.0, "p95": 71.0, "p99": 112.0, "max": 250.0, "count": 1075}},
    },
}


def test_the_workflows_table_is_the_reports_and_only_in_a_run_with_workflows(report):
    """A row per write tool and one for all: writes from reads, from stale reads (and their share),
    versions behind (n/a where a tool's data has none), ms since the read. A run without workflows
    has no table; a workflows run without a write has its totals, n/a and dashes, never 0 ms."""
    assert "workflows" not in report["run"]["scenarios"] and not report["workflows"]["tools"]
    assert not parse(section(report)).all(data_part="workflows")

    report["workflows"] = copy.deepcopy(WORKFLOWS)
    root = parse(section(report)).one("section")
    parts = [part.attributes["data-part"] for part in root.all(data_part=None)]
    assert parts == [*PARTS[:PARTS.index("turns") + 1], "workflows", *PARTS[PARTS.index("turns") + 1:]]
    assert _rows(root, "workflows") == [
        ["deduct_from_read", "1,076", "47 (4.4%)", "0", "0", "2", "17 ms", "49 ms", "259 ms"],
        ["take_job", "1,075", "787 (73.2%)", "n/a (no versions)", "14 ms", "72 ms", "341 ms"],
        ["write_plan_step", "1,075", "651 (60.6%)", "1", "5", "15", "16 ms", "71 ms", "250 ms"],
        ["all write tools", "3,226", "1,485 (46.0%)", "0", "4", "15", "16 ms", "64 ms", "341 ms"],
    ]
    assert not re.search(r"\bNone\b", root.text())

    report["run"]["scenarios"].append("workflows")
    report["workflows"] = {"writes": 0, "stale_writes": 0, "behind_versions": None,
                           "stale_ms": {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}, "tools": {}}
    root = parse(section(report)).one("section")
    assert _rows(root, "workflows") == [["all write tools", "0", "0", "n/a (no versions)", *["\u2014"] * 3]]


def test_the_list_append_historys_anomalies_by_elles_names(report):
    """A run with list_append: its history's answer (the checker's own, on a written history
    with a write skew and a lost update) as a table of anomaly types, each forbidden or allowed,
    with one case; none in a run without it."""
    from history_check import build, check
    from tasks.list_append_audit import CASES_IN_REPORT

    txns = [[["r", "x", []], ["append", "y", 1]], [["r", "y", []], ["append", "x", 1]],
            [["r", "z", []], ["append", "z", 1]], [["r", "z", []], ["append", "z", 2]], [["r", "z", [1, 2]]]]
    answer = check(build({"type": "ok", "process": i, "value": t, "id": f"T{i}"} for i, t in enumerate(txns)),
                   "snapshot-isolation").as_dict()
    answer["anomalies"] = {kind: cases[:CASES_IN_REPORT] for kind, cases in answer["anomalies"].items()}
    assert "history" not in {e.attributes["data-part"] for e in parse(section(report)).all(data_part=None)}
    report["history_check"] = answer
    block = parse(section(report)).one(data_part="history")
    rows = _rows(block, "history")
    # The lost update on z is a G-single-item cycle too (T2 -ww-> T3 -rw-> T2): both forbidden.
    assert [row[:3] for row in rows] == [["G-single-item", "1", "forbidden"], ["G2-item", "1", "allowed"],
                                         ["lost-update", "1", "forbidden"]]
    assert "T2 -ww-> T3 on z" in rows[0][3] and "T3 -rw-> T2 on z" in rows[0][3]
    assert "T0 -rw-> T1 on x" in rows[1][3] and "T1 -rw-> T0 on y" in rows[1][3]
    assert rows[2][3] == "T2, T3 read z at 0 elements, then each appended"
    verdict = block.one("p", data_history_verdict=None)
    assert verdict.attributes["data-history-verdict"] == "false" and "INVALID" in verdict.text()
    assert "snapshot-isolation" in verdict.text() and "Ruled out" in block.text()
