"""The layers run one way: harness → tasks → transport → db. db/ and tasks/ import nothing of
Locust nor of the harness, so that a tool server can reuse them without Locust (the harness may
import everything). Read from the sources' imports (ast), every import in a module, those inside
functions included; no server."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

_FORBIDDEN = ("locust", "harness")

# Modules that break the rule today, each with what will end it. An entry that no longer breaks
# it fails the test too: the exception goes with its cause.
_NOT_YET = {
    "tasks/agent.py": "the agent is Locust's User: it moves to the harness with issue 17's packages by role",
}


def _imported(path: Path) -> set[str]:
    """The top-level packages of every absolute import in the module at `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _breaking() -> dict[str, set[str]]:
    modules = sorted(p for package in ("db", "tasks") for p in (ROOT / package).rglob("*.py"))
    assert modules, "no module found: the packages moved?"
    return {
        str(p.relative_to(ROOT)): bad
        for p in modules
        if (bad := _imported(p) & set(_FORBIDDEN))
    }


def test_db_and_tasks_import_nothing_of_locust_nor_the_harness():
    breaking = _breaking()
    unexpected = {module: sorted(bad) for module, bad in breaking.items() if module not in _NOT_YET}
    assert not unexpected, f"these modules reach up a layer (harness → tasks → transport → db): {unexpected}"
    healed = sorted(set(_NOT_YET) - set(breaking))
    assert not healed, f"these no longer break the layers: take them out of _NOT_YET: {healed}"


def test_the_reading_sees_every_kind_of_import(tmp_path):
    """The check itself: plain, dotted, from-imports and one inside a function are all seen;
    a relative import (within the package) is not a layer's."""
    module = tmp_path / "m.py"
    module.write_text("import locust.event\nfrom harness.load import Load\nfrom . import sibling\n"
                      "def f():\n    import redis\n    from db import hooks\n", encoding="utf-8")
    assert _imported(module) == {"locust", "harness", "redis", "db"}
