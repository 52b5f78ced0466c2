"""Tools the user writes: one plain function each, in a module of their own (--tools-module).

A tool is a function of the module whose first parameter is named `tx` (a db.tool.Transaction:
`tx.execute(...)` runs in the call's PostgreSQL transaction, `tx.redis` is the Redis client,
`tx.rng` the call's random source, `tx.op_id` its operation id). `@db.tool.tool(weight=...,
backend="redis", arguments=..., keys=...)` is optional; with `arguments`, the tool is given the arguments
that function draws, as keywords, and executes from them alone (no `tx.rng`). The module may
also define `setup(conn)`, run at the start of each run with the harness's schema on the search
path, and `audit(ctx)`, returning checks in the shape of the built-in ones.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from db.audits import AuditContext, Check
from db.tool import Tool
from tasks.scenarios import Scenario, WeightedTool

__all__ = ["BadToolsModule", "load_tools_module"]


class BadToolsModule(ValueError):
    """The module cannot serve as tools; the message says why, in one line."""


def load_tools_module(path: str) -> Scenario:
    """The user's module as a scenario named after the file (my_tools.py: `my_tools`)."""
    source = Path(path)
    if not source.is_file():
        raise BadToolsModule(f"--tools-module {path}: no such file")
    name = source.stem
    spec = importlib.util.spec_from_file_location(f"toolclash_user_tools.{name}", source)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: whatever it raises, the run cannot start
        raise BadToolsModule(f"--tools-module {path} does not import: {type(exc).__name__}: {exc}") from None
    sys.modules[spec.name] = module
    functions = [
        fn for fn_name, fn in vars(module).items()
        if inspect.isfunction(fn) and fn.__module__ == spec.name and not fn_name.startswith("_")
        and list(inspect.signature(fn).parameters)[:1] == ["tx"]
    ]
    if not functions:
        raise BadToolsModule(f"--tools-module {path} defines no tool (a function whose first parameter is named tx)")
    tools = [
        WeightedTool(Tool(fn.__name__, fn, getattr(fn, "toolclash_backend", "pg"),
                          getattr(fn, "toolclash_arguments", None), getattr(fn, "toolclash_keys", ())),
                     getattr(fn, "toolclash_weight", 1))
        for fn in functions
    ]
    user_audit = getattr(module, "audit", None)
    audits = {f"{name}.audit": partial(_run_user_audit, user_audit, name)} if callable(user_audit) else {}
    return Scenario(name, lambda params: tools, lambda params: audits, setup=getattr(module, "setup", None))


def _run_user_audit(user_audit: Any, module_name: str, ctx: AuditContext) -> list[Check]:
    """The user's checks, as Check objects or dicts with the same keys. An audit that raises is a
    failed check naming the error: the run still ends with its report and a FAIL."""
    checks = []
    try:
        for item in user_audit(ctx):
            check = item if isinstance(item, Check) else Check(**item)
            checks.append(replace(check, name=f"{module_name}.{check.name}"))
    except Exception as exc:  # the user's code: whatever it raises, the verdict must still be written
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        checks.append(Check(f"{module_name}.audit", False, "the audit runs", "it raised", error))
    return checks
