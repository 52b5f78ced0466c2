"""/metrics scraped by a real Prometheus (Debian's `prometheus` package), started here on a port,
configuration and data directory of its own, every second, during a distributed run (a master and
two workers, --processes 2) that serves --metrics-port: what Prometheus holds at the end agrees
with the run's JSON report (counters equal its counts, the p95 of the exported buckets is within
one bucket of the report's, the verdict gauges are its verdict), the counters never went back
during the run, and every panel query of the Grafana dashboard returns data from it.

The same run pushes over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT, every second) to a receiver here that
decodes what the OpenTelemetry SDK's exporter sent with OpenTelemetry's own protobuf types: its
last push holds the report's counts too, and histograms with the documented explicit bounds.
"""

from __future__ import annotations

import bisect
import gzip
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from harness.export.figures import BOUNDS_S
from tests.support import ROOT, free_port, read_report, wait_until

PROMETHEUS_INSTALL = "apt-get install -y prometheus"
DASHBOARD = ROOT / "monitoring" / "grafana" / "toolclash.json"
# What Grafana puts for $__rate_interval: at least four scrape intervals (here 1 s).
RATE_INTERVAL = "5s"
# Long enough to reach back over the whole run from the moment the test asks.
LOOKBACK = "10m"


class Prometheus:
    """A Prometheus server scraping one target every second."""

    def __init__(self, binary: str, target: str, directory) -> None:
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(f"global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
                          f"  - job_name: toolclash\n    static_configs:\n      - targets: ['{target}']\n")
        self._log = (directory / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._ready, "Prometheus to be ready", timeout=30, still=lambda: self.process.poll() is None)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def _api(self, path: str, **params: Any) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as reply:
            answer = json.load(reply)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self._api("query", query=expr)

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        return self._api("query_range", query=expr, start=start, end=end, step="1")

    def last(self, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Each series' last scraped value (before the run's end made it stale), by its labels."""
        return {tuple(sorted((k, v) for k, v in row["metric"].items() if k not in ("instance", "job"))):
                float(row["value"][1]) for row in self.query(f"last_over_time({metric}[{LOOKBACK}])")}

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self._log.close()


class OtlpReceiver:
    """An OTLP/HTTP endpoint for metrics: keeps each push's metrics, by name, decoded."""

    def __init__(self) -> None:
        self.pushes: list[dict[str, Any]] = []
        pushes = self.pushes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportMetricsServiceRequest.FromString(body)
                pushes.append({metric.name: metric for resource in request.resource_metrics
                               for scope in resource.scope_metrics for metric in scope.metrics})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _points(metric: Any) -> dict[tuple[str, ...], Any]:
    """A pushed metric's data points by their attributes' values (run_id first, then by name)."""
    data = getattr(metric, metric.WhichOneof("data"))
    points = {}
    for point in data.data_points:
        attributes = {a.key: a.value.string_value for a in point.attributes}
        points[(attributes.pop("run_id"), *(attributes[k] for k in sorted(attributes)))] = point
    return points


@pytest.fixture
def prometheus_binary() -> str:
    """Debian's prometheus; without it skipped, naming the install command; with CI=true that fails."""
    binary = shutil.which("prometheus")
    if binary is None:
        message = f"prometheus is not installed: {PROMETHEUS_INSTALL}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _by(values: dict[tuple[tuple[str, str], ...], float], *names: str) -> dict[tuple[str, ...], float]:
    """`values` by the values of the labels `names` ("" for one a series does not have: Prometheus' empty value)."""
    return {tuple(dict(labels).get(name, "") for name in names): value for labels, value in values.items()}


def _bucket(seconds: float) -> int:
    """The index of the exported bucket holding `seconds` (len(BOUNDS_S): the +Inf one)."""
    return bisect.bisect_left(BOUNDS_S, seconds)


def test_prometheus_scrapes_a_distributed_run_and_agrees_with_the_report(
        servers, schema, tmp_path, locust, prometheus_binary):
    port = free_port()
    prometheus = Prometheus(prometheus_binary, f"127.0.0.1:{port}", tmp_path)
    receiver = OtlpReceiver()
    try:
        started = time.time()
        report_path = tmp_path / "report.json"
        run = locust.run("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
                         "-u", "10", "-r", "10", "-t", "6s", "--processes", "2", "--metrics-port", str(port),
                         "--web-host", "127.0.0.1", "--report-json", str(report_path), timeout=150,
                         env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_METRIC_EXPORT_INTERVAL": "1000"})
        report = read_report(report_path)
        assert run.returncode == report["exit_code"], run.stderr[-3000:]
        assert len(report["workers"]["shipped"]) == 2
        run_id = report["run"]["run_id"]
        # The run waited for a scrape after its verdict: Prometheus has the verdict.
        assert "was not scraped" not in run.stderr

        # Counters: the report's counts, per tool and outcome, per conflict kind; never reset during the run.
        calls = _by(prometheus.last(f'toolclash_tool_calls_total{{run_id="{run_id}"}}'), "tool", "outcome")
        assert calls == {(tool, outcome): float(figures[outcome]) for tool, figures in report["tools"].items()
                         for outcome in ("succeeded", "failed", "indeterminate", "cut_off")}
        assert sum(calls.values()) > 0
        for name, field in (("attempts", "attempts"), ("retries", "retries"), ("refusals", "refused")):
            assert _by(prometheus.last(f'toolclash_tool_{name}_total{{run_id="{run_id}"}}'), "tool") == {
                (tool,): float(figures[field]) for tool, figures in report["tools"].items()}, name
        conflicts = _by(prometheus.last(f'toolclash_conflicts_total{{run_id="{run_id}"}}'), "kind")
        assert conflicts == {(kind,): float(count) for kind, count in report["conflicts"].items()
                             if kind != "indeterminate"}
        assert _by(prometheus.last(f'toolclash_calls_indeterminate_total{{run_id="{run_id}"}}')) == {
            (): float(report["conflicts"]["indeterminate"])}
        assert _by(prometheus.last(f'toolclash_errors_total{{run_id="{run_id}"}}')) == {(): float(report["errors"])}
        resets = prometheus.query(f'resets(toolclash_tool_calls_total{{run_id="{run_id}"}}[{LOOKBACK}]) > 0')
        assert resets == []
        scrapes = prometheus.query(f'count_over_time(toolclash_agents{{run_id="{run_id}"}}[{LOOKBACK}])')
        assert scrapes and float(scrapes[0]["value"][1]) >= 3, "scraped during the run, not only at its end"

        # Histograms: the counts are the report's, and p95 is within one exported bucket of its p95.
        pool_wait = _by(prometheus.last(f'db_client_connection_wait_time_seconds_count{{run_id="{run_id}"}}'))
        assert pool_wait == {(): float(report["latency_ms"]["pool_wait"]["count"])}
        turns = _by(prometheus.last(f'toolclash_turn_duration_seconds_count{{run_id="{run_id}"}}'))
        assert turns == {(): float(report["turns"]["turns"])}
        p95 = {row["metric"]["tool"]: float(row["value"][1]) for row in prometheus.query(
            f'histogram_quantile(0.95, last_over_time(toolclash_tool_duration_seconds_bucket{{run_id="{run_id}"}}'
            f'[{LOOKBACK}]))')}
        for tool, figures in report["tools"].items():
            if figures["calls"]:
                assert abs(_bucket(p95[tool]) - _bucket(figures["p95_ms"] / 1000)) <= 1, (tool, p95, figures)

        # Each attempt that reached its server, after OpenTelemetry's database convention: the
        # failed ones by kind are the report's failures (a pool timeout never reached it), the
        # others one a succeeded call.
        statuses = _by(prometheus.last(f'db_client_operation_duration_seconds_count{{run_id="{run_id}"}}'),
                       "db_system_name", "db_response_status_code", "error_type")
        operations: dict[str, float] = {}
        for (_, _, kind), count in statuses.items():
            operations[kind] = operations.get(kind, 0.0) + count
        failures = {"": float(sum(figures["succeeded"] for figures in report["tools"].values()))}
        for figures in report["tools"].values():
            for kind, count in figures["failures"].items():
                if kind != "pool_timeouts":
                    failures[kind] = failures.get(kind, 0.0) + count
        assert operations == failures
        assert {system for system, _, _ in statuses} == {"postgresql", "redis"}
        assert all(status == "" for _, status, kind in statuses if kind in ("", "redis_watch_conflicts")), statuses
        assert all(status == "40001" for _, status, kind in statuses if kind == "serialization_failures"), statuses

        # The verdict gauges: the report's verdict, SLA rules and audit checks.
        assert _by(prometheus.last(f'toolclash_verdict_pass{{run_id="{run_id}"}}')) == {
            (): 1.0 if report["verdict"] == "pass" else 0.0}
        rules = _by(prometheus.last(f'toolclash_sla_rule_ok{{run_id="{run_id}"}}'), "rule")
        assert rules == {(rule["name"],): float(rule["ok"]) for rule in report["sla"]}
        checks = _by(prometheus.last(f'toolclash_audit_check_ok{{run_id="{run_id}"}}'), "check")
        assert set(checks) == {(check["name"],) for check in report["audit"]["checks"]}
        assert all(checks[(check["name"],)] == 1.0 for check in report["audit"]["checks"] if check["ok"])

        # Every panel query of the dashboard returns data over the run.
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        ended = time.time()
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$run_id", run_id).replace("$__rate_interval", RATE_INTERVAL)
                result = prometheus.query_range(expr, started, ended)
                assert result and any(series["values"] for series in result), (panel["title"], expr)

        # OTLP: pushed during the run and after the verdict; the last push has the report's figures.
        assert len(receiver.pushes) >= 3, "pushed every second, and at the end"
        last = receiver.pushes[-1]
        assert {(run, tool, outcome): point.as_double for (run, outcome, tool), point in _points(
            last["toolclash.tool.calls"]).items()} == {
            (run_id, tool, outcome): float(figures[outcome]) for tool, figures in report["tools"].items()
            for outcome in ("succeeded", "failed", "indeterminate", "cut_off")}
        assert last["toolclash.tool.calls"].sum.is_monotonic and last["toolclash.tool.duration"].unit == "s"
        for (run, tool), point in _points(last["toolclash.tool.duration"]).items():
            assert list(point.explicit_bounds) == list(BOUNDS_S) and len(point.bucket_counts) == len(BOUNDS_S) + 1
            assert sum(point.bucket_counts) == point.count == report["tools"][tool]["calls"], tool
        assert _points(last["db.client.connection.wait_time"])[(run_id,)].count == \
            report["latency_ms"]["pool_wait"]["count"]
        assert _points(last["toolclash.verdict.pass"])[(run_id,)].as_double == float(report["verdict"] == "pass")
    finally:
        receiver.close()
        prometheus.close()
