"""/metrics for Prometheus on the process that judges the run (the local runner or the master):
on --metrics-port, and on the web UI's port (behind its login when it has one). A custom
collector reads the judging process's figures at each scrape (harness.export.figures), so its
counters are the merged totals as they stand: true counters, and at the end the report's own.

A headless run with --metrics-port is scraped to its end: after its verdict the process goes on
serving until a scrape has read the report's figures, or LINGER_S.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import gevent
from flask import Blueprint, Response, request
from gevent.pywsgi import WSGIServer
from locust.env import Environment
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from harness.export.figures import BOUNDS_S, Buckets, Family, Judged, families

if TYPE_CHECKING:
    from locust.web import WebUI

    from harness.report_shape import Report

__all__ = ["LINGER_S", "FiguresCollector", "MetricsEndpoint", "serve_metrics"]

log = logging.getLogger("toolclash")

# How long a headless run with --metrics-port waits, after its verdict, for a scrape to read it:
# four of Prometheus' default scrape intervals (15 s).
LINGER_S = 60.0
_LE = tuple(floatToGoString(bound) for bound in BOUNDS_S)  # as prometheus-client's own histograms write them


class FiguresCollector(Collector):
    """The figures as Prometheus' metric families, read anew at each collect."""

    def __init__(self, read: Callable[[], Judged]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        for family in families(self._read()):
            yield _prometheus_family(family)


def _prometheus_family(family: Family) -> Metric:
    name = family.prometheus
    metric: Metric
    if family.kind == "histogram":
        histogram = HistogramMetricFamily(name, family.help, labels=family.prometheus_labels)
        for labels, buckets in family.series:
            assert isinstance(buckets, Buckets)
            histogram.add_metric(list(labels), [*zip(_LE, buckets.cumulative), ("+Inf", buckets.count)],
                                 buckets.sum_s)
        return histogram
    metric = (CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily)(name, family.help,
                                                                                     labels=family.prometheus_labels)
    for labels, value in family.series:
        assert isinstance(value, float)
        metric.add_metric(list(labels), value)
    return metric


class MetricsEndpoint:
    """The judging process's /metrics: `read` gives its figures, `report` its last report."""

    def __init__(self, read: Callable[[], Judged], report: Callable[[], Report | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FiguresCollector(read))
        self._report = report
        self._scraped: Report | None = None  # the report the last answered scrape included
        self._server: WSGIServer | None = None

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The figures now, in the format the scraper accepts best; noted as scraped."""
        report = self._report()
        encoder, content_type = choose_encoder(accept or "")
        body = encoder(self.registry)
        self._scraped = report
        return body, content_type

    def serve(self, host: str, port: int) -> None:
        """/metrics on its own port; raises OSError when it cannot listen there."""
        self._server = WSGIServer((host, port), self._wsgi, log=None, error_log=log)
        self._server.start()

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"toolclash serves /metrics here\n"]
        body, content_type = self.exposition(environ.get("HTTP_ACCEPT"))
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    def install_on_web_ui(self, web_ui: WebUI, base_path: str) -> None:
        """/metrics on the web UI's port, behind its login when it has one."""
        blueprint = Blueprint("toolclash_metrics", __name__, url_prefix=base_path or None)

        def metrics() -> Response:
            body, content_type = self.exposition(request.headers.get("Accept"))
            return Response(body, content_type=content_type)

        blueprint.add_url_rule("/metrics", "metrics", web_ui.auth_required_if_enabled(metrics))
        web_ui.app.register_blueprint(blueprint)

    def linger(self) -> None:
        """Serve on until a scrape has read the last report (at most LINGER_S): what a headless run
        does before it exits, so its final counts and verdict reach Prometheus."""
        report = self._report()
        if self._server is None or report is None or self._scraped is report:
            return
        log.info("toolclash: serving /metrics until it is scraped once more (at most %g s)", LINGER_S)
        began = time.monotonic()
        deadline = began + LINGER_S
        try:
            while self._scraped is not report and time.monotonic() < deadline:
                gevent.sleep(0.05)
        except KeyboardInterrupt:  # Ctrl-C: the user would rather not wait; the verdict stands
            pass
        if self._scraped is not report:
            log.warning("toolclash: /metrics was not scraped after the verdict (waited %.0f s): the final"
                        " figures did not reach Prometheus", time.monotonic() - began)

    def close(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)


def serve_metrics(endpoint: MetricsEndpoint, environment: Environment, port: int | None, web_ui: WebUI | None,
                  linger: bool = True) -> None:
    """Serve `endpoint` where asked: --metrics-port (lingering at the end of a headless run, when
    `linger`), and the web UI's port."""
    if web_ui is not None:
        endpoint.install_on_web_ui(web_ui, environment.parsed_options.web_base_path or "")
    if port is not None:
        endpoint.serve(environment.parsed_options.web_host or "", port)

        def on_quit(**_: Any) -> None:
            if linger and environment.parsed_options.headless:
                endpoint.linger()
            endpoint.close()

        environment.events.quit.add_listener(on_quit)
