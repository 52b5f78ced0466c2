"""The tiers hold (tests/README.md): each test's markers are those of the fixtures it uses, and a
test that starts `locust` without the `locust` marker fails. No server, no `locust` process."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests import support

TESTS = Path(__file__).resolve().parent


def test_every_test_carries_the_markers_of_its_fixtures_and_no_other(request):
    markers = set(support.FIXTURE_MARKERS.values())
    wrong = [f"{item.nodeid}: {marker}"
             for item in request.session.items for marker in markers
             if any(fixture in getattr(item, "fixturenames", ()) for fixture, given in support.FIXTURE_MARKERS.items()
                    if given == marker) != (item.get_closest_marker(marker) is not None)]
    assert wrong == [], "a tier's marker comes from its fixture, never by hand"


def test_a_locust_test_is_known_to_the_guard_and_this_one_is_not(request):
    assert support.LOCUST_TESTS is not None, "conftest.py fills it at collection"
    assert request.node.nodeid not in support.LOCUST_TESTS
    marked = {item.nodeid for item in request.session.items if item.get_closest_marker("locust")}
    assert marked <= support.LOCUST_TESTS


@pytest.mark.parametrize("start", [
    lambda: support.run_locust("--version"),
    lambda: support.locust_in_background("--version").__enter__(),
    lambda: support.LocustProcess(("--version",), headless=False),
    lambda: support.Locust().start("--version"),
], ids=["run_locust", "locust_in_background", "LocustProcess", "Locust.start"])
def test_starting_locust_without_its_marker_fails_the_test_before_any_process(monkeypatch, start):
    """This test takes no `locust` fixture, so it has no `locust` marker: whichever way it asks
    tests/support.py to start `locust`, the test fails, naming the fixture, and nothing starts."""
    started = []
    monkeypatch.setattr(support.subprocess, "Popen", lambda *args, **kwargs: started.append(args))
    with pytest.raises(pytest.fail.Exception) as failed:
        start()
    assert "without the `locust` marker" in str(failed.value) and "`locust` fixture" in str(failed.value)
    assert started == [], "no process was started"


def test_no_test_module_starts_locust_but_through_tests_support():
    """The one helper (LocustProcess) is the only code that names the `locust` executable."""
    found = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name == "support.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "LOCUST" or \
                    isinstance(node, ast.Attribute) and node.attr == "LOCUST" or \
                    isinstance(node, ast.alias) and node.name == "LOCUST":
                found.append(f"{path.name}:{node.lineno}: LOCUST")
            if isinstance(node, (ast.List, ast.Tuple)):
                words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if any(first == "-m" and then == "locust" for first, then in zip(words, words[1:])):
                    found.append(f"{path.name}:{node.lineno}: -m locust")
    assert found == []
