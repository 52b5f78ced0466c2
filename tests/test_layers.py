"""The layers run one way: harness → toolserver → tasks → transport → db, and inside the harness
its packages by role, from the process roles at the top down to what watches the run. A module may
import its own package and the ones below it, never one above: db/, transport/, tasks/ and the
tool server import nothing of Locust, so that the tool server reuses the tools without Locust (and
without gevent's monkey-patching). Read from the sources' imports (ast),
every import in a module, those inside functions and under TYPE_CHECKING included; no server."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

# From the top down; a package may import those after it.
LAYERS = (
    "locustfile",
    "harness.run",  # Locust's events wired, one class per process role, the agents' side
    "harness.web",  # the web UI's tab and start form
    "harness.export",  # the figures monitoring reads: /metrics for Prometheus
    "harness.output",  # the report written: summary, JSON, JUnit, HTML, the history
    "harness.verdict",  # the judging side: seed, audit, report, verdict
    "harness.capacity",  # --capacity: a probe's plan and judgement, the search, its model; no Locust
    "harness.distributed",  # what master and workers tell each other
    "harness.config",  # options, settings, SLA rules, load shapes
    "harness.faults",  # --chaos
    "harness.watch",  # what the run observes: metrics, the server sampler, the hub's lag
    "harness.report_shape",  # the report's types: every part of the harness that makes or reads a section
    "toolserver",  # the reference MCP tool server: the tools below, none of the harness above
    "tasks",  # the scenarios' tools and their audits
    "transport",  # how a tool call reaches the servers (in process)
    "db",  # PostgreSQL and Redis
)
_WITHOUT_LOCUST = ("toolserver", "tasks", "transport", "db")


def _layer(module: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return index
    return None


def _imported(path: Path) -> set[str]:
    """Every absolute import in the module at `path`, as dotted names (`from a.b import c` is
    `a.b.c`: it may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _sources() -> list[Path]:
    found = [ROOT / "locustfile.py"] + sorted(
        p for package in ("harness", "toolserver", "tasks", "transport", "db") for p in (ROOT / package).rglob("*.py")
        if p.stat().st_size)  # an empty __init__.py only marks its package
    assert len(found) > 40, "the packages moved?"
    return found


def test_every_module_belongs_to_a_layer():
    assert [str(p.relative_to(ROOT)) for p in _sources() if _layer(_module_of(p)) is None] == []


def test_no_module_imports_a_layer_above_its_own():
    upward = {}
    for path in _sources():
        own = _layer(_module_of(path))
        above = sorted(name for name in _imported(path)
                       if (layer := _layer(name)) is not None and layer < own)
        if above:
            upward[str(path.relative_to(ROOT))] = above
    assert not upward, f"these modules reach up a layer ({' → '.join(LAYERS)}): {upward}"


def test_db_transport_tasks_and_the_tool_server_import_nothing_of_locust_nor_gevents_monkey_patching():
    with_locust = {str(p.relative_to(ROOT)): sorted(n for n in _imported(p)
                                                    if n.split(".")[0] == "locust" or n.startswith("gevent.monkey"))
                   for p in _sources() if _module_of(p).split(".")[0] in _WITHOUT_LOCUST}
    assert {module: names for module, names in with_locust.items() if names} == {}


def test_the_reading_sees_every_kind_of_import(tmp_path):
    """The check itself: plain, dotted, from-imports and one inside a function are all seen;
    a relative import (within the package) is not a layer's."""
    module = tmp_path / "m.py"
    module.write_text("import locust.event\nfrom harness.run.load import Load\nfrom . import sibling\n"
                      "def f():\n    import redis\n    from db import hooks\n", encoding="utf-8")
    assert _imported(module) == {"locust.event", "harness.run.load.Load", "redis", "db.hooks"}
    assert [_layer(n) for n in ("harness.run.load.Load", "db.hooks", "harness.runner", "redis")] == [
        1, len(LAYERS) - 1, None, None]
