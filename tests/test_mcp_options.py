"""The MCP options (--mcp-url, --mcp-server and how to reach the server), parsed as the `locust`
process parses them: what a run over MCP refuses before any load, one line each, and what it runs
with. No server needed: the refusals are the settings parser's (tests/test_mcp_run.py runs them)."""

from __future__ import annotations

import pytest

from db.durations import constant
from harness.config.option import BadOption
from harness.distributed.worker_check import Shared, refusal
from tests.support import settings_from

URL = "http://127.0.0.1:8000/mcp"


def test_without_an_mcp_option_the_tools_run_in_process():
    assert settings_from().mcp is None


def test_the_builtin_server_and_a_users_server_are_told_apart():
    builtin = settings_from("--mcp-server", "builtin", "--mcp-era", "stateless").mcp
    assert (builtin.server, builtin.url, builtin.era, builtin.started_by_toolclash) == ("builtin", None, "stateless",
                                                                                         True)
    user = settings_from("--mcp-url", "https://tok@tools.example/mcp?key=secret", "--mcp-token", "s3cret",
                         "--mcp-insecure").mcp
    assert (user.server, user.started_by_toolclash, user.tls_verify) == ("user", False, False)
    assert "s3cret" not in repr(user) and "secret" not in repr(settings_from("--mcp-url", URL + "?key=secret"))
    client = user.client_settings("https://tok@tools.example/mcp?key=secret", 40)
    assert (client.connections, client.token, client.redacted_url) == (40, "s3cret",
                                                                       "https://***@tools.example/mcp?key=***")


@pytest.mark.parametrize("args, says", [
    (("--mcp-url", URL, "--mcp-server", "builtin"), "--mcp-url and --mcp-server builtin exclude each other"),
    (("--mcp-server", "builtin", "--chaos", "pg-kill:3s"), "--chaos pg-kill: over MCP the load's PostgreSQL"),
    (("--mcp-url", URL, "--chaos", "redis-kill:2s"), "--chaos redis-kill: over MCP"),
    (("--mcp-url", URL, "--chaos", "mcp-kill:2s"), "--chaos mcp-kill: toolclash does not kill your MCP server"
                                                   " (--mcp-url), only the one it starts"),
    (("--chaos", "mcp-kill:2s"), "--chaos mcp-kill kills the MCP tool server toolclash starts: add --mcp-server"),
    (("--mcp-url", "ftp://u:pw@host/mcp"), "--mcp-url 'ftp://***@host/mcp': give the MCP endpoint as an http://"),
    (("--mcp-url", "tools.example"), "--mcp-url 'tools.example': give the MCP endpoint"),
    (("--mcp-url", "http://pw@[::1/mcp"), "--mcp-url 'http://***': give the MCP endpoint"),
    (("--mcp-era", "stateless"), "--mcp-era needs --mcp-url (your MCP server) or --mcp-server builtin"),
    (("--mcp-token", "t"), "--mcp-token needs --mcp-url"),
    (("--mcp-server", "builtin", "--mcp-token", "t"), "--mcp-token: the builtin server toolclash starts"),
    (("--mcp-server", "careless", "--mcp-insecure"), "--mcp-insecure: the careless server toolclash starts"),
    (("--mcp-url", URL, "--mcp-ca-file", "ca.pem"), "--mcp-ca-file: the MCP server's URL is http://"),
    (("--mcp-url", "https://h/mcp", "--mcp-ca-file", "/no/such/ca.pem"), "--mcp-ca-file /no/such/ca.pem: cannot read"),
    (("--mcp-url", "https://h/mcp", "--mcp-ca-file", "README.md", "--mcp-insecure"),
     "--mcp-ca-file and --mcp-insecure exclude each other"),
    (("--mcp-url", URL, "--tool-work", "10"), "--tool-work 10 shapes the tools' execution, which is your MCP"),
    (("--mcp-url", URL, "--tool-work", "lognormal:2s:10s"), "--tool-work lognormal:2s:10s shapes the tools'"),
    (("--mcp-server", "builtin", "--tool-work", "uniform:1:9"),
     "--tool-work uniform:1:9: a distribution of the tools' work is drawn in the load's processes only"),
    (("--mcp-url", URL, "--pool-size", "5"), "--pool-size 5 shapes the tools' execution"),
    (("--mcp-url", URL, "--lock-timeout", "100"), "--lock-timeout 100 ms shapes"),
    (("--mcp-url", URL, "--isolation-matrix"), "--isolation-matrix runs once per isolation level, and your MCP"),
    (("--mcp-server", "builtin", "--tools-module", "examples/seat_tools.py"),
     "--mcp-server builtin serves the built-in tools only"),
    (("--tools-module", "examples/mcp_seat_tools.py"),
     "tool book_seat calls the tools of an MCP server (@tool(backend='mcp')): name the server with --mcp-url"),
])
def test_what_cannot_run_over_mcp_is_refused_in_one_line(args, says):
    with pytest.raises(BadOption) as refused:
        settings_from(*args)
    line = str(refused.value)
    assert line.startswith(says) and "\n" not in line, line
    assert "pw" not in line


def test_a_tool_without_an_arguments_step_cannot_travel(tmp_path):
    module = tmp_path / "plain_tools.py"
    module.write_text("def plain(tx):\n    tx.execute('SELECT 1')\n")
    with pytest.raises(BadOption) as refused:
        settings_from("--mcp-url", URL, "--tools-module", str(module))
    assert str(refused.value).startswith("tool plain has no arguments step (@tool(arguments=...)): over MCP only")


def test_a_tool_that_calls_the_server_itself_runs_in_the_load_and_may_draw_from_its_seed(tmp_path):
    module = tmp_path / "calling_tools.py"
    module.write_text("from db.tool import tool\n\n@tool(backend='mcp')\n"
                      "def book(tx):\n    return tx.mcp.call('book_seat', {'seat': tx.rng.randint(1, 9)}).value\n")
    settings = settings_from("--mcp-url", URL, "--tools-module", str(module))
    [[weighted]] = [scenario.tools(settings.params) for scenario in settings.scenarios]
    assert settings.mcp.server == "user" and weighted.tool.calls_mcp and weighted.tool.arguments is None


def test_isolation_and_queue_capacity_stay_the_audits_need_them_and_the_builtin_server_gets_the_rest():
    user = settings_from("--mcp-url", URL, "--isolation", "serializable", "--queue-capacity", "7")
    assert (user.isolation, user.params.queue_capacity) == ("serializable", 7)
    builtin = settings_from("--mcp-server", "builtin", "--tool-work", "10", "--pool-size", "4")
    assert builtin.tool_work == constant(0.01)
    assert builtin.pool_size_for(50) == 4 and builtin.tool_server_threads(50) == 20
    assert builtin.connections_needed(50, 2) == (4 + 3, 0), "the server's pool and the harness's; the load has none"
    assert settings_from("--mcp-url", URL).connections_needed(50, 2) == (3, 0), "a user's server is not counted"
    assert settings_from("--mcp-server", "builtin", "--chaos", "worker-stop:5s", "--processes", "2").chaos
    [kill] = settings_from("--mcp-server", "careless", "--chaos", "mcp-kill:1.5s").chaos
    assert (kill.kind, kill.every_s, kill.share) == ("mcp-kill", 1.5, 1.0)


def _worker(*args: str) -> Shared:
    from tests.test_workers import _options

    return Shared.given_to_worker(_options(*args))


def _master(**mcp) -> Shared:
    fixed = {"mcp_url": None, "mcp_server": None, "mcp_era": "auto", "mcp_token": None, "mcp_ca_file": None,
             "mcp_insecure": False, **mcp}
    return Shared.of_master("postgresql://h/db", "redis://h/0", "toolclash", None, None, fixed)


def test_a_worker_takes_the_masters_mcp_server_and_refuses_another():
    master = _master(mcp_url="http://u:pw@tools:8000/mcp", mcp_token="s3cret")
    assert refusal(_worker(), master) is None
    assert _worker().mcp_options(master)["mcp_url"] == "http://u:pw@tools:8000/mcp"
    assert _worker("--mcp-ca-file", "mine.pem").mcp_options(master)["mcp_ca_file"] == "mine.pem"
    other = refusal(_worker("--mcp-url", "http://elsewhere/mcp"), master)
    assert other.startswith("--mcp-url: this worker was started with http://elsewhere/mcp but the master runs"
                            " http://***@tools:8000/mcp") and "pw" not in other
    token = refusal(_worker("--mcp-token", "other"), master)
    assert token.startswith("--mcp-token: this worker was started with another token") and "s3cret" not in token
    assert refusal(_worker("--mcp-server", "builtin"), master).startswith("--mcp-server: this worker was started"
                                                                          " with builtin but the master runs none")
    assert refusal(_worker("--mcp-era", "session"), _master(mcp_server="builtin")).startswith("--mcp-era:")
