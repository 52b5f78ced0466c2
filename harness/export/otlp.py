"""OTLP push of the same figures as /metrics (harness.export.figures), from the judging process,
when the environment names an OTLP endpoint (OpenTelemetry's standard variables:
OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, with their headers, timeout,
compression and certificates, which the OTLP exporter reads itself; OTEL_METRIC_EXPORT_INTERVAL;
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; OTEL_METRICS_EXPORTER=none turns it off).

The figures are already aggregated (merged exact histograms, totals), and OpenTelemetry's API has
no asynchronous histogram: so no SDK instrument re-records them. Each push builds the metrics data
itself (cumulative sums, gauges, histograms with BOUNDS_S as their explicit bounds) and hands it to
the SDK's OTLP/HTTP exporter, every interval and once more after the verdict, before the process
exits. Locust's own --otel is apart: its own meter provider, its own names (docs/monitoring.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from harness.export.figures import BOUNDS_S, Buckets, Family, Judged, families

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["OtlpRefused", "OtlpPush", "otlp_wanted"]

log = logging.getLogger("toolclash")

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_DEFAULT_INTERVAL_MS = 60_000  # OpenTelemetry's default OTEL_METRIC_EXPORT_INTERVAL


class OtlpRefused(ValueError):
    """The OTLP variables ask for what toolclash does not do; the message is one line."""


def otlp_wanted(environ: dict[str, str] | None = None) -> bool:
    """Whether the environment asks for an OTLP push of metrics; raises OtlpRefused for a
    protocol other than http/protobuf or a bad interval."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() == "none":
        return False
    if not any(environ.get(name) for name in _ENDPOINTS):
        return False
    for name in _PROTOCOLS:
        protocol = environ.get(name)
        if protocol:
            if protocol.strip() != "http/protobuf":
                raise OtlpRefused(f"{name}={protocol}: toolclash pushes its metrics over OTLP/HTTP only:"
                                  " use http/protobuf")
            break
    _interval_s(environ)
    return True


def _interval_s(environ: dict[str, str]) -> float:
    text = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip() or str(_DEFAULT_INTERVAL_MS)
    try:
        milliseconds = float(text)
    except ValueError:
        milliseconds = -1
    if milliseconds <= 0:
        raise OtlpRefused(f"OTEL_METRIC_EXPORT_INTERVAL={text}: give the milliseconds between two pushes, more than 0")
    return milliseconds / 1000.0


class OtlpPush:
    """Pushes `read`'s figures every interval (OTEL_METRIC_EXPORT_INTERVAL), and once more when
    the process quits, after the verdict."""

    def __init__(self, read: Callable[[], Judged]) -> None:
        self._read = read
        self._interval_s = _interval_s(dict(os.environ))
        self._exporter = OTLPMetricExporter()
        self._resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "toolclash"})
        self._scope = InstrumentationScope("toolclash")
        self._started_ns: dict[str, int] = {}  # each run's first push: its cumulative figures' start
        self._greenlet: Any = None  # the pushes' greenlet, once started

    def start(self, environment: Environment) -> None:
        self._greenlet = gevent.spawn(self._every_interval)
        environment.events.quit.add_listener(self._on_quit)

    def _every_interval(self) -> None:
        while True:
            gevent.sleep(self._interval_s)
            self.push()

    def _on_quit(self, **_: Any) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
        self.push()
        self._exporter.shutdown()

    def push(self) -> None:
        data = self.metrics_data()
        if data is None:
            return
        try:
            result = self._exporter.export(data)
        except Exception as exc:  # the collector's trouble must never end the run
            log.warning("toolclash: OTLP push failed: %s: %s", type(exc).__name__, exc)
            return
        if result is not MetricExportResult.SUCCESS:
            log.warning("toolclash: OTLP push failed (the exporter's log says why)")

    def metrics_data(self) -> MetricsData | None:
        """The figures now as OTLP's data; None before the first test."""
        found = families(self._read())
        if not found:
            return None
        now = time.time_ns()
        metrics = [_metric(family, self._started_ns, now) for family in found]
        return MetricsData(resource_metrics=[ResourceMetrics(
            resource=self._resource, scope_metrics=[ScopeMetrics(scope=self._scope, metrics=metrics, schema_url="")],
            schema_url="")])


def _metric(family: Family, started_ns: dict[str, int], now: int) -> Metric:
    points: list[Any] = []
    for labels, value in family.series:
        # An empty value (a success's SQLSTATE and error.type) is an attribute left out.
        attributes = {name: value for name, value in zip(family.labels, labels) if value}
        start = started_ns.setdefault(attributes["run_id"], now)
        if isinstance(value, Buckets):
            points.append(HistogramDataPoint(
                attributes=attributes, start_time_unix_nano=start, time_unix_nano=now, count=value.count,
                sum=value.sum_s, bucket_counts=_per_bucket(value), explicit_bounds=list(BOUNDS_S),
                min=value.min_s, max=value.max_s))  # None: no value recorded, OTLP's min and max left out
        else:
            points.append(NumberDataPoint(attributes=attributes, start_time_unix_nano=start, time_unix_nano=now,
                                          value=value))
    data: Sum | Gauge | Histogram
    if family.kind == "histogram":
        data = Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
    elif family.kind == "counter":
        data = Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE, is_monotonic=True)
    else:
        data = Gauge(data_points=points)
    return Metric(name=family.name, description=family.help, unit=family.unit, data=data)


def _per_bucket(buckets: Buckets) -> list[int]:
    """OTLP's counts per bucket (not cumulative), the last one past the highest bound."""
    cumulative = [*buckets.cumulative, buckets.count]
    return [cumulative[0], *(high - low for low, high in zip(cumulative, cumulative[1:]))]
