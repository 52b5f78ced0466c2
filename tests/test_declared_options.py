"""Every option declared in harness/config/declared.py is where its declaration says it is, and
nothing is anywhere that is not declared: `make options`'s output, docs/options.md's table (its
variable, kind and default), the web UI's start form (the per-run ones only), docker-compose.yml's
and .env.example's variables (the composed ones, and the tool server's own), and the settings
summary that fingerprints a test (the summarized ones). Reads files and builds parsers only: no
server, no `locust` process."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import yaml
from locust import events
from locust.argument_parser import get_parser, ui_extra_args_dict

from harness.config.declared import OPTIONS, RUN_OPTIONS, add_arguments
from harness.config.option import Option
from harness.config.options_help import options_help
from harness.config.run_settings import fingerprint, fixed_options, settings_for_test, settings_summary
from tests.support import ROOT
from toolserver.options import environment_variables

DECLARED = {option.flag: option for option in OPTIONS}
# A row of docs/options.md's table: | `--flag` | `VARIABLE` | default | what it does | kind |
DOCS_ROW = re.compile(r"^\| `(--[a-z-]+)` \| `([A-Z_]+)` \| ([^|]*) \| .* \| (per run|fixed) \|$")
VARIABLE = re.compile(r"\bTOOLCLASH_[A-Z_]+\b")
# The tool server's variables of its own (the others are toolclash's: toolserver.options).
TOOLSERVER_OWN = {name for name in environment_variables().values() if name.startswith("TOOLCLASH_TOOLSERVER_")}


def _shown(default: Any) -> str:
    """A default as the help and the docs write it: 5.0 as 5."""
    return f"{default:g}" if isinstance(default, float) else str(default)


def _has_a_value(option: Option) -> bool:
    """An option whose default is a value to write down (not off, nothing, or a behaviour the
    help and the docs describe in words)."""
    return not option.switch and option.default not in (None, "")


def test_make_options_prints_every_declared_option_and_no_other():
    text = options_help()
    fixed_part, _, per_run_part = text.partition("\ntoolclash, per test:")
    printed = re.findall(r"^  (--[a-z-]+)", text, re.M)
    assert sorted(printed) == sorted(DECLARED), "make options prints the declared options, each once"
    for option in OPTIONS:
        part = per_run_part if option.per_run else fixed_part
        assert re.search(rf"^  {option.flag}\b", part, re.M), f"{option.flag} is not in its group's help"


@pytest.mark.parametrize("option", [o for o in OPTIONS if _has_a_value(o)], ids=lambda o: o.flag)
def test_the_help_says_the_declared_default(option):
    assert f"(default: {_shown(option.default)}" in " ".join(option.help.split()), option.help


def _documented() -> dict[str, tuple[str, str, str]]:
    """docs/options.md's table: flag -> (variable, default, kind)."""
    rows = {}
    for line in (ROOT / "docs" / "options.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| `--"):
            match = DOCS_ROW.match(line)
            assert match, f"docs/options.md: a row not in the table's shape: {line[:80]}"
            flag, variable, default, kind = match.groups()
            assert flag not in rows, f"docs/options.md documents {flag} twice"
            rows[flag] = (variable, default.replace("`", "").strip(), kind)
    return rows


def test_the_docs_table_documents_every_declared_option_and_no_other():
    documented = _documented()
    assert sorted(documented) == sorted(DECLARED), "docs/options.md's table rows are the declared options"
    for flag, (variable, default, kind) in documented.items():
        option = DECLARED[flag]
        assert variable == option.env_var, flag
        assert kind == ("per run" if option.per_run else "fixed"), flag
        if option.switch:
            assert default == "off", flag
        elif _has_a_value(option):
            assert re.match(rf"{re.escape(_shown(option.default))}(?!\w)", default), \
                f"docs/options.md gives {flag} the default {default!r}, the declaration {option.default!r}"


@pytest.fixture
def toolclash_parser_event(monkeypatch):
    """Locust's parser as the locust process builds it, toolclash's options added by the
    init_command_line_parser event (as locustfile.py's listener does), and no TOOLCLASH_ variable
    of this shell changing a default."""
    for name in [name for name in os.environ if name.startswith("TOOLCLASH_")]:
        monkeypatch.delenv(name)
    events.init_command_line_parser.add_listener(add_arguments)
    yield
    events.init_command_line_parser.remove_listener(add_arguments)


def test_the_web_uis_start_form_offers_the_per_run_options_only(toolclash_parser_event):
    # What Locust's web UI puts in its start form under Custom parameters (locust/web.py's index).
    form = ui_extra_args_dict([])
    assert sorted(form) == sorted(o.dest for o in RUN_OPTIONS), "the form's fields are the per-run options"
    for option in RUN_OPTIONS:
        field = form[option.dest]
        assert field["default_value"] == option.default, option.flag
        assert field["choices"] == option.choices, option.flag
        assert not (field["is_secret"] or field["is_required"] or field["is_multiple"]), option.flag


def _compose_variables() -> set[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return {name for name in compose["x-toolclash-environment"] if name.startswith("TOOLCLASH_")}


def test_the_compose_file_and_env_example_pass_the_composed_options_and_no_other():
    composed = {o.env_var for o in OPTIONS if o.composed}
    assert _compose_variables() == composed, "docker-compose.yml's x-toolclash-environment"
    env_example = (ROOT / ".env.example").read_text(encoding="utf-8")
    shown = set(re.findall(r"^#?(TOOLCLASH_[A-Z_]+)=", env_example, re.M))
    assert shown - TOOLSERVER_OWN == composed, ".env.example shows each composed variable, set or commented out"
    # The tool server's own: those its service passes (its --host and --port are on its command).
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    passed = {name for name in compose["services"]["toolserver"]["environment"] if name in TOOLSERVER_OWN}
    assert passed == TOOLSERVER_OWN - {"TOOLCLASH_TOOLSERVER_HOST", "TOOLCLASH_TOOLSERVER_PORT"}
    assert shown & TOOLSERVER_OWN == passed, ".env.example shows each variable the toolserver service passes"
    declared = {o.env_var for o in OPTIONS} | TOOLSERVER_OWN
    for name in ("docker-compose.yml", ".env.example"):
        named = set(VARIABLE.findall((ROOT / name).read_text(encoding="utf-8")))
        assert named <= declared, f"{name} names variables no option reads: {sorted(named - declared)}"


def _parsed(*args: str) -> Any:
    return get_parser().parse_args(list(args))


# Another value for the summarized options whose type or default gives none to take.
_OTHER_VALUES = {"scenario": "deadlock", "tools_module": "examples/seat_tools.py", "chaos": "pg-kill:3s",
                 "calls_per_turn": "1:3,2:1", "tool_work": "lognormal:2s:10s", "think_time": "empirical:1s,2s",
                 "trace": "examples/agent_trace.jsonl", "consistency_model": "snapshot-isolation"}


def _another_value(option: Option) -> str:
    if option.dest in _OTHER_VALUES:
        return _OTHER_VALUES[option.dest]
    if option.choices:
        return next(choice for choice in option.choices if choice != option.default)
    if option.type in (int, float):
        return _shown((option.default if option.default is not None else option.at_least or 0) + 1)
    if option.dest == "schema":
        return "tc_other"
    raise AssertionError(f"{option.flag}: give it another value in _OTHER_VALUES")


def test_each_summarized_option_is_in_the_summary_and_changes_the_fingerprint(toolclash_parser_event):
    default = settings_for_test(_parsed(), fixed_options(_parsed()))
    summary = settings_summary(default)
    for option in OPTIONS:
        if not option.summarized:
            assert option.summary_key not in summary, f"{option.flag} is not declared summarized"
            continue
        options = _parsed(option.flag, _another_value(option))
        changed = settings_for_test(options, fixed_options(options))
        assert fingerprint(changed) != fingerprint(default), f"{option.flag} does not change the fingerprint"
