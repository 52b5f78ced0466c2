"""A real report has exactly the shape harness.report_shape declares (and docs/report.md
describes): made by the coordinator the runs use, on the real servers, from real tool calls,
without a `locust` process. Its parts only some runs have are given it too: a load shape's stage,
a master's heartbeats and workers (one of them lost)."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from typing_extensions import get_args

from db.connect import probe_postgres, probe_redis
from harness.config.run_settings import fingerprint
from harness.distributed.shipments import WorkerShipments
from harness.report_shape import REPORT_VERSION, ConflictCounter, Conflicts, Heartbeats, Report, Workers
from harness.run.load import Load
from harness.watch.hub_lag import HeartbeatGaps, HubLag
from harness.watch.metrics import CONFLICT_COUNTERS
from tests.report_conformance import nonconforming
from tests.support import ROOT, judged_load, settings_from, wait_until

_CALLS = 60


def _workers(shipped: Load, settings_fingerprint: str) -> Workers:
    """A master's `workers` section, made by its own WorkerShipments: w1 sent its final
    shipment, w2 one shipment and then nothing (lost); Locust's runner knows neither any more."""
    shipments = WorkerShipments()
    shipment = {"test": 0, "metrics": shipped.metrics.to_dict(), "hub_lag": HubLag().to_dict(),
                "settings": settings_fingerprint}
    shipments.add("w1", {**shipment, "number": 1}, final=True)
    shipments.add("w2", {**shipment, "number": 2})
    lost = shipments.wait_for_finals(SimpleNamespace(clients={}), timeout_s=0)
    return {"shipped": shipments.per_worker(), "lost": lost, "settings": shipments.settings(),
            "shipments_lost": shipments.shipments_lost()}


def _heartbeats() -> Heartbeats:
    gaps = HeartbeatGaps()
    gaps.begin(["w1"])
    gaps.on_heartbeat("w1", time.time())
    return gaps.summary()


def test_a_real_report_has_exactly_the_keys_and_types_its_typeddicts_declare(servers, schema):
    settings = settings_from("--schema", schema, "--sample-interval", "0.1", "--hold-time", "0",
                             "--sla", str(ROOT / "sla" / "without_latency.toml"))
    infos = [probe_postgres(servers.pg_dsn, "--pg-dsn"), probe_redis(servers.redis_url, "--redis-url")]
    with judged_load(servers, settings, 2, infos) as (coordinator, load):
        stages = [{"stage": 0, "agents": 2, "started": time.monotonic()}]
        load.stage = 0
        agent_id, rng = load.next_agent()
        for _ in range(_CALLS):
            load.adapter.call(load.toolbox.pick(rng), agent_id, rng.getrandbits(64))
        wait_until(lambda: len(coordinator.samples) >= 2, "two samples of the servers")
        load.stop()
        workers = _workers(load, fingerprint(settings))
        report = coordinator.finish(load.metrics, 2, {"local runner": HubLag()}, _heartbeats(), workers, stages)

    assert report["report_version"] == REPORT_VERSION and next(iter(report)) == "report_version"
    assert {"stages", "workers"} <= report.keys() and "heartbeats" in report["hub"]
    assert sum(t["calls"] for t in report["tools"].values()) == _CALLS
    assert report["timeseries"] and {"queue_depth", "outbox_relayed"} <= report["timeseries"][-1].keys()
    assert nonconforming(report, Report) == []
    # As --report-json writes it, and every reader of the file reads it.
    assert nonconforming(json.loads(json.dumps(report, default=str)), Report) == []


def test_the_check_finds_a_missing_an_undeclared_and_a_mistyped_key():
    report = {"report_version": REPORT_VERSION, "server": {}, "errors": "none"}
    lines = nonconforming(report, Report)
    assert "report.run: missing (Report requires it)" in lines
    assert "report.server: not declared in Report" in lines
    assert "report.errors: 'none' is not of type int" in lines
    assert "report.stages: missing (Report requires it)" not in lines  # only some runs have it


def test_the_conflicts_are_named_once():
    assert CONFLICT_COUNTERS == get_args(ConflictCounter) == tuple(Conflicts.__annotations__)
