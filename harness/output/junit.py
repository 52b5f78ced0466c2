"""The verdict as JUnit XML (--junit-xml): one test case per SLA rule and per audit check, so a
CI system shows a broken SLA as a failed test with the observed value in its message."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.capacity.answer import exit_code_of, least_capacity
from harness.report_shape import Capacity, Report

__all__ = ["write_capacity_junit", "write_junit"]


def _case(suite: ET.Element, classname: str, name: str, ok: bool, message: str, duration_s: float) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{duration_s:.3f}")
    if not ok:
        ET.SubElement(case, "failure", message=message, type="toolclash").text = message


def write_junit(report: Report, path: str) -> None:
    sla, checks = report["sla"], report["audit"]["checks"]
    failures = sum(not r["ok"] for r in sla) + sum(not c["ok"] for c in checks)
    suites = ET.Element("testsuites", name="toolclash", tests=str(len(sla) + len(checks)), failures=str(failures))
    run = report["run"]
    for title, items in (("sla", sla), ("audit", checks)):
        suite = ET.SubElement(
            suites, "testsuite", name=f"toolclash.{title}", tests=str(len(items)),
            failures=str(sum(not i["ok"] for i in items)), errors="0", time=f"{run['duration_s']:.3f}",
        )
        for item in items:
            if title == "sla":
                message = (f"not measurable over MCP: {item['not_measurable']}" if item.get("not_measurable")
                           else f"observed {item['observed']}, needs {item['op']} {item['threshold']:g}")
            else:
                message = f"expected {item['expected']}, observed {item['observed']}: {item['detail']}"
            _case(suite, f"toolclash.{title}", item["name"], item["ok"], message, 0.0)
    _write(suites, path)


def write_capacity_junit(capacity: Capacity, path: str) -> None:
    """A --capacity search as one test case: the capacity at least --expect-capacity (without it,
    at least one agent), the answer in its message. The probes that failed are the search's way,
    not failures of the platform: none is a case of its own."""
    expected = least_capacity(capacity)
    ok = exit_code_of(capacity) == 0
    suites = ET.Element("testsuites", name="toolclash", tests="1", failures=str(int(not ok)))
    suite = ET.SubElement(suites, "testsuite", name="toolclash.capacity", tests="1", failures=str(int(not ok)),
                          errors="0", time=f"{capacity['elapsed_s']:.3f}")
    message = f"capacity {capacity['capacity']} agents, needs at least {expected}: {capacity['answer']}"
    _case(suite, "toolclash.capacity", f"capacity >= {expected} agents", ok, message, capacity["elapsed_s"])
    _write(suites, path)


def _write(suites: ET.Element, path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(target, encoding="utf-8", xml_declaration=True)
