"""What /metrics publishes (harness.export): the histograms re-bucketed exactly into the documented
bounds, OpenTelemetry's names translated to Prometheus', tool labels capped, the figures as the
text format prometheus-client writes, and /metrics on Locust's own web UI app, behind its login;
when OpenTelemetry's variables ask for an OTLP push, and what they ask that is refused."""

from __future__ import annotations

import uuid

import pytest
from locust import User
from locust.env import Environment

from db.errors import Failure
from harness.export.figures import BOUNDS_S, TOOL_LABELS, Buckets, Judged, families, prometheus_name
from harness.export.otlp import OtlpRefused, otlp_wanted
from harness.export.prometheus import MetricsEndpoint
from harness.watch.histogram import Histogram
from harness.watch.metrics import Metrics
from transport.call_record import CallRecord, Outcome


def _call(tool: str, seconds: float, outcome: Outcome = Outcome.SUCCEEDED, failures=()) -> CallRecord:
    return CallRecord(tool=tool, backend="pg", op_id=uuid.uuid4(), outcome=outcome, attempts=1 + len(failures),
                      failures=list(failures), duration_s=seconds, pool_waits_s=[seconds / 2])


def _judged(metrics: Metrics, report=None) -> Judged:
    return Judged(run_id="run1", metrics=metrics, agents=3, over_mcp=False,
                  server_sample={"pg_lock_waiters": 2, "pg_longest_blocking_chain": 1}, faults=[], report=report)


def test_buckets_count_the_values_at_or_below_each_bound_as_toolclash_rounded_them():
    histogram = Histogram()
    values = [0.00005, 0.0001, 0.0004, 0.0049, 0.005, 0.0051, 0.2, 0.2009, 61.0]
    for value in values:
        histogram.record(value)
    buckets = Buckets.of(histogram)
    assert buckets.count == len(values)
    at = dict(zip(BOUNDS_S, buckets.cumulative))
    assert (at[0.0001], at[0.00025], at[0.005], at[0.0075], at[0.2], at[0.3], at[60.0]) == (2, 2, 5, 6, 7, 8, 8)
    # 0.2009 s is 200.9 ms, toolclash's bucket 201 ms: above 0.2 as the report's percentiles read it.
    assert abs(buckets.sum_s - (0.00005 + 0.0001 + 0.0004 + 0.0049 + 0.005 + 0.0051 + 0.2 + 0.201 + 61.0)) < 1e-9
    assert 20 <= len(BOUNDS_S) <= 40 and list(BOUNDS_S) == sorted(BOUNDS_S)


def test_opentelemetry_names_are_translated_as_its_prometheus_compatibility_does():
    assert prometheus_name("toolclash.tool.duration", "s", "histogram") == "toolclash_tool_duration_seconds"
    assert prometheus_name("db.client.connection.wait_time", "s", "histogram") == \
        "db_client_connection_wait_time_seconds"
    assert prometheus_name("toolclash.tool.calls", "{call}", "counter") == "toolclash_tool_calls_total"
    assert prometheus_name("toolclash.agents", "{agent}", "gauge") == "toolclash_agents"


def test_tools_past_the_cap_are_summed_under_other():
    metrics = Metrics()
    for index in range(TOOL_LABELS + 2):
        metrics.record(_call(f"tool_{index:03d}", 0.01))
    calls = next(f for f in families(_judged(metrics)) if f.name == "toolclash.tool.calls")
    succeeded = {labels[1]: value for labels, value in calls.series if labels[2] == "succeeded"}
    assert len(succeeded) == TOOL_LABELS + 1 and succeeded["other"] == 2.0 and succeeded["tool_000"] == 1.0


def test_the_exposition_has_the_figures_and_the_verdict():
    metrics = Metrics()
    metrics.record(_call("deduct_credits", 0.004))
    metrics.record(_call("deduct_credits", 0.02, failures=[Failure.DEADLOCK]))
    metrics.record(_call("transfer_credits", 0.5, Outcome.INDETERMINATE))
    report = {"run": {"run_id": "run0"}, "verdict": "fail",
              "sla": [{"name": "tool p95 < 2 s", "ok": True}, {"name": "errors == 0", "ok": False}],
              "audit": {"checks": [{"name": "credits_conserved", "ok": True},
                                   {"name": "credits_conserved", "ok": False},
                                   {"name": "no_negative_balance", "ok": True}]}}
    endpoint = MetricsEndpoint(lambda: _judged(metrics, report), lambda: report)
    text = endpoint.exposition(None)[0].decode()
    for line in (
        'toolclash_tool_calls_total{outcome="succeeded",run_id="run1",tool="deduct_credits"} 2.0',
        'toolclash_tool_calls_total{outcome="indeterminate",run_id="run1",tool="transfer_credits"} 1.0',
        'toolclash_tool_retries_total{run_id="run1",tool="deduct_credits"} 1.0',
        'toolclash_conflicts_total{kind="deadlocks",run_id="run1"} 1.0',
        'toolclash_calls_indeterminate_total{run_id="run1"} 1.0',
        'toolclash_tool_duration_seconds_bucket{le="0.005",run_id="run1",tool="deduct_credits"} 1.0',
        'toolclash_tool_duration_seconds_bucket{le="+Inf",run_id="run1",tool="deduct_credits"} 2.0',
        'db_client_connection_wait_time_seconds_count{run_id="run1"} 3.0',
        'toolclash_agents{run_id="run1"} 3.0',
        'toolclash_pg_lock_waiters{run_id="run1"} 2.0',
        # The last verdict is its own run's; checks of one name hold only if all of them did.
        'toolclash_verdict_pass{run_id="run0"} 0.0',
        'toolclash_sla_rule_ok{rule="errors == 0",run_id="run0"} 0.0',
        'toolclash_audit_check_ok{check="credits_conserved",run_id="run0"} 0.0',
        'toolclash_audit_check_ok{check="no_negative_balance",run_id="run0"} 1.0',
    ):
        assert line in text.splitlines(), line
    assert MetricsEndpoint(lambda: Judged("", Metrics(), 0, False, None, [], None), lambda: None).exposition(
        None)[0] == b""


def test_attempts_are_exported_after_opentelemetrys_database_and_mcp_conventions():
    metrics = Metrics()
    deadlocked = _call("transfer_credits", 0.05, failures=[Failure.DEADLOCK])
    deadlocked.operations = [("postgresql", 0.03, "40P01", "deadlocks"), ("postgresql", 0.002, "", "")]
    over_mcp = _call("deduct_credits", 0.01)
    over_mcp.operations = [("mcp", 0.004, "", "connection_errors"), ("mcp", 0.006, "", "")]
    for record in (deadlocked, over_mcp):
        metrics.record(record)
    shipped = Metrics.from_dict(metrics.to_dict())  # as a worker ships it
    text = MetricsEndpoint(lambda: _judged(shipped), lambda: None).exposition(None)[0].decode().splitlines()
    for line in (
        'db_client_operation_duration_seconds_count{db_response_status_code="40P01",db_system_name="postgresql",'
        'error_type="deadlocks",run_id="run1"} 1.0',
        'db_client_operation_duration_seconds_bucket{db_response_status_code="",db_system_name="postgresql",'
        'error_type="",le="0.002",run_id="run1"} 1.0',
        'mcp_client_operation_duration_seconds_count{error_type="connection_errors",run_id="run1"} 1.0',
        'mcp_client_operation_duration_seconds_count{error_type="",run_id="run1"} 1.0',
    ):
        assert line in text, line


def test_metrics_on_the_web_ui_port_is_behind_its_login():
    class Agent(User):
        pass

    metrics = Metrics()
    metrics.record(_call("deduct_credits", 0.004))
    for login in (False, True):
        environment = Environment(user_classes=[Agent])
        web_ui = environment.create_web_ui("127.0.0.1", 0, web_login=login, delayed_start=True)
        if login:  # as a locustfile sets its login up (Locust's docs): nobody is logged in here
            web_ui.app.secret_key = "test"
            web_ui.app.login_manager.user_loader(lambda user_id: None)
        MetricsEndpoint(lambda: _judged(metrics), lambda: None).install_on_web_ui(web_ui, "")
        reply = web_ui.app.test_client().get("/metrics")
        if login:
            assert b"toolclash_" not in reply.data and reply.status_code in (302, 401), reply.status_code
        else:
            assert reply.status_code == 200 and b"toolclash_tool_calls_total" in reply.data


def test_the_otlp_push_is_asked_for_by_opentelemetrys_variables():
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert not otlp_wanted({})
    assert otlp_wanted(endpoint) and otlp_wanted({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://x:4318/v1/metrics"})
    assert not otlp_wanted({**endpoint, "OTEL_METRICS_EXPORTER": "none"})
    assert otlp_wanted({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    for refused, line in (
            ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: toolclash pushes its"
                                                      " metrics over OTLP/HTTP only: use http/protobuf"),
            ({"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
             "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=http/json: toolclash pushes its metrics over OTLP/HTTP only:"
             " use http/protobuf"),
            ({"OTEL_METRIC_EXPORT_INTERVAL": "0"}, "OTEL_METRIC_EXPORT_INTERVAL=0: give the milliseconds between"
                                                   " two pushes, more than 0")):
        with pytest.raises(OtlpRefused) as refusal:
            otlp_wanted({**endpoint, **refused})
        assert str(refusal.value) == line
